"""The published provider JSON passes OpenWork's rules and never carries a credential."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import LOG_LINES, ROOT, GatewayFactory, model_json, provider_json, secret

SECRETS = {"OPENAI_API_KEY": "sk-proj-REALLOOKINGsecret0123456789abcdef", "GROQ_API_KEY": "gsk_secretvalue987654321zyx",
           "GATEWAY_API_KEY": "gw-live-key-5555555555", "TEAM_KEY": "team-key-444444444"}
FIELDS = ("id", "name", "attachment", "reasoning", "tool_call", "structured_output", "temperature", "release_date",
          "last_updated", "open_weights", "limit", "modalities")


def assert_openwork_rules(document: dict[str, Any]) -> None:
    """OpenWork's own checks on a custom provider JSON, plus the shape DESIGN.md promises."""
    json.loads(json.dumps(document))  # valid JSON
    for key in ("id", "name", "npm", "env", "doc", "models"):
        assert key in document and document[key] not in (None, ""), key
    assert isinstance(document["env"], list) and len(document["env"]) >= 1
    assert isinstance(document["models"], list) and len(document["models"]) >= 1
    assert document["npm"] == "@ai-sdk/openai-compatible"
    assert document["api"].endswith("/v1")
    for model in document["models"]:
        for field in FIELDS:
            assert field in model, (model["id"], field)
        assert set(model["limit"]) >= {"context", "output"}
        assert set(model["modalities"]) == {"input", "output"}


def run_publish(*args: str, env: dict[str, str] | None = None) -> str:
    for value in (env or {}).values():
        secret(value)
    result = subprocess.run([sys.executable, "-m", "gateway", "publish", *args], cwd=ROOT, capture_output=True,
                            text=True, env={**os.environ, **(env or {})}, timeout=60, check=True)
    LOG_LINES.extend(result.stderr.splitlines())
    return result.stdout


def test_cli_publish_on_the_shipped_config_passes_and_leaks_nothing() -> None:
    out = run_publish("--base-url", "https://gw.example.com", env=SECRETS)
    document = json.loads(out)
    assert_openwork_rules(document)
    assert document["api"] == "https://gw.example.com/v1"
    ids = {m["id"] for m in document["models"]}
    assert {"echo", "echo/echo", "openai/gpt-5", "smart"} <= ids, "credentials set: their models are published"
    for value in SECRETS.values():
        assert value not in out


def test_opencode_format_matches_opencode_config() -> None:
    document = json.loads(run_publish("--format", "opencode", env=SECRETS))
    assert document["$schema"] == "https://opencode.ai/config.json"
    (provider,) = document["provider"].values()
    assert provider["npm"] == "@ai-sdk/openai-compatible" and provider["name"]
    assert provider["options"]["baseURL"].endswith("/v1")
    assert provider["options"]["apiKey"] == "{env:GATEWAY_API_KEY}"
    for model_id, model in provider["models"].items():
        assert model["name"] and set(model["limit"]) == {"context", "output"}, model_id
    for value in SECRETS.values():
        assert value not in json.dumps(document)


async def test_endpoint_matches_and_alias_is_most_conservative(start_gateway: GatewayFactory, tmp_path: Path) -> None:
    models = [model_json("wide", context=200000, output=32000, attachment=True, reasoning=True),
              model_json("narrow", context=32000, output=4096, attachment=False, reasoning=True)]
    gw = await start_gateway(
        {"models": {"team": {"targets": ["acme/wide"], "fallbacks": ["acme/narrow"]}},
         "publish": {"id": "acme", "name": "Acme Gateway", "env": "ACME_GATEWAY_API_KEY",
                     "base_url": "https://gateway.acme.dev"}},
        catalogs=[provider_json("acme", "http://127.0.0.1:9/v1", models)], environ={"ACME_API_KEY": "sk-x1234567890"})
    response = await gw.client.get("/openwork/provider.json")
    document = response.json()
    assert_openwork_rules(document)
    assert document["env"] == ["ACME_GATEWAY_API_KEY"] and document["api"] == "https://gateway.acme.dev/v1"
    team = next(m for m in document["models"] if m["id"] == "team")
    assert team["limit"]["context"] == 32000 and team["limit"]["output"] == 4096
    assert team["attachment"] is False and team["reasoning"] is True
    assert "sk-x1234567890" not in response.text


async def test_public_url_from_request_and_trusted_proxies(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway({"server": {"trusted_proxies": ["127.0.0.0/8"]}})
    forwarded = await gw.client.get("/openwork/provider.json",
                                    headers={"x-forwarded-proto": "https", "x-forwarded-host": "llm.corp"})
    assert forwarded.json()["api"] == "https://llm.corp/v1"
    untrusted = await start_gateway({})
    # A loopback peer is not trusted either unless listed: server.trusted_proxies is the only authority
    # (uvicorn's own proxy-header rewriting, which trusts 127.0.0.1 by default, is off).
    plain = await untrusted.client.get("/openwork/provider.json",
                                       headers={"x-forwarded-host": "evil.example", "x-forwarded-proto": "https"})
    assert plain.json()["api"] == f"{untrusted.base_url}/v1"


async def test_include_aliases_only(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway({"models": {"fast": {"targets": ["echo/echo"]}}, "publish": {"include": "aliases"}})
    document = (await gw.client.get("/openwork/provider.json")).json()
    assert [m["id"] for m in document["models"]] == ["fast"]
