"""Sans-I/O server-sent events: bytes in, complete events out, and the few events the gateway writes.

No sockets and no asyncio here: the relay feeds whatever bytes arrived and gets back the events that
are complete, each as the exact bytes the upstream sent (so they can be passed through untouched).
"""

from __future__ import annotations

from typing import Any

import orjson

DONE = b"[DONE]"
DONE_EVENT = b"data: [DONE]\n\n"


class EventSplitter:
    """Splits a byte stream into SSE events at blank lines, whatever the chunking of the input."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer + data if self._buffer else data
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        events = buffer.split(b"\n\n")
        self._buffer = events.pop()
        return [e for e in events if e]

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet terminated by a blank line."""
        return self._buffer


def event_data(event: bytes) -> bytes | None:
    """The `data:` payload of one event (multi-line data joined by newlines); None for comments only."""
    if event.startswith(b"data: ") and b"\n" not in event:
        return event[6:]
    lines = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def frame(event: bytes) -> bytes:
    return event + b"\n\n"


def error_event(body: dict[str, Any]) -> bytes:
    """An SSE `error` event carrying an OpenAI error body: the client knows the stream did not finish."""
    return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"
