"""Sans-I/O server-sent events: bytes in, complete events out, and the few events the gateway writes.

No sockets and no asyncio here: the relay feeds whatever bytes arrived and gets back the events that
are complete, each as the exact bytes the upstream sent (so they can be passed through untouched).
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import UpstreamProtocolError
from gateway.relay.chunk import PlainFrame

DONE = b"[DONE]"
DONE_EVENT = b"data: [DONE]\n\n"


class EventSplitter:
    """Splits a byte stream into SSE events at blank lines, whatever the chunking of the input.

    Bytes of an unfinished event are kept as a list of pieces and joined only once a blank line can
    have arrived, so an event that comes in many small reads costs linear time, not quadratic. One
    event larger than `max_event` bytes is refused: the upstream is not speaking SSE sanely.
    """

    __slots__ = ("_parts", "_size", "_tail", "empty", "frame", "max_event")

    def __init__(self, max_event: int = 8 * 1024 * 1024) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._tail = b""  # the last bytes kept: a blank line may start in them and end in the next read
        self.max_event = max_event
        self.empty = True  # no bytes of an unfinished event are kept: the next read starts a new event
        self.frame: PlainFrame | None = None  # the relay's, made on its first read (chunk.PlainFrame)

    def feed(self, data: bytes) -> list[bytes]:
        """The events that `data` completes. An event over the limit raises UpstreamProtocolError, at once
        when nothing completed with it, else on the next call (the events before it are still good).

        The usual read starts a new event (nothing kept from the last one): it is split as it is, and
        the state is touched only when part of an event is left over."""
        parts = self._parts
        if parts:
            self.end()
            if not _may_end_event(self._tail + data[:3]) and not _may_end_event(data):
                parts.append(data)
                self._size += len(data)
                self._tail = (self._tail + data)[-3:]
                self.end()
                return []
            buffer = b"".join((*parts, data))
        else:
            buffer = data
        if buffer.find(b"\r") >= 0:  # find, not `in`: bytes.__contains__ first tries an int, at a cost
            buffer = buffer.replace(b"\r\n", b"\n")
        events = buffer.split(b"\n\n")
        rest = events.pop()
        if rest:
            self._parts, self._size, self._tail, self.empty = [rest], len(rest), rest[-3:], False
        elif parts:
            self._parts, self._size, self._tail, self.empty = [], 0, b"", True
        if len(buffer) > self.max_event and any(len(e) > self.max_event for e in events):
            self._refuse()
        if b"" in events:  # a scan in C; blank events (runs of blank lines) are rare
            events = [e for e in events if e]
        if not events:
            self.end()
        return events

    def end(self) -> None:
        """Raise if the unfinished event is already over the limit (call it too when the stream ends)."""
        if self._size > self.max_event:
            self._refuse()

    def _refuse(self) -> None:
        raise UpstreamProtocolError(f"the upstream sent a stream event larger than {self.max_event} bytes")

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet terminated by a blank line."""
        return b"".join(self._parts)


def _may_end_event(data: bytes) -> bool:
    return data.find(b"\n\n") >= 0 or data.find(b"\n\r\n") >= 0


def is_event_stream(content_type: str) -> bool:
    """Is this Content-Type SSE? Media types compare case-insensitively, parameters aside."""
    return content_type.partition(";")[0].strip().lower() == "text/event-stream"


def event_data(event: bytes) -> bytes | None:
    """The `data:` payload of one event (multi-line data joined by newlines); None for comments only."""
    if event.startswith(b"data: ") and event.find(b"\n") < 0:
        return event[6:]
    lines = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def frame(event: bytes) -> bytes:
    return event + b"\n\n"


def error_event(body: dict[str, Any]) -> bytes:
    """An SSE `error` event carrying an OpenAI error body: the client knows the stream did not finish."""
    return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"
