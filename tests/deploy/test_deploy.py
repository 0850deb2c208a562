"""deploy/ validated with the tools ops use: promtool, a real Prometheus, hadolint, docker-compose.

A tool that is missing skips its test locally; in CI (CI set) a missing tool is a failure, since
.ci/run installs them all.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway import metric_specs, metrics
from tests.conftest import ROOT, GatewayProcess, model_json, provider_json, secret
from tests.fakes.upstream import FakeUpstream, ok, server_error, status

DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "gateway.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed, and CI must run this check (.ci/run installs it)")
        pytest.skip(f"{name} is not installed")
    return found


def run(*args: str, cwd: Path = DEPLOY, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]


def test_promtool_checks_config_and_rules() -> None:
    promtool = tool("promtool")
    for args in (("check", "config", "prometheus/prometheus.yml"), ("check", "rules", "prometheus/alerts.yml")):
        result = run(promtool, *args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_unit_tests() -> None:
    result = run(tool("promtool"), "test", "rules", "alerts_test.yml", cwd=DEPLOY / "prometheus")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_dockerfile_lints_clean() -> None:
    result = run(tool("hadolint"), "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_is_valid() -> None:
    result = run(tool("docker-compose"), "-f", "docker-compose.yml", "config", "-q", env={"GATEWAY_KEY": "x"})
    assert result.returncode == 0, result.stderr
    text = (DEPLOY / "docker-compose.yml").read_text()
    published = re.findall(r'- "([^"]+:\d+:\d+)"', text)
    assert published and all(p.startswith("127.0.0.1:") for p in published), published


def test_dashboard_and_alerts_refer_only_to_emitted_metrics() -> None:
    emitted = {name for name, *_ in metric_specs.METRICS_DOC}
    exprs = [expr for _, expr in panel_queries()] + re.findall(r"expr: (.+(?:\n {10,}.+)*)", ALERTS.read_text())
    referred = {re.sub(r"_(bucket|sum|count)$", "", m) for e in exprs for m in re.findall(r"gateway_[a-z_]+", e)}
    assert referred, "no gateway metric found in the dashboard"
    assert referred <= emitted, f"not emitted by the gateway: {sorted(referred - emitted)}"
    registered = set(metrics.REGISTRY._names_to_collectors)  # every documented metric really exists
    assert emitted <= registered | {n.removesuffix("_total") for n in registered}


async def test_promtool_check_metrics_on_a_live_scrape(start_gateway: Any) -> None:
    promtool = tool("promtool")
    gw = await start_gateway({})
    await gw.chat({"model": "echo/echo", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    scrape = (await gw.client.get("/metrics")).text
    check = await asyncio.create_subprocess_exec(promtool, "check", "metrics", stdin=asyncio.subprocess.PIPE,
                                                 stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await check.communicate(scrape.encode())
    assert check.returncode == 0, out.decode()


DASH_KEY = "gw-dashboard-key-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def live_gateway(tmp_path: Path) -> Iterator[tuple[GatewayProcess, FakeUpstream]]:
    """A gateway subprocess in front of a fake upstream, with traffic that exercises every panel."""
    with FakeUpstream.in_thread() as up:
        catalog = tmp_path / "dash.json"
        catalog.write_text(json.dumps(provider_json("dash", up.base_url, [model_json("m1"), model_json("m2")])))
        config = tmp_path / "gateway.yaml"
        config.write_text(
            f"catalog: [{catalog}, {ROOT / 'config' / 'echo.json'}]\n"
            "models:\n  pair:\n    targets: [dash/m1]\n    fallbacks: [dash/m2]\n"
            "retry: {attempts: 2, backoff_initial: 0.01, backoff_max: 0.02}\n"
            "breaker: {failures: 2, cooldown: 600}\n"
            # A key with limits and a budget, for the Teams row (spend, refusals, budget used).
            "auth: {keys: [{name: dash, key: '${GW_DASH_KEY}', limits: {rpm: 6, budget_usd: 1}}]}\n")
        env = {**os.environ, "DASH_API_KEY": secret("sk-dashboard-test-9876543210"),
               "GW_DASH_KEY": secret(DASH_KEY)}
        server = GatewayProcess(["--config", str(config)], env=env)
        try:
            yield server, up
        finally:
            server.stop()


def send_traffic(server: GatewayProcess, up: FakeUpstream) -> None:
    ask = {"messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=server.url, timeout=30, headers={"authorization": f"Bearer {DASH_KEY}"}) as client:
        up.script(ok("a b c"), server_error(500), ok("after retry"))
        assert client.post("/v1/chat/completions", json={"model": "dash/m1", **ask}).status_code == 200
        assert client.post("/v1/chat/completions", json={"model": "dash/m1", **ask}).status_code == 200
        assert client.post("/v1/chat/completions", json={"model": "dash/m1", "stream": True, **ask}).status_code == 200
        up.script(status(401), ok("fallback"), status(401), ok("fallback"))  # two failures open m1's circuit
        for _ in range(2):
            assert client.post("/v1/chat/completions", json={"model": "pair", **ask}).status_code == 200
        assert client.post("/v1/chat/completions", json={"model": "echo/echo", **ask}).status_code == 200
        assert client.post("/v1/chat/completions", json={"model": "echo/echo", **ask}).status_code == 429  # rpm 6
    server.process.send_signal(signal.SIGHUP)  # a config reload, for the reload panels


def test_every_dashboard_panel_returns_data_from_a_real_prometheus(
    live_gateway: tuple[GatewayProcess, FakeUpstream], tmp_path: Path
) -> None:
    prometheus = tool("prometheus")
    server, up = live_gateway
    process, api, log = start_prometheus(prometheus, server.port, tmp_path)
    try:
        send_traffic(server, up)
        queries = [(title, _concrete(expr)) for title, expr in panel_queries()]
        pending: dict[str, str] = {}
        # Prometheus scrapes on its own clock: poll its API, bounded, until every panel has data.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            pending = {}
            for title, expr in queries:
                answer = httpx.get(f"{api}/query", params={"query": expr}, timeout=5).json()
                assert answer["status"] == "success", (title, expr, answer)
                if not answer["data"]["result"]:
                    pending[title] = expr
            if not pending:
                break
            time.sleep(1)
        assert not pending, f"panels without data: {pending}\nprometheus log: {log.read_text()[-2000:]}"
        rules = httpx.get(f"{api}/rules", timeout=5).json()
        assert all(r["health"] == "ok" for g in rules["data"]["groups"] for r in g["rules"]), rules
    finally:
        process.terminate()
        process.wait(timeout=30)


def start_prometheus(binary: str, gateway_port: int, work: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """A real Prometheus on 127.0.0.1 scraping the gateway every second; ready when /-/ready says so."""
    config = work / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{ALERTS}]\n"
        "scrape_configs:\n  - job_name: gateway\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{gateway_port}']}}]\n")
    log = work / "prometheus.log"
    for _ in range(3):  # a free port can be taken between our probe and Prometheus binding it
        port = free_port()
        with log.open("wb") as sink:
            process = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={work / 'tsdb'}",
                                        f"--web.listen-address=127.0.0.1:{port}"], stdout=sink, stderr=sink)
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=2).status_code == 200:
                    return process, f"http://127.0.0.1:{port}/api/v1", log
            except httpx.TransportError:
                pass
            time.sleep(0.2)  # an external process starting up: bounded polling is the only way to know
        process.terminate()
        process.wait(timeout=30)
    raise AssertionError(f"prometheus did not start: {log.read_text()[-2000:]}")


def _concrete(expr: str) -> str:
    """The query as Grafana sends it with every variable at `All`."""
    return (expr.replace("$__rate_interval", "15s").replace('"$job"', '".*"').replace('"$model"', '".*"')
            .replace('"$provider"', '".*"'))
