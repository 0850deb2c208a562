"""Native Anthropic upstream: an OpenAI chat request as a Messages request, and the answer back as chat.

Pure functions and one small state machine on dicts and bytes: no sockets, no asyncio. The stream
translator turns each Messages SSE event into the chat chunks it means as soon as it arrives, so the
executor and the relay see an ordinary chat stream and nothing is buffered to the end.

What a chat request carries that Messages cannot express is refused with a 400 naming the field;
what is dropped is dropped only where dropping changes nothing (the README lists both).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.errors import BadRequest, UpstreamStatusError
from gateway.upstream.formats.openai_chat import parse_retry_after

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096

# reasoning_effort -> thinking budget (tokens); "none" turns thinking off.
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576, "xhigh": 32000}

STOP_REASONS = {
    "end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
    "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter",
}

# Chat fields that need no counterpart: the gateway's own, or ones whose absence changes nothing.
_IGNORED = frozenset({"model", "messages", "stream_options", "models", "store", "metadata", "modalities"})
# Chat fields refused unless they hold the value that means "nothing asked".
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "n": (None, 1), "logprobs": (None, False), "top_logprobs": (None, 0), "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0), "logit_bias": (None, {}), "seed": (None,), "service_tier": (None, "auto"),
    "prediction": (None,), "audio": (None,), "web_search_options": (None,), "verbosity": (None,),
    "functions": (None,), "function_call": (None,),
}
_HANDLED = frozenset({"max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "stop", "stream",
                      "tools", "tool_choice", "parallel_tool_calls", "reasoning_effort", "response_format", "user"})

_CONTEXT_HINTS = ("prompt is too long", "context window", "context length", "too many tokens")


# ---------------------------------------------------------------- request: chat -> Messages


def build_request(body: Mapping[str, Any], upstream_model: str, *, stream: bool, max_output: int) -> dict[str, Any]:
    """The chat body as a Messages request; a field Messages cannot express is a BadRequest naming it."""
    for key, value in body.items():
        if key in _HANDLED or key in _IGNORED:
            continue
        if key in _NEUTRAL and value in _NEUTRAL[key]:
            continue
        raise BadRequest(f"`{key}` has no equivalent in Anthropic's Messages API, which serves this model; "
                         "remove it.", param=key)
    system, messages = _messages(body["messages"])
    out: dict[str, Any] = {"model": upstream_model, "messages": messages}
    if system:
        out["system"] = system
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or max_output or DEFAULT_MAX_TOKENS
    if not isinstance(limit, int) or limit < 1:
        raise BadRequest("`max_tokens` must be a positive integer.", param="max_tokens")
    out["max_tokens"] = limit
    for key in ("temperature", "top_p", "top_k"):
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if stream:
        out["stream"] = True
    tools = body.get("tools")
    if tools:
        out["tools"] = [_tool(tool, i) for i, tool in enumerate(tools)]
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None and (tools or choice.get("type") == "none"):
        out["tool_choice"] = choice
    _thinking(body.get("reasoning_effort"), out)
    _response_format(body.get("response_format"), out)
    user = body.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    return out


def _messages(chat: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """System and developer messages (anywhere) become `system`; the rest become alternating turns."""
    if not isinstance(chat, list):
        raise BadRequest("`messages` must be a list.", param="messages")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(chat):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise BadRequest(f"`{where}` must be an object.", param=where)
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_blocks(message.get("content"), where))
            continue
        if role == "user":
            blocks = _user_blocks(message.get("content"), where)
        elif role == "assistant":
            blocks = _assistant_blocks(message, where)
        elif role == "tool":
            blocks = [_tool_result(message, where)]
            role = "user"
        else:
            raise BadRequest(f"`{where}.role` {role!r} has no equivalent in Anthropic's Messages API.",
                             param=f"{where}.role")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)  # Anthropic wants turns to alternate: merge same-role runs
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _text_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise BadRequest(f"`{where}.content` must be a string or a list of parts.", param=f"{where}.content")
    blocks = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            raise BadRequest(f"`{where}.content[{j}]` must be a text part here.", param=f"{where}.content[{j}]")
        blocks.append(_with_cache({"type": "text", "text": part.get("text", "")}, part))
    return blocks


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise BadRequest(f"`{where}.content` must be a string or a list of parts.", param=f"{where}.content")
    blocks = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.append(_with_cache({"type": "text", "text": part.get("text", "")}, part))
        elif kind == "image_url":
            blocks.append(_with_cache(_image(part.get("image_url"), f"{where}.content[{j}]"), part))
        else:
            raise BadRequest(f"`{where}.content[{j}].type` {kind!r} has no equivalent in Anthropic's Messages API.",
                             param=f"{where}.content[{j}].type")
    return blocks


def _image(image: Any, where: str) -> dict[str, Any]:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise BadRequest(f"`{where}.image_url.url` must be a string.", param=f"{where}.image_url")
    if url.startswith("data:"):
        header, _, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if encoding != "base64" or not data:
            raise BadRequest(f"`{where}.image_url.url` must be a base64 data URL.", param=f"{where}.image_url")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise BadRequest(f"`{where}.image_url.url` must be a data: or http(s) URL.", param=f"{where}.image_url")


def _assistant_blocks(message: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    # Thinking goes first, with its signature, so multi-turn tool use with thinking keeps working.
    # reasoning_content without its signed blocks cannot be sent back: Anthropic would refuse it.
    blocks: list[dict[str, Any]] = [_thinking_block(b, where) for b in message.get("thinking_blocks") or ()]
    content = message.get("content")
    if isinstance(content, str):
        if content:
            blocks.append({"type": "text", "text": content})
    elif isinstance(content, list):
        blocks.extend(_text_blocks(content, where))
    for k, call in enumerate(message.get("tool_calls") or ()):
        blocks.append(_tool_use(call, f"{where}.tool_calls[{k}]"))
    return blocks


def _thinking_block(block: Any, where: str) -> dict[str, Any]:
    if isinstance(block, dict) and block.get("type") == "thinking" and isinstance(block.get("signature"), str):
        return {"type": "thinking", "thinking": block.get("thinking", ""), "signature": block["signature"]}
    if isinstance(block, dict) and block.get("type") == "redacted_thinking" and isinstance(block.get("data"), str):
        return {"type": "redacted_thinking", "data": block["data"]}
    raise BadRequest(f"`{where}.thinking_blocks` holds a block that is neither signed thinking nor redacted "
                     "thinking.", param=f"{where}.thinking_blocks")


def _tool_use(call: Any, where: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise BadRequest(f"`{where}` must be a function call with a name.", param=where)
    arguments = function.get("arguments") or "{}"
    try:
        value = orjson.loads(arguments) if isinstance(arguments, str) else arguments
    except orjson.JSONDecodeError:
        raise BadRequest(f"`{where}.function.arguments` is not valid JSON.", param=f"{where}.function.arguments") \
            from None
    if not isinstance(value, dict):
        raise BadRequest(f"`{where}.function.arguments` must be a JSON object.", param=f"{where}.function.arguments")
    return {"type": "tool_use", "id": call.get("id") or "", "name": function["name"], "input": value}


def _tool_result(message: Mapping[str, Any], where: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str):
        raise BadRequest(f"`{where}.tool_call_id` is required for a tool message.", param=f"{where}.tool_call_id")
    content = message.get("content")
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id,
                              "content": content if isinstance(content, str) else _text_blocks(content, where)}
    if message.get("is_error") is True:
        result["is_error"] = True
    return result


def _with_cache(block: dict[str, Any], part: Mapping[str, Any]) -> dict[str, Any]:
    if "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    return block


def _tool(tool: Any, i: int) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise BadRequest(f"`tools[{i}]` must be a function tool with a name.", param=f"tools[{i}]")
    out: dict[str, Any] = {"name": function["name"],
                           "input_schema": function.get("parameters") or {"type": "object", "properties": {}}}
    if function.get("description"):
        out["description"] = function["description"]
    if function.get("strict") is True:
        out["strict"] = True
    return _with_cache(out, tool)


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None:
        out: dict[str, Any] | None = {"type": "auto"} if parallel is False else None
    elif choice in ("auto", "none"):
        out = {"type": choice}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        out = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise BadRequest("`tool_choice` must be auto, none, required or a named function.", param="tool_choice")
    if out is not None and parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def _thinking(effort: Any, out: dict[str, Any]) -> None:
    if effort is None or effort == "none":
        return
    budget = THINKING_BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is None:
        raise BadRequest(f"`reasoning_effort` must be one of none, {', '.join(THINKING_BUDGETS)}.",
                         param="reasoning_effort")
    # The budget must stay below max_tokens, and thinking needs room for an answer after it.
    budget = min(budget, out["max_tokens"] - 1)
    if budget < 1024:
        raise BadRequest("`reasoning_effort` needs `max_tokens` above 1024 on this model.", param="reasoning_effort")
    out["thinking"] = {"type": "enabled", "budget_tokens": budget}


def _response_format(fmt: Any, out: dict[str, Any]) -> None:
    if fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text"):
        return
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            out["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
            return
    raise BadRequest("`response_format` must be text or json_schema with a schema on this model "
                     "(Anthropic has no plain JSON mode).", param="response_format")


# ---------------------------------------------------------------- whole answers: Messages -> chat


def parse_response(message: Mapping[str, Any], created: int | None = None) -> dict[str, Any]:
    """A Messages answer as a chat completion (thinking kept, with signatures, in `thinking_blocks`)."""
    text: list[str] = []
    reasoning: list[str] = []
    thinking: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            text.append(block.get("text", ""))
        elif kind == "thinking":
            reasoning.append(block.get("thinking", ""))
            thinking.append({"type": "thinking", "thinking": block.get("thinking", ""),
                             "signature": block.get("signature", "")})
        elif kind == "redacted_thinking":
            thinking.append({"type": "redacted_thinking", "data": block.get("data", "")})
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"), "arguments": orjson.dumps(
                              block.get("input") or {}).decode()}})
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if calls:
        reply["tool_calls"] = calls
    if thinking:
        reply["reasoning_content"] = "".join(reasoning)
        reply["thinking_blocks"] = thinking
    return {
        "id": message.get("id"), "object": "chat.completion", "created": created or int(time.time()),
        "model": message.get("model"),
        "choices": [{"index": 0, "message": reply, "finish_reason": finish_reason(message.get("stop_reason"))}],
        "usage": chat_usage(message.get("usage") or {}),
    }


def finish_reason(stop_reason: Any) -> str | None:
    if stop_reason is None:
        return None
    return STOP_REASONS.get(stop_reason, "stop")


def chat_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """Anthropic's input_tokens exclude cache reads and writes; OpenAI's prompt_tokens include them."""
    read = int(usage.get("cache_read_input_tokens") or 0)
    written = int(usage.get("cache_creation_input_tokens") or 0)
    prompt = int(usage.get("input_tokens") or 0) + read + written
    completion = int(usage.get("output_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": read, "cache_write_tokens": written}}


# ---------------------------------------------------------------- errors


def parse_error(status: int, headers: Mapping[str, str], raw: bytes, provider_id: str) -> UpstreamStatusError:
    """Anthropic's `{"type":"error","error":{"type","message"}}` as the gateway's typed upstream error."""
    error = error_object(raw)
    message = str(error.get("message") or "") if error else ""
    return UpstreamStatusError(
        f"{provider_id} answered HTTP {status}: {message or 'error'}",
        upstream_status=status,
        upstream_error=error,
        retry_after=parse_retry_after(headers),
        error_type=error_type(status, error),
    )


def error_object(raw: bytes) -> dict[str, Any] | None:
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return None
    return {"message": error.get("message"), "type": error.get("type"), "code": error.get("type")}


def error_type(status: int, error: Mapping[str, Any] | None) -> str:
    kind = error.get("type") if error else None
    if status == 429 or kind == "rate_limit_error":
        return "rate_limited"
    if status in (401, 403) or kind in ("authentication_error", "permission_error"):
        return "auth"
    if status == 404:
        return "not_found"
    if status in (408, 504) or kind == "timeout_error":
        return "timeout"
    if status >= 500 or status == 409 or kind in ("overloaded_error", "api_error"):
        return "upstream_5xx"
    message = str(error.get("message") or "").lower() if error else ""
    if any(hint in message for hint in _CONTEXT_HINTS):
        return "context_length"
    return "bad_request"


# ---------------------------------------------------------------- streams: Messages events -> chat chunks


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
