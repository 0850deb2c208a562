"""Config reload: a valid file replaces the running config, a refused one leaves it in place."""

from __future__ import annotations

import asyncio
import http.server
import os
import signal
import threading
from pathlib import Path

import httpx
import orjson
import pytest

from gateway import metrics
from gateway.app import build_app
from gateway.config import load_settings
from tests.conftest import ECHO_CATALOG, GatewayFactory, GatewayProcess, provider_json, secret
from tests.fakes.upstream import FakeUpstream, chunk, pause, slow_first_token, stream


def test_reload_swaps_a_valid_config_and_keeps_the_old_on_error(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"catalog: [{ECHO_CATALOG}]\nmodels:\n  first:\n    targets: [echo/echo]\n")
    app = build_app(load_settings(path, {}), {})
    assert "first" in app.runtime.router.routes

    path.write_text(f"catalog: [{ECHO_CATALOG}]\nmodels:\n  second:\n    targets: [echo/echo]\n")
    assert app.reload() is True
    assert "second" in app.runtime.router.routes and "first" not in app.runtime.router.routes

    path.write_text(f"catalog: [{ECHO_CATALOG}]\nmodels:\n  third:\n    targets: [nowhere/model]\n")
    assert app.reload() is False
    assert "second" in app.runtime.router.routes, "a refused config must not replace the running one"


def _metric(name: str, labels: str = "") -> float | None:
    text = metrics.render(None)[0].decode()
    for row in text.splitlines():
        if row.startswith(f"{name}{labels} ") or (not labels and row.startswith(f"{name} ")):
            return float(row.rsplit(" ", 1)[1])
    return None


def test_a_reload_passes_the_same_bind_check_as_a_start(tmp_path: Path) -> None:
    # Bound to a public address with keys: a reload that drops every key would serve anyone.
    path = tmp_path / "gateway.yaml"
    path.write_text(f"catalog: [{ECHO_CATALOG}]\nauth:\n  keys:\n    - {{name: k, sha256: '{'0' * 64}'}}\n")
    app = build_app(load_settings(path, {}), {}, bind_host="0.0.0.0")
    path.write_text(f"catalog: [{ECHO_CATALOG}]\n")
    failures = _metric("gateway_config_reloads_total", '{result="failure"}') or 0
    assert app.reload() is False
    assert app.runtime.settings.auth.keys, "the running keys must stay"
    assert _metric("gateway_config_reloads_total", '{result="failure"}') == failures + 1
    assert _metric("gateway_config_last_reload_success") == 0


@pytest.mark.parametrize("bad", [
    b"catalog: [%s]\n# caf\xe9\n" % ECHO_CATALOG.encode(),
    b"catalog: [%s]\nproviders:\n  nope: {enabled: false}\n" % ECHO_CATALOG.encode(),
    b"catalog: [%s]\ntimeouts: {first_byte: 900}\n" % ECHO_CATALOG.encode(),
], ids=["not-utf8", "unknown-provider", "first_byte-over-total"])
def test_a_refused_reload_is_counted_and_keeps_the_config(tmp_path: Path, bad: bytes) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"catalog: [{ECHO_CATALOG}]\nmodels:\n  kept:\n    targets: [echo/echo]\n")
    app = build_app(load_settings(path, {}), {})
    failures = _metric("gateway_config_reloads_total", '{result="failure"}') or 0
    path.write_bytes(bad)
    assert app.reload() is False
    assert "kept" in app.runtime.router.routes
    assert _metric("gateway_config_reloads_total", '{result="failure"}') == failures + 1
    path.write_text(f"catalog: [{ECHO_CATALOG}]\nmodels:\n  kept:\n    targets: [echo/echo]\n")
    assert app.reload() is True and _metric("gateway_config_last_reload_success") == 1


