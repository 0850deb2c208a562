"""Circuits that shed load, failures classified by what they are, and upstream answers of odd shape.

Each test fails on the gateway before failover v2 (issues 9 and 10): the probe count, the 503 with
Retry-After, the failures that must (not) count against a circuit, the error classes that must not
be retried, and the chunks that used to become a 500 or be held back.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import orjson
import pytest

from gateway.app import build_app
from gateway.config import load_settings
from tests.conftest import ECHO_CATALOG, LOG_LINES, FakeClock, GatewayFactory, sse_events
from tests.failover.test_scenarios import ASK, complete_text, gateway, models_seen
from tests.fakes.upstream import FakeUpstream, chunk, hang, ok, pause, status, stream
from tests.test_routing import router

QUOTA = status(429, {"error": {"message": "You exceeded your current quota", "type": "insufficient_quota",
                               "code": "insufficient_quota", "param": None}})


@pytest.mark.parametrize("stream_mode", [False, True])
@pytest.mark.parametrize("reply", [status(402), QUOTA, status(501), status(505)], ids=["402", "quota", "501", "505"])
async def test_out_of_credit_and_unsupported_move_on_without_retry(
    start_gateway: GatewayFactory, stream_mode: bool, reply: Any
) -> None:
    async with FakeUpstream() as up:
        up.script(reply, ok("from m2"))
        gw = await gateway(start_gateway, up)
        assert (await complete_text(gw, "pair", stream_mode))[:2] == (200, "from m2")
        assert models_seen(up) == ["m1", "m2"], "not retried on the same target"


async def test_out_of_credit_counts_against_the_circuit(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.script(status(402), ok(), status(402), ok())
        gw = await gateway(start_gateway, up, breaker={"failures": 2, "cooldown": 60})
        for _ in range(2):
            assert (await complete_text(gw, "pair", False))[0] == 200
        assert gw.app.health.state("acme/m1").name == "OPEN"


async def test_an_error_inside_a_200_stream_is_classified_by_its_code(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        slow_down = {"message": "slow down", "type": "rate_limit_error", "code": "rate_limit_exceeded"}
        limited = stream([chunk(role="assistant", content=""), {"error": slow_down}])
        too_long = stream([{"error": {"message": "too long", "type": "invalid_request_error",
                                      "code": "context_length_exceeded"}}])
        up.script(limited, ok("retried"), too_long, ok("big one"))
        gw = await gateway(start_gateway, up)
        assert (await complete_text(gw, "pair", True))[:2] == (200, "retried")
        assert models_seen(up) == ["m1", "m1"], "a rate limit is retried on the same target, not a generic 5xx"
        up.reset_log()
        assert (await complete_text(gw, "ctx", True))[:2] == (200, "big one")
        assert models_seen(up) == ["m1", "big"], "context length: only a larger window is tried"


async def test_a_provider_total_timeout_is_honoured(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.default = hang()
        gw = await gateway(start_gateway, up, timeouts={"first_byte": 5, "response": 5, "total": 30},
                           providers={"acme": {"timeouts": {"total": 0.5}}})
        started = time.monotonic()
        response = await gw.chat({"model": "acme/m1", **ASK})
        assert response.status_code == 504
        assert time.monotonic() - started < 3


async def test_client_deadlines_never_open_the_upstreams_circuit(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.default = hang()
        gw = await gateway(start_gateway, up, breaker={"failures": 2, "cooldown": 60})
        for _ in range(5):
            response = await gw.chat({"model": "acme/m1", **ASK}, headers={"x-gateway-timeout": "0.000001"})
            assert response.status_code == 504
        assert gw.app.health.state("acme/m1").name == "CLOSED", "the client's own deadline says nothing of m1"


async def test_every_target_open_sheds_load_with_one_probe(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.default = hang()
        clock = FakeClock()
        gw = await gateway(start_gateway, up, clock=clock, breaker={"failures": 1, "cooldown": 60},
                           timeouts={"first_byte": 0.5, "response": 0.5, "total": 5})
        health = gw.app.health
        for key in ("acme/m1", "acme/m2"):
            ticket = health.admit(key)
            assert ticket is not None
            health.failed(ticket)
        clock.advance(10)
        started = time.monotonic()
        responses = await asyncio.gather(*(gw.chat({"model": "pair", **ASK}) for _ in range(6)))
        shed = [r for r in responses if r.status_code == 503]
        assert len(up.received) == 1, "exactly one probe reaches the upstream"
        assert len(shed) == 5
        assert all(r.headers["retry-after"] == "50" for r in shed), "Retry-After is the remaining cooldown"
        assert all(r.json()["error"]["code"] == "circuit_open" for r in shed)
        assert max(r.elapsed.total_seconds() for r in shed) < 0.5 or time.monotonic() - started < 3


async def test_open_turns_half_open_by_time_for_the_gauges(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        clock = FakeClock()
        gw = await gateway(start_gateway, up, clock=clock, breaker={"failures": 1, "cooldown": 60})
        ticket = gw.app.health.admit("acme/m2")
        assert ticket is not None
        gw.app.health.failed(ticket)
        scraped = (await gw.client.get("/metrics")).text
        assert 'gateway_circuit_state{provider="acme",upstream_model="m2"} 2.0' in scraped
        clock.advance(61)  # nobody asks for m2 meanwhile
        scraped = (await gw.client.get("/metrics")).text
        assert 'gateway_circuit_state{provider="acme",upstream_model="m2"} 1.0' in scraped


def test_circuits_and_latencies_survive_a_reload(tmp_path: Any) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"catalog: [{ECHO_CATALOG}]\nmodels:\n  first:\n    targets: [echo/echo]\n")
    app = build_app(load_settings(path, {}), {})
    health = app.health
    ticket = health.admit("echo/echo")
    assert ticket is not None
    for _ in range(10):
        health.failed(ticket)
    health.latency.observe("echo/echo", 0.2)
    path.write_text(f"catalog: [{ECHO_CATALOG}]\nmodels:\n  second:\n    targets: [echo/echo]\n")
    assert app.reload() is True
    assert app.health is health and app.runtime.health is health
    assert health.state("echo/echo").name == "OPEN" and health.latency.get("echo/echo") == 0.2


def test_latency_strategy_explores_a_target_not_yet_measured() -> None:
    r = router({"l": {"strategy": "latency", "targets": ["acme/a", "acme/b"]}})
    r._rng = random.Random(7)
    r.latency.observe("acme/a", 0.5)  # b has never succeeded (it may have failed every time)
    firsts = [r.resolve("l").targets[0].key for _ in range(400)]
    explored = firsts.count("acme/b")
    assert 0 < explored < 100, f"b first in {explored} of 400: explored now and then, not ranked first forever"


@pytest.mark.parametrize("stream_mode", [False, True])
async def test_a_chunk_with_a_non_object_choice_is_a_malformed_answer(
    start_gateway: GatewayFactory, stream_mode: bool
) -> None:
    async with FakeUpstream() as up:
        bad_stream = stream([{"id": "x", "object": "chat.completion.chunk", "choices": [1]}])
        bad_whole = status(200, {"id": "x", "object": "chat.completion", "choices": [1]})
        up.script(bad_stream if stream_mode else bad_whole, ok("m2 ok"))
        gw = await gateway(start_gateway, up)
        assert (await complete_text(gw, "pair", stream_mode))[:2] == (200, "m2 ok")
        assert models_seen(up) == ["m1", "m2"]


@pytest.mark.parametrize("stream_mode", [False, True])
async def test_usage_with_a_count_that_is_not_a_number_keeps_the_log_line(
    start_gateway: GatewayFactory, stream_mode: bool
) -> None:
    async with FakeUpstream() as up:
        up.default = ok("fine", usage={"prompt_tokens": "abc", "completion_tokens": 3, "total_tokens": "x"})
        gw = await gateway(start_gateway, up)
        response = await gw.chat({"model": "acme/m1", "stream": stream_mode, **ASK},
                                 headers={"x-request-id": f"bad-usage-{stream_mode}"})
        assert response.status_code == 200
        lines = [json.loads(line.split(" ", 2)[2]) for line in LOG_LINES
                 if "gateway.access" in line and f"bad-usage-{stream_mode}" in line]
        assert len(lines) == 1 and lines[0]["input_tokens"] == 0 and lines[0]["output_tokens"] == 3
        scraped = (await gw.client.get("/metrics")).text
        assert 'type="output"' in scraped and "upstream_model=\"m1\"" in scraped


@pytest.mark.parametrize("delta", [{"function_call": {"name": "f", "arguments": ""}},
                                   {"audio": {"id": "audio_1", "data": "AAAA", "transcript": "hi"}}],
                         ids=["function_call", "audio"])
async def test_legacy_function_calls_and_audio_are_content(start_gateway: GatewayFactory, delta: Any) -> None:
    async with FakeUpstream() as up:
        first = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m1",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        up.script(stream([chunk(role="assistant"), first, pause(0.6), chunk(finish_reason="stop")]))
        gw = await gateway(start_gateway, up, timeouts={"first_token": 0.3, "idle": 2, "total": 5})
        response = await gw.chat({"model": "acme/m1", "stream": True, **ASK})
        assert response.status_code == 200, "committed at the first content, not held until the end"
        events = sse_events(response.text)
        assert events[-1] == "[DONE]"
        assert any(orjson.loads(e)["choices"][0]["delta"] == delta for e in events[:-1]
                   if orjson.loads(e).get("choices"))
