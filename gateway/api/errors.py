"""Exception handlers: whatever goes wrong outside the chat endpoint still answers in OpenAI's shape."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.unserved import not_served
from gateway.errors import GatewayError, MethodNotAllowed

log = logging.getLogger("gateway")


def _response(error: GatewayError, request: Request) -> Response:
    # x-request-id is added by the middleware around the whole app (api/middleware.py).
    return Response(error.to_json(), status_code=error.status, media_type="application/json",
                    headers=error.headers)


async def http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error: GatewayError = not_served(request.method, request.url.path)
    elif exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow")
        error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}"
                                 f"{f'; use {allow}' if allow else ''}.", headers={"Allow": allow} if allow else None)
    else:
        error = GatewayError(str(exc.detail))
        error.status = exc.status_code
    return _response(error, request)


async def gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return _response(exc, request)


async def unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return _response(GatewayError("The gateway failed on this request; see its log."), request)
