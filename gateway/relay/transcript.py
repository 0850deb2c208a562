"""What a client's stream has been sent so far, as much as a continuation needs to pick it up
elsewhere (failover/continuation.py): the text of choice 0, whether a tool call or other content
went out, and the first chunk. Plain deltas are kept as the bytes sent and read only if asked.
"""

from __future__ import annotations

from typing import Any

from gateway.relay.chunk import Chunk, MalformedChunk, interpret
from gateway.relay.sse import event_data


class Transcript:
    """What the client has been sent so far, as much as a continuation needs: the text of choice 0,
    whether any tool call or content other than text went out, and the first chunk (id, model).

    Events the relay forwarded unread (plain deltas, see chunk.read_runs) are kept as the bytes
    sent and read only when a continuation asks, so a stream that never breaks never reads them.
    Past `FOLD_AT` bytes of them they are read and kept as text, which bounds the memory a long
    stream holds to about that."""

    FOLD_AT = 256 * 1024

    __slots__ = ("_first", "_kept", "_later", "_later_at", "_parts", "_tool", "_unread", "_unsought", "_untextual")

    def __init__(self, *, kept: bool = True) -> None:
        self._kept = kept  # False: the stream is never continued, so unread events are not kept
        self._parts: list[str | bytes] = []  # in order: text, or unread events joined by blank lines
        self._unread = 0  # bytes of unread events in _parts
        self._tool = False
        self._untextual = False
        self._first: dict[str, Any] | None = None
        # The first chunk is sought in unread events only when asked (a stream that never breaks never
        # reads it: one parse less per stream): from _parts[_unsought] on (-1: nothing to seek), up to
        # _parts[_later_at], where a read chunk with a choice (_later) was added: the first if they hold none.
        self._unsought = -1
        self._later: dict[str, Any] | None = None
        self._later_at = 0

    @property
    def first(self) -> dict[str, Any] | None:
        """The first chunk sent with a choice in it (its id and model are the stream's)."""
        if self._unsought >= 0:
            self._seek_first()
        return self._first

    @property
    def text(self) -> str:
        self._read()
        return "".join(part for part in self._parts if isinstance(part, str))  # all text once read

    @property
    def tool(self) -> bool:
        """Part of a tool call was sent."""
        self._read()
        return self._tool

    @property
    def untextual(self) -> bool:
        """More than one choice, content that is neither text nor reasoning, or an event unreadable."""
        self._read()
        return self._untextual

    def add(self, chunk: Chunk, text: str) -> None:
        if self._first is None and chunk.data is not None and chunk.choices:
            if self._unsought < 0:
                self._first = chunk.data
            elif self._later is None:
                self._later, self._later_at = chunk.data, len(self._parts)
        if text:
            self._parts.append(text)
        self._flags(chunk)

    def add_unread(self, events: bytes) -> None:
        """Events sent as the upstream sent them, joined by blank lines (a last one may end it), not read yet."""
        if not self._kept:
            return
        if self._first is None and self._unsought < 0:
            self._unsought = len(self._parts)
        self._parts.append(events)
        self._unread += len(events)
        if self._unread > self.FOLD_AT:
            self._read()

    def _flags(self, chunk: Chunk) -> None:
        if chunk.tool:
            self._tool = True
        elif chunk.choices > 1 or (chunk.content and not chunk.text and not chunk.reasoning):
            self._untextual = True

    def _seek_first(self) -> None:
        end = self._later_at if self._later is not None else len(self._parts)
        found = None
        for part in self._parts[self._unsought:end]:
            if isinstance(part, bytes) and (found := _first_in(part)) is not None:
                break
        self._first = found if found is not None else self._later
        self._unsought, self._later = -1, None

    def _read(self) -> None:
        """Replace the unread events by their text, reading them as the relay would have."""
        if not self._unread:
            return
        if self._unsought >= 0:
            self._seek_first()  # before the parts it is sought in are replaced by text
        parts: list[str | bytes] = []
        for part in self._parts:
            if isinstance(part, str):
                parts.append(part)
                continue
            for event in part.split(b"\n\n"):
                if not event:
                    continue  # after the blank line that ends a read
                chunk = _read_event(event)
                if chunk is None:
                    self._untextual = True  # what the client got from it is unknown: not continued
                    continue
                if chunk.text:
                    parts.append(chunk.text)
                self._flags(chunk)
        self._parts, self._unread = parts, 0


def _first_in(events: bytes) -> dict[str, Any] | None:
    """The first chunk with a choice in unread events. Almost always the first event (the role chunk)
    is it: taken one at a time, not by splitting what may be the whole of an unpaced stream."""
    start = 0
    while start < len(events):
        end = events.find(b"\n\n", start)
        end = len(events) if end < 0 else end
        chunk = _read_event(events[start:end]) if end > start else None
        if chunk is not None and chunk.data is not None and chunk.choices:
            return chunk.data
        start = end + 2
    return None


def _read_event(event: bytes) -> Chunk | None:
    data = event_data(event)
    try:
        return interpret(data) if data is not None else None
    except MalformedChunk:
        return None
