"""Reads of plain deltas taken as they arrive (relay.stream._taker): written to the client's connection from the
upstream connection's callback, without the relay's task. Driven through relay() over a real HTTP answer from
a scripted server on 127.0.0.1 (tests/upstream/test_transport_chunked.py's), with the client's writer a list:
each event is written by the server only once the one before it reached the client, so every event is its
own read arriving while the relay waits."""

from __future__ import annotations

import asyncio
import time

import orjson

from gateway.errors import UpstreamError
from gateway.relay.sse import EventSplitter
from gateway.relay.stream import Part, RelayResult, relay
from gateway.relay.transcript import Transcript
from gateway.upstream.secrets import Secrets
from gateway.upstream.transport import Transport
from tests.upstream import conftest as upstream_tests
from tests.upstream import test_transport_chunked as chunked_tests
from tests.upstream.test_transport_chunked import _HEAD, Script, _chunk, _send

server, transport = chunked_tests.server, upstream_tests.transport  # their fixtures, used here

SECRET = "sk-upstream-secret-0123456789"
WORDS = ["one", " two", f" {SECRET}", " four", " five"]


def _event(delta: dict[str, str], finish: str | None = None) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": "m",
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


class _Ended:
    """Segments that end the stream after its one part."""

    error: UpstreamError | None = None

    async def ended(self, error: UpstreamError | None) -> bytes:
        self.error = error
        return b""

    def cut(self) -> bytes | None:
        return None

    def close(self) -> None:
        pass


async def test_plain_reads_go_out_as_they_arrive_unless_the_client_connection_refuses_one(
        server: tuple[str, list[Script], list[int]], transport: Transport) -> None:
    """The client's connection refuses the third word (it reads slower than the gateway writes): that read
    goes through the relay, and the reads after it are taken again."""
    base, scripts, _ = server
    events = [_event({"role": "assistant", "content": ""}), *(_event({"content": w}) for w in WORDS),
              _event({}, "stop"), b"data: [DONE]\n\n"]
    steps = [asyncio.Event() for _ in events[1:]]
    script: Script = [_HEAD + _chunk(events[0])]
    for event, step in zip(events[1:], steps, strict=True):
        script += [step, _chunk(event)]
    scripts.append([*script, b"0\r\n\r\n"])
    response = await _send(transport, base)
    first = await response.read_chunk()
    response.set_read_timeout(5)
    splitter = EventSplitter()
    result, transcript = RelayResult(), Transcript()
    client: list[bytes] = []  # what reached the client, in order
    taken: list[bytes] = []  # of which written from the callback
    refused = events[3].replace(SECRET.encode(), b"***")

    def reached(piece: bytes) -> None:
        client.append(piece)
        if len(client) <= len(steps):
            steps[len(client) - 1].set()  # the server writes the next event

    def write(piece: bytes) -> bool:
        if piece == refused and refused not in client:
            return False
        reached(piece)
        taken.append(piece)
        return True

    part = Part(response, splitter, splitter.feed(first), idle=5, secrets=Secrets([SECRET]))
    ended = _Ended()
    async with asyncio.timeout(10):
        async for piece in relay(part, wants_usage=False, expires=time.monotonic() + 30, result=result,
                                 transcript=transcript, segments=ended):
            result.write = write  # the stream has started: the pipeline hands over its writer
            reached(piece)
    expected = [e.replace(SECRET.encode(), b"***") for e in events]
    assert b"".join(client) == b"".join(expected), "every event once, in order, the secret masked"
    assert taken == expected[1:3] + expected[4:6], "the words before the refusal and after it"
    assert ended.error is None
    assert result.chunks == 7 and result.finished
    assert transcript.text == "".join(WORDS), "the text taken is the transcript's for a continuation"
