"""A fast fake OpenAI upstream for benchmarks: uvloop + httptools, canned bytes, no framework.

It must never be the bottleneck: `python -m benchmarks.upstream --port N` serves until killed, and
the runner measures its own ceiling with the same load as everything else. Streams send
`bench_chunks` content chunks (default 50), `bench_interval_ms` apart (default 0: all at once), then
usage if asked. Both are body fields, because the gateway forwards the body and no client header.
"""

from __future__ import annotations

import argparse
import asyncio

import httptools
import orjson
import uvloop

_ANSWER = orjson.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": "fast",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the benchmark upstream."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
})
_JSON_RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                  % len(_ANSWER)) + _ANSWER
_STREAM_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def _chunk(payload: dict[str, object]) -> bytes:
    event = b"data: " + orjson.dumps(payload) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


_BASE = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "fast"}
_ROLE = _chunk({**_BASE, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                      "finish_reason": None}]})
_WORD = _chunk({**_BASE, "choices": [{"index": 0, "delta": {"content": " token"}, "finish_reason": None}]})
_FINISH = _chunk({**_BASE, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
_DONE = b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"


def _usage(chunks: int) -> bytes:
    return _chunk({**_BASE, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": chunks,
                                                    "total_tokens": 12 + chunks}})


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._body: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._tasks: set[asyncio.Future[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's transports are duck-typed

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            assert self._transport is not None
            self._transport.close()

    def on_message_begin(self) -> None:
        self._body = []

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        assert self._transport is not None
        body = b"".join(self._body)
        if b'"stream":true' not in body:
            self._transport.write(_JSON_RESPONSE)
            return
        request = orjson.loads(body)
        chunks = int(request.get("bench_chunks", 50))
        interval = float(request.get("bench_interval_ms", 0)) / 1000
        usage = bool((request.get("stream_options") or {}).get("include_usage"))
        if interval <= 0:
            self._transport.write(b"".join([_STREAM_HEAD, _ROLE, _WORD * chunks, _FINISH,
                                            _usage(chunks) if usage else b"", _DONE]))
            return
        task = asyncio.ensure_future(self._paced(self._transport, chunks, interval, usage))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _paced(transport: asyncio.Transport, chunks: int, interval: float, usage: bool) -> None:
        transport.write(_STREAM_HEAD + _ROLE)
        for _ in range(chunks):
            await asyncio.sleep(interval)
            if transport.is_closing():
                return
            transport.write(_WORD)
        transport.write(_FINISH + (_usage(chunks) if usage else b"") + _DONE)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Protocol, "127.0.0.1", port, backlog=4096)
    print(f"benchmark upstream on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
