"""GET /v1/models and /v1/models/{id}: every routable id in the OpenAI list format, each with its catalog metadata.

With gateway keys, only what the caller's key may call is listed (api/listing.py). The serialised
list is kept per runtime and kind of viewer (Runtime.documents), so a request does not rebuild it.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.api import anthropic_models
from gateway.api.listing import Viewer, viewer
from gateway.errors import Forbidden, GatewayError
from gateway.protocols import messages
from gateway.routing import Route
from gateway.runtime import Runtime


def model_list(runtime: Runtime, who: Viewer, only_available: bool) -> list[dict[str, Any]]:
    entries = (model_entry(route, with_reason=who.admin) for route in runtime.router.routes.values()
               if who.may_use(route.id))
    return [e for e in entries if e["available"] or not only_available]


def model_entry(route: Route, *, with_reason: bool) -> dict[str, Any]:
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
    elif not available and with_reason:
        entry["unavailable_reason"] = first.endpoint.unavailable
    return entry


def _available(route: Route) -> bool:
    return any(t.endpoint.available for t in (*route.targets, *route.fallbacks))


def _anthropic_error(error: GatewayError) -> Response:
    return Response(orjson.dumps(messages.error_body(error)), status_code=error.status, media_type="application/json",
                    headers=error.headers)


class ModelsEndpoint:
    """`?available=true` lists only callable ids. A client that sends `anthropic-version` gets Anthropic's shapes."""

    async def handle(self, request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime()
        only_available = request.query_params.get("available", "").lower() in ("1", "true", "yes")
        if "anthropic-version" in request.headers:  # an Anthropic client: its list shape, paged
            try:
                who = viewer(runtime, request.headers)
                routes = [r for r in runtime.router.routes.values()
                          if who.may_use(r.id) and (not only_available or _available(r))]
                return Response(anthropic_models.page(routes, request.query_params), media_type="application/json")
            except GatewayError as error:
                return _anthropic_error(error)
        who = viewer(runtime, request.headers)
        body = runtime.documents.get(
            ("models", who.cache_key, only_available),
            lambda: orjson.dumps({"object": "list", "data": model_list(runtime, who, only_available)}))
        return Response(body, media_type="application/json")

    async def handle_one(self, request: Request) -> Response:
        """GET /v1/models/{id}: ids may hold slashes (`openrouter/openai/gpt-5`); unknown ids are a 404."""
        runtime: Runtime = request.app.state.runtime()
        anthropic = "anthropic-version" in request.headers
        try:
            who = viewer(runtime, request.headers)
            model_id = request.path_params["model_id"]
            if not who.may_use(model_id):
                raise Forbidden(f"This key may not use the model `{model_id}`.", param="model")
            route = runtime.router.route(model_id)
        except GatewayError as error:
            if anthropic:
                return _anthropic_error(error)
            raise
        if anthropic:
            return Response(orjson.dumps(anthropic_models.model_object(route)), media_type="application/json")
        return Response(orjson.dumps(model_entry(route, with_reason=who.admin)), media_type="application/json")
