"""Config loading: the DESIGN.md minimal shape, ${VAR} expansion, and refusals that name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.config.load import parse_settings
from gateway.errors import ConfigError
from tests.conftest import ROOT

MINIMAL = """\
server:
  host: 127.0.0.1
  port: 4000
catalog:
  - config/catalog.json
  - my-providers.json
models:
  smart:
    targets: [openai/gpt-5, anthropic/claude-sonnet-4-5]
auth:
  keys:
    - name: team-a
      key: ${TEAM_A_KEY}
publish:
  id: acme
  name: Acme Gateway
  env: ACME_GATEWAY_API_KEY
  base_url: https://gateway.acme.dev
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_design_minimal_shape_loads_as_written(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL), {"TEAM_A_KEY": "k"})
    assert settings.server.port == 4000
    assert settings.models["smart"].targets == ("openai/gpt-5", "anthropic/claude-sonnet-4-5")
    assert settings.auth.keys[0].name == "team-a" and settings.auth.keys[0].key == "k"
    assert settings.publish.env == "ACME_GATEWAY_API_KEY"
    assert settings.catalog[1].endswith("my-providers.json")


def test_shipped_default_config_loads() -> None:
    settings = load_settings(ROOT / "config" / "gateway.yaml", {})
    assert settings.server.host == "127.0.0.1" and settings.server.port == 4000
    assert any(c.endswith("echo.json") for c in settings.catalog)


def test_variable_defaults_and_types(tmp_path: Path) -> None:
    text = "server:\n  port: ${PORT:-4100}\n  host: ${HOST:-0.0.0.0}\ncatalog: [a.json]\n"
    settings = load_settings(write(tmp_path, text), {"HOST": "127.0.0.2"})
    assert settings.server.port == 4100 and settings.server.host == "127.0.0.2"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("catalog: [a.json]\nserver:\n  prot: 4000\n", ["server.prot: unknown key", "allowed here: host, port"]),
        ("catalog: [a.json]\nserver:\n  port: many\n", ["server.port:", "integer"]),
        ("catalog: [a.json]\nmodels:\n  smart:\n    targetz: [a/b]\n", ["models.smart.targetz: unknown key"]),
        ("catalog: [a.json]\nmodels:\n  smart: {limits: {rpm: 5}}\n", ["models.smart.targets: required for an alias"]),
        ("catalog: [a.json]\nauth:\n  keys:\n    - {name: a, sha256: '%s', limits: {rpm: -1}}\n" % ("0" * 64),
         ["auth.keys.0.limits.rpm:", "greater than or equal to 1"]),
        ("catalog: [a.json]\nauth:\n  admin_keys:\n    - name: ops\n      key: literal\n",
         ["auth.admin_keys.0.key: a literal key is refused"]),
        ("server: {}\n", ["catalog: required key is missing"]),
        ("catalog: [a.json]\nauth:\n  keys:\n    - name: a\n      key: ${NOPE_UNSET}\n",
         ["auth.keys.0.key: environment variable NOPE_UNSET is not set"]),
        ("catalog: [a.json]\nauth:\n  keys:\n    - name: a\n      key: literal-secret\n",
         ["auth.keys.0.key: a literal key is refused"]),
        ("catalog: [a.json]\nauth:\n  keys:\n    - name: a\n", ["auth.keys.0", "exactly one of"]),
        ("catalog: [a.json]\nretry:\n  attempts: 0\n", ["retry.attempts:", "greater than or equal to 1"]),
        ("catalog: [a.json]\nserver: {drain_delay: 30, drain_timeout: 10}\n",
         ["server:", "drain_delay (30) must be shorter than drain_timeout (10)"]),
        ("- just\n- a list\n", ["must be a mapping"]),
        ("server: [unclosed\n", ["not valid YAML"]),
    ],
)
def test_refusals_name_file_and_key(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {})
    message = str(caught.value)
    assert message.startswith(str(path)), message
    for fragment in expected:
        assert fragment in message, message


def test_missing_file_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found; pass --config"):
        load_settings(tmp_path / "nope.yaml", {})


def test_auth_none_must_be_explicit() -> None:
    assert parse_settings({"catalog": ["a.json"], "auth": "none"}, "x.yaml", {}).auth.none is True
    assert parse_settings({"catalog": ["a.json"]}, "x.yaml", {}).auth.none is False
