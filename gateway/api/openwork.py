"""GET /openwork/provider.json: the custom provider JSON that OpenWork imports (and ?format=opencode)."""

from __future__ import annotations

import ipaddress

from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway import publish
from gateway.errors import BadRequest
from gateway.runtime import Runtime


async def provider_json(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime()
    settings = runtime.settings
    base_url = settings.publish.base_url or public_url(request, settings.server.trusted_proxies)
    kind = request.query_params.get("format", "openwork")
    if kind == "openwork":
        return JSONResponse(publish.provider_json(settings.publish, runtime.router, base_url))
    if kind == "opencode":
        return JSONResponse(publish.opencode_json(settings.publish, runtime.router, base_url))
    raise BadRequest("`format` must be `openwork` or `opencode`.", param="format")


def public_url(request: Request, trusted: tuple[str, ...]) -> str:
    """The URL clients use to reach us; X-Forwarded-Proto/Host count only from a trusted proxy."""
    scheme = request.url.scheme
    host = request.headers.get("host") or request.url.netloc
    peer = request.client.host if request.client else ""
    if trusted and _is_trusted(peer, trusted):
        scheme = request.headers.get("x-forwarded-proto", scheme).split(",")[0].strip()
        host = request.headers.get("x-forwarded-host", host).split(",")[0].strip()
    return f"{scheme}://{host}"


def _is_trusted(peer: str, trusted: tuple[str, ...]) -> bool:
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(entry, strict=False) for entry in trusted)
