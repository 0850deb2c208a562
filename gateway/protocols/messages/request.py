"""A Messages request as a chat request: what chat cannot express is a BadRequest naming it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.errors import BadRequest

_EFFORTS = ((2048, "low"), (8192, "medium"))  # thinking budget below this -> reasoning_effort

# Messages fields with no chat counterpart: refused (README lists them).
_REFUSED = frozenset({"top_k", "container", "mcp_servers", "service_tier"})
# Dropped: context editing only trims what the model would otherwise see in full (Claude Code sends it).
_DROPPED = frozenset({"context_management"})
_HANDLED = frozenset({"model", "messages", "system", "max_tokens", "stop_sequences", "stream", "temperature",
                      "top_p", "tools", "tool_choice", "thinking", "metadata", "output_config"})


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
