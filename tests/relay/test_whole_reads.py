"""A stream that arrives in one read (an unpaced upstream: the whole answer in one write), through
the gateway. The attempt holds that read as the runs the relay forwards (chunk.read_runs) instead
of splitting it into events: the client must get exactly what the same stream sent one event per
read gets, and a continuation after a cut the same text.
"""

from __future__ import annotations

from typing import Any

import orjson

from tests.conftest import GatewayFactory
from tests.failover.test_continuation import TEXT, prefill_of, read_stream
from tests.failover.test_scenarios import ASK, SECRET, gateway
from tests.fakes.upstream import FakeUpstream, chunk, cut, ok, pause, stream

USAGE = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def _bytes(*events: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(event) + b"\n\n" for event in events)


def _answer() -> list[dict[str, Any]]:
    words = ["Hel", "lo ", f"key {SECRET} ", '"usage" ', "there"]
    return [chunk(role="assistant", content=""), *(chunk(content=w) for w in words), chunk(finish_reason="stop"),
            chunk(usage=USAGE)]


async def _client_bytes(start_gateway: GatewayFactory, reply: Any, include_usage: bool) -> bytes:
    async with FakeUpstream() as up:
        up.script(reply)
        gw = await gateway(start_gateway, up)
        response = await gw.chat({"model": "acme/m1", "stream": True,
                                  "stream_options": {"include_usage": include_usage}, **ASK})
        assert response.status_code == 200
        return response.content


async def test_a_stream_in_one_read_reaches_the_client_as_it_does_one_event_per_read(
        start_gateway: GatewayFactory) -> None:
    events = _answer()
    for include_usage in (True, False):
        whole = await _client_bytes(start_gateway, stream([_bytes(*events) + b"data: [DONE]\n\n"], done=False),
                                    include_usage)
        paced = [item for event in events for item in (event, pause(0.01))]
        apart = await _client_bytes(start_gateway, stream(paced), include_usage)
        assert whole == apart
        assert SECRET.encode() not in whole and b"key ***" in whole
        assert (b'"usage":{' in whole) is include_usage, "the usage chunk dropped when the client did not ask"
        assert whole.endswith(b"data: [DONE]\n\n")


async def test_a_stream_cut_after_one_read_of_several_events_continues_from_the_text_sent(
        start_gateway: GatewayFactory) -> None:
    first = _bytes(chunk(role="assistant", content=""), chunk(content="one"), chunk(content=" two"))
    async with FakeUpstream() as up:
        up.script(stream([first, pause(0.02), cut()], done=False), ok(TEXT))
        gw = await gateway(start_gateway, up)
        text, _, events = await read_stream(gw)
        assert prefill_of(up, 1) == "one two", "the continuation was given the text of the held read"
        assert text == TEXT and events[-1] == "[DONE]"
