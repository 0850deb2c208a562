"""Responses `instructions` and `input` items as chat messages (the history a chat target reads)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.errors import BadRequest
from gateway.protocols.responses.tools import ToolNames


def input_messages(body: Mapping[str, Any], names: ToolNames, reasoning: bool) -> list[dict[str, Any]]:
    """The chat history: reasoning items ride on the next assistant turn (dropped when the target cannot
    reason); custom tools and stored items are refused."""
    out: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        out.append({"role": "system", "content": instructions})
    given = body.get("input")
    if isinstance(given, str):
        out.append({"role": "user", "content": given})
        return out
    if not isinstance(given, list):
        raise BadRequest("`input` is required: a string or a list of items.", param="input")
    pending_reasoning: list[str] = []
    for i, item in enumerate(given):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"`{where}` must be an object.", param=where)
        kind = item.get("type", "message")
        if kind == "message":
            _message(item, where, out, pending_reasoning if reasoning else [])
            pending_reasoning = []
        elif kind == "function_call":
            _function_call(item, names, out, pending_reasoning if reasoning else [])
            pending_reasoning = []
        elif kind == "function_call_output":
            out.append({"role": "tool", "tool_call_id": item.get("call_id"),
                        "content": _tool_output(item.get("output"), where)})
        elif kind == "reasoning":
            pending_reasoning.extend(_reasoning_text(item))
        else:
            raise _untranslatable(kind, where)
    return out


def _function_call(item: Mapping[str, Any], names: ToolNames, out: list[dict[str, Any]],
                   reasoning: list[str]) -> None:
    """A call joins the assistant turn before it (chat keeps a turn's calls together), or opens one."""
    call = {"id": item.get("call_id"), "type": "function",
            "function": {"name": names.chat_name(item.get("name"), item.get("namespace")),
                         "arguments": item.get("arguments") or ""}}
    last = out[-1] if out else None
    if last is None or last.get("role") != "assistant":
        last = {"role": "assistant", "content": None}
        out.append(last)
    last.setdefault("tool_calls", []).append(call)
    if reasoning:
        last["reasoning_content"] = "".join(reasoning)


def _untranslatable(kind: Any, where: str) -> BadRequest:
    if kind in ("custom_tool_call", "custom_tool_call_output"):
        return BadRequest(f"`{where}` is a `{kind}` item: custom (free-form grammar) tools have no equivalent in "
                          "chat completions, which the target of this model speaks.", param=where)
    if kind == "item_reference":
        return BadRequest(f"`{where}` refers to a stored item, and the gateway keeps no store: send the item "
                          "itself.", param=where)
    return BadRequest(f"`{where}`: `{kind}` items have no equivalent in chat completions, which the target "
                      "of this model speaks.", param=where)


def _message(item: Mapping[str, Any], where: str, out: list[dict[str, Any]], reasoning: list[str]) -> None:
    role = item.get("role")
    content = item.get("content")
    if role in ("system", "developer"):
        out.append({"role": "system", "content": _plain_text(content, where)})
    elif role == "user":
        out.append({"role": "user", "content": _collapsed(_user_content(content, where))})
    elif role == "assistant":
        message: dict[str, Any] = {"role": "assistant", "content": _plain_text(content, where)}
        if reasoning:
            message["reasoning_content"] = "".join(reasoning)
        out.append(message)
    else:
        raise BadRequest(f"`{where}.role` must be user, assistant, system or developer.", param=f"{where}.role")


def _plain_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"`{where}.content` must be a string or a list of parts.", param=f"{where}.content")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            texts.append(str(part.get("text", "")))
        elif kind == "refusal":
            texts.append(str(part.get("refusal", "")))
        else:
            raise BadRequest(f"`{where}.content[{j}]`: `{kind}` parts are not allowed in this message.",
                             param=f"{where}.content[{j}]")
    return "".join(texts)


def _user_content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"`{where}.content` must be a string or a list of parts.", param=f"{where}.content")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        place = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "text", "output_text"):
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image: dict[str, Any] = {"url": part["image_url"]}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file" and isinstance(part.get("file_data"), str):
            file = {k: part[k] for k in ("file_data", "filename") if k in part}
            parts.append({"type": "file", "file": file})
        elif kind in ("input_image", "input_file"):
            raise BadRequest(f"`{place}` refers to a file stored at OpenAI (`file_id`/`file_url`), which a chat "
                             "target cannot read: send the data inline.", param=place)
        else:
            raise BadRequest(f"`{place}`: `{kind}` parts have no equivalent in chat completions.", param=place)
    return parts


def _tool_output(output: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return _collapsed(_user_content(output, f"{where}.output"))
    return orjson.dumps(output).decode()


def _collapsed(content: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Text-only parts as one string: the form every chat server accepts (some take no part lists)."""
    if isinstance(content, list) and all(p["type"] == "text" for p in content):
        return "".join(p["text"] for p in content)
    return content


def _reasoning_text(item: Mapping[str, Any]) -> list[str]:
    texts = [str(p.get("text", "")) for p in item.get("content") or () if isinstance(p, dict)]
    if not texts:
        texts = [str(p.get("text", "")) for p in item.get("summary") or () if isinstance(p, dict)]
    return texts  # `encrypted_content` is OpenAI's own: no other target can read it
