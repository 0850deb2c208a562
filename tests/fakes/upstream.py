"""A fault-injecting fake OpenAI upstream: a real HTTP/1.1 server on 127.0.0.1, scripted per test.

Raw asyncio rather than a web framework, because the tests need exact control over the wire: a
reset before any byte, a stream cut after the second chunk, a connection held open in silence.
Each request takes the next scripted reply (or `default`), and is recorded with its arrival time.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

_WORDS = re.compile(r"\s*\S+")


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    at: float
    client_left: bool = False


class _Conn:
    """One client connection: write helpers, and a way to notice the client leaving."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.closed = False

    async def head(self, status: int, headers: dict[str, str], *, chunked: bool, length: int = 0) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append("transfer-encoding: chunked" if chunked else f"content-length: {length}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self.writer.drain()

    async def body(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def chunk(self, data: bytes) -> None:
        self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await self.writer.drain()

    async def end_chunks(self) -> None:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()

    def abort(self) -> None:
        self.closed = True
        self.writer.transport.abort()

    async def until_client_leaves(self) -> None:
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(65536):
                pass
        self.closed = True


# ---------------------------------------------------------------- replies


class Reply:
    delay: float = 0.0
    headers: dict[str, str]

    async def respond(self, conn: _Conn, request: Received) -> None:
        raise NotImplementedError


@dataclass
class _Ok(Reply):
    text: str
    model: str | None = None
    usage: dict[str, int] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str = "stop"
    done: bool = True
    cut_after_words: int | None = None
    first_token_delay: float = 0.0
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)

    async def respond(self, conn: _Conn, request: Received) -> None:
        body = request.json if isinstance(request.json, dict) else {}
        model = self.model or str(body.get("model", "fake"))
        words = _WORDS.findall(_continued(self.text, body))
        usage = self.usage or {"prompt_tokens": 5, "completion_tokens": len(words), "total_tokens": 5 + len(words)}
        if not body.get("stream"):
            if self.first_token_delay:
                await asyncio.sleep(self.first_token_delay)
            message: dict[str, Any] = {"role": "assistant", "content": None if self.tool_calls else self.text}
            if self.tool_calls:
                message["tool_calls"] = self.tool_calls
            answer = {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
                      "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}],
                      "usage": usage}
            raw = orjson.dumps(answer)
            await conn.head(200, {"content-type": "application/json", **self.headers}, chunked=False, length=len(raw))
            await conn.body(raw)
            return
        options = body.get("stream_options")
        with_usage = isinstance(options, dict) and options.get("include_usage") is True
        await conn.head(200, {"content-type": "text/event-stream", **self.headers}, chunked=True)
        await conn.chunk(_event(chunk(role="assistant", content="", model=model)))
        if self.first_token_delay:
            await asyncio.sleep(self.first_token_delay)
        if self.tool_calls:
            await conn.chunk(_event(chunk(tool_calls=[{"index": i, **c} for i, c in enumerate(self.tool_calls)],
                                          model=model)))
        for index, word in enumerate(words):
            if self.cut_after_words is not None and index >= self.cut_after_words:
                conn.abort()
                return
            await conn.chunk(_event(chunk(content=word, model=model)))
        await conn.chunk(_event(chunk(finish_reason=self.finish_reason, model=model)))
        if with_usage:
            await conn.chunk(_event(chunk(usage=usage, model=model)))
        if self.done:
            await conn.chunk(b"data: [DONE]\n\n")
        await conn.end_chunks()


@dataclass
class _Status(Reply):
    code: int
    payload: Any = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)

    async def respond(self, conn: _Conn, request: Received) -> None:
        raw = self.payload if isinstance(self.payload, bytes) else orjson.dumps(self.payload)
        await conn.head(self.code, {"content-type": "application/json", **self.headers}, chunked=False,
                        length=len(raw))
        await conn.body(raw)


