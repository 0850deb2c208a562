"""The floor for a proxy on this stack: a raw ASGI app on uvicorn with one aiohttp session.

No framework between uvicorn and the handler (no Starlette Request, no StreamingResponse, no
routing beyond one path check): the body is read from `receive`, forwarded, and the answer sent
back with one `send` per read from the upstream. The gateway's stream relay is compared with it:
whatever the gateway spends per streamed request above this is the gateway's own work.

    python -m benchmarks.raw_asgi_proxy --port N --upstream http://127.0.0.1:M/v1/chat/completions
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import uvicorn

_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream")]
_READY = b'{"status":"ready"}'

Scope = dict[str, Any]


class RawProxy:
    def __init__(self, upstream: str) -> None:
        self._upstream = upstream
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["method"] == "GET":
            await send({"type": "http.response.start", "status": 200, "headers": _JSON})
            await send({"type": "http.response.body", "body": _READY})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        assert self._session is not None
        async with self._session.post(self._upstream, data=body,
                                      headers={"Content-Type": "application/json"}) as response:
            if response.content_type == "text/event-stream":
                await send({"type": "http.response.start", "status": response.status, "headers": _SSE})
                async for chunk in response.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                return
            answer = await response.read()
        await send({"type": "http.response.start", "status": response.status, "headers": _JSON})
        await send({"type": "http.response.body", "body": answer})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._session is not None:
                    await self._session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    uvicorn.run(RawProxy(args.upstream), host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
