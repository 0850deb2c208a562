"""Chat messages as Messages `system` blocks and alternating user/assistant turns of content blocks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.errors import BadRequest


def system_and_turns(chat: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
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
        blocks.append(with_cache({"type": "text", "text": part.get("text", "")}, part))
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
            blocks.append(with_cache({"type": "text", "text": part.get("text", "")}, part))
        elif kind == "image_url":
            blocks.append(with_cache(_image(part.get("image_url"), f"{where}.content[{j}]"), part))
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


def with_cache(block: dict[str, Any], part: Mapping[str, Any]) -> dict[str, Any]:
    if "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    return block
