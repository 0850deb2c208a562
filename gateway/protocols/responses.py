"""The OpenAI Responses API as an inbound protocol: a Responses request as chat, and the chat answer back.

Used when a `/v1/responses` request goes to a target that speaks only chat completions (targets
that speak the Responses API get the request untouched). Pure functions and one small state
machine: no sockets, no asyncio. What chat cannot express (hosted tools, custom grammar tools,
stored conversations) is refused with a BadRequest naming it, never dropped in silence; fields
that only steer OpenAI's own storage or caching change nothing for a chat target and are ignored.

The stream translator turns each chat chunk into the Responses events it means as it arrives
(`response.created`, `response.output_item.added`, `response.output_text.delta`, ...), each with
its `sequence_number`, and ends with `response.completed`, `response.incomplete`, or, when the
chat stream broke, `response.failed`: never a completed response for an answer that was cut.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from gateway.errors import BadRequest
from gateway.relay.sse import DONE, event_data
from gateway.upstream.formats.openai_responses import sse

IdFactory = Callable[[str], str]

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
_FINISH = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(12).hex()}"


# ---------------------------------------------------------------- request: Responses -> chat


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
    names = _Names(body.get("tools"))
    chat: dict[str, Any] = {"model": body["model"], "messages": _messages(body, names, reasoning)}
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


class _Names:
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


def _tool_choice(choice: Any, names: _Names, chat: dict[str, Any]) -> None:
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


def _messages(body: Mapping[str, Any], names: _Names, reasoning: bool) -> list[dict[str, Any]]:
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
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": names.chat_name(item.get("name"), item.get("namespace")),
                                 "arguments": item.get("arguments") or ""}}
            last = out[-1] if out else None
            if last is None or last.get("role") != "assistant":
                last = {"role": "assistant", "content": None}
                out.append(last)
            last.setdefault("tool_calls", []).append(call)
            if pending_reasoning and reasoning:
                last["reasoning_content"] = "".join(pending_reasoning)
            pending_reasoning = []
        elif kind == "function_call_output":
            output = item.get("output")
            out.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": _tool_output(output, where)})
        elif kind == "reasoning":
            pending_reasoning.extend(_reasoning_text(item))
        elif kind in ("custom_tool_call", "custom_tool_call_output"):
            raise BadRequest(f"`{where}` is a `{kind}` item: custom (free-form grammar) tools have no equivalent in "
                             "chat completions, which the target of this model speaks.", param=where)
        elif kind == "item_reference":
            raise BadRequest(f"`{where}` refers to a stored item, and the gateway keeps no store: send the item "
                             "itself.", param=where)
        else:
            raise BadRequest(f"`{where}`: `{kind}` items have no equivalent in chat completions, which the target "
                             "of this model speaks.", param=where)
    return out


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


# ---------------------------------------------------------------- answer: chat -> Responses


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
    incomplete = _FINISH.get(finish or "")
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
    names = _Names(request.get("tools"))
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    thought = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(thought, str) and thought:
        output.append(_reasoning_item(ids("rs"), thought))
    finish = choice.get("finish_reason")
    text = message.get("content")
    if isinstance(text, str) and text:
        output.append(_message_item(ids("msg"), text, "incomplete" if finish in _FINISH else "completed"))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        output.append({"id": ids("msg"), "type": "message", "status": "completed", "role": "assistant",
                       "content": [{"type": "refusal", "refusal": refusal}]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        output.append(_call_item(ids("fc"), str(call.get("id") or ids("call")), str(function.get("name") or ""),
                                 str(function.get("arguments") or ""), "completed", names))
    status = "incomplete" if finish in _FINISH else "completed"
    return response_object(request, response_id=ids("resp"), created_at=int(completion.get("created") or now()),
                           model=str(completion.get("model") or request.get("model")), status=status, output=output,
                           usage_=usage(completion.get("usage")), finish=finish)


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": [_text_part(text)]}


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {"id": item_id, "type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": text}]}


def _call_item(item_id: str, call_id: str, chat_name: str, arguments: str, status: str,
               names: _Names) -> dict[str, Any]:
    namespace, name = names.split(chat_name)
    item: dict[str, Any] = {"id": item_id, "type": "function_call", "status": status, "arguments": arguments,
                            "call_id": call_id, "name": name}
    if namespace:
        item["namespace"] = namespace
    return item


# ---------------------------------------------------------------- stream: chat chunks -> Responses events


class StreamTranslator:
    """Chat SSE events in (as the relay writes them), Responses SSE events out, in order."""

    def __init__(self, request: Mapping[str, Any], *, ids: IdFactory = new_id,
                 now: Callable[[], float] = time.time) -> None:
        self._request = request
        self._names = _Names(request.get("tools"))
        self._ids = ids
        self._now = now
        self._seq = 0
        self._response_id = ""
        self._created_at = 0
        self._model = str(request.get("model") or "")
        self._started = False
        self._ended = False
        self._output: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None  # the open message or reasoning item
        self._calls: dict[int, dict[str, Any]] = {}  # chat tool_calls index -> open function_call item
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None

    @property
    def ended(self) -> bool:
        return self._ended

    def feed(self, event: bytes) -> list[bytes]:
        """The Responses events for one chat SSE event (without its blank line)."""
        if self._ended:
            return []
        data = event_data(event)
        if data is None:
            return [event + b"\n\n"]  # keep-alive comments stay keep-alives
        if data == DONE:
            return self.done()
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            chunk = None
        if event.startswith(b"event: error") or not isinstance(chunk, dict) or chunk.get("error"):
            return self.failed(chunk)
        return self.chunk(chunk)

    def chunk(self, chunk: Mapping[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        if not self._started:
            self._start(chunk, out)
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            thought = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(thought, str) and thought:
                self._delta("reasoning", thought, out)
            if isinstance(delta.get("content"), str) and delta["content"]:
                self._delta("message", delta["content"], out)
            for call in delta.get("tool_calls") or ():
                self._tool_call(call, out)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return out

    def done(self) -> list[bytes]:
        """The chat stream finished: close every item and the response."""
        out: list[bytes] = []
        if not self._started:
            self._start({}, out)
        self._close_open(out)
        for call in self._calls.values():
            self._close_call(call, out)
        self._calls = {}
        status = "incomplete" if self._finish in _FINISH else "completed"
        response = self._response(status)
        out.append(self._event({"type": f"response.{status}", "response": response}))
        self._ended = True
        return out

    def failed(self, chunk: Any) -> list[bytes]:
        """The chat stream broke after content: `response.failed`, never a completed response."""
        out: list[bytes] = []
        if not self._started:
            self._start({}, out)
        error = chunk.get("error") if isinstance(chunk, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        failure = {"code": "server_error", "message": str(message or "the upstream stream broke")}
        out.append(self._event({"type": "response.failed", "response": self._response("failed", failure)}))
        self._ended = True
        return out

    def _response(self, status: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
        return response_object(self._request, response_id=self._response_id, created_at=self._created_at,
                               model=self._model, status=status, output=list(self._output),
                               usage_=usage(self._usage) if status != "in_progress" else None,
                               finish=self._finish, error=error)

    def _start(self, chunk: Mapping[str, Any], out: list[bytes]) -> None:
        self._started = True
        self._response_id = self._ids("resp")
        self._created_at = int(chunk.get("created") or self._now())
        self._model = str(chunk.get("model") or self._model)
        response = self._response("in_progress")
        out.append(self._event({"type": "response.created", "response": response}))
        out.append(self._event({"type": "response.in_progress", "response": response}))

    def _event(self, body: dict[str, Any]) -> bytes:
        body["sequence_number"] = self._seq
        self._seq += 1
        return sse(body)

    def _delta(self, kind: str, text: str, out: list[bytes]) -> None:
        item = self._open
        if item is None or item["type"] != kind:
            self._close_open(out)
            item = self._open_item(kind, out)
        item["_text"] += text
        where = {"item_id": item["id"], "output_index": item["_index"], "content_index": 0}
        if kind == "message":
            out.append(self._event({"type": "response.output_text.delta", **where, "delta": text, "logprobs": []}))
        else:
            out.append(self._event({"type": "response.reasoning_text.delta", **where, "delta": text}))

    def _open_item(self, kind: str, out: list[bytes]) -> dict[str, Any]:
        index = len(self._output)
        if kind == "message":
            item: dict[str, Any] = {"id": self._ids("msg"), "type": "message", "status": "in_progress",
                                    "role": "assistant", "content": []}
            part: dict[str, Any] = _text_part("")
        else:
            item = {"id": self._ids("rs"), "type": "reasoning", "summary": [], "content": []}
            part = {"type": "reasoning_text", "text": ""}
        self._output.append(item)
        out.append(self._event({"type": "response.output_item.added", "output_index": index, "item": dict(item)}))
        out.append(self._event({"type": "response.content_part.added", "item_id": item["id"], "output_index": index,
                                "content_index": 0, "part": part}))
        self._open = {"id": item["id"], "type": kind, "_index": index, "_text": ""}
        return self._open

    def _close_open(self, out: list[bytes]) -> None:
        state = self._open
        if state is None:
            return
        self._open = None
        index, text = state["_index"], state["_text"]
        where = {"item_id": state["id"], "output_index": index, "content_index": 0}
        if state["type"] == "message":
            item = _message_item(state["id"], text, "incomplete" if self._finish in _FINISH else "completed")
            part = item["content"][0]
            out.append(self._event({"type": "response.output_text.done", **where, "text": text, "logprobs": []}))
        else:
            item = _reasoning_item(state["id"], text)
            part = item["content"][0]
            out.append(self._event({"type": "response.reasoning_text.done", **where, "text": text}))
        out.append(self._event({"type": "response.content_part.done", **where, "part": part}))
        self._output[index] = item
        out.append(self._event({"type": "response.output_item.done", "output_index": index, "item": item}))

    def _tool_call(self, call: Mapping[str, Any], out: list[bytes]) -> None:
        position = call.get("index", 0)
        function = call.get("function") or {}
        state = self._calls.get(position)
        if state is None:
            self._close_open(out)
            index = len(self._output)
            item = _call_item(self._ids("fc"), str(call.get("id") or self._ids("call")),
                              str(function.get("name") or ""), "", "in_progress", self._names)
            self._output.append(item)
            state = self._calls[position] = {"item": item, "_index": index}
            out.append(self._event({"type": "response.output_item.added", "output_index": index,
                                    "item": dict(item)}))
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            state["item"]["arguments"] += arguments
            out.append(self._event({"type": "response.function_call_arguments.delta", "item_id": state["item"]["id"],
                                    "output_index": state["_index"], "delta": arguments}))

    def _close_call(self, state: dict[str, Any], out: list[bytes]) -> None:
        item = state["item"]
        item["status"] = "completed"
        out.append(self._event({"type": "response.function_call_arguments.done", "item_id": item["id"],
                                "output_index": state["_index"], "arguments": item["arguments"],
                                "name": item["name"]}))
        out.append(self._event({"type": "response.output_item.done", "output_index": state["_index"],
                                "item": dict(item)}))
