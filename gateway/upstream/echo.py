"""The built-in echo upstream: no network, a deterministic answer derived from the prompt.

It answers with the same interface as transport.HttpResponse, so an echo request takes exactly the
path a real one does (failover, relay, usage, metrics). The reply is "You said: <last user text>",
streamed word by word; with `tools`, it calls the first tool (or the forced one) with arguments made
from the tool's JSON schema; after a tool result, it answers "Tool result: <content>".
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

_WORDS = re.compile(r"\s*\S+")
_HEADERS = {"content-type": "application/json"}
_STREAM_HEADERS = {"content-type": "text/event-stream"}


class EchoResponse:
    __slots__ = ("_chunks", "_index", "headers", "status")

    def __init__(self, chunks: list[bytes], headers: Mapping[str, str]) -> None:
        self.status = 200
        self.headers = headers
        self._chunks = chunks
        self._index = 0

    async def read_all(self, limit: int | None = None) -> bytes:
        return b"".join(self._chunks)

    async def read_chunk(self, consume: Callable[[bytes], bool] | None = None) -> bytes:
        if self._index >= len(self._chunks):
            return b""
        self._index += 1
        return self._chunks[self._index - 1]

    def set_read_timeout(self, seconds: float) -> None:
        pass  # every chunk is already here

    def release(self) -> None:
        self._index = len(self._chunks)

    def close(self) -> None:
        self._index = len(self._chunks)


def answer(payload: Mapping[str, Any], dialect: str = "chat") -> EchoResponse:
    if dialect == "embeddings":
        return _embeddings(payload)
    if dialect != "chat":
        return _unsupported(dialect)
    messages = payload.get("messages") or []
    text, call = _reply(messages, payload.get("tools"), payload.get("tool_choice"))
    words = _WORDS.findall(text) if text else []
    prompt_tokens = sum(len(_text(m)) for m in messages if isinstance(m, dict)) // 4 + len(messages)
    completion_tokens = max(len(words), 1 if call else 0)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}
    head = {"id": "chatcmpl-echo-" + hashlib.sha256(orjson.dumps(messages)).hexdigest()[:16],
            "object": "chat.completion", "created": int(time.time()), "model": str(payload.get("model", "echo"))}
    if not payload.get("stream"):
        return _whole(head, text, call, usage)
    options = payload.get("stream_options")
    with_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    return _streamed({**head, "object": "chat.completion.chunk"}, words, call, usage if with_usage else None)


def _unsupported(dialect: str) -> EchoResponse:
    error = {"error": {"message": f"echo does not speak {dialect}", "type": "invalid_request_error",
                       "code": "unsupported", "param": None}}
    response = EchoResponse([orjson.dumps(error)], _HEADERS)
    response.status = 404
    return response


def _whole(head: dict[str, Any], text: str, call: dict[str, Any] | None, usage: dict[str, int]) -> EchoResponse:
    """The answer as one chat completion (`head`: its id, object, created and model)."""
    message: dict[str, Any] = {"role": "assistant", "content": None if call else text}
    if call:
        message["tool_calls"] = [call]
    finish = "tool_calls" if call else "stop"
    body = {**head, "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}
    return EchoResponse([orjson.dumps(body)], _HEADERS)


def _streamed(head: dict[str, Any], words: list[str], call: dict[str, Any] | None,
              usage: dict[str, int] | None) -> EchoResponse:
    """The answer as chat chunks: the role, the tool call in two pieces, a word a chunk, the finish, the
    usage when asked for, [DONE]."""
    chunks = [_chunk(head, {"role": "assistant", "content": ""})]
    if call:
        first = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
        chunks.append(_chunk(head, {"tool_calls": [{"index": 0, **first}]}))
        rest = {"index": 0, "function": {"arguments": call["function"]["arguments"]}}
        chunks.append(_chunk(head, {"tool_calls": [rest]}))
    chunks.extend(_chunk(head, {"content": word}) for word in words)
    chunks.append(_chunk(head, {}, "tool_calls" if call else "stop"))
    if usage is not None:
        chunks.append(_event({**head, "choices": [], "usage": usage}))
    chunks.append(b"data: [DONE]\n\n")
    return EchoResponse(chunks, _STREAM_HEADERS)


def _chunk(head: dict[str, Any], delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    return _event({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})


def _event(body: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"


def _embeddings(payload: Mapping[str, Any]) -> EchoResponse:
    """One deterministic unit-length-ish vector per input, from the text's SHA-256 (8 dimensions by default)."""
    given = payload.get("input")
    inputs = given if isinstance(given, list) else [given]
    dimensions = payload.get("dimensions")
    size = dimensions if isinstance(dimensions, int) and 0 < dimensions <= 64 else 8
    data = []
    tokens = 0
    for index, item in enumerate(inputs):
        text = item if isinstance(item, str) else orjson.dumps(item).decode()
        tokens += max(1, len(text) // 4)
        digest = hashlib.sha256(text.encode()).digest() * 2
        vector = [round((b - 127.5) / 127.5, 6) for b in digest[:size]]
        encoded: Any = vector
        if payload.get("encoding_format") == "base64":
            encoded = base64.b64encode(struct.pack(f"<{size}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    body = {"object": "list", "data": data, "model": str(payload.get("model", "echo")),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return EchoResponse([orjson.dumps(body)], _HEADERS)


def _reply(messages: list[Any], tools: Any, tool_choice: Any) -> tuple[str, dict[str, Any] | None]:
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    if last.get("role") == "tool":
        return "Tool result: " + _text(last), None
    user_text = next((_text(m) for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), "")
    tool = _chosen_tool(tools, tool_choice)
    if tool is not None:
        name = str(tool.get("name", "tool"))
        arguments = _arguments(tool.get("parameters") or {}, user_text)
        call_id = "call_" + hashlib.sha256(f"{name}:{user_text}".encode()).hexdigest()[:12]
        return "", {"id": call_id, "type": "function",
                    "function": {"name": name, "arguments": orjson.dumps(arguments).decode()}}
    return "You said: " + (user_text or "(nothing)"), None


def _chosen_tool(tools: Any, tool_choice: Any) -> dict[str, Any] | None:
    if not isinstance(tools, list) or not tools or tool_choice == "none":
        return None
    functions = [t["function"] for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    if isinstance(tool_choice, dict):
        wanted = (tool_choice.get("function") or {}).get("name")
        return next((f for f in functions if f.get("name") == wanted), None)
    return functions[0] if functions else None


def _arguments(schema: Mapping[str, Any], user_text: str) -> dict[str, Any]:
    properties = schema.get("properties") or {}
    defaults = {"string": user_text, "number": 0, "integer": 0, "boolean": False, "array": [], "object": {}}
    return {name: defaults.get(str((properties.get(name) or {}).get("type")), user_text)
            for name in schema.get("required") or ()}


def _text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""
