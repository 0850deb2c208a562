"""The gateway as a provider: OpenWork's custom provider JSON, or an opencode.json `provider` block.

Pure: settings and routes in, a JSON-ready dict out. It reads no credential and writes only the
*name* of the variable that holds the gateway key, so no secret can end up in what is published.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from gateway.catalog.schema import Model
from gateway.config.schema import PublishSettings
from gateway.routing import Route, Router

NPM = "@ai-sdk/openai-compatible"
_FLAGS = ("attachment", "reasoning", "tool_call", "structured_output", "temperature", "open_weights")


def provider_json(publish: PublishSettings, router: Router, base_url: str,
                  allowed: Callable[[str], bool] | None = None) -> dict[str, Any]:
    """OpenWork's custom provider JSON: every id a client can call, with its catalog metadata."""
    return {
        "id": publish.id,
        "name": publish.name,
        "npm": NPM,
        "env": [publish.env],
        "doc": publish.doc or f"{api_url(base_url)}/models",
        "api": api_url(base_url),
        "models": [_entry(route) for route in published_routes(publish, router, allowed)],
    }


def opencode_json(publish: PublishSettings, router: Router, base_url: str,
                  allowed: Callable[[str], bool] | None = None) -> dict[str, Any]:
    """The same provider for opencode's own config (opencode.json), for solo use of the desktop app."""
    models = {}
    for route in published_routes(publish, router, allowed):
        entry = _entry(route)
        limit = {"context": entry["limit"]["context"], "output": entry["limit"]["output"]}
        models[route.id] = {"name": entry["name"], "limit": limit, "tool_call": entry["tool_call"],
                            "reasoning": entry["reasoning"], "attachment": entry["attachment"]}
    return {
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            publish.id: {
                "npm": NPM,
                "name": publish.name,
                "options": {"baseURL": api_url(base_url), "apiKey": f"{{env:{publish.env}}}"},
                "models": models,
            }
        },
    }


def api_url(base_url: str) -> str:
    base = base_url.rstrip("/")
    return base if base.endswith("/v1") else f"{base}/v1"


def published_routes(publish: PublishSettings, router: Router,
                     allowed: Callable[[str], bool] | None = None) -> list[Route]:
    """Which ids to publish. `available` (the default) keeps the picker to what can be called now:
    aliases with a usable target and models of providers whose credentials are set. `allowed`
    narrows it to the ids one gateway key may call."""
    chosen = []
    for route in router.routes.values():
        if allowed is not None and not allowed(route.id):
            continue
        targets = (*route.targets, *route.fallbacks)
        provider = route.targets[0].provider_id
        if publish.providers is not None and not route.is_alias and provider not in publish.providers:
            continue
        if publish.include == "aliases" and not route.is_alias:
            continue
        if publish.include == "available" and not any(t.endpoint.available for t in targets):
            continue
        if not route.is_alias and not _chattable(route.targets[0].model):
            continue
        chosen.append(route)
    chosen.sort(key=lambda r: (not r.is_alias, r.id))
    return chosen


def _chattable(model: Model) -> bool:
    """Models that cannot answer a chat (image-only output) or are retired only clutter a picker."""
    extra = model.model_extra or {}
    return "text" in model.modalities.output and extra.get("status") != "deprecated"


def _entry(route: Route) -> dict[str, Any]:
    models = [t.model for t in (*route.targets, *route.fallbacks)]
    primary = models[0]
    entry: dict[str, Any] = {"id": route.id, "name": _name(route, primary)}
    for flag in _FLAGS:
        values = [getattr(m, flag) for m in models]
        # An alias promises only what every one of its targets can do.
        entry[flag] = all(bool(v) for v in values)
    entry["release_date"] = primary.release_date or ""
    entry["last_updated"] = primary.last_updated or ""
    entry["limit"] = _limits(models)
    entry["modalities"] = {
        "input": _shared(m.modalities.input for m in models),
        "output": _shared(m.modalities.output for m in models),
    }
    cost = _cost(models)
    if cost is not None:
        entry["cost"] = cost
    return entry


def _name(route: Route, primary: Model) -> str:
    if not route.is_alias:
        return f"{primary.name or primary.id} ({route.targets[0].provider_id})"
    return route.id


def _limits(models: list[Model]) -> dict[str, int]:
    def smallest(values: Iterable[int | None]) -> int:
        known = [v for v in values if v]
        return min(known) if known else 0

    limits = {"context": smallest(m.limit.context for m in models), "output": smallest(m.limit.output for m in models)}
    if any(m.limit.input for m in models):
        limits["input"] = smallest(m.limit.input or m.limit.context for m in models)
    return limits


def _shared(lists: Iterable[tuple[str, ...]]) -> list[str]:
    lists = list(lists)
    first = lists[0]
    return [item for item in first if all(item in other for other in lists[1:])] or ["text"]


def _cost(models: list[Model]) -> dict[str, float] | None:
    """The highest price among the targets for each kind of token: what a budget should assume."""
    costs = [m.cost for m in models]
    if any(c is None or c.input is None or c.output is None for c in costs):
        return None
    out: dict[str, float] = {}
    for field in ("input", "output", "cache_read", "cache_write"):
        values = [getattr(c, field) for c in costs]
        if all(v is not None for v in values):
            out[field] = max(values)
    return out
