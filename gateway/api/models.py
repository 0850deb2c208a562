"""GET /v1/models and /v1/models/{id}: every routable id in the OpenAI list format, each with its catalog metadata."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.api import anthropic_models
from gateway.errors import GatewayError
from gateway.protocols import messages
from gateway.routing import Route
from gateway.runtime import Runtime


def model_list(runtime: Runtime) -> list[dict[str, Any]]:
    return [model_entry(route) for route in runtime.router.routes.values()]


def model_entry(route: Route) -> dict[str, Any]:
    """One id in OpenAI's model shape, with the catalog's metadata and whether it can be called now."""
    first = route.targets[0]
    available = [t for t in (*route.targets, *route.fallbacks) if t.endpoint.available]
    entry: dict[str, Any] = {
        **first.model.metadata(),
        "id": route.id,
        "object": "model",
        "created": 0,
        "owned_by": "gateway" if route.is_alias else first.provider_id,
        "available": bool(available),
    }
    if route.is_alias:
        entry["targets"] = [t.key for t in (*route.targets, *route.fallbacks)]
    elif not available:
        entry["unavailable_reason"] = first.endpoint.unavailable
    return entry


def _available(route: Route) -> bool:
    return any(t.endpoint.available for t in (*route.targets, *route.fallbacks))


class ModelsEndpoint:
    """The full list is serialised once per runtime; `?available=true` lists only callable ids."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, bool], bytes] = {}

    async def handle(self, request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime()
        only_available = request.query_params.get("available", "").lower() in ("1", "true", "yes")
        if "anthropic-version" in request.headers:  # an Anthropic client: its list shape, paged
            routes = [r for r in runtime.router.routes.values() if not only_available or _available(r)]
            try:
                return Response(anthropic_models.page(routes, request.query_params), media_type="application/json")
            except GatewayError as error:
                return Response(orjson.dumps(messages.error_body(error)), status_code=error.status,
                                media_type="application/json")
        key = (id(runtime), only_available)
        body = self._cache.get(key)
        if body is None:
            data = [e for e in model_list(runtime) if e["available"] or not only_available]
            body = orjson.dumps({"object": "list", "data": data})
            self._cache = {k: v for k, v in self._cache.items() if k[0] == id(runtime)}
            self._cache[key] = body
        return Response(body, media_type="application/json")

    async def handle_one(self, request: Request) -> Response:
        """GET /v1/models/{id}: ids may hold slashes (`openrouter/openai/gpt-5`); unknown ids are a 404."""
        runtime: Runtime = request.app.state.runtime()
        route = runtime.router.route(request.path_params["model_id"])
        if "anthropic-version" in request.headers:
            return Response(orjson.dumps(anthropic_models.model_object(route)), media_type="application/json")
        return Response(orjson.dumps(model_entry(route)), media_type="application/json")
