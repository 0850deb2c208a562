"""A chat request as a Messages request: a field Messages cannot express is a BadRequest naming it.

What is dropped is dropped only where dropping changes nothing (the README lists both).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.errors import BadRequest
from gateway.upstream.formats.anthropic_messages.turns import system_and_turns, with_cache

DEFAULT_MAX_TOKENS = 4096
# reasoning_effort -> thinking budget (tokens); "none" turns thinking off.
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576, "xhigh": 32000}

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


def build_request(body: Mapping[str, Any], upstream_model: str, *, stream: bool, max_output: int) -> dict[str, Any]:
    """The chat body as a Messages request; a field Messages cannot express is a BadRequest naming it."""
    for key, value in body.items():
        if key in _HANDLED or key in _IGNORED:
            continue
        if key in _NEUTRAL and value in _NEUTRAL[key]:
            continue
        raise BadRequest(f"`{key}` has no equivalent in Anthropic's Messages API, which serves this model; "
                         "remove it.", param=key)
    system, messages = system_and_turns(body["messages"])
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
    return with_cache(out, tool)


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
