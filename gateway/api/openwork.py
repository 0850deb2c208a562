"""GET /openwork/provider.json: the custom provider JSON that OpenWork imports (and ?format=opencode)."""

from __future__ import annotations

import ipaddress

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway import publish
from gateway.api.listing import viewer
from gateway.errors import BadRequest
from gateway.runtime import Runtime

_BUILDERS = {"openwork": publish.provider_json, "opencode": publish.opencode_json}


async def provider_json(request: Request) -> Response:
    """With gateway keys, only for a key, listing what that key may call; built once per runtime and key kind."""
    runtime: Runtime = request.app.state.runtime()
    who = viewer(runtime, request.headers)
    settings = runtime.settings
    kind = request.query_params.get("format", "openwork")
    build = _BUILDERS.get(kind)
    if build is None:
        raise BadRequest("`format` must be `openwork` or `opencode`.", param="format")
    base_url = settings.publish.base_url or public_url(request, settings.server.trusted_proxies)
    body = runtime.documents.get(
        ("provider.json", kind, who.cache_key, base_url),
        lambda: orjson.dumps(build(settings.publish, runtime.router, base_url, who.may_use)))
    return Response(body, media_type="application/json")


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
