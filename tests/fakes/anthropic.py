"""Anthropic-wire replies for the fake upstream: recorded Messages SSE transcripts, Anthropic errors,
and a small Messages API that answers whatever it is asked (for real SDK clients).

The server is tests/fakes/upstream.py's FakeUpstream; these are its replies in Anthropic's shapes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from gateway.upstream import echo
from tests.fakes.upstream import Received, Reply, _Conn, _Status, _Stream, cut

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "anthropic"


def golden(name: str) -> dict[str, Any]:
    return orjson.loads((GOLDEN / f"{name}.json").read_bytes())


def event(kind: str, body: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: ".encode() + orjson.dumps(body) + b"\n\n"


def transcript(events: list[list[Any]], *, cut_after: int | None = None) -> Reply:
    """The recorded events as Anthropic streams them; `cut_after` drops the connection after that many."""
    items: list[Any] = [event(kind, body) for kind, body in events]
    if cut_after is not None:
        items = [*items[:cut_after], cut()]
    return _Stream(items, done=False)


def error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"}
    return _Status(status, body, headers=headers or {})


def overloaded() -> Reply:
    return error(529, "overloaded_error", "Overloaded")


class MessagesApi(Reply):
    """Answers any Messages request: text (`You said: ...`), a call of the first tool when tools are
    offered and no tool result came back yet, `Tool result: ...` after one; count_tokens too."""

    def __init__(self, headers: dict[str, str] | None = None) -> None:
        self.delay = 0.0
        self.headers = headers or {}

    async def respond(self, conn: _Conn, request: Received) -> None:
        body = request.json if isinstance(request.json, dict) else {}
        if request.path.endswith("/count_tokens"):
            await _Status(200, {"input_tokens": 42}).respond(conn, request)
            return
        message = answer(body)
        if not body.get("stream"):
            await _Status(200, message, headers=self.headers).respond(conn, request)
            return
        await _Stream(stream_events(message), done=False, headers=self.headers).respond(conn, request)


def answer(body: dict[str, Any]) -> dict[str, Any]:
    last = (body.get("messages") or [{}])[-1]
    content = last.get("content")
    blocks = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
    results = [b for b in blocks if b.get("type") == "tool_result"]
    said = " ".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    tools = body.get("tools") or []
    if results:
        result = results[0].get("content")
        text = result if isinstance(result, str) else "".join(b.get("text", "") for b in result or [])
        out: list[dict[str, Any]] = [{"type": "text", "text": f"Tool result: {text}"}]
        stop = "end_turn"
    elif tools:
        # Like the echo model: each property of the first tool's schema filled with what the user said.
        name = tools[0]["name"]
        properties = (tools[0].get("input_schema") or {}).get("properties") or {}
        out = [{"type": "tool_use", "id": "toolu_fake1", "name": name, "input": {k: said for k in properties}}]
        stop = "tool_use"
    else:
        out = [{"type": "text", "text": f"You said: {said}"}]
        stop = "end_turn"
    return {"id": "msg_fake1", "type": "message", "role": "assistant", "model": body.get("model", "claude-fake"),
            "content": out, "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 7, "cache_read_input_tokens": 0,
                      "cache_creation_input_tokens": 0}}


def stream_events(message: dict[str, Any]) -> list[bytes]:
    """A whole Messages answer as Anthropic streams it, text and tool JSON split into small deltas."""
    start = {**message, "content": [], "stop_reason": None, "usage": {**message["usage"], "output_tokens": 1}}
    out = [event("message_start", {"type": "message_start", "message": start}),
           event("ping", {"type": "ping"})]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            out.append(event("content_block_start", {"type": "content_block_start", "index": index,
                                                     "content_block": {"type": "text", "text": ""}}))
            for piece in _pieces(block["text"]):
                out.append(_delta(index, {"type": "text_delta", "text": piece}))
        else:
            out.append(event("content_block_start", {"type": "content_block_start", "index": index,
                                                     "content_block": {**block, "input": {}}}))
            for piece in _pieces(orjson.dumps(block["input"]).decode()):
                out.append(_delta(index, {"type": "input_json_delta", "partial_json": piece}))
        out.append(event("content_block_stop", {"type": "content_block_stop", "index": index}))
    out.append(event("message_delta", {"type": "message_delta", "delta": {"stop_reason": message["stop_reason"],
                                                                          "stop_sequence": None},
                                       "usage": {"output_tokens": message["usage"]["output_tokens"]}}))
    out.append(event("message_stop", {"type": "message_stop"}))
    return out


def _pieces(text: str, size: int = 5) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    return event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


class ChatApi(Reply):
    """An OpenAI-wire upstream over real HTTP that answers like the built-in echo model (its answers,
    streamed or whole, tool calls included), so the same client test can run against either wire."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.headers = {}

    async def respond(self, conn: _Conn, request: Received) -> None:
        body = request.json if isinstance(request.json, dict) else {}
        answered = echo.answer(body)
        if not body.get("stream"):
            await _Status(200, orjson.loads(await answered.read_all())).respond(conn, request)
            return
        events = []
        while piece := await answered.read_chunk():
            events.append(piece)
        await _Stream(events, done=False).respond(conn, request)
