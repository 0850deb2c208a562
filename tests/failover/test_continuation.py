"""Mid-stream continuation: a stream that breaks after content goes on from another attempt.

Through the fault-injecting fake upstream: what the client reads must be the whole answer exactly
once (or a clean SSE error with nothing spliced), under one chunk id and model, with usage summed.
The fake upstream behaves like a model given a prefill: it answers only what follows it.
"""

from __future__ import annotations

from typing import Any

import orjson

from tests.conftest import GatewayFactory, RunningGateway, sse_events
from tests.failover.test_scenarios import ASK, gateway, models_seen
from tests.fakes.upstream import (
    FakeUpstream,
    chunk,
    cut,
    cut_after,
    ok,
    server_error,
    stall,
    status,
    stream,
)

TEXT = "one two three four five six"
PREFILL_REFUSED = status(400, {"error": {"message": "assistant prefill is not supported by this model",
                                         "type": "invalid_request_error", "code": None, "param": "messages"}})


async def read_stream(
    gw: RunningGateway, model: str = "pair", **extra: Any
) -> tuple[str, list[dict[str, Any]], list[str]]:
    """The text the client read, its data chunks, and the raw event list."""
    response = await gw.chat({"model": model, "stream": True, **ASK, **extra})
    assert response.status_code == 200
    events = sse_events(response.text)
    chunks = [orjson.loads(e) for e in events if e.startswith("{")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    return text, chunks, events


def prefill_of(up: FakeUpstream, index: int) -> str | None:
    last = up.received[index].json["messages"][-1]
    return last["content"] if last["role"] == "assistant" else None


async def test_a_cut_stream_continues_from_a_prefill_capable_fallback(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        # m1 breaks after two words, refuses its own continuation with a 503; m2 continues the text.
        up.script(cut_after(2, TEXT), server_error(503), ok(TEXT, model="m2-upstream"))
        gw = await gateway(start_gateway, up)
        text, chunks, events = await read_stream(gw, stream_options={"include_usage": True})
        assert text == TEXT, "the whole answer, exactly once"
        assert events[-1] == "[DONE]" and "event:error" not in events
        assert models_seen(up) == ["m1", "m1", "m2"]
        assert prefill_of(up, 2) == "one two", "the fallback was given the delivered text to continue"
        assert {c["id"] for c in chunks} == {"chatcmpl-fake"} and {c["model"] for c in chunks} == {"m1"}, \
            "the client keeps seeing the chunk id and model it started with"
        final = chunks[-1]
        assert final["choices"] == []
        attempts = final["x_gateway"]["attempts"]
        assert [(a["target"], a["mode"]) for a in attempts] == [("acme/m1", "stream"), ("acme/m2", "prefill")]
        assert attempts[0]["estimated"] is True and attempts[1]["usage"]["completion_tokens"] == 4
        assert final["usage"]["completion_tokens"] == attempts[0]["usage"]["completion_tokens"] + 4, \
            "usage is the sum of every attempt"
        assert final["usage"]["prompt_tokens"] == attempts[0]["usage"]["prompt_tokens"] + 5


async def test_a_target_that_refuses_prefill_replays_and_continues(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.script(cut_after(2, TEXT), PREFILL_REFUSED, ok(TEXT))
        gw = await gateway(start_gateway, up)
        text, chunks, events = await read_stream(gw)
        assert text == TEXT and events[-1] == "[DONE]"
        assert models_seen(up) == ["m1", "m1", "m1"]
        assert prefill_of(up, 1) == "one two" and prefill_of(up, 2) is None, "refused prefill, then a replay"
        assert "usage" not in chunks[-1], "the client did not ask for usage"
        assert [a["mode"] for a in chunks[-1]["x_gateway"]["attempts"]] == ["stream", "replay"]
        assert "acme/m1" in gw.app.health.no_prefill

        up.reset_log()
        up.script(cut_after(3, TEXT), ok(TEXT))
        text, _, _ = await read_stream(gw)
        assert text == TEXT
        assert prefill_of(up, 1) is None, "the refusal is remembered: straight to a replay"


async def test_a_replay_that_differs_ends_with_an_error_and_splices_nothing(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.script(cut_after(2, TEXT), PREFILL_REFUSED, ok("one too many words here"))
        gw = await gateway(start_gateway, up)
        text, _, events = await read_stream(gw)
        assert text == "one two", "nothing of the different answer reaches the client"
        assert "[DONE]" not in events and events[-2] == "event:error"
        assert orjson.loads(events[-1])["error"]["code"] == "upstream_stream_cut"
        assert len(up.received) == 3, "no further attempt after a divergent replay"


async def test_a_stall_after_content_continues(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.script(stream([chunk(role="assistant", content=""), chunk(content="one"), chunk(content=" two"), stall()],
                         done=False), ok(TEXT))
        gw = await gateway(start_gateway, up, timeouts={"idle": 0.3, "first_token": 1, "total": 5})
        text, _, events = await read_stream(gw)
        assert text == TEXT and events[-1] == "[DONE]"
        assert prefill_of(up, 1) == "one two"
        await up.wait_disconnect()


async def test_an_unparseable_event_after_content_is_a_break_that_continues(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        broken = stream([chunk(role="assistant", content=""), chunk(content="one"), chunk(content=" two"),
                         b"data: {nope\n\n", chunk(content=" three"), chunk(content=" four five six"),
                         chunk(finish_reason="stop")])
        up.script(broken, ok(TEXT))
        gw = await gateway(start_gateway, up)
        text, _, events = await read_stream(gw)
        assert text == TEXT, "the rest after the corrupt event comes from the continuation, once"
        assert events[-1] == "[DONE]"
        assert prefill_of(up, 1) == "one two"
        scraped = (await gw.client.get("/metrics")).text
        assert 'gateway_stream_events_dropped_total{provider="acme"} 1.0' in scraped


async def test_a_tool_call_cut_mid_arguments_ends_with_the_error(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": '}}
        up.script(stream([chunk(role="assistant", content=""), chunk(tool_calls=[call]), cut()]))
        gw = await gateway(start_gateway, up)
        _, _, events = await read_stream(gw)
        assert "[DONE]" not in events and events[-2] == "event:error"
        assert len(up.received) == 1, "a tool call is never continued"


async def test_continuation_is_off_per_alias(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.script(cut_after(2, TEXT))
        aliases = {"pair": {"targets": ["acme/m1"], "fallbacks": ["acme/m2"], "stream_recovery": "off"}}
        gw = await gateway(start_gateway, up, models=aliases)
        _, _, events = await read_stream(gw)
        assert events[-2] == "event:error" and len(up.received) == 1
