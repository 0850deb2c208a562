"""Read models.dev-format catalog files (api.json layout or single-provider layout) and merge them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from pydantic import ValidationError

from gateway.catalog.schema import Catalog, Provider
from gateway.errors import ConfigError


def load_catalog(sources: Iterable[str]) -> Catalog:
    """Load every source in order; a provider repeated in a later source replaces the earlier one."""
    providers: dict[str, Provider] = {}
    names: list[str] = []
    for source in sources:
        names.append(source)
        for provider in parse_document(read_document(source), source):
            providers[provider.id] = provider
    return Catalog(providers, tuple(names))


def parse_document(document: Any, source: str) -> list[Provider]:
    """Both layouts: a single provider (OpenWork's custom provider JSON) or an object of providers."""
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: a catalog must be a JSON object (models.dev api.json or one provider)")
    if "models" in document and isinstance(document.get("id"), str):
        return [_provider(document, document["id"], source, path=())]
    return [_provider(entry, key, source, path=(key,)) for key, entry in document.items()]


def _provider(raw: Any, key: str, source: str, path: tuple[str, ...]) -> Provider:
    where = ".".join(path) or "<top level>"
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {where}: expected a provider object, got {type(raw).__name__}")
    data = dict(raw)
    data.setdefault("id", key)
    models = data.get("models", {})
    if isinstance(models, list):
        keyed: dict[str, Any] = {}
        for index, model in enumerate(models):
            if not isinstance(model, dict) or not isinstance(model.get("id"), str):
                raise ConfigError(f"{source}: {'.'.join((*path, 'models', str(index)))}: "
                                  "each model in a list needs a string `id`")
            keyed[model["id"]] = model
        models = keyed
    elif isinstance(models, dict):
        models = {mid: ({"id": mid, **m} if isinstance(m, dict) else m) for mid, m in models.items()}
    data["models"] = models
    try:
        return Provider.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in (*path, *first["loc"]))
        raise ConfigError(f"{source}: {loc}: {first['msg']} (got {first.get('input')!r:.80})") from None


def read_document(source: str) -> Any:
    if source.startswith(("http://", "https://")):
        try:
            response = httpx.get(source, timeout=30, follow_redirects=True)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise ConfigError(f"{source}: could not fetch the catalog: {exc}") from None
        text = response.content
    else:
        path = Path(source)
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read catalog file ({exc.strerror}); "
                              "fix the path under `catalog:` in the config") from None
    try:
        if source.endswith((".yaml", ".yml")):
            return yaml.safe_load(text)
        return orjson.loads(text)
    except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{source}: not valid {'YAML' if source.endswith(('.yaml', '.yml')) else 'JSON'}: "
                          f"{exc}") from None
