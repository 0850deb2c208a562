"""Responses function tools as chat tools: a namespace's functions are flattened to `namespace__name`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.errors import BadRequest


class ToolNames:
    """Function tools as chat sees them: a namespace's functions are flattened to `namespace__name`."""

    def __init__(self, tools: Any) -> None:
        self.chat_tools: list[dict[str, Any]] = []
        self.namespaced: dict[str, tuple[str, str]] = {}  # chat name -> (namespace, name)
        if tools is None:
            return
        if not isinstance(tools, list):
            raise BadRequest("`tools` must be a list.", param="tools")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict):
                raise BadRequest(f"`tools[{i}]` must be an object.", param=f"tools[{i}]")
            kind = tool.get("type")
            if kind == "function":
                self.chat_tools.append(_function(tool, tool.get("name"), f"tools[{i}]"))
            elif kind == "namespace" and isinstance(tool.get("tools"), list):
                for j, inner in enumerate(tool["tools"]):
                    where = f"tools[{i}].tools[{j}]"
                    if not isinstance(inner, dict) or inner.get("type") != "function":
                        raise _no_tool(inner.get("type") if isinstance(inner, dict) else None, where)
                    flat = f"{tool.get('name')}__{inner.get('name')}"
                    self.namespaced[flat] = (str(tool.get("name")), str(inner.get("name")))
                    self.chat_tools.append(_function(inner, flat, where))
            else:
                raise _no_tool(kind, f"tools[{i}]")

    def chat_name(self, name: Any, namespace: Any) -> str:
        return f"{namespace}__{name}" if namespace else str(name)

    def split(self, chat_name: str) -> tuple[str | None, str]:
        """The Responses (namespace, name) of a chat function name."""
        namespace, name = self.namespaced.get(chat_name, (None, chat_name))
        return namespace, name


def _no_tool(kind: Any, where: str) -> BadRequest:
    what = "custom (free-form grammar) tools" if kind == "custom" else f"`{kind}` tools"
    return BadRequest(f"`{where}`: {what} have no equivalent in chat completions, which the target of this model "
                      "speaks; only `function` tools (and namespaces of them) can be translated.", param=where)


def _function(tool: Mapping[str, Any], name: Any, where: str) -> dict[str, Any]:
    if not isinstance(name, str) or not name:
        raise BadRequest(f"`{where}.name` is required.", param=f"{where}.name")
    function: dict[str, Any] = {"name": name, "parameters": tool.get("parameters") or {"type": "object",
                                                                                        "properties": {}}}
    if tool.get("description"):
        function["description"] = tool["description"]
    if isinstance(tool.get("strict"), bool):
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}
