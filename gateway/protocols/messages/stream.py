"""Chat chunks as Messages events, one state machine fed as the relay writes the chat stream.

Each chat chunk becomes the events it means as it arrives (`message_start`, `content_block_*`,
`message_delta`, `message_stop`), so nothing is buffered to the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.protocols.chat_stream import ChatStreamTranslator
from gateway.protocols.messages.answer import message_id, messages_usage, stop_reason
from gateway.protocols.messages.errors import KNOWN_TYPES

# the relay's error codes -> Anthropic error types
_STREAM_ERRORS = {"upstream_timeout": "timeout_error", "rate_limited": "rate_limit_error",
                  "upstream_stream_cut": "api_error", "upstream_malformed": "api_error"}


def stream_error(body: Any) -> bytes:
    """An `error` event in Anthropic's shape from the OpenAI-shaped error body the relay ends a stream with."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code = str(error.get("code") or error.get("type") or "")
    kind = code if code in KNOWN_TYPES else _STREAM_ERRORS.get(code, "api_error")
    message = str(error.get("message") or "the upstream stream failed")
    return sse(b"error", {"type": "error", "error": {"type": kind, "message": message}})


def sse(kind: bytes, body: dict[str, Any]) -> bytes:
    return b"event: " + kind + b"\ndata: " + orjson.dumps(body) + b"\n\n"


class StreamTranslator(ChatStreamTranslator):
    """Chat chunks in (each a parsed chunk), Messages SSE events out, in order, block by block."""

    __slots__ = ("_block", "_id", "_index", "_model", "_reason", "_text_prefix", "_tools")

    def __init__(self, model: str) -> None:
        self._model = model
        self._id = "msg_gateway"
        self._started = False
        self._block: str | None = None  # the kind of the open content block
        self._text_prefix = b""
        self._index = -1
        self._tools: dict[int, int] = {}  # chat tool_calls index -> Messages block index
        self._reason: str | None = None
        self._usage: dict[str, Any] | None = None

    def keep_alive(self, event: bytes) -> list[bytes]:
        return [sse(b"ping", {"type": "ping"})]

    def failed(self, body: Any) -> list[bytes]:
        return [stream_error(body)]

    def chunk(self, chunk: Mapping[str, Any], out: list[bytes]) -> None:
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
                out.append(self._delta({"type": "thinking_delta", "thinking": reasoning}))
            for block in delta.get("thinking_blocks") or ():
                self._thinking_block(block, out)
            if delta.get("content"):
                self._open("text", {"type": "text", "text": ""}, out)
                # The hot case, written without building the event as a dict first.
                out.append(self._text_prefix + orjson.dumps(delta["content"]) + b"}}\n\n")
            for call in delta.get("tool_calls") or ():
                self._tool_call(call, out)
            if choice.get("finish_reason"):
                self._close(out)
                self._reason = stop_reason(choice["finish_reason"])

    def done(self) -> list[bytes]:
        """The chat stream finished: close the message as Anthropic does."""
        out: list[bytes] = []
        if not self._started:
            self._start({}, out)
        self._close(out)
        usage = messages_usage(self._usage)
        out.append(sse(b"message_delta", {"type": "message_delta", "delta": {
            "stop_reason": self._reason or "end_turn", "stop_sequence": None}, "usage": usage}))
        out.append(sse(b"message_stop", {"type": "message_stop"}))
        return out

    def _start(self, chunk: Mapping[str, Any], out: list[bytes]) -> None:
        self._started = True
        self._id = message_id(chunk.get("id"))
        message: dict[str, Any] = {
            "id": self._id, "type": "message", "role": "assistant", "model": chunk.get("model") or self._model,
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}
        out.append(sse(b"message_start", {"type": "message_start", "message": message}))

    def _thinking_block(self, block: Mapping[str, Any], out: list[bytes]) -> None:
        if block.get("type") == "redacted_thinking":
            self._close(out)
            self._open("redacted_thinking", {"type": "redacted_thinking", "data": block.get("data", "")}, out)
            self._close(out)
        elif block.get("signature"):
            self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
            out.append(self._delta({"type": "signature_delta", "signature": block["signature"]}))

    def _tool_call(self, call: Mapping[str, Any], out: list[bytes]) -> None:
        position = call.get("index", 0)
        function = call.get("function") or {}
        if position not in self._tools:
            self._close(out)
            self._index += 1
            self._tools[position] = self._index
            self._block = "tool_use"
            out.append(sse(b"content_block_start", {"type": "content_block_start", "index": self._index,
                                                    "content_block": {"type": "tool_use", "id": call.get("id"),
                                                                      "name": function.get("name"), "input": {}}}))
        elif self._tools[position] != self._index:
            return  # an interleaved late fragment of an earlier call: Messages blocks cannot reopen
        if function.get("arguments"):
            out.append(self._delta({"type": "input_json_delta", "partial_json": function["arguments"]}))

    def _open(self, kind: str, block: dict[str, Any], out: list[bytes]) -> None:
        if self._block == kind:
            return
        self._close(out)
        self._index += 1
        self._block = kind
        if kind == "text":
            self._text_prefix = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
                                 b'"delta":{"type":"text_delta","text":' % self._index)
        out.append(sse(b"content_block_start", {"type": "content_block_start", "index": self._index,
                                                "content_block": block}))

    def _close(self, out: list[bytes]) -> None:
        if self._block is not None:
            out.append(sse(b"content_block_stop", {"type": "content_block_stop", "index": self._index}))
            self._block = None

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return sse(b"content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta})
