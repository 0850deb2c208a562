"""Catalog loading: both models.dev layouts, merging in order, unknown fields kept, the shipped catalog."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from gateway.catalog import load_catalog
from gateway.catalog.wire import PACKAGES, default_base_url
from gateway.errors import ConfigError
from tests.conftest import ROOT, model_json, provider_json


def write(tmp_path: Path, name: str, document: object) -> str:
    path = tmp_path / name
    path.write_bytes(orjson.dumps(document))
    return str(path)


def test_single_provider_layout_with_model_list(tmp_path: Path) -> None:
    doc = provider_json("acme", "https://acme.example/v1", [model_json("a", family="x", brand_new_field=1)])
    catalog = load_catalog([write(tmp_path, "acme.json", doc)])
    model = catalog.providers["acme"].models["a"]
    assert model.limit.context == 128000 and model.cost is not None and model.cost.input == 1.0
    metadata = model.metadata()
    assert metadata["brand_new_field"] == 1 and metadata["family"] == "x"


def test_api_json_layout_and_merge_order(tmp_path: Path) -> None:
    first = {"acme": {"id": "acme", "name": "Acme", "npm": "@ai-sdk/openai-compatible", "env": ["A"], "doc": "",
                      "api": "https://one.example/v1", "models": {"a": {"name": "A"}}, "extra_field": True},
             "other": {"name": "Other", "npm": "@ai-sdk/openai", "env": ["O"], "doc": "", "models": {}}}
    second = provider_json("acme", "https://two.example/v1", [model_json("b")])
    catalog = load_catalog([write(tmp_path, "one.json", first), write(tmp_path, "two.json", second)])
    assert catalog.providers["acme"].api == "https://two.example/v1"
    assert list(catalog.providers["acme"].models) == ["b"]
    assert catalog.providers["other"].id == "other"
    assert catalog.providers["other"].models == {}


def test_yaml_catalog(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("id: y\nname: Y\nnpm: '@ai-sdk/openai-compatible'\nenv: [Y_KEY]\ndoc: ''\n"
                    "api: https://y.example/v1\nmodels:\n  - id: m\n    name: M\n")
    assert "m" in load_catalog([str(path)]).providers["y"].models


def test_shipped_catalog_loads_every_provider_it_can_speak() -> None:
    catalog = load_catalog([str(ROOT / "config" / "catalog.json")])
    assert len(catalog.providers) >= 130 and catalog.model_count() >= 4500
    assert all(p.npm in PACKAGES for p in catalog.providers.values())
    assert "gpt-5" in catalog.providers["openai"].models
    for provider in catalog.providers.values():
        assert provider.api or default_base_url(provider.npm), provider.id


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ([1, 2], "must be a JSON object"),
        ({"id": "x", "models": [{"name": "no id"}]}, "models.0: each model in a list needs a string `id`"),
        ({"acme": {"models": {"m": {"limit": {"context": "big"}}}}}, "acme.models.m.limit.context"),
    ],
)
def test_bad_catalogs_are_refused_with_the_key(tmp_path: Path, document: object, fragment: str) -> None:
    path = write(tmp_path, "bad.json", document)
    with pytest.raises(ConfigError) as caught:
        load_catalog([path])
    assert str(caught.value).startswith(path) and fragment in str(caught.value)


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read catalog file"):
        load_catalog([str(tmp_path / "absent.json")])
    broken = tmp_path / "broken.json"
    broken.write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_catalog([str(broken)])
