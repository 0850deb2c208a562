"""Messages SSE events as chat chunks, one small state machine fed event by event.

Each Messages event becomes the chat chunks it means as soon as it arrives, so the executor and the
relay see an ordinary chat stream and nothing is buffered to the end.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.upstream.formats.anthropic_messages.answer import chat_usage, finish_reason


class StreamTranslator:
    """Messages SSE events in, chat SSE events out, one event at a time and in order.

    Each output is a complete `data: ...` event (without its blank line). `ping` becomes an SSE
    comment (a keep-alive the relay passes on); an upstream `error` event becomes a chat error chunk.
    """

    __slots__ = ("_base", "_created", "_tools", "_usage")

    def __init__(self, created: int | None = None) -> None:
        self._created = created or int(time.time())
        self._base = b""
        self._tools: dict[int, int] = {}  # Anthropic block index -> chat tool_calls index
        self._usage: dict[str, Any] = {}

    def feed(self, data: bytes) -> list[bytes]:
        """The chat events one Messages event (its `data:` payload) stands for."""
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return [b"data: " + data]  # left malformed on purpose: the executor or relay rejects it
        if not isinstance(event, dict):
            return [b"data: " + data]
        kind = event.get("type")
        if kind == "message_start":
            return self._start(event.get("message") or {})
        if kind == "content_block_start":
            return self._block_start(event.get("index"), event.get("content_block") or {})
        if kind == "content_block_delta":
            return self._delta(event.get("index"), event.get("delta") or {})
        if kind == "message_delta":
            self._usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            reason = finish_reason((event.get("delta") or {}).get("stop_reason"))
            return [self._chunk({}, reason)] if reason else []
        if kind == "message_stop":
            return [self._frame({"choices": [], "usage": chat_usage(self._usage)}), b"data: [DONE]"]
        if kind == "ping":
            return [b": ping"]
        if kind == "error":
            error = event.get("error") or {}
            body = {"error": {"message": error.get("message"), "type": error.get("type"), "code": error.get("type")}}
            return [b"data: " + orjson.dumps(body)]
        return []  # content_block_stop, and event types added after this was written

    def _start(self, message: Mapping[str, Any]) -> list[bytes]:
        self._usage = dict(message.get("usage") or {})
        head = {"id": message.get("id"), "object": "chat.completion.chunk", "created": self._created,
                "model": message.get("model")}
        self._base = orjson.dumps(head)[:-1]  # the common prefix of every chunk, without its closing brace
        return [self._chunk({"role": "assistant", "content": ""}, None)]

    def _block_start(self, index: Any, block: Mapping[str, Any]) -> list[bytes]:
        kind = block.get("type")
        if kind == "tool_use":
            position = self._tools[index] = len(self._tools)
            call = {"index": position, "id": block.get("id"), "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""}}
            return [self._chunk({"tool_calls": [call]}, None)]
        if kind == "redacted_thinking":
            return [self._chunk({"thinking_blocks": [{"type": "redacted_thinking", "data": block.get("data")}]},
                                None)]
        if kind == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]}, None)]
        return []

    def _delta(self, index: Any, delta: Mapping[str, Any]) -> list[bytes]:
        kind = delta.get("type")
        if kind == "text_delta":
            return [self._chunk({"content": delta["text"]}, None)] if delta.get("text") else []
        if kind == "input_json_delta":
            position = self._tools.get(index)
            if position is None or not delta.get("partial_json"):
                return []
            call = {"index": position, "function": {"arguments": delta.get("partial_json", "")}}
            return [self._chunk({"tool_calls": [call]}, None)]
        if kind == "thinking_delta":
            return [self._chunk({"reasoning_content": delta.get("thinking", "")}, None)]
        if kind == "signature_delta":
            block = {"type": "thinking", "thinking": "", "signature": delta.get("signature", "")}
            return [self._chunk({"thinking_blocks": [block]}, None)]
        return []  # citations_delta and later kinds: no chat equivalent

    def _chunk(self, delta: dict[str, Any], reason: str | None) -> bytes:
        return self._frame({"choices": [{"index": 0, "delta": delta, "finish_reason": reason}]})

    def _frame(self, fields: dict[str, Any]) -> bytes:
        return b"data: " + self._base + b"," + orjson.dumps(fields)[1:] if self._base else \
            b"data: " + orjson.dumps({"object": "chat.completion.chunk", **fields})
