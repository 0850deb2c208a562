"""Anthropic Messages as an inbound protocol: a Messages request as chat, and the chat answer back.

Used when a `/v1/messages` request goes to a target that speaks chat completions. Pure functions and
one small state machine: no sockets, no asyncio. The stream translator turns each chat chunk into
the Messages events it means as it arrives (`message_start`, `content_block_*`, `message_delta`,
`message_stop`), so nothing is buffered to the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.errors import BadRequest, GatewayError
from gateway.relay.sse import DONE, event_data

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                 "content_filter": "refusal"}
_EFFORTS = ((2048, "low"), (8192, "medium"))  # thinking budget below this -> reasoning_effort

# Messages fields with no chat counterpart: refused (README lists them).
_REFUSED = frozenset({"top_k", "container", "mcp_servers", "service_tier"})
# Dropped: context editing only trims what the model would otherwise see in full (Claude Code sends it).
_DROPPED = frozenset({"context_management"})
_HANDLED = frozenset({"model", "messages", "system", "max_tokens", "stop_sequences", "stream", "temperature",
                      "top_p", "tools", "tool_choice", "thinking", "metadata", "output_config"})


# ---------------------------------------------------------------- request: Messages -> chat


def to_chat(body: Mapping[str, Any]) -> dict[str, Any]:
    """A validated Messages request as a chat request; what chat cannot express is a BadRequest naming it."""
    for key in body:
        if key not in _HANDLED and key not in _DROPPED:
            reason = "has no equivalent in chat completions" if key in _REFUSED else "is not a Messages field"
            raise BadRequest(f"`{key}` {reason}, which the target of this model speaks; remove it.", param=key)
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise BadRequest("`max_tokens` is required and must be a positive integer.", param="max_tokens")
    chat: dict[str, Any] = {"model": body["model"], "messages": _messages(body), "max_tokens": max_tokens}
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            chat[key] = body[key]
    if body.get("stop_sequences"):
        chat["stop"] = list(body["stop_sequences"])
    if body.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    if body.get("tools"):
        chat["tools"] = [_tool(tool, i) for i, tool in enumerate(body["tools"])]
    _tool_choice(body.get("tool_choice"), chat)
    _thinking(body.get("thinking"), chat)
    _output_config(body.get("output_config"), chat)
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        chat["user"] = metadata["user_id"]
    return chat


def _messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        out.append({"role": "system", "content": _text(system, "system")})
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise BadRequest("`messages` is required and must be a list.", param="messages")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise BadRequest(f"`{where}` must be an object.", param=where)
        role = message.get("role")
        content = message.get("content")
        if role == "system":
            out.append({"role": "system", "content": _text(content, where)})
        elif role == "user":
            out.extend(_user(content, where))
        elif role == "assistant":
            out.append(_assistant(content, where))
        else:
            raise BadRequest(f"`{where}.role` must be user, assistant or system.", param=f"{where}.role")
    return out


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, block in enumerate(content):
            if not isinstance(block, dict) or block.get("type") != "text":
                raise BadRequest(f"`{where}[{j}]` must be a text block here.", param=f"{where}[{j}]")
            parts.append(str(block.get("text", "")))
        return "\n\n".join(parts)
    raise BadRequest(f"`{where}` must be a string or a list of text blocks.", param=where)


def _user(content: Any, where: str) -> list[dict[str, Any]]:
    """One user turn: its tool results become tool messages (first, as chat wants), the rest one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not isinstance(content, list):
        raise BadRequest(f"`{where}.content` must be a string or a list of blocks.", param=f"{where}.content")
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block.get("source"), at)}})
        elif kind == "tool_result":
            results.append(_tool_result(block, at))
        else:
            raise BadRequest(f"`{at}.type` {kind!r} has no equivalent in chat completions.", param=f"{at}.type")
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        message = "\n\n".join(p["text"] for p in parts) if only_text else parts
        results.append({"role": "user", "content": message})
    return results


def _image_url(source: Any, where: str) -> str:
    if isinstance(source, dict) and source.get("type") == "base64":
        return f"data:{source.get('media_type')};base64,{source.get('data')}"
    if isinstance(source, dict) and source.get("type") == "url" and isinstance(source.get("url"), str):
        return str(source["url"])
    raise BadRequest(f"`{where}.source` must be a base64 or url image source.", param=f"{where}.source")


