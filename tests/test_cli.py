"""The command line as a user runs it: check, serve (and its refusals), exit codes, no tracebacks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import LOG_LINES, ROOT, GatewayProcess, secret

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN"))}


def gateway(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    for value in (env or {}).values():
        secret(value)
    result = subprocess.run([sys.executable, "-m", "gateway", *args], cwd=ROOT, capture_output=True, text=True,
                            env={**CLEAN_ENV, **(env or {})}, timeout=timeout)
    LOG_LINES.extend(result.stderr.splitlines())
    return result


def test_check_lists_providers_and_missing_credentials() -> None:
    result = gateway("check", env={"GROQ_API_KEY": "gsk-check-secret-value"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # The summary's provider count is the catalog's, and every provider is listed once as ok or not.
    counted = re.search(r"^catalog .*: (\d+) providers, \d+ models$", out, re.MULTILINE)
    assert counted is not None, out
    listed = re.findall(r"^  (?:ok|--)    (\S+) ", out.split("\naliases")[0], re.MULTILINE)
    assert len(listed) == len(set(listed)) == int(counted.group(1)) > 100
    assert "ok    groq" in out and "ok    echo" in out
    assert "OPENAI_API_KEY" in out and "credentials not set" in out
    assert "smart" in out and "gsk-check-secret-value" not in out


def test_check_refuses_a_bad_config_with_its_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("catalog: [config/catalog.json]\nserver:\n  port: lots\n")
    result = gateway("check", "--config", str(config))
    assert result.returncode == 2
    assert f"{config}: server.port:" in result.stderr and "Traceback" not in result.stderr


def test_serve_refuses_an_open_bind_without_keys() -> None:
    result = gateway("serve", "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2
    assert "auth.keys" in result.stderr and "auth: none" in result.stderr and "Traceback" not in result.stderr


def test_serve_refuses_an_unknown_alias_target(tmp_path: Path) -> None:
    config = tmp_path / "g.yaml"
    config.write_text(f"catalog: [{ROOT / 'config' / 'echo.json'}]\nmodels:\n  x:\n    targets: [nope/model]\n")
    result = gateway("serve", "--config", str(config), "--port", "0")
    assert result.returncode == 2
    assert "models.x.targets.0: unknown model `nope/model`" in result.stderr


def test_serve_refuses_what_check_flags(tmp_path: Path) -> None:
    config = tmp_path / "g.yaml"
    config.write_text(f"catalog: [{ROOT / 'config' / 'echo.json'}]\nproviders:\n  opneai: {{timeouts: {{idle: 5}}}}\n")
    expected = f"{config}: providers.opneai: no such provider in the catalog"
    checked = gateway("check", "--config", str(config))
    assert checked.returncode == 1 and expected in checked.stdout
    served = gateway("serve", "--config", str(config), "--port", "0", timeout=30)
    assert served.returncode == 2 and expected in served.stderr and "Traceback" not in served.stderr


def test_serve_default_config_answers_from_echo() -> None:
    server = GatewayProcess([], env=CLEAN_ENV)
    try:
        response = httpx.post(f"{server.url}/v1/chat/completions", timeout=10,
                              json={"model": "echo/echo", "messages": [{"role": "user", "content": "hello"}]})
        assert response.json()["choices"][0]["message"]["content"] == "You said: hello"
    finally:
        output = server.stop()
    assert "serving on loopback only" in output
