"""The relay's chat stream read event by event, for each translation of it into another protocol's events.

Every translation out of chat (/v1/messages, /v1/responses) tells the same four kinds of event
apart as the relay writes them: a keep-alive comment, the `[DONE]` end, a failure (an `error`
event, an error body, or data that is not a chunk) and a chunk. `ChatStreamTranslator.feed` does
that once; each translation says what each kind becomes in its protocol.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.relay.sse import DONE, event_data


class ChatStreamTranslator(ABC):
    """Chat SSE events in (each without its blank line), another protocol's SSE events out, in order."""

    # set by each translation's __init__: whether the answer's opening events went out, the last usage seen
    __slots__ = ("_started", "_usage")
    _started: bool
    _usage: dict[str, Any] | None

    def feed(self, event: bytes) -> list[bytes]:
        """This protocol's events for one chat SSE event as the relay writes it."""
        data = event_data(event)
        if data is None:
            return self.keep_alive(event)
        if data == DONE:
            return self.done()
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            chunk = None
        if event.startswith(b"event: error") or not isinstance(chunk, dict) or chunk.get("error"):
            return self.failed(chunk)
        # What every translation does first with a chunk, inline (no call per chunk): open the answer on
        # the first one, keep the last usage seen.
        out: list[bytes] = []
        if not self._started:
            self._start(chunk, out)
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        self.chunk(chunk, out)
        return out

    @abstractmethod
    def _start(self, chunk: Mapping[str, Any], out: list[bytes]) -> None:
        """Append this protocol's opening events, from the first chunk (or {} if there was none)."""

    @abstractmethod
    def keep_alive(self, event: bytes) -> list[bytes]:
        """A comment-only event: this protocol's keep-alive."""

    @abstractmethod
    def chunk(self, chunk: Mapping[str, Any], out: list[bytes]) -> None:
        """Append the events one chat chunk means (after the answer's opening and its usage are taken)."""

    @abstractmethod
    def done(self) -> list[bytes]:
        """The chat stream finished."""

    @abstractmethod
    def failed(self, body: Any) -> list[bytes]:
        """The chat stream broke; `body` is the OpenAI error body the relay wrote (or None if unreadable)."""
