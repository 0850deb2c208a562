"""`gateway check`: validate config and catalog, and say what can be called and what cannot, and why."""

from __future__ import annotations

import os

from gateway.catalog import load_catalog
from gateway.config import load_settings
from gateway.config.validate import check_against_catalog, check_bind
from gateway.errors import ConfigError
from gateway.routing import Router
from gateway.upstream.endpoint import build_endpoint


def report(config_path: str) -> tuple[str, bool]:
    """The report's text, and whether it found no errors. Unset credentials are warnings, not errors."""
    settings = load_settings(config_path)
    catalog = load_catalog(settings.catalog)
    endpoints = {pid: build_endpoint(p, settings.providers.get(pid), os.environ)
                 for pid, p in catalog.providers.items()}
    router = Router(catalog, settings, endpoints)
    errors: list[str] = []
    try:  # the same check `serve` and a reload refuse on
        check_against_catalog(settings, catalog)
    except ConfigError as exc:
        errors.append(str(exc))
    try:
        access = check_bind(settings, settings.server.host)
    except ConfigError as exc:
        access = "refused"
        errors.append(str(exc))
    lines = [f"config  {settings.source}: ok",
             f"catalog {', '.join(catalog.sources)}: {len(catalog.providers)} providers, "
             f"{catalog.model_count()} models",
             f"auth    {access}", ""]
    available = [e for e in endpoints.values() if e.available]
    lines.append(f"providers available ({len(available)}):")
    for endpoint in sorted(available, key=lambda e: e.provider_id):
        count = len(catalog.providers[endpoint.provider_id].models)
        lines.append(f"  ok    {endpoint.provider_id:<28} {count:>4} models")
    unavailable = [e for e in endpoints.values() if not e.available]
    lines.append(f"providers unavailable ({len(unavailable)}):")
    for endpoint in sorted(unavailable, key=lambda e: e.provider_id):
        lines.append(f"  --    {endpoint.provider_id:<28} {endpoint.unavailable}")
    lines.append("")
    lines.append(f"aliases ({len(settings.models)}):")
    for name in settings.models:
        route = router.routes[name]
        targets = []
        for target in (*route.targets, *route.fallbacks):
            mark = "ok" if target.endpoint.available else f"unavailable: {target.endpoint.unavailable}"
            targets.append(f"{target.key} ({mark})")
        usable = any(t.endpoint.available for t in (*route.targets, *route.fallbacks))
        lines.append(f"  {'ok' if usable else '--':<5} {name:<28} -> {', '.join(targets)}")
    lines.append("")
    lines.extend(f"error: {e}" for e in errors)
    lines.append(f"{len(available)} of {len(endpoints)} providers callable; "
                 f"{sum(len(catalog.providers[e.provider_id].models) for e in available)} models routable now")
    return "\n".join(lines), not errors

