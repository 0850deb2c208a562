"""Whole request bodies, bounded by the declared length before reading and by what arrived while reading,
so a client can't make the gateway hold more than the limit: through Starlette (admin, count_tokens), or
through receive() (the pipeline, api/chat.py, when the gateway's server does not hold the body whole)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Message, Receive

from gateway.api.client_watch import ClientGone
from gateway.errors import PayloadTooLarge


async def read_bounded(request: Request, limit: int, too_large: str) -> bytes:
    """The body, or PayloadTooLarge(`too_large`) as soon as it is known to pass `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(too_large)
    raw = b""
    async for piece in request.stream():
        raw += piece
        if len(raw) > limit:
            raise PayloadTooLarge(too_large)
    return raw


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than this gateway accepts ({limit} bytes).")


async def received_body(receive: Receive, limit: int) -> bytes:
    """The body through receive() (another server, or a body still arriving): at most `limit` bytes."""
    first = await receive()
    raw = _whole_body(first, limit)
    return raw if raw is not None else await _read_rest(receive, first, limit)


def _whole_body(message: Message, limit: int) -> bytes | None:
    """The request body when this first message holds all of it (the usual case), at most `limit`
    bytes (413 beyond); None when more parts follow (see _read_rest)."""
    if message["type"] != "http.request" or message.get("more_body", False):
        return None
    body: bytes = message.get("body", b"")
    if len(body) > limit:
        raise too_large(limit)
    return body


async def _read_rest(receive: Receive, message: Message, limit: int) -> bytes:
    """A body in several messages, from the first: at most `limit` bytes (413 beyond); a client gone
    meanwhile raises ClientGone."""
    chunks: list[bytes] = []
    size = 0
    while True:
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()