@dataclass
class _Reset(Reply):
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)

    async def respond(self, conn: _Conn, request: Received) -> None:
        conn.abort()


@dataclass
class _Hang(Reply):
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)

    async def respond(self, conn: _Conn, request: Received) -> None:
        await conn.until_client_leaves()


@dataclass
class _Pause:
    seconds: float


class _Stall:
    pass


@dataclass
class _Gate:
    opened: asyncio.Event


class _Cut:
    pass


@dataclass
class _Stream(Reply):
    events: list[Any]
    done: bool = True
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)

    async def respond(self, conn: _Conn, request: Received) -> None:
        await conn.head(200, {"content-type": "text/event-stream", **self.headers}, chunked=True)
        for item in self.events:
            if isinstance(item, _Pause):
                await asyncio.sleep(item.seconds)
            elif isinstance(item, _Gate):
                await item.opened.wait()
            elif isinstance(item, _Stall):
                await conn.until_client_leaves()
                return
            elif isinstance(item, _Cut):
                conn.abort()
                return
            elif isinstance(item, bytes):
                await conn.chunk(item)
            else:
                await conn.chunk(_event(item))
        if self.done:
            await conn.chunk(b"data: [DONE]\n\n")
        await conn.end_chunks()


@dataclass
class _Leak(Reply):
    """A careless upstream: repeats what it was sent (its key, extra headers, the URL path) in every
    field it can. `where`: `status` (an error body), `stream_error_first` / `stream_error_after` (an
    SSE `error` event before or after content), `answer` (a 200, streamed or not, quoting it)."""

    where: str
    code: int = 400
    nested: bool = False
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)

    async def respond(self, conn: _Conn, request: Received) -> None:
        said = f"{request.method} {request.path} " + " ".join(f"{k}: {v}" for k, v in request.headers.items())
        if self.nested:
            error: dict[str, Any] = {"message": {"text": said}, "type": [said], "code": {"echo": [said, {"in": said}]},
                                     "param": {"path": request.path}, "details": request.headers}
        else:
            error = {"message": f"bad request: {said}", "type": said, "code": said, "param": request.path,
                     "details": {"headers": request.headers, "path": [request.path]}}
        body = request.json if isinstance(request.json, dict) else {}
        if self.where == "status":
            await _Status(self.code, {"error": error}).respond(conn, request)
        elif self.where == "answer" and not body.get("stream"):
            await _Ok(said, model=said).respond(conn, request)
        elif self.where == "answer":
            await _Stream([chunk(content=said, model=said), chunk(finish_reason="stop", model=said)]).respond(
                conn, request)
        elif self.where == "stream_error_first":
            await _Stream([{"error": error}], done=False).respond(conn, request)
        else:
            await _Stream([chunk(role="assistant", content="Hello"), {"error": error}], done=False).respond(
                conn, request)


def leak(where: str, *, code: int = 400, nested: bool = False) -> Reply:
    return _Leak(where, code, nested)


@dataclass
class _Embeddings(Reply):
    dims: int = 3
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)

    async def respond(self, conn: _Conn, request: Received) -> None:
        body = request.json if isinstance(request.json, dict) else {}
        given = body.get("input")
        inputs = given if isinstance(given, list) else [given]
        size = body.get("dimensions") or self.dims
        data = [{"object": "embedding", "index": i, "embedding": [float(i + 1)] * size} for i in range(len(inputs))]
        raw = orjson.dumps({"object": "list", "data": data, "model": body.get("model"),
                            "usage": {"prompt_tokens": 7 * len(inputs), "total_tokens": 7 * len(inputs)}})
        await conn.head(200, {"content-type": "application/json", **self.headers}, chunked=False, length=len(raw))
        await conn.body(raw)


def embeddings(dims: int = 3) -> Reply:
    """An embeddings answer: one vector per input (all `index + 1`), 7 prompt tokens per input."""
    return _Embeddings(dims)