def _tool_result(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    content = block.get("content")
    text = content if isinstance(content, str) else _text(content or [], f"{where}.content")
    message: dict[str, Any] = {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}
    if block.get("is_error") is True:
        message["is_error"] = True
    return message


def _assistant(content: Any, where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    if not isinstance(content, list):
        raise BadRequest(f"`{where}.content` must be a string or a list of blocks.", param=f"{where}.content")
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    thinking: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            text.append(str(block.get("text", "")))
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function", "function": {
                "name": block.get("name"), "arguments": orjson.dumps(block.get("input") or {}).decode()}})
        elif kind == "thinking":
            thinking.append({"type": "thinking", "thinking": block.get("thinking", ""),
                             "signature": block.get("signature", "")})
        elif kind == "redacted_thinking":
            thinking.append({"type": "redacted_thinking", "data": block.get("data", "")})
        else:
            raise BadRequest(f"`{where}.content[{j}].type` {kind!r} has no equivalent in chat completions.",
                             param=f"{where}.content[{j}].type")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["reasoning_content"] = "".join(b.get("thinking", "") for b in thinking)
        message["thinking_blocks"] = thinking
    return message


def _tool(tool: Any, i: int) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") not in (None, "custom") or not isinstance(tool.get("name"), str):
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise BadRequest(f"`tools[{i}]` (type {kind!r}) is a server tool with no equivalent in chat completions; "
                         "only custom tools translate.", param=f"tools[{i}]")
    function: dict[str, Any] = {"name": tool["name"],
                                "parameters": tool.get("input_schema") or {"type": "object", "properties": {}}}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any, chat: dict[str, Any]) -> None:
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "auto":
        chat["tool_choice"] = "auto"
    elif kind == "any":
        chat["tool_choice"] = "required"
    elif kind == "none":
        chat["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise BadRequest("`tool_choice.type` must be auto, any, none or tool.", param="tool_choice")
    if choice.get("disable_parallel_tool_use") is True and chat.get("tools"):
        chat["parallel_tool_calls"] = False


def _thinking(thinking: Any, chat: dict[str, Any]) -> None:
    if thinking is None:
        return
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "disabled":
        return
    if kind == "adaptive":
        chat["reasoning_effort"] = "medium"
        return
    budget = thinking.get("budget_tokens") if kind == "enabled" else None
    if not isinstance(budget, int):
        raise BadRequest("`thinking` must be enabled with budget_tokens, adaptive, or disabled.", param="thinking")
    chat["reasoning_effort"] = next((effort for limit, effort in _EFFORTS if budget < limit), "high")


def _output_config(config: Any, chat: dict[str, Any]) -> None:
    if config is None:
        return
    if not isinstance(config, dict):
        raise BadRequest("`output_config` must be an object.", param="output_config")
    for key, value in config.items():
        if key == "effort" and isinstance(value, str):
            chat["reasoning_effort"] = value
        elif key == "format" and isinstance(value, dict) and value.get("type") == "json_schema":
            chat["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "output", "schema": value.get("schema") or {}, "strict": True}}
        else:
            raise BadRequest(f"`output_config.{key}` has no equivalent in chat completions.",
                             param=f"output_config.{key}")


IMAGE_TOKENS = 1600  # what one image of about 1.15 megapixels costs Anthropic; the estimate assumes that size


def estimate_tokens(body: Mapping[str, Any]) -> int:
    """About four characters a token over system, messages and tool definitions; images at IMAGE_TOKENS."""
    chars = len(orjson.dumps(body.get("system"))) if body.get("system") else 0
    images = 0
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
            continue
        for block in content if isinstance(content, list) else ():
            if isinstance(block, dict) and block.get("type") == "image":
                images += 1
            elif isinstance(block, dict):
                chars += len(str(block.get("text") or "")) + len(orjson.dumps(block.get("input") or "")) + len(
                    str(block.get("content") or "")) + len(str(block.get("thinking") or ""))
    if body.get("tools"):
        chars += len(orjson.dumps(body["tools"]))
    return max(1, chars // 4 + images * IMAGE_TOKENS)


# ---------------------------------------------------------------- answers: chat -> Messages


def stop_reason(finish: Any) -> str | None:
    return None if finish is None else _STOP_REASONS.get(finish, "end_turn")


def messages_usage(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """OpenAI's prompt_tokens include cached tokens; Anthropic's input_tokens do not."""
    usage = usage or {}
    details = usage.get("prompt_tokens_details") or {}
    read = int(details.get("cached_tokens") or 0)
    written = int(details.get("cache_write_tokens") or 0)
    return {"input_tokens": max(0, int(usage.get("prompt_tokens") or 0) - read - written),
            "output_tokens": int(usage.get("completion_tokens") or 0),
            "cache_creation_input_tokens": written, "cache_read_input_tokens": read}


def to_message(completion: Mapping[str, Any]) -> dict[str, Any]:
    """A chat completion as a Messages answer."""
    choice = (completion.get("choices") or [{}])[0]
    reply = choice.get("message") or {}
    content: list[dict[str, Any]] = list(reply.get("thinking_blocks") or ())
    if not content and reply.get("reasoning_content"):
        content.append({"type": "thinking", "thinking": reply["reasoning_content"], "signature": ""})
    if reply.get("content"):
        content.append({"type": "text", "text": reply["content"]})
    for call in reply.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id"), "name": function.get("name"),
                        "input": _arguments(function.get("arguments"))})
    return {"id": message_id(completion.get("id")), "type": "message", "role": "assistant",
            "model": completion.get("model"), "content": content,
            "stop_reason": stop_reason(choice.get("finish_reason")), "stop_sequence": None,
            "usage": messages_usage(completion.get("usage"))}


def _arguments(arguments: Any) -> Any:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def message_id(chat_id: Any) -> str:
    text = str(chat_id or "gateway")
    return text if text.startswith("msg_") else f"msg_{text.removeprefix('chatcmpl-')}"


# ---------------------------------------------------------------- errors


# status -> Anthropic error type; a gateway that found no target answers like an overloaded API.
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                403: "permission_error", 404: "not_found_error", 405: "invalid_request_error",
                413: "request_too_large", 429: "rate_limit_error", 500: "api_error", 504: "timeout_error",
                529: "overloaded_error"}


def error_status(error: GatewayError) -> int:
    """Anthropic's status for a gateway error: "nothing could serve now" (502, 503) is its 529 overloaded."""
    if error.status in (502, 503, 529):
        return 529
    if error.status in _ERROR_TYPES:
        return error.status
    return 500 if error.status >= 500 else 400


def error_body(error: GatewayError) -> dict[str, Any]:
    status = error_status(error)
    upstream = getattr(error, "upstream_error", None)
    kind = upstream.get("type") if isinstance(upstream, dict) and upstream.get("type") in _KNOWN_TYPES else None
    return {"type": "error", "error": {"type": kind or _ERROR_TYPES.get(status, "api_error"),
                                       "message": error.message}}


_KNOWN_TYPES = frozenset(_ERROR_TYPES.values())


def stream_error(body: Any) -> bytes:
    """An `error` event in Anthropic's shape from the OpenAI-shaped error body the relay ends a stream with."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code = str(error.get("code") or error.get("type") or "")
    kind = code if code in _KNOWN_TYPES else _STREAM_ERRORS.get(code, "api_error")
    message = str(error.get("message") or "the upstream stream failed")
    return sse(b"error", {"type": "error", "error": {"type": kind, "message": message}})


_STREAM_ERRORS = {"upstream_timeout": "timeout_error", "rate_limited": "rate_limit_error",
                  "upstream_stream_cut": "api_error", "upstream_malformed": "api_error"}


def sse(kind: bytes, body: dict[str, Any]) -> bytes:
    return b"event: " + kind + b"\ndata: " + orjson.dumps(body) + b"\n\n"


# ---------------------------------------------------------------- streams: chat chunks -> Messages events


class StreamTranslator:
    """Chat chunks in (each a parsed chunk), Messages SSE events out, in order, block by block."""

    __slots__ = ("_block", "_id", "_index", "_model", "_reason", "_started", "_text_prefix", "_tools", "_usage")

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

    def feed(self, event: bytes) -> list[bytes]:
        """The Messages events for one chat SSE event as the relay writes it (without its blank line)."""
        data = event_data(event)
        if data is None:
            return [sse(b"ping", {"type": "ping"})]  # a keep-alive comment stays a keep-alive
        if data == DONE:
            return self.done()
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            chunk = None
        if event.startswith(b"event: error") or not isinstance(chunk, dict) or chunk.get("error"):
            return [stream_error(chunk)]
        return self.chunk(chunk)

    def chunk(self, chunk: Mapping[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        if not self._started:
            self._start(chunk, out)
        if chunk.get("usage"):
            self._usage = chunk["usage"]
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
        return out

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
