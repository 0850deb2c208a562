"""Read the YAML config, expand ${VAR} / ${VAR:-default}, validate strictly into Settings.

Every refusal names the file, the path of the key and what was expected, so the fix is obvious.
"""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from gateway.config.schema import Settings
from gateway.config.validate import check_settings
from gateway.errors import ConfigError
from gateway.state import pg_url, redis_url, url_parts

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_settings(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None, *,
                  text: str | None = None) -> Settings:
    """The settings in the file at `path`; with `text`, that text read as if it were the file."""
    source = str(path)
    try:
        if text is None:
            text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start:exc.start + 1]!r}); "
                          "save the file as UTF-8") from None
    except FileNotFoundError:
        raise ConfigError(f"{source}: config file not found; pass --config PATH or create it") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config file ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    return parse_settings(raw, source, os.environ if environ is None else environ)


def parse_settings(raw: Any, source: str, environ: Mapping[str, str]) -> Settings:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the config must be a mapping of keys (server, catalog, models, ...)")
    _refuse_literal_keys(raw, source)
    _refuse_literal_state_passwords(raw, source)
    data = _expand(raw, (), source, environ)
    if data.get("auth") == "none":
        data["auth"] = {"none": True}
    elif data.get("auth") is None:
        data.pop("auth", None)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    settings._source = source
    _note_url_secrets(settings, raw, environ)
    check_settings(settings)
    for name, alias in settings.models.items():
        if not alias.targets and "/" not in name:
            raise ConfigError(f"{source}: models.{name}.targets: required for an alias (only a catalog "
                              "`provider/model` id may carry `limits` alone)")
    base = Path(source).parent
    state = settings.state.model_copy(update={"path": _state_path(settings.state.path, base)})
    return settings.model_copy(update={"catalog": tuple(_locate(c, base) for c in settings.catalog), "state": state})


def _state_path(path: str | None, config_dir: Path) -> str:
    """The state file: as given if absolute, else beside the config file (default gateway-state.db)."""
    given = Path(path or "gateway-state.db")
    return str(given if given.is_absolute() else config_dir / given)


def _note_url_secrets(settings: Settings, raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Remember which environment values went into each provider's base_url, so that an upstream
    repeating its URL path (an account id from `${VAR}`) has them masked like its key."""
    providers = raw.get("providers")
    for pid, override in settings.providers.items():
        entry = providers.get(pid) if isinstance(providers, dict) else None
        url = entry.get("base_url") if isinstance(entry, dict) else None
        if isinstance(url, str):
            names = [m.group(1) for m in _VAR.finditer(url) if m.group(1)]
            override._url_secrets = tuple(environ[n] for n in names if environ.get(n))


def _locate(entry: str, config_dir: Path) -> str:
    """Relative catalog paths: from the working directory, else next to the config file."""
    if entry.startswith(("http://", "https://")) or Path(entry).is_absolute() or Path(entry).exists():
        return entry
    beside = config_dir / entry
    return str(beside) if beside.exists() else entry


def _refuse_literal_keys(raw: dict[str, Any], source: str) -> None:
    auth = raw.get("auth")
    for field in ("keys", "admin_keys"):
        keys = auth.get(field) if isinstance(auth, dict) else None
        for index, entry in enumerate(keys if isinstance(keys, list) else ()):
            if isinstance(entry, dict) and isinstance(entry.get("key"), str) and "${" not in entry["key"]:
                raise ConfigError(f"{source}: auth.{field}.{index}.key: a literal key is refused; keep secrets out "
                                  "of the file: write `key: ${SOME_VAR}` or `sha256: <hex digest of the key>`")


# Backend URLs whose password must come from the environment: the field, the refusal, how to write it.
_STATE_URLS = (("ledger", "a literal password is refused", pg_url.EXAMPLE),
               ("redis_url", "a password written in the file is refused", redis_url.EXAMPLE))


def _refuse_literal_state_passwords(raw: dict[str, Any], source: str) -> None:
    state = raw.get("state")
    if not isinstance(state, dict):
        return
    for field, refusal, example in _STATE_URLS:
        url = state.get(field)
        if isinstance(url, str) and url_parts.literal_password(url):
            raise ConfigError(f"{source}: state.{field}: {refusal}; keep secrets out of the file: "
                              f"write it as {example}")


def _expand(value: Any, path: tuple[str, ...], source: str, environ: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _expand_string(value, path, source, environ)
    if isinstance(value, dict):
        return {k: _expand(v, (*path, str(k)), source, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, (*path, str(i)), source, environ) for i, v in enumerate(value)]
    return value


def _expand_string(text: str, path: tuple[str, ...], source: str, environ: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                raise ConfigError(f"{source}: {'.'.join(path)}: environment variable {name} is not set; "
                                  f"set it, or write ${{{name}:-default}}")
            return default
        return value

    return _VAR.sub(replace, text) if "$" in text else text


def _describe(exc: ValidationError, source: str) -> str:
    lines = []
    for error in exc.errors()[:5]:
        loc = tuple(error["loc"])
        where = ".".join(str(p) for p in loc) or "<top level>"
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            hint = f"; allowed here: {', '.join(allowed)}" if allowed else ""
            lines.append(f"{source}: {where}: unknown key{hint}")
        elif error["type"] == "missing":
            lines.append(f"{source}: {where}: required key is missing")
        else:
            got = error.get("input")
            lines.append(f"{source}: {where}: {error['msg']} (got {got!r:.60})")
    return "\n".join(lines)


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """Walk the schema along `loc` to list the keys a mapping at that place accepts."""
    current: Any = Settings
    for part in loc:
        model = _model_in(current)
        if model is not None and isinstance(part, str) and part in model.model_fields:
            current = model.model_fields[part].annotation
        else:
            args = [a for a in typing.get_args(current) if a is not type(None)]
            current = args[-1] if args else None
    model = _model_in(current)
    return [n for n in model.model_fields if not n.startswith("_")] if model else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None
