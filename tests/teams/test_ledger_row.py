"""Every column of a usage-ledger row, end to end: a gateway on loopback, a fake upstream, the real SQLite file.

The row is built positionally on the hot path (a keyword call costs several times as much), so this
pins each value to its column.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from gateway.api.accounting import _milliseconds
from tests.conftest import FAST_POLICY, GatewayFactory, RunningGateway, model_json, provider_json, secret
from tests.fakes.upstream import FakeUpstream, chunk, ok, status, stream

KEY = "ledger-key-0123456789abcdef"
BODY: dict[str, Any] = {"model": "acme/m1", "messages": [{"role": "user", "content": "hi"}]}
COLUMNS = ("at", "request_id", "key", "model", "provider", "served_model", "status", "error_type", "input_tokens",
           "output_tokens", "cached_tokens", "reasoning_tokens", "cost_usd", "duration_ms", "ttft_ms", "attempts",
           "fallbacks", "endpoint")


async def _gateway(start_gateway: GatewayFactory, up: FakeUpstream) -> RunningGateway:
    catalog = provider_json("acme", up.base_url, [model_json("m1")])  # $1 in, $2 out, $0.5 cache read per M
    environ = {"ACME_API_KEY": "sk-acme", "TEAM_KEY": secret(KEY)}
    auth = {"keys": [{"name": "team", "key": "${TEAM_KEY}"}]}
    gw = await start_gateway({**FAST_POLICY, "auth": auth}, catalogs=[catalog], environ=environ)
    gw.client.headers["authorization"] = f"Bearer {KEY}"
    return gw


async def _rows(gw: RunningGateway) -> list[dict[str, Any]]:
    await gw.app.teams.flush()
    path = gw.app.runtime.settings.state.path
    assert path is not None
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(f"SELECT {', '.join(COLUMNS)} FROM ledger ORDER BY id")]


async def test_a_whole_answer_and_a_stream_fill_every_column(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        gw = await _gateway(start_gateway, up)
        up.default = ok("four words of answer", usage={
            "prompt_tokens": 1000, "completion_tokens": 300, "total_tokens": 1300,
            "prompt_tokens_details": {"cached_tokens": 400}, "completion_tokens_details": {"reasoning_tokens": 100}})
        before = time.time()
        whole = await gw.chat(BODY)
        up.default = stream([chunk(role="assistant", content="hi"), chunk(finish_reason="stop"),
                             chunk(usage={"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27})])
        streamed = await gw.chat({**BODY, "stream": True, "stream_options": {"include_usage": True}})
        after = time.time()
        assert whole.status_code == 200 and streamed.status_code == 200
        first, second = await _rows(gw)

    assert before - 1 <= first["at"] <= second["at"] <= after
    assert {name: first[name] for name in COLUMNS[1:13]} == {
        "request_id": whole.headers["x-request-id"], "key": "team", "model": "acme/m1", "provider": "acme",
        "served_model": "acme/m1", "status": 200, "error_type": None, "input_tokens": 1000, "output_tokens": 300,
        "cached_tokens": 400, "reasoning_tokens": 100, "cost_usd": (600 * 1.0 + 400 * 0.5 + 300 * 2.0) / 1e6}
    assert first["duration_ms"] > 0 and first["ttft_ms"] is None
    assert (first["attempts"], first["fallbacks"], first["endpoint"]) == (1, 0, "/v1/chat/completions")

    assert {name: second[name] for name in COLUMNS[1:13]} == {
        "request_id": streamed.headers["x-request-id"], "key": "team", "model": "acme/m1", "provider": "acme",
        "served_model": "acme/m1", "status": 200, "error_type": None, "input_tokens": 20, "output_tokens": 7,
        "cached_tokens": 0, "reasoning_tokens": 0, "cost_usd": (20 * 1.0 + 7 * 2.0) / 1e6}
    assert 0 < second["ttft_ms"] <= second["duration_ms"]
    assert (second["attempts"], second["fallbacks"], second["endpoint"]) == (1, 0, "/v1/chat/completions")


async def test_a_failed_request_has_no_provider_tokens_or_cost(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        gw = await _gateway(start_gateway, up)
        up.default = status(400, {"error": {"message": "bad", "type": "invalid_request_error"}})
        answer = await gw.chat(BODY)
        assert answer.status_code == 400
        (row,) = await _rows(gw)
    assert row["request_id"] == answer.headers["x-request-id"] and row["key"] == "team" and row["status"] == 400
    assert (row["provider"], row["served_model"], row["cost_usd"], row["ttft_ms"]) == (None, None, None, None)
    assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"], row["reasoning_tokens"]) == (0, 0, 0, 0)
    assert row["error_type"] and row["attempts"] >= 1 and row["fallbacks"] == 0


def test_milliseconds_are_what_round_to_three_digits_gives() -> None:
    """The ledger's durations: `_milliseconds` skips round()'s decimal conversion but stores the same float."""
    values = [0.0, 1e-9, 4.9999e-7, 5e-7, 5.000001e-7, 0.0012345, 0.0015, 0.1, 0.25, 1.0, 2.5e-4, 3.1415926, 59.9999995,
              123.456789, 86400.0000005, 1e7 + 0.123456, 1e12]
    values += [n / 1e7 for n in range(0, 200_000, 7)]  # every half-microsecond boundary in the first 20 ms
    values += [k * 0.000001 + 0.0000005 for k in range(0, 100_000, 13)]  # exactly-half products, near and far
    for seconds in values:
        assert _milliseconds(seconds) == round(seconds * 1000, 3), seconds
