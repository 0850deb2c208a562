"""A Responses request as a chat request: what chat cannot express is a BadRequest naming it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.errors import BadRequest
from gateway.protocols.responses.input_items import input_messages
from gateway.protocols.responses.tools import ToolNames

# Request fields: translated, ignored (they steer OpenAI-side storage, caching or encrypted
# reasoning, and change nothing for a chat target), or refused (no chat equivalent).
_TRANSLATED = frozenset({"model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls",
                         "max_output_tokens", "temperature", "top_p", "text", "reasoning", "stream", "user",
                         "safety_identifier", "top_logprobs", "models"})
_IGNORED = frozenset({"store", "include", "prompt_cache_key", "prompt_cache_retention", "client_metadata",
                      "metadata", "service_tier", "truncation", "stream_options"})
_REFUSED = {
    "previous_response_id": "needs the stored previous response, and the gateway keeps no store: send the whole "
                            "conversation in `input` with `store: false`",
    "conversation": "needs a stored conversation, and the gateway keeps no store",
    "background": "needs a stored response to poll, and the gateway keeps no store",
    "prompt": "refers to a prompt template stored at OpenAI",
    "max_tool_calls": "has no equivalent in chat completions",
}


def to_chat(body: Mapping[str, Any], *, reasoning: bool = True) -> dict[str, Any]:
    """A Responses request as a chat request; what chat cannot express is a BadRequest naming it.

    `reasoning`: whether the target takes `reasoning_effort` and `reasoning_content` (the catalog's
    `reasoning` flag); without it, earlier reasoning is left out of the history.
    """
    for key in body:
        if key in _REFUSED:
            raise BadRequest(f"`{key}` {_REFUSED[key]}; the target of this model speaks chat completions.", param=key)
        if key not in _TRANSLATED and key not in _IGNORED:
            raise BadRequest(f"`{key}` is not a Responses field the gateway can translate to chat completions, "
                             "which the target of this model speaks; remove it.", param=key)
    names = ToolNames(body.get("tools"))
    chat: dict[str, Any] = {"model": body["model"], "messages": input_messages(body, names, reasoning)}
    if body.get("tools"):
        chat["tools"] = names.chat_tools
    _tool_choice(body.get("tool_choice"), names, chat)
    if isinstance(body.get("parallel_tool_calls"), bool) and body.get("tools"):
        chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            chat[key] = body[key]
    if body.get("top_logprobs"):
        chat["logprobs"] = True
        chat["top_logprobs"] = body["top_logprobs"]
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str):
        chat["user"] = user
    _text_format(body.get("text"), chat)
    effort = (body.get("reasoning") or {}).get("effort") if isinstance(body.get("reasoning"), dict) else None
    if reasoning and isinstance(effort, str) and effort != "none":
        chat["reasoning_effort"] = effort
    if body.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _tool_choice(choice: Any, names: ToolNames, chat: dict[str, Any]) -> None:
    if choice is None:
        return
    if choice in ("auto", "none", "required"):
        chat["tool_choice"] = choice
        return
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
        return
    kind = choice.get("type") if isinstance(choice, dict) else choice
    raise BadRequest(f"`tool_choice` of type `{kind}` has no equivalent in chat completions; use auto, none, "
                     "required or a function.", param="tool_choice")


def _text_format(text: Any, chat: dict[str, Any]) -> None:
    if not isinstance(text, dict) or not isinstance(text.get("format"), dict):
        return
    fmt = text["format"]
    kind = fmt.get("type")
    if kind == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif kind == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif kind != "text":
        raise BadRequest(f"`text.format` of type `{kind}` has no equivalent in chat completions.",
                         param="text.format")
