"""One structured access-log line per request: what ops need, never a prompt or a credential."""

from __future__ import annotations

import json

import pytest

from tests.conftest import GatewayFactory, model_json, provider_json
from tests.fakes.upstream import FakeUpstream, ok, server_error

UPSTREAM_KEY = "sk-upstream-logtest-000111222333"
GATEWAY_KEY = "gw-logtest-key-444555666"


async def test_access_log_line_has_the_request_and_no_secret(
    start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeUpstream() as up:
        up.script(server_error(503), ok("the secret prompt answer"))
        gw = await start_gateway(
            {"auth": {"keys": [{"name": "team-log", "key": "${GW_LOG_KEY}"}]},
             "retry": {"backoff_initial": 0.01, "backoff_max": 0.02}},
            catalogs=[provider_json("acme", up.base_url, [model_json("m1")])],
            environ={"ACME_API_KEY": UPSTREAM_KEY, "GW_LOG_KEY": GATEWAY_KEY},
        )
        with caplog.at_level("INFO", logger="gateway.access"):
            response = await gw.chat({"model": "acme/m1", "messages": [{"role": "user", "content": "my prompt text"}]},
                                     headers={"authorization": f"Bearer {GATEWAY_KEY}", "x-request-id": "log-1"})
        assert response.status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.access"]
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["request_id"] == "log-1" and record["key"] == "team-log"
    assert record["model"] == "acme/m1" and record["served_model"] == "acme/m1" and record["provider"] == "acme"
    assert record["status"] == 200 and record["attempts"] == 2 and record["fallbacks"] == 0
    assert record["input_tokens"] == 5 and record["output_tokens"] == 4  # the fake counts words
    assert record["cost_usd"] == pytest.approx((5 * 1.0 + 4 * 2.0) / 1e6)
    assert record["duration_ms"] > 0
    for forbidden in ("my prompt text", UPSTREAM_KEY, GATEWAY_KEY):
        assert forbidden not in lines[0]
