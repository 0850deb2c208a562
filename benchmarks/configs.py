"""Config files for the proxies under test, written into the run's temporary directory."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any

GATEWAY_KEY = "bench-gateway-key"
LITELLM_KEY = "sk-bench-litellm"
ALIAS = "bench"  # what clients of the gateway ask for: an alias routed to bench/fast


def _provider(provider_id: str, api: str) -> dict[str, Any]:
    return {"id": provider_id, "name": f"Bench upstream ({provider_id})", "npm": "@ai-sdk/openai-compatible",
            "env": ["BENCH_UPSTREAM_KEY"], "doc": "https://example.invalid", "api": api,
            "models": {"fast": {"id": "fast", "name": "Fast", "attachment": False, "reasoning": False,
                                "tool_call": True, "temperature": True, "release_date": "2025-01-01",
                                "last_updated": "2025-01-01", "open_weights": True,
                                "limit": {"context": 128000, "output": 8192},
                                "modalities": {"input": ["text"], "output": ["text"]},
                                "cost": {"input": 1.0, "output": 2.0}},
                       "embed": {"id": "embed", "name": "Embed", "attachment": False, "reasoning": False,
                                 "tool_call": False, "temperature": False, "release_date": "2025-01-01",
                                 "last_updated": "2025-01-01", "open_weights": True,
                                 "limit": {"context": 8192, "output": 0},
                                 "modalities": {"input": ["text"], "output": ["text"]},
                                 "cost": {"input": 0.1, "output": 0.0}}}}


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` laid over `base`, dicts merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def write_gateway_config(directory: Path, api: str, port: int, extra: dict[str, Any] | None = None,
                         name: str = "gateway") -> Path:
    """The gateway as a user configures it: a catalog file, an alias, a key; `extra` adds a feature.

    The catalog has two providers on the same fake upstream: `bench` (answers normally) and
    `bench-cut` (its streams are cut after a few chunks: `/cut/` in the path), for continuation.
    """
    root = api.rsplit("/v1", 1)[0]
    catalog = {"bench": _provider("bench", api), "bench-cut": _provider("bench-cut", f"{root}/cut/v1")}
    (directory / "catalog.json").write_text(json.dumps(catalog))
    settings = {"server": {"host": "127.0.0.1", "port": port},
                "catalog": [str(directory / "catalog.json")],
                "models": {ALIAS: {"targets": ["bench/fast"]}},
                "auth": {"keys": [{"name": "bench", "key": "${BENCH_GATEWAY_KEY}"}]}}
    config = directory / f"{name}.yaml"
    config.write_text(json.dumps(merge(settings, extra or {}), indent=1))  # JSON is YAML
    return config


def write_litellm_config(directory: Path, api: str) -> Path:
    config = directory / "litellm.yaml"
    config.write_text(json.dumps({  # JSON is YAML
        "model_list": [{"model_name": "fast", "litellm_params": {"model": "openai/fast", "api_base": api,
                                                                 "api_key": "bench-upstream-key"}}],
        "general_settings": {"master_key": LITELLM_KEY},
        "litellm_settings": {"drop_params": False},
    }))
    return config


def find_litellm(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    if importlib.util.find_spec("litellm") is None:
        return None
    beside = Path(sys.executable).parent / "litellm"
    return str(beside) if beside.exists() else shutil.which("litellm")
