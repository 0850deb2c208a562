"""Liveness and readiness."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse


async def livez(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    if request.app.state.drain.draining:
        return JSONResponse({"status": "draining", "reason": "the gateway is shutting down"}, status_code=503)
    runtime = request.app.state.runtime()
    if runtime.ready:
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "not ready", "reason": "no provider can be called: set credentials"},
                        status_code=503)
