"""Failure scenarios against a fault-injecting upstream on loopback, streamed and not.

Each test asserts what the client got (a complete answer or a clean error, never a truncated
success), what the upstream saw (attempts, their order and spacing), and that it ended well
inside its deadline.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from tests.conftest import FAST_POLICY, FakeClock, GatewayFactory, RunningGateway, model_json, provider_json, sse_events
from tests.fakes.upstream import (
    FakeUpstream,
    chunk,
    content_policy,
    context_length_exceeded,
    cut_after,
    hang,
    ok,
    pause,
    rate_limited,
    reset,
    server_error,
    slow_first_token,
    stall,
    status,
    stream,
    stream_without_done,
)

SECRET = "sk-acme-secret-abcdef0123456789"
ASK = {"messages": [{"role": "user", "content": "hi"}]}


async def gateway(start_gateway: GatewayFactory, up: FakeUpstream, clock: FakeClock | None = None,
                  **config: Any) -> RunningGateway:
    models = [model_json("m1", context=8000), model_json("m2", context=8000), model_json("big", context=200000)]
    policy = {**FAST_POLICY, **config}
    aliases = {"pair": {"targets": ["acme/m1"], "fallbacks": ["acme/m2"]},
               "ctx": {"targets": ["acme/m1"], "fallbacks": ["acme/m2", "acme/big"]}}
    policy.setdefault("models", aliases)
    return await start_gateway(policy, catalogs=[provider_json("acme", up.base_url, models)],
                               environ={"ACME_API_KEY": SECRET}, clock=clock)


def models_seen(up: FakeUpstream) -> list[str]:
    return [r.json["model"] for r in up.received if r.json]


async def complete_text(gw: RunningGateway, model: str, stream_mode: bool) -> tuple[int, str, Any]:
    """Status, the answer's text, and the response (for headers); always well inside the 5 s deadline."""
    started = time.monotonic()
    response = await gw.chat({"model": model, "stream": stream_mode, **ASK})
    assert time.monotonic() - started < FAST_POLICY["timeouts"]["total"]
    if response.status_code != 200:
        return response.status_code, "", response
    if not stream_mode:
        return 200, response.json()["choices"][0]["message"]["content"], response
    events = sse_events(response.text)
    assert events[-1] == "[DONE]", events
    text = "".join((orjson.loads(e)["choices"] or [{}])[0].get("delta", {}).get("content") or ""
                   for e in events[:-1])
    return 200, text, response


@pytest.mark.parametrize("stream_mode", [False, True])
async def test_429_with_retry_after_is_honoured(start_gateway: GatewayFactory, stream_mode: bool) -> None:
    async with FakeUpstream() as up:
        up.script(rate_limited(retry_after_ms=300), ok("fine"))
        gw = await gateway(start_gateway, up)
        code, text, response = await complete_text(gw, "pair", stream_mode)
        assert (code, text) == (200, "fine")
        assert models_seen(up) == ["m1", "m1"]
        assert up.received[1].at - up.received[0].at >= 0.3, "waited as long as the upstream asked"
        assert response.headers["x-gateway-attempts"] == "2" and response.headers["x-gateway-fallbacks"] == "0"


