"""The Anthropic Messages wire (`POST {base}/messages`) as the executor speaks it: two dialects and one view.

`AnthropicDialect` sends a chat request translated to Messages; `MessagesPassThrough` sends a
`/v1/messages` client's own body with only `model` rewritten. Both answer through `MessagesView`,
which shows the executor and the relay the answer as chat completions (translated event by event
as it is read), so failover and relay keep one pivot shape; the pass-through view also keeps the
upstream's own bytes for the client.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import UpstreamStatusError
from gateway.relay.sse import EventSplitter, event_data
from gateway.upstream.formats import anthropic_messages
from gateway.upstream.formats.openai_chat import CHAT
from gateway.upstream.response import UpstreamResponse

_Response = UpstreamResponse


class MessagesView:
    """An upstream Messages answer read as chat completions; `raw_body`/`take_raw` give the original bytes."""

    __slots__ = ("_inner", "_keep_raw", "_raw_events", "_splitter", "_translator", "headers", "raw_body", "status")

    def __init__(self, inner: _Response, *, keep_raw: bool) -> None:
        self._inner = inner
        self._keep_raw = keep_raw
        self._splitter = EventSplitter()
        self._translator = anthropic_messages.StreamTranslator()
        self._raw_events: list[bytes] = []
        self.status = inner.status
        self.headers = inner.headers
        self.raw_body = b""

    async def read_all(self, limit: int) -> bytes:
        raw = await self._inner.read_all(limit)
        if self._keep_raw:
            self.raw_body = raw
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw  # the executor reports it as a body that is not JSON
        if isinstance(message, dict) and message.get("type") == "message":
            return orjson.dumps(anthropic_messages.parse_response(message))
        if isinstance(message, dict) and message.get("type") == "error":
            return orjson.dumps({"error": anthropic_messages.error_object(raw)})
        return raw

    async def read_chunk(self, consume: Callable[[bytes], bool] | None = None) -> bytes:
        """The chat events for the next Messages events that mean something; b"" at the end (`consume`
        is not offered any: what a read means is known only once translated)."""
        while True:
            data = await self._inner.read_chunk()
            if not data:
                self._splitter.end()
                return b""
            out: list[bytes] = []
            for event in self._splitter.feed(data):
                if self._keep_raw:
                    self._raw_events.append(event)
                payload = event_data(event)
                if payload is not None:
                    out.extend(self._translator.feed(payload))
            if out:
                return b"\n\n".join(out) + b"\n\n"

    def take_raw(self) -> list[bytes]:
        """The upstream's own events read since the last call (pass-through relays them as they were)."""
        events, self._raw_events = self._raw_events, []
        return events

    def set_read_timeout(self, seconds: float) -> None:
        self._inner.set_read_timeout(seconds)

    def release(self) -> None:
        self._inner.release()

    def close(self) -> None:
        self._inner.close()


class _MessagesWire:
    """What both dialects share: the path, Anthropic's errors, and the chat-shaped view of answers."""

    name = "anthropic"
    path = "/messages"
    keep_raw = False

    def parse_error(self, status: int, headers: Mapping[str, str], raw: bytes,
                    provider_id: str) -> UpstreamStatusError:
        return anthropic_messages.parse_error(status, headers, raw, provider_id)

    def check_answer(self, parsed: Any, headers: Mapping[str, str], raw: bytes, provider_id: str) -> None:
        CHAT.check_answer(parsed, headers, raw, provider_id)  # the view has made it chat

    def opens_answer(self, event: bytes, provider_id: str) -> bool:
        return CHAT.opens_answer(event, provider_id)

    def view(self, response: _Response) -> MessagesView:
        return MessagesView(response, keep_raw=self.keep_raw)


@dataclass(frozen=True, slots=True)
class AnthropicDialect(_MessagesWire):
    """A chat request to a native Anthropic target; `max_output` is the catalog's output limit."""

    max_output: int = 0

    def build_request(self, body: Mapping[str, Any], upstream_model: str, *, stream: bool) -> dict[str, Any]:
        return anthropic_messages.build_request(body, upstream_model, stream=stream, max_output=self.max_output)


class MessagesPassThrough(_MessagesWire):
    """A `/v1/messages` body to an Anthropic-wire target: untouched but for `model` (the client's
    anthropic-version and anthropic-beta headers go with it, on the Leg)."""

    keep_raw = True

    def build_request(self, body: Mapping[str, Any], upstream_model: str, *, stream: bool) -> dict[str, Any]:
        payload = dict(body)
        payload["model"] = upstream_model
        return payload


PASS_THROUGH = MessagesPassThrough()
