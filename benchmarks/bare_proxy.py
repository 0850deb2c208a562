"""The reference point: a bare starlette/uvicorn proxy with one aiohttp session, doing nothing else.

No auth, no routing, no metrics, no failover: it forwards the body to the upstream and the answer
back (streamed as it arrives). The gateway's numbers are read against it and against direct calls.
Its aiohttp pool is unbounded (`limit=0`), as the gateway's is: aiohttp's default of 100
connections would queue 256 concurrent streams and measure the pool, not the proxy.
    python -m benchmarks.bare_proxy --port N --upstream http://127.0.0.1:M/v1/chat/completions
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route


def build(upstream: str) -> Starlette:
    state: dict[str, aiohttp.ClientSession] = {}

    async def chat(request: Request) -> Response:
        body = await request.body()
        response = await state["session"].post(upstream, data=body, headers={"Content-Type": "application/json"})
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            async def relay() -> AsyncIterator[bytes]:
                async with response:
                    async for chunk in response.content.iter_any():
                        yield chunk

            return StreamingResponse(relay(), media_type="text/event-stream")
        async with response:
            return Response(await response.read(), status_code=response.status, media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await state["session"].close()

    async def ready(request: Request) -> Response:
        return Response(b'{"status":"ready"}', media_type="application/json")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/readyz", ready, methods=["GET"])], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    uvicorn.run(build(args.upstream), host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                access_log=False, log_level="info")


if __name__ == "__main__":
    main()
