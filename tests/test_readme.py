"""The README's complete config example must load as written: docs that drift are bugs."""

from __future__ import annotations

import re

import yaml

from gateway.catalog import load_catalog
from gateway.config.load import parse_settings
from gateway.routing import Router
from gateway.upstream.endpoint import build_endpoint
from tests.conftest import ROOT


def test_readme_complete_config_example_loads_and_routes() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("A complete example", 1)[1]
    text = re.search(r"```yaml\n(.*?)```", block, re.S).group(1)  # type: ignore[union-attr]
    raw = yaml.safe_load(text)
    raw["catalog"] = [str(ROOT / "config" / "catalog.json"), str(ROOT / "config" / "echo.json")]
    settings = parse_settings(raw, "README.md", {"TEAM_A_KEY": "k", "OPENAI_ORG": "org", "GATEWAY_ADMIN_KEY": "a"})
    catalog = load_catalog(settings.catalog)
    endpoints = {p: build_endpoint(v, settings.providers.get(p), {}) for p, v in catalog.providers.items()}
    router = Router(catalog, settings, endpoints)
    assert [t.key for t in router.resolve("smart").targets] == [
        "openai/gpt-5", "anthropic/claude-sonnet-4-5", "groq/llama-3.3-70b-versatile"]
    assert router.routes["balanced"].strategy == "weighted"


def test_readme_documents_every_metric() -> None:
    from gateway.metric_specs import METRICS_DOC

    readme = (ROOT / "README.md").read_text()
    missing = [name for name, *_ in METRICS_DOC if f"| `{name}` |" not in readme]
    assert not missing, f"metrics missing from README's Operations table: {missing}"


def test_readme_claude_code_aliases_load_and_route_natively() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Use it from Claude Code", 1)[1]
    text = re.search(r"```yaml\n(.*?)```", block, re.S).group(1)  # type: ignore[union-attr]
    raw = {**yaml.safe_load(text), "catalog": [str(ROOT / "config" / "catalog.json")]}
    settings = parse_settings(raw, "README.md", {})
    catalog = load_catalog(settings.catalog)
    endpoints = {p: build_endpoint(v, settings.providers.get(p), {}) for p, v in catalog.providers.items()}
    router = Router(catalog, settings, endpoints)
    claude = router.resolve("claude").targets
    assert [t.key for t in claude] == ["anthropic/claude-sonnet-4-5", "openai/gpt-5"]
    assert [t.endpoint.wire for t in claude] == ["anthropic", "openai"]
    assert router.resolve("fast").targets[0].endpoint.wire == "anthropic"
