"""SSE framing is pure: any chunking of the input gives the same events."""

from __future__ import annotations

import orjson

from gateway.relay.sse import EventSplitter, error_event, event_data

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
