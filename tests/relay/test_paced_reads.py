"""A stream whose events arrive one read at a time (a real model's pace), through the gateway.

Each such read of plain deltas goes out as it was read (relay.stream, chunk.read_runs): these
check that nothing the slow path did is lost on the way: every delta in order, the upstream's
secrets masked, the finish and usage still found, and the unread text still there for a
continuation after a cut. The fake upstream pauses between events so they arrive apart; what is
asserted holds however the reads fall.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import orjson

from gateway.relay.stream import translate_events
from tests.conftest import GatewayFactory, sse_events
from tests.failover.test_continuation import TEXT, prefill_of, read_stream
from tests.failover.test_scenarios import ASK, SECRET, gateway
from tests.fakes.upstream import FakeUpstream, chunk, cut, gate, ok, pause, stream

USAGE = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def paced(*events: object) -> list[object]:
    out: list[object] = []
    for event in events:
        out += [event, pause(0.02)]
    return out


async def test_paced_plain_deltas_reach_the_client_masked_with_finish_and_usage(
        start_gateway: GatewayFactory) -> None:
    words = ["Hel", "lo ", f"key {SECRET} ", "there"]
    async with FakeUpstream() as up:
        up.script(stream(paced(chunk(role="assistant", content=""), *(chunk(content=w) for w in words),
                               chunk(finish_reason="stop"), {"choices": [], "usage": USAGE})))
        gw = await gateway(start_gateway, up)
        response = await gw.chat({"model": "acme/m1", "stream": True, "stream_options": {"include_usage": True},
                                  **ASK})
        assert response.status_code == 200
        assert SECRET not in response.text, "a secret in a delta sent as read is masked all the same"
        events = sse_events(response.text)
        assert events[-1] == "[DONE]"
        chunks = [orjson.loads(e) for e in events[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        assert text == "Hello key *** there"
        assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["usage"] == USAGE


async def test_a_paced_stream_cut_after_plain_reads_continues_from_the_text_sent(
        start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.script(stream(paced(chunk(role="assistant", content=""), chunk(content="one"), chunk(content=" two"),
                               cut()), done=False),
                  ok(TEXT))
        gw = await gateway(start_gateway, up)
        text, _, events = await read_stream(gw)
        assert prefill_of(up, 1) == "one two", "the continuation was given the text of the unread reads"
        assert text == TEXT and events[-1] == "[DONE]"


async def test_reads_apart_reach_the_client_one_by_one_and_count_for_a_continuation(
        start_gateway: GatewayFactory) -> None:
    """Each word is written by the upstream only once the client has read the one before it: every read of
    a plain delta is relayed as it arrives (from the upstream connection's callback, relay.stream._taker),
    and what those reads carried is the continuation's prefill and the cut attempt's estimated usage."""
    read = [asyncio.Event() for _ in range(3)]
    async with FakeUpstream() as up:
        up.script(stream([chunk(role="assistant", content=""), chunk(content="one"), gate(read[0]),
                          chunk(content=" two"), gate(read[1]), chunk(content=" three"), gate(read[2]), cut()],
                         done=False),
                  ok(TEXT))
        gw = await gateway(start_gateway, up)
        chunks: list[dict[str, object]] = []
        body = {"model": "pair", "stream": True, "stream_options": {"include_usage": True}, **ASK}
        async with gw.client.stream("POST", "/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: {"):
                    chunks.append(orjson.loads(line[6:]))
                    words = sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content"))
                    if 0 < words <= 3:
                        read[words - 1].set()
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == TEXT
    assert prefill_of(up, 1) == "one two three", "the continuation was given the text of the reads relayed"
    first = chunks[-1]["x_gateway"]["attempts"][0]
    assert first["estimated"] is True and first["usage"]["completion_tokens"] == 4, "role chunk and three words"


async def test_translated_pieces_are_split_into_the_same_events_however_they_come() -> None:
    async def pieces() -> AsyncGenerator[bytes, None]:
        for piece in (b"data: a\n\ndata: b\n\n", b"data: c", b"\n\ndata: d\n\n", b"data: e\r\n\r\n", b"data: f\n\n"):
            yield piece

    out = [piece async for piece in translate_events(pieces(), lambda event: [event + b"|"])]
    assert out == [b"data: a|data: b|", b"data: c|data: d|", b"data: e|", b"data: f|"]
