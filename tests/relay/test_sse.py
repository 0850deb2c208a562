"""SSE framing is pure: any chunking of the input gives the same events."""

from __future__ import annotations

import orjson
import pytest

from gateway.errors import UpstreamProtocolError
from gateway.relay.sse import EventSplitter, error_event, event_data, is_event_stream

STREAM = b'data: {"a":1}\n\n: keep-alive\n\ndata: {"b":2}\r\n\r\ndata: [DONE]\n\n'


def test_any_chunking_gives_the_same_events() -> None:
    expected = [b'data: {"a":1}', b": keep-alive", b'data: {"b":2}', b"data: [DONE]"]
    for size in (1, 2, 3, 7, len(STREAM)):
        splitter = EventSplitter()
        events = []
        for i in range(0, len(STREAM), size):
            events.extend(splitter.feed(STREAM[i : i + size]))
        assert events == expected, size
        assert splitter.pending == b""


def test_event_data() -> None:
    assert event_data(b'data: {"a":1}') == b'{"a":1}'
    assert event_data(b"event: x\ndata: one\ndata: two") == b"one\ntwo"
    assert event_data(b"data:[DONE]") == b"[DONE]"
    assert event_data(b": comment") is None


def test_error_event_is_an_openai_error() -> None:
    raw = error_event({"error": {"message": "cut", "type": "upstream_error", "code": "x", "param": None}})
    assert raw.startswith(b"event: error\ndata: ") and raw.endswith(b"\n\n")
    assert orjson.loads(raw.split(b"data: ", 1)[1])["error"]["message"] == "cut"


def test_an_event_arriving_in_many_reads_is_not_recopied_on_each() -> None:
    # The pieces of an unfinished event are kept as they came and joined once, when it ends: the old
    # buffer-plus-data splitter copied the whole event again on every read (quadratic in its size).
    splitter = EventSplitter(max_event=1 << 20)
    first = b"data: " + b"a" * 1000
    assert splitter.feed(first) == []
    for _ in range(200):
        assert splitter.feed(b"b" * 1000) == []
    assert splitter._parts[0] is first and len(splitter._parts) == 201
    events = splitter.feed(b"\r\n\r\ndata: next")
    assert events == [first + b"b" * 200_000] and splitter.pending == b"data: next"


def test_an_event_over_the_limit_is_refused() -> None:
    splitter = EventSplitter(max_event=2048)
    assert splitter.feed(b"data: " + b"x" * 2000) == []
    with pytest.raises(UpstreamProtocolError, match="2048 bytes"):
        splitter.feed(b"x" * 100)


def test_events_before_an_oversized_one_are_still_delivered() -> None:
    splitter = EventSplitter(max_event=2048)
    assert splitter.feed(b"data: ok\n\ndata: " + b"x" * 3000) == [b"data: ok"]
    with pytest.raises(UpstreamProtocolError):
        splitter.end()
    whole = EventSplitter(max_event=2048)
    with pytest.raises(UpstreamProtocolError):
        whole.feed(b"data: " + b"x" * 3000 + b"\n\n")


def test_media_type() -> None:
    assert is_event_stream("TEXT/Event-Stream; charset=utf-8")
    assert is_event_stream("text/event-stream")
    assert not is_event_stream("application/json") and not is_event_stream("")
