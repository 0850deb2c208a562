"""A fast fake OpenAI upstream for benchmarks: uvloop + httptools, canned bytes, no framework.

It must never be the bottleneck, so it does as little as it can: a non-stream answer is one
pre-built byte string, and a body is only parsed when it asks for a stream. The runner measures
its ceiling in every run (`benchmarks.run` prints it under the table).

Streams send a role chunk, `bench_chunks` content chunks (default 50) `bench_interval_ms` apart
(default 0: all in one write), a finish chunk, a usage chunk when `stream_options.include_usage`
is set, then `[DONE]`. The two knobs are body fields, because the gateway forwards the body
unchanged (except `model`) and no client header; `x-bench-chunks` / `x-bench-interval-ms` request
headers override them for direct calls. Any GET answers 200 (readiness).

    python -m benchmarks.upstream --port 9000
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import cast

import httptools
import orjson
import uvloop

_ANSWER = orjson.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": "fast",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the benchmark upstream."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
})


def _response(body: bytes, content_type: bytes = b"application/json", *, close: bool = False) -> bytes:
    connection = b"connection: close\r\n" if close else b""
    return (b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s\r\n"
            % (content_type, len(body), connection)) + body


_JSON = _response(_ANSWER)
_JSON_CLOSE = _response(_ANSWER, close=True)
_READY = _response(b'{"status":"ready"}')
_EMBEDDING = _response(orjson.dumps({
    "object": "list", "model": "embed",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.0125] * 64}],
    "usage": {"prompt_tokens": 8, "total_tokens": 8},
}))
_STREAM_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def _chunked(payload: dict[str, object] | str) -> bytes:
    data = payload if isinstance(payload, str) else orjson.dumps(payload).decode()
    event = f"data: {data}\n\n".encode()
    return b"%x\r\n%s\r\n" % (len(event), event)


_BASE = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "fast"}
_ROLE = _chunked({**_BASE, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                        "finish_reason": None}]})
_WORD = _chunked({**_BASE, "choices": [{"index": 0, "delta": {"content": " token"}, "finish_reason": None}]})
_FINISH = _chunked({**_BASE, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
_DONE = _chunked("[DONE]") + b"0\r\n\r\n"
_USAGE: dict[int, bytes] = {}


def _usage(chunks: int) -> bytes:
    cached = _USAGE.get(chunks)
    if cached is None:
        cached = _USAGE[chunks] = _chunked({**_BASE, "choices": [], "usage": {
            "prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks}})
    return cached


class _PacedStream:
    """Writes one content chunk per timer tick: a callback chain, cheaper than a task per stream."""

    __slots__ = ("_cut_at", "_handle", "_interval", "_left", "_loop", "_tail", "_transport")

    def __init__(self, transport: asyncio.Transport, chunks: int, interval: float, tail: bytes,
                 cut_after: int | None = None) -> None:
        self._transport, self._left, self._interval, self._tail = transport, chunks, interval, tail
        # Dropped on the tick after the last chunk it sends: when the next chunk would have come.
        self._cut_at = chunks - cut_after - 1 if cut_after is not None else None
        self._loop = asyncio.get_running_loop()
        transport.write(_STREAM_HEAD + _ROLE)
        self._handle = self._loop.call_later(interval, self._tick)

    def _tick(self) -> None:
        if self._transport.is_closing():
            return
        self._left -= 1
        if self._left == self._cut_at:
            self._transport.abort()
        elif self._left > 0:
            self._transport.write(_WORD)
            self._handle = self._loop.call_later(self._interval, self._tick)
        else:
            self._transport.write(_WORD + self._tail)

    def cancel(self) -> None:
        self._handle.cancel()


class _Protocol(asyncio.Protocol):
    __slots__ = ("_body", "_headers", "_parser", "_stream", "_transport", "_url")

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._body: list[bytes] = []
        self._headers: dict[bytes, bytes] = {}
        self._url = b""
        self._transport: asyncio.Transport | None = None
        self._stream: _PacedStream | None = None  # one request at a time per connection: no pipelining

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are duck-typed

    def connection_lost(self, exc: Exception | None) -> None:
        if self._stream is not None:
            self._stream.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            assert self._transport is not None
            self._transport.close()

    def on_message_begin(self) -> None:
        self._body = []
        self._headers = {}
        self._url = b""

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name[:8].lower() == b"x-bench-":
            self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        transport = self._transport
        assert transport is not None
        keep_alive = self._parser.should_keep_alive()
        if self._parser.get_method() == b"GET":
            transport.write(_READY)
            return
        if self._url.endswith(b"/embeddings"):
            transport.write(_EMBEDDING)
            return
        body = b"".join(self._body)
        request = orjson.loads(body) if b'"stream"' in body else None
        if not request or request.get("stream") is not True:
            transport.write(_JSON if keep_alive else _JSON_CLOSE)
            if not keep_alive:
                transport.close()
            return
        user = request.get("user")
        if isinstance(user, str) and user.startswith("bench:"):  # from /v1/messages' metadata.user_id
            _, given_chunks, given_interval = user.split(":")
            request |= {"bench_chunks": int(given_chunks), "bench_interval_ms": float(given_interval)}
        chunks = int(self._headers.get(b"x-bench-chunks", request.get("bench_chunks", 50)))
        interval = float(self._headers.get(b"x-bench-interval-ms", request.get("bench_interval_ms", 0))) / 1000
        options = request.get("stream_options")
        tail = _FINISH + (_usage(chunks) if isinstance(options, dict) and options.get("include_usage") else b"") + _DONE
        messages = request.get("messages")
        # A continuation (the delivered text sent back as a final assistant message) is not cut again.
        continuing = isinstance(messages, list) and bool(messages) and isinstance(messages[-1], dict) \
            and messages[-1].get("role") == "assistant"
        cut = int(request.get("bench_cut_after", 5)) if b"/cut/" in self._url and not continuing else None
        if cut is not None and cut < chunks:
            interval = max(interval, 0.001)  # a cut needs the paced writer
        if interval <= 0 or chunks <= 0:
            transport.write(b"".join([_STREAM_HEAD, _ROLE, _WORD * max(chunks, 0), tail]))
        else:
            self._stream = _PacedStream(transport, chunks, interval, tail, cut)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Protocol, host, port, backlog=4096)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"benchmark upstream on {host}:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
