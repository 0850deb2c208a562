"""Chat chunks as Responses events, one state machine fed as the relay writes the chat stream.

Each chat chunk becomes the Responses events it means as it arrives (`response.created`,
`response.output_item.added`, `response.output_text.delta`, ...), each with its
`sequence_number`; the stream ends with `response.completed`, `response.incomplete`, or, when the
chat stream broke, `response.failed`: never a completed response for an answer that was cut.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from gateway.protocols.chat_stream import ChatStreamTranslator
from gateway.protocols.responses.answer import (
    INCOMPLETE_REASONS,
    IdFactory,
    call_item,
    message_item,
    new_id,
    reasoning_item,
    response_object,
    text_part,
    usage,
)
from gateway.protocols.responses.tools import ToolNames
from gateway.upstream.formats.openai_responses import sse


class StreamTranslator(ChatStreamTranslator):
    """Chat SSE events in (as the relay writes them), Responses SSE events out, in order."""

    def __init__(self, request: Mapping[str, Any], *, ids: IdFactory = new_id,
                 now: Callable[[], float] = time.time) -> None:
        self._request = request
        self._names = ToolNames(request.get("tools"))
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
        return [] if self._ended else super().feed(event)  # nothing after the response's last event

    def keep_alive(self, event: bytes) -> list[bytes]:
        return [event + b"\n\n"]  # a comment is a keep-alive in any SSE stream

    def chunk(self, chunk: Mapping[str, Any], out: list[bytes]) -> None:
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

    def done(self) -> list[bytes]:
        """The chat stream finished: close every item and the response."""
        out: list[bytes] = []
        if not self._started:
            self._start({}, out)
        self._close_open(out)
        for call in self._calls.values():
            self._close_call(call, out)
        self._calls = {}
        status = "incomplete" if self._finish in INCOMPLETE_REASONS else "completed"
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
            part: dict[str, Any] = text_part("")
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
            item = message_item(state["id"], text, "incomplete" if self._finish in INCOMPLETE_REASONS else "completed")
            part = item["content"][0]
            out.append(self._event({"type": "response.output_text.done", **where, "text": text, "logprobs": []}))
        else:
            item = reasoning_item(state["id"], text)
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
            item = call_item(self._ids("fc"), str(call.get("id") or self._ids("call")),
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
