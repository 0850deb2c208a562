"""Each upstream error, seen through /v1/responses (translated and passed through): OpenAI-shaped, right status."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import FAST_POLICY, GatewayFactory, RunningGateway, model_json, provider_json
from tests.fakes.upstream import (
    FakeUpstream,
    content_policy,
    context_length_exceeded,
    rate_limited,
    reset,
    server_error,
    status,
)


async def gateway_for(start_gateway: GatewayFactory, up: FakeUpstream, native: bool) -> RunningGateway:
    catalog = provider_json("up", up.base_url, [model_json("m1")])
    if native:
        catalog["npm"] = "@ai-sdk/openai"
    return await start_gateway(FAST_POLICY, catalogs=[catalog], environ={"UP_API_KEY": "sk-up-errors-0001"})


CASES: list[tuple[str, Any, int, str]] = [
    ("bad request", lambda: status(400, {"error": {"message": "bad input", "type": "invalid_request_error",
                                                   "code": "invalid_value", "param": "input"}}), 400, "invalid_value"),
    ("content policy", content_policy, 400, "content_policy_violation"),
    ("context length", context_length_exceeded, 400, "context_length_exceeded"),
    ("rate limited", lambda: rate_limited(retry_after=1), 429, "rate_limited"),
    ("server error", lambda: server_error(503), 502, "upstream_failed"),
    ("auth", lambda: status(401), 502, "upstream_failed"),
    ("reset", reset, 502, "upstream_failed"),
]


@pytest.mark.parametrize("native", [False, True], ids=["translated", "passed-through"])
@pytest.mark.parametrize(("name", "reply", "code", "error_code"), CASES, ids=[c[0] for c in CASES])
async def test_upstream_errors(start_gateway: GatewayFactory, native: bool, name: str, reply: Any, code: int,
                               error_code: str) -> None:
    async with FakeUpstream() as up:
        up.default = reply()
        gw = await gateway_for(start_gateway, up, native)
        for streamed in (False, True):
            response = await gw.client.post("/v1/responses", json={"model": "up/m1", "input": "hi", "stream": streamed})
            assert response.status_code == code, (name, streamed, response.text)
            assert response.headers["content-type"] == "application/json"
            error = response.json()["error"]
            assert error["code"] == error_code and error["message"]
            if code == 429:
                assert response.headers["retry-after"] == "1"
        expected_path = "/v1/responses" if native else "/v1/chat/completions"
        assert all(r.path == expected_path for r in up.received)
