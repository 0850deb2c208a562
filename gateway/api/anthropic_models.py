"""GET /v1/models for Anthropic clients (the request carries `anthropic-version`): Anthropic's list shape.

`data[]` holds `{type: "model", id, display_name, created_at}`, paged with `limit` (1-1000, default
20), `after_id` and `before_id`, and the page says `has_more`, `first_id` and `last_id`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from gateway.errors import BadRequest
from gateway.routing import Route

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def model_object(route: Route) -> dict[str, Any]:
    model = route.targets[0].model
    released = model.release_date or "1970-01-01"
    name = route.id if route.is_alias else (model.name or route.id)
    return {"type": "model", "id": route.id, "display_name": name,
            "created_at": released if "T" in released else f"{released}T00:00:00Z"}


def page(routes: Sequence[Route], query: Mapping[str, str]) -> bytes:
    """One page of the list; a bad `limit` or an unknown cursor id is a BadRequest naming it."""
    limit = _limit(query.get("limit"))
    ids = [route.id for route in routes]
    start, stop = 0, len(routes)
    after, before = query.get("after_id"), query.get("before_id")
    if after:
        start = _position(ids, after, "after_id") + 1
        stop = min(stop, start + limit)
    elif before:
        stop = _position(ids, before, "before_id")
        start = max(0, stop - limit)
    else:
        stop = min(stop, limit)
    data = [model_object(route) for route in routes[start:stop]]
    has_more = start > 0 if before and not after else stop < len(routes)
    return orjson.dumps({"data": data, "has_more": has_more, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None})


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"`limit` must be an integer from 1 to {MAX_LIMIT}.", param="limit")
    return int(raw)


def _position(ids: list[str], model_id: str, param: str) -> int:
    try:
        return ids.index(model_id)
    except ValueError:
        raise BadRequest(f"`{param}` names no model of this gateway: {model_id[:200]!r}.", param=param) from None
