"""Reload with `server.workers: N`: every worker reloads in place and counts it, refused or not, and a
bad file on disk never turns a worker's death into a crash loop (the replacement starts from the last
config the supervisor validated)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import ROOT, GatewayProcess

ECHO = ROOT / "config" / "echo.json"
ASK = {"messages": [{"role": "user", "content": "hi"}]}


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    """Poll an observable condition (a log line) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def metric(client: httpx.Client, row: str) -> float:
    text = client.get("/metrics").text
    return float(next(line for line in text.splitlines() if line.startswith(row + " ")).rsplit(" ", 1)[1])


def test_workers_count_refused_reloads_and_a_replaced_worker_starts_from_the_last_good_config(
    tmp_path: Path,
) -> None:
    config = tmp_path / "gateway.yaml"
    good = f"catalog: [{ECHO}]\nserver: {{workers: 2}}\nmodels:\n  kept:\n    targets: [echo/echo]\n"
    config.write_text(good)
    server = GatewayProcess(["--config", str(config)], env=dict(os.environ), session=True)
    log = lambda: "".join(server.output)  # noqa: E731
    try:
        wait_until(lambda: log().count("Application startup complete") == 2)
        pids = [int(line.split("[")[1].split("]")[0]) for line in server.output if "Started server process" in line]
        config.write_text(good + "providers:\n  opneai: {enabled: false}\n")
        server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: log().count("config reload refused") == 2)
        assert "supervisor: " in log() and "providers.opneai: no such provider" in log()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert metric(client, "gateway_config_last_reload_success") == 0
            assert metric(client, 'gateway_config_reloads_total{result="failure"}') == 2

            # A worker dies while the file on disk is refused: its replacement serves the last good config.
            os.kill(pids[0], signal.SIGKILL)
            wait_until(lambda: "starting from the last valid config" in log()
                       and log().count("Application startup complete") == 3)
            assert server.process.poll() is None, "the supervisor must keep running"
            assert all(client.post("/v1/chat/completions", json={"model": "kept", **ASK}).status_code == 200
                       for _ in range(6))

            # The file is fixed: the next reload succeeds everywhere and the gauge says so.
            config.write_text(good.replace("kept", "fresh"))
            server.process.send_signal(signal.SIGHUP)
            wait_until(lambda: log().count("config reloaded from") == 2)
            assert metric(client, "gateway_config_last_reload_success") == 1
            assert all(client.post("/v1/chat/completions", json={"model": "fresh", **ASK}).status_code == 200
                       for _ in range(6))
    finally:
        server.stop()
