"""A whole chat completion as a Messages answer, and the pieces of it the stream shares."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                 "content_filter": "refusal"}


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
