"""The shape checks on a chat request that the gateway itself relies on, each a 400 naming the field.

Only what the gateway reads (or must be able to re-serialise) is checked; everything else is the
upstream's to judge. The checks are a few comparisons per message, and the depth check runs only
on bodies with enough brackets to be deep at all.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import BadRequest

# Long enough for any real id (`openrouter/vendor/model:variant` is under 100), short enough that an
# unknown one costs nothing to look up, suggest for, log or echo back.
MAX_MODEL_ID = 256
# orjson parses 1,023 levels but writes only 254 deep: a deeper body could never be sent upstream.
MAX_DEPTH = 254


def check_model_id(model: str, param: str = "model") -> None:
    if len(model) > MAX_MODEL_ID:
        raise BadRequest(f"`{param}` is {len(model)} characters long; model ids are at most {MAX_MODEL_ID}.",
                         param=param)


def check_common(body: dict[str, Any], raw: bytes) -> None:
    """Any protocol's body (a JSON object with a string `model`): ids the gateway can route, a depth it can send."""
    check_model_id(body["model"])
    others = body.get("models")
    if isinstance(others, list):
        for other in others:
            if isinstance(other, str):
                check_model_id(other, "models")
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
        _check_depth(body)


def check_chat_body(body: dict[str, Any]) -> None:
    """A chat request's messages and tools, as far as the gateway reads them."""
    for index, message in enumerate(body["messages"]):
        # The usual message (an object with text content) is judged here: no call per message.
        if not (isinstance(message, dict) and isinstance(message.get("content"), str)):
            _check_message(message, index)
    tools = body.get("tools")
    if tools is not None:
        _check_tools(tools)


def _check_message(message: Any, index: int) -> None:
    if not isinstance(message, dict):
        raise BadRequest(f"`messages[{index}]` must be an object with `role` and `content`.", param="messages")
    content = message.get("content")
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise BadRequest(f"`messages[{index}].content` must be a string or a list of content parts.",
                         param="messages")
    for part_index, part in enumerate(content):
        if not isinstance(part, dict):
            raise BadRequest(f"`messages[{index}].content[{part_index}]` must be an object.", param="messages")
        if "text" in part and not isinstance(part["text"], str):
            raise BadRequest(f"`messages[{index}].content[{part_index}].text` must be a string.", param="messages")


def _check_tools(tools: Any) -> None:
    if not isinstance(tools, list):
        raise BadRequest("`tools` must be a list of tools.", param="tools")
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict):
            raise BadRequest(f"`tools[{index}]` must be an object with a `function` object.", param="tools")
        if not isinstance(function.get("name"), str):
            raise BadRequest(f"`tools[{index}].function.name` must be a string.", param="tools")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise BadRequest(f"`tools[{index}].function.parameters` must be a JSON Schema object.", param="tools")


def _check_depth(body: dict[str, Any]) -> None:
    try:
        orjson.dumps(body)
    except orjson.JSONEncodeError:
        deep = next((key for key, value in body.items() if not _serialisable(value)), None)
        raise BadRequest(f"The request body is nested more than {MAX_DEPTH} levels deep"
                         f"{f' in `{deep}`' if deep else ''}.", param=deep) from None


def _serialisable(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        return False
    return True