async def test_429_retry_after_longer_than_allowed_skips_to_the_fallback(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.script(rate_limited(retry_after=120), ok("from m2"))
        gw = await gateway(start_gateway, up)
        started = time.monotonic()
        code, text, response = await complete_text(gw, "pair", False)
        assert (code, text) == (200, "from m2")
        assert models_seen(up) == ["m1", "m2"]
        assert time.monotonic() - started < 5
        assert response.headers["x-gateway-fallbacks"] == "1"


@pytest.mark.parametrize("stream_mode", [False, True])
async def test_429_without_retry_after_backs_off_then_falls_back(
    start_gateway: GatewayFactory, stream_mode: bool
) -> None:
    async with FakeUpstream() as up:
        up.script(rate_limited(), rate_limited(), rate_limited(), ok("m2 answers"))
        gw = await gateway(start_gateway, up)
        code, text, response = await complete_text(gw, "pair", stream_mode)
        assert (code, text) == (200, "m2 answers")
        assert models_seen(up) == ["m1", "m1", "m1", "m2"]
        assert response.headers["x-gateway-attempts"] == "4"
        assert response.headers["x-gateway-model"] == "acme/m2"


async def test_every_target_rate_limited_passes_429_and_retry_after_on(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.default = rate_limited(retry_after=0.01)
        gw = await gateway(start_gateway, up)
        response = await gw.chat({"model": "pair", **ASK})
        assert response.status_code == 429
        assert response.headers["retry-after"] == "1"
        message = response.json()["error"]["message"]
        assert "acme/m1" in message and "acme/m2" in message and SECRET not in message


@pytest.mark.parametrize("stream_mode", [False, True])
async def test_500_once_then_healthy(start_gateway: GatewayFactory, stream_mode: bool) -> None:
    async with FakeUpstream() as up:
        up.script(server_error(500), ok("recovered"))
        gw = await gateway(start_gateway, up)
        assert (await complete_text(gw, "acme/m1", stream_mode))[:2] == (200, "recovered")
        assert models_seen(up) == ["m1", "m1"]


@pytest.mark.parametrize("stream_mode", [False, True])
async def test_503_persistent_everywhere_is_a_502_listing_each_target(
    start_gateway: GatewayFactory, stream_mode: bool
) -> None:
    async with FakeUpstream() as up:
        up.default = server_error(503)
        gw = await gateway(start_gateway, up)
        response = await gw.chat({"model": "pair", "stream": stream_mode, **ASK})
        assert response.status_code == 502
        error = response.json()["error"]
        assert "acme/m1" in error["message"] and "acme/m2" in error["message"] and "3 attempts" in error["message"]
        assert models_seen(up) == ["m1"] * 3 + ["m2"] * 3
        assert SECRET not in response.text


@pytest.mark.parametrize("stream_mode", [False, True])
async def test_reset_before_headers_is_retried(start_gateway: GatewayFactory, stream_mode: bool) -> None:
    async with FakeUpstream() as up:
        up.script(reset(), ok("after reset"))
        gw = await gateway(start_gateway, up)
        assert (await complete_text(gw, "acme/m1", stream_mode))[:2] == (200, "after reset")
        assert models_seen(up) == ["m1", "m1"]


@pytest.mark.parametrize("stream_mode", [False, True])
async def test_silent_upstream_is_not_retried_and_falls_back(
    start_gateway: GatewayFactory, stream_mode: bool
) -> None:
    async with FakeUpstream() as up:
        up.script(hang(), ok("m2 fast"))
        gw = await gateway(start_gateway, up, timeouts={"first_byte": 0.3, "response": 0.3, "total": 5})
        started = time.monotonic()
        code, text, _ = await complete_text(gw, "pair", stream_mode)
        assert (code, text) == (200, "m2 fast")
        assert models_seen(up) == ["m1", "m2"], "a silent route is tried once"
        assert time.monotonic() - started < 3


async def test_slow_first_token_fails_over_before_anything_is_sent(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.script(slow_first_token(3, text="too late"), ok("m2 in time"))
        gw = await gateway(start_gateway, up, timeouts={"first_token": 0.3, "total": 5})
        code, text, _ = await complete_text(gw, "pair", True)
        assert (code, text) == (200, "m2 in time"), "the held-back role chunk of m1 must not reach the client"
        assert models_seen(up) == ["m1", "m2"]


async def test_stream_cut_mid_answer_without_recovery_ends_with_an_error_event(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.script(cut_after(2, "one two three four"))
        gw = await gateway(start_gateway, up, stream_recovery="off")
        response = await gw.chat({"model": "pair", "stream": True, **ASK})
        events = sse_events(response.text)
        assert "[DONE]" not in events
        assert events[-2] == "event:error"
        assert orjson.loads(events[-1])["error"]["code"] == "upstream_stream_cut"
        assert models_seen(up) == ["m1"], "after content was sent there is no failing over"


async def test_stream_stall_after_content_without_recovery_ends_with_an_error_event(
    start_gateway: GatewayFactory,
) -> None:
    async with FakeUpstream() as up:
        up.script(stream([chunk(role="assistant", content=""), chunk(content="partial"), stall()], done=False))
        gw = await gateway(start_gateway, up, timeouts={"idle": 0.3, "total": 5}, stream_recovery="off")
        started = time.monotonic()
        response = await gw.chat({"model": "acme/m1", "stream": True, **ASK})
        events = sse_events(response.text)
        assert "[DONE]" not in events and events[-2] == "event:error"
        assert orjson.loads(events[-1])["error"]["code"] == "upstream_timeout"
        assert time.monotonic() - started < 3
        await up.wait_disconnect(timeout=5)



async def test_a_stream_longer_than_idle_whose_chunks_come_sooner_completes(start_gateway: GatewayFactory) -> None:
    """The idle bound is per silence, not per stream: eight pauses of a third of it each, in one stream
    that lasts longer than it, and no timeout (the watch looks every quarter of the bound)."""
    async with FakeUpstream() as up:
        events: list[Any] = [chunk(role="assistant", content="")]
        for n in range(8):
            events += [pause(0.1), chunk(content=f"w{n} ")]
        up.script(stream([*events, chunk(finish_reason="stop")]))
        gw = await gateway(start_gateway, up, timeouts={"idle": 0.3, "total": 10}, stream_recovery="off")
        response = await gw.chat({"model": "acme/m1", "stream": True, **ASK})
        events_out = sse_events(response.text)
        assert events_out[-1] == "[DONE]"
        assert "".join(orjson.loads(e)["choices"][0]["delta"].get("content", "") for e in events_out[:-1]
                       if e.startswith("{")) == "".join(f"w{n} " for n in range(8))


async def test_a_client_slower_than_idle_is_not_an_upstream_stall(start_gateway: GatewayFactory) -> None:
    """A client that stops reading makes the gateway stop reading the upstream (backpressure): the
    bytes waiting unread say the upstream is alive, so the idle bound does not cut the stream."""
    async with FakeUpstream() as up:
        big = "x" * 16384
        up.script(stream([chunk(role="assistant", content=""), *(chunk(content=big) for _ in range(400)),
                          chunk(finish_reason="stop")]))
        gw = await gateway(start_gateway, up, timeouts={"idle": 0.3, "total": 20}, stream_recovery="off")
        async with gw.client.stream("POST", "/v1/chat/completions",
                                    json={"model": "acme/m1", "stream": True, **ASK}) as response:
            pieces = response.aiter_bytes()
            first = await anext(pieces)
            await asyncio.sleep(1.0)  # the client being slow (over three idle bounds), not a synchronisation
            body = first + b"".join([piece async for piece in pieces])
        events_out = sse_events(body.decode())
        assert events_out[-1] == "[DONE]" and "event:error" not in events_out
        assert sum(len(orjson.loads(e)["choices"][0]["delta"].get("content", "")) for e in events_out[:-1]
                   if e.startswith("{")) == 400 * 16384


async def test_malformed_chunk_after_content_without_recovery_ends_with_an_error_event(
    start_gateway: GatewayFactory,
) -> None:
    async with FakeUpstream() as up:
        up.script(stream([chunk(role="assistant", content=""), chunk(content="ok so far"), b"data: {nope\n\n"]))
        gw = await gateway(start_gateway, up, stream_recovery="off")
        response = await gw.chat({"model": "acme/m1", "stream": True, **ASK})
        events = sse_events(response.text)
        assert "[DONE]" not in events and events[-2] == "event:error"
        assert orjson.loads(events[-1])["error"]["code"] == "upstream_malformed"


async def test_malformed_chunk_before_content_fails_over(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.script(stream([chunk(role="assistant", content=""), b"data: {nope\n\n"]), ok("clean"))
        gw = await gateway(start_gateway, up)
        assert (await complete_text(gw, "pair", True))[:2] == (200, "clean")
        assert models_seen(up) == ["m1", "m2"]


async def test_stream_without_done_is_finalised_with_usage(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.script(stream_without_done("all of it"))
        gw = await gateway(start_gateway, up)
        response = await gw.chat({"model": "acme/m1", "stream": True, "stream_options": {"include_usage": True}, **ASK})
        events = sse_events(response.text)
        assert events[-1] == "[DONE]"
        assert orjson.loads(events[-2])["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize("stream_mode", [False, True])
async def test_context_length_exceeded_goes_only_to_a_larger_context(
    start_gateway: GatewayFactory, stream_mode: bool
) -> None:
    async with FakeUpstream() as up:
        up.script(context_length_exceeded(), ok("big model"))
        gw = await gateway(start_gateway, up)
        code, text, response = await complete_text(gw, "ctx", stream_mode)
        assert (code, text) == (200, "big model")
        assert models_seen(up) == ["m1", "big"], "m2 has the same window as m1: skipped"
        assert response.headers["x-gateway-model"] == "acme/big"


async def test_prompt_larger_than_a_window_skips_that_target(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        gw = await gateway(start_gateway, up)
        long_prompt = {"messages": [{"role": "user", "content": "word " * 12000}]}
        response = await gw.chat({"model": "ctx", **long_prompt})
        assert response.status_code == 200
        assert models_seen(up) == ["big"]


@pytest.mark.parametrize("stream_mode", [False, True])
async def test_content_policy_rejection_is_returned_as_is(start_gateway: GatewayFactory, stream_mode: bool) -> None:
    async with FakeUpstream() as up:
        up.script(content_policy())
        gw = await gateway(start_gateway, up)
        response = await gw.chat({"model": "pair", "stream": stream_mode, **ASK})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "content_policy_violation"
        assert models_seen(up) == ["m1"]


async def test_upstream_auth_failure_moves_on_without_retry(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.script(status(401), ok("m2"))
        gw = await gateway(start_gateway, up)
        assert (await complete_text(gw, "pair", False))[:2] == (200, "m2")
        assert models_seen(up) == ["m1", "m2"]


async def test_client_models_list_sets_the_order(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.script(server_error(503), server_error(503), server_error(503), ok("from m1"))
        gw = await gateway(start_gateway, up)
        response = await gw.chat({"model": "acme/m2", "models": ["acme/m2", "acme/m1"], **ASK})
        assert response.status_code == 200
        assert models_seen(up) == ["m2", "m2", "m2", "m1"]
        assert "models" not in up.received[-1].json


async def test_deadline_bounds_every_retry_and_fallback(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.default = hang()
        gw = await gateway(start_gateway, up, timeouts={"first_byte": 5, "response": 5, "total": 10})
        started = time.monotonic()
        response = await gw.chat({"model": "pair", **ASK}, headers={"x-gateway-timeout": "0.5"})
        elapsed = time.monotonic() - started
        assert response.status_code == 504
        assert elapsed < 3, elapsed


@pytest.mark.parametrize("stream_mode", [False, True])
async def test_breaker_opens_probes_and_closes(start_gateway: GatewayFactory, stream_mode: bool) -> None:
    async with FakeUpstream() as up:
        clock = FakeClock()
        gw = await gateway(start_gateway, up, clock=clock, retry={"attempts": 1, "backoff_initial": 0.01},
                           breaker={"failures": 2, "cooldown": 60})
        up.script(server_error(503), ok("m2"), server_error(503), ok("m2"))
        for _ in range(2):
            assert (await complete_text(gw, "pair", stream_mode))[:2] == (200, "m2")
        assert models_seen(up) == ["m1", "m2", "m1", "m2"]
        health = gw.app.health
        assert health.state("acme/m1").name == "OPEN"

        up.reset_log()
        assert (await complete_text(gw, "pair", stream_mode))[:2] == (200, "Hello from upstream")
        assert models_seen(up) == ["m2"], "an open circuit is skipped without a request"

        clock.advance(60)  # the cooldown has passed
        up.reset_log()
        assert (await complete_text(gw, "pair", stream_mode))[:2] == (200, "Hello from upstream")
        assert models_seen(up) == ["m1"], "one probe goes to the recovered primary"
        assert health.state("acme/m1").name == "CLOSED", "a successful probe (streamed or not) closes it"


async def test_all_circuits_open_tries_the_one_that_recovers_first(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        clock = FakeClock()
        gw = await gateway(start_gateway, up, clock=clock, breaker={"failures": 1, "cooldown": 60})
        health = gw.app.health
        for key in ("acme/m1", "acme/m2"):
            ticket = health.admit(key)
            assert ticket is not None
            health.failed(ticket)
            clock.advance(10)  # m1 failed first, so it recovers first
        response = await gw.chat({"model": "pair", **ASK})
        assert response.status_code == 200
        assert models_seen(up) == ["m1"]


async def test_streams_cut_after_content_count_against_the_target(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.script(cut_after(1, "one two"), cut_after(1, "one two"))
        gw = await gateway(start_gateway, up, breaker={"failures": 2, "cooldown": 60}, stream_recovery="off")
        for _ in range(2):
            events = sse_events((await gw.chat({"model": "pair", "stream": True, **ASK})).text)
            assert events[-2] == "event:error"
        assert gw.app.health.state("acme/m1").name == "OPEN"
        up.reset_log()
        assert (await complete_text(gw, "pair", True))[:2] == (200, "Hello from upstream")
        assert models_seen(up) == ["m2"]
