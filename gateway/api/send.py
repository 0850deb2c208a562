"""Small raw-ASGI response helpers shared by the endpoints: JSON bodies and OpenAI-shaped errors."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import Send

from gateway.errors import GatewayError

JSON = (b"content-type", b"application/json")


async def send_json(send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    raw = [JSON, (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, error: GatewayError, request_id: str) -> None:
    """An OpenAI error answer (the x-request-id header is the middleware's to add: api/middleware.py)."""
    headers = [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send_json(send, error.status, error.to_json(), headers)