@dataclass
class _Body(Reply):
    """Any status and content type, with the body sent as given: chunked (pieces and pauses) or whole."""

    code: int
    content_type: str
    parts: list[Any]
    chunked: bool = True
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)

    async def respond(self, conn: _Conn, request: Received) -> None:
        headers = {"content-type": self.content_type, **self.headers}
        if not self.chunked:
            raw = b"".join(p for p in self.parts if isinstance(p, bytes))
            await conn.head(self.code, headers, chunked=False, length=len(raw))
            await conn.body(raw)
            return
        await conn.head(self.code, headers, chunked=True)
        for part in self.parts:
            if isinstance(part, _Pause):
                await asyncio.sleep(part.seconds)
            else:
                await conn.chunk(part)
        await conn.end_chunks()


def body(code: int, content_type: str, parts: list[Any], *, chunked: bool = True) -> Reply:
    return _Body(code, content_type, list(parts), chunked)


def ok(text: str = "Hello from upstream", *, model: str | None = None, usage: dict[str, int] | None = None,
       tool_calls: list[dict[str, Any]] | None = None, finish_reason: str = "stop",
       headers: dict[str, str] | None = None) -> Reply:
    return _Ok(text, model, usage, tool_calls, "tool_calls" if tool_calls else finish_reason,
               headers=headers or {})


def status(code: int, body: Any = None, *, headers: dict[str, str] | None = None) -> Reply:
    if body is None:
        body = {"error": {"message": f"fake upstream error {code}", "type": "api_error", "code": None, "param": None}}
    return _Status(code, body, headers=headers or {})


def rate_limited(retry_after: float | None = None, retry_after_ms: float | None = None) -> Reply:
    headers = {}
    if retry_after is not None:
        headers["retry-after"] = f"{retry_after:g}"
    if retry_after_ms is not None:
        headers["retry-after-ms"] = f"{retry_after_ms:g}"
    body = {"error": {"message": "Rate limit reached", "type": "rate_limit_error", "code": "rate_limit_exceeded",
                      "param": None}}
    return _Status(429, body, headers=headers)


def context_length_exceeded() -> Reply:
    return _Status(400, {"error": {"message": "This model's maximum context length is 8000 tokens.",
                                   "type": "invalid_request_error", "code": "context_length_exceeded",
                                   "param": "messages"}})


def content_policy() -> Reply:
    return _Status(400, {"error": {"message": "Your request was rejected by the safety system.",
                                   "type": "invalid_request_error", "code": "content_policy_violation",
                                   "param": None}})


def server_error(code: int = 500) -> Reply:
    return status(code)


def reset() -> Reply:
    return _Reset()


def hang() -> Reply:
    return _Hang()


def slow_first_token(delay: float, text: str = "Hello from upstream") -> Reply:
    return _Ok(text, first_token_delay=delay)


def stream(events: list[Any], *, done: bool = True) -> Reply:
    return _Stream(list(events), done)


def stream_without_done(text: str = "Hello from upstream") -> Reply:
    return _Ok(text, done=False)


def cut_after(n_words: int, text: str = "Hello from upstream") -> Reply:
    return _Ok(text, cut_after_words=n_words)


def pause(seconds: float) -> _Pause:
    return _Pause(seconds)


def gate(opened: asyncio.Event) -> _Gate:
    """Hold the stream here until the test sets `opened` (the upstream's loop must be the test's)."""
    return _Gate(opened)


def stall() -> _Stall:
    return _Stall()


def cut() -> _Cut:
    return _Cut()


def chunk(content: str | None = None, role: str | None = None, finish_reason: str | None = None,
          usage: dict[str, int] | None = None, tool_calls: list[dict[str, Any]] | None = None,
          model: str = "fake") -> dict[str, Any]:
    """One chat.completion.chunk; with `usage` and nothing else it is the usage-only chunk."""
    base: dict[str, Any] = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model}
    if usage is not None and content is None and role is None and finish_reason is None and tool_calls is None:
        return {**base, "choices": [], "usage": usage}
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}


