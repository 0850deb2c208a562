"""A whole chat completion as a whole Response, and the output items and usage the stream shares."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from gateway.protocols.responses.tools import ToolNames

IdFactory = Callable[[str], str]

# chat finish_reason -> the Response's incomplete_details.reason
INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(12).hex()}"


def usage(chat_usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Chat usage in the Responses shape."""
    if not chat_usage:
        return None
    prompt = int(chat_usage.get("prompt_tokens") or 0)
    completion = int(chat_usage.get("completion_tokens") or 0)
    prompt_details = chat_usage.get("prompt_tokens_details") or {}
    completion_details = chat_usage.get("completion_tokens_details") or {}
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": int(prompt_details.get("cached_tokens") or 0),
                                 "cache_write_tokens": int(prompt_details.get("cache_write_tokens") or 0)},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(completion_details.get("reasoning_tokens") or 0)},
        "total_tokens": int(chat_usage.get("total_tokens") or prompt + completion),
    }


def response_object(request: Mapping[str, Any], *, response_id: str, created_at: int, model: str,
                    status: str, output: list[dict[str, Any]], usage_: dict[str, Any] | None,
                    finish: str | None = None, error: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Response object, echoing the request's settings as the real API does."""
    incomplete = INCOMPLETE_REASONS.get(finish or "")
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": {"reason": incomplete} if status == "incomplete" else None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": request.get("reasoning") or {"effort": None, "summary": None},
        "service_tier": "default",
        "store": False,
        "temperature": request.get("temperature", 1.0),
        "text": request.get("text") or {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "top_p": request.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage_,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def to_response(completion: Mapping[str, Any], request: Mapping[str, Any], *, ids: IdFactory = new_id,
                now: Callable[[], float] = time.time) -> dict[str, Any]:
    """A whole chat completion as a whole Response."""
    names = ToolNames(request.get("tools"))
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    thought = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(thought, str) and thought:
        output.append(reasoning_item(ids("rs"), thought))
    finish = choice.get("finish_reason")
    text = message.get("content")
    if isinstance(text, str) and text:
        output.append(message_item(ids("msg"), text, "incomplete" if finish in INCOMPLETE_REASONS else "completed"))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        output.append({"id": ids("msg"), "type": "message", "status": "completed", "role": "assistant",
                       "content": [{"type": "refusal", "refusal": refusal}]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        output.append(call_item(ids("fc"), str(call.get("id") or ids("call")), str(function.get("name") or ""),
                                 str(function.get("arguments") or ""), "completed", names))
    status = "incomplete" if finish in INCOMPLETE_REASONS else "completed"
    return response_object(request, response_id=ids("resp"), created_at=int(completion.get("created") or now()),
                           model=str(completion.get("model") or request.get("model")), status=status, output=output,
                           usage_=usage(completion.get("usage")), finish=finish)


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": [text_part(text)]}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {"id": item_id, "type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": text}]}


def call_item(item_id: str, call_id: str, chat_name: str, arguments: str, status: str,
               names: ToolNames) -> dict[str, Any]:
    namespace, name = names.split(chat_name)
    item: dict[str, Any] = {"id": item_id, "type": "function_call", "status": status, "arguments": arguments,
                            "call_id": call_id, "name": name}
    if namespace:
        item["namespace"] = namespace
    return item