def test_gauges_of_removed_aliases_are_cleared(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"catalog: [{ECHO_CATALOG}]\nmodels:\n  going:\n    targets: [echo/echo]\n")
    app = build_app(load_settings(path, {}), {})
    assert _metric("gateway_alias_targets", '{model="going"}') == 1
    path.write_text(f"catalog: [{ECHO_CATALOG}]\nmodels:\n  staying:\n    targets: [echo/echo]\n")
    assert app.reload() is True
    assert _metric("gateway_alias_targets", '{model="going"}') is None
    assert _metric("gateway_alias_targets", '{model="staying"}') == 1


class _GatedCatalog:
    """A catalog URL on its own thread whose answer waits for `gate` (a slow models.dev, say)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.asked = threading.Event()
        body = orjson.dumps(provider_json("slow", "http://127.0.0.1:9/v1"))
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.asked.set()
                outer.gate.wait(10)  # bounded, so a gateway that blocks its loop fails rather than hangs
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/catalog.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


async def test_a_reload_fetches_and_builds_off_the_event_loop(start_gateway: GatewayFactory, tmp_path: Path) -> None:
    catalog = _GatedCatalog()
    try:
        catalog.gate.set()
        gw = await start_gateway({"catalog": [catalog.url, ECHO_CATALOG]})
        (tmp_path / "gateway.yaml").write_text(f"catalog: [{catalog.url}, {ECHO_CATALOG}]\n")
        catalog.gate.clear()
        catalog.asked.clear()
        reloading = asyncio.get_running_loop().create_task(gw.app.reload_async())
        assert await asyncio.to_thread(catalog.asked.wait, 10)
        # The catalog has not answered yet, and the gateway still does.
        live = await gw.client.get("/livez", timeout=5)
        assert live.status_code == 200 and not reloading.done()
        catalog.gate.set()
        assert await reloading is True
        assert "slow/m1" in gw.app.runtime.router.routes
    finally:
        catalog.close()


async def test_sighup_with_requests_in_flight_lets_them_finish(tmp_path: Path) -> None:
    async with FakeUpstream() as up:
        # A stream that is mid-answer when the signal lands, and a whole answer still being prepared.
        up.script(stream([chunk(role="assistant", content=""), chunk(content="before "), pause(0.5),
                          chunk(content="after"), chunk(finish_reason="stop")]),
                  slow_first_token(0.5, "whole answer"))
        catalog = tmp_path / "acme.json"
        catalog.write_bytes(orjson.dumps(provider_json("acme", up.base_url)))
        config = tmp_path / "gateway.yaml"
        config.write_text(f"catalog: [{catalog}, {ECHO_CATALOG}]\nmodels:\n  old:\n    targets: [acme/m1]\n")
        env = {**os.environ, "ACME_API_KEY": secret("sk-sighup-secret-0123456789")}
        server = GatewayProcess(["--config", str(config)], env=env)
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                ask = {"model": "old", "messages": [{"role": "user", "content": "hi"}]}
                async with client.stream("POST", "/v1/chat/completions", json={**ask, "stream": True}) as streamed:
                    pieces = streamed.aiter_text()
                    first = await anext(pieces)
                    assert "before" in first
                    whole = asyncio.get_running_loop().create_task(client.post("/v1/chat/completions", json=ask))
                    await up.wait_for_requests(2)
                    config.write_text(f"catalog: [{catalog}, {ECHO_CATALOG}]\nmodels:\n  new:\n"
                                      "    targets: [acme/m1]\n")
                    server.process.send_signal(signal.SIGHUP)
                    rest = "".join([piece async for piece in pieces])
                answer = await whole
                assert "after" in rest and rest.rstrip().endswith("data: [DONE]")
                assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == "whole answer"
                # Once the gateway says it reloaded, the new config serves and the old alias is gone.
                await asyncio.to_thread(server.wait_for_output, "config reloaded from")
                assert (await client.post("/v1/chat/completions", json={**ask, "model": "new"})).status_code == 200
                assert (await client.post("/v1/chat/completions", json=ask)).status_code == 404
        finally:
            server.stop()