def _continued(text: str, body: dict[str, Any]) -> str:
    """Like a model given its own answer's beginning as a final assistant message (prefill): the rest."""
    messages = body.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    prefix = last.get("content") if isinstance(last, dict) and last.get("role") == "assistant" else None
    if isinstance(prefix, str) and text.startswith(prefix):
        return text[len(prefix):]
    return text


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            408: "Request Timeout", 409: "Conflict", 429: "Too Many Requests", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout", 529: "Overloaded"}


# ---------------------------------------------------------------- the server


class FakeUpstream:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.default: Reply = ok()
        self.disconnects = 0
        self._queue: deque[Reply] = deque()
        self._server: asyncio.base_events.Server | None = None
        self._changed: asyncio.Event | None = None
        self._connections: dict[asyncio.Task[None], _Conn] = {}
        self.base_url = ""

    def script(self, *replies: Reply) -> None:
        self._queue.extend(replies)

    def reset_log(self) -> None:
        self.received.clear()
        self.disconnects = 0

    async def __aenter__(self) -> FakeUpstream:
        self._changed = asyncio.Event()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for conn in list(self._connections.values()):
            conn.abort()  # each handler then sees its connection end and returns
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    @classmethod
    @contextlib.contextmanager
    def in_thread(cls) -> Iterator[FakeUpstream]:
        """The same server on its own event loop in a thread, for synchronous tests."""
        upstream = cls()
        loop = asyncio.new_event_loop()
        started = threading.Event()
        stop: asyncio.Future[None] | None = None

        async def main() -> None:
            nonlocal stop
            stop = loop.create_future()
            async with upstream:
                started.set()
                await stop

        thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
        thread.start()
        started.wait(10)
        try:
            yield upstream
        finally:
            loop.call_soon_threadsafe(lambda: stop is not None and stop.set_result(None))
            thread.join(10)
            loop.close()

    async def wait_for_requests(self, n: int, timeout: float = 5) -> None:
        await self._wait(lambda: len(self.received) >= n, timeout)

    async def wait_disconnect(self, timeout: float = 5, count: int = 1) -> None:
        await self._wait(lambda: self.disconnects >= count, timeout)

    async def _wait(self, condition: Any, timeout: float) -> None:
        assert self._changed is not None
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        conn = _Conn(reader, writer)
        self._connections[task] = conn
        try:
            while not conn.closed:
                request = await _read_request(reader)
                if request is None:
                    return
                self.received.append(request)
                self._notify()
                reply = self._queue.popleft() if self._queue else self.default
                if reply.delay:
                    await asyncio.sleep(reply.delay)
                if request.path.endswith("/models") and request.method == "GET":
                    raw = orjson.dumps({"object": "list", "data": [{"id": "fake", "object": "model"}]})
                    await conn.head(200, {"content-type": "application/json"}, chunked=False, length=len(raw))
                    await conn.body(raw)
                    continue
                try:
                    await reply.respond(conn, request)
                except ConnectionError:
                    conn.closed = True
                if conn.closed and _client_left(reply):
                    request.client_left = True
                    self.disconnects += 1
                    self._notify()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._connections.pop(task, None)
            writer.close()


def _client_left(reply: Reply) -> bool:
    """Replies that wait on the client: their connection closing means the client went away."""
    if isinstance(reply, _Hang):
        return True
    if isinstance(reply, _Stream):
        return any(isinstance(e, _Stall) for e in reply.events)
    return False


async def _read_request(reader: asyncio.StreamReader) -> Received | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    at = time.monotonic()
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            parts.append(data[:-2])
        body = b"".join(parts)
    elif headers.get("content-length"):
        body = await reader.readexactly(int(headers["content-length"]))
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    return Received(method, path, headers, body, parsed, at)
