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

    __slots__ = ()

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
        return self.chunk(chunk)

    @abstractmethod
    def keep_alive(self, event: bytes) -> list[bytes]:
        """A comment-only event: this protocol's keep-alive."""

    @abstractmethod
    def chunk(self, chunk: Mapping[str, Any]) -> list[bytes]:
        """One chat chunk."""

    @abstractmethod
    def done(self) -> list[bytes]:
        """The chat stream finished."""

    @abstractmethod
    def failed(self, body: Any) -> list[bytes]:
        """The chat stream broke; `body` is the OpenAI error body the relay wrote (or None if unreadable)."""
