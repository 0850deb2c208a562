"""Whole request bodies for the endpoints that read one through Starlette (admin, count_tokens): bounded
by the declared length before reading and by what arrived while reading, so a client can't make the
gateway hold more than the limit."""

from __future__ import annotations

from starlette.requests import Request

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
