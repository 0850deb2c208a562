"""What every HTTP answer carries: x-request-id (echoed byte for byte), 405 with Allow, CORS for browsers,
mid-stream errors that read as sentences; and /metrics on its own listener (server.metrics_listen)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import orjson

from tests.conftest import ECHO_CATALOG, GatewayFactory, GatewayProcess, model_json, provider_json, sse_events
from tests.fakes.upstream import FakeUpstream, chunk, cut, stream

HELLO = {"model": "echo/echo", "messages": [{"role": "user", "content": "hi"}]}
ORIGIN = "https://app.example.com"


async def every_kind_of_answer(client: httpx.AsyncClient, headers: dict[str, str] | None = None,
                               ) -> list[httpx.Response]:
    return [
        await client.get("/v1/models", headers=headers),
        await client.get("/v1/models/echo/echo", headers=headers),
        await client.get("/livez", headers=headers),
        await client.get("/metrics", headers=headers),
        await client.get("/openwork/provider.json", headers=headers),
        await client.get("/no/such/path", headers=headers),
        await client.put("/v1/models", headers=headers),
        await client.get("/v1/chat/completions", headers=headers),
        await client.post("/v1/chat/completions", json=HELLO, headers=headers),
        await client.post("/v1/chat/completions", json={**HELLO, "stream": True}, headers=headers),
        await client.post("/v1/chat/completions", content=b"{nope", headers=headers),
        await client.post("/v1/chat/completions", json={**HELLO, "model": "echo/ehco"}, headers=headers),
    ]


async def test_every_answer_has_a_request_id_and_echoes_the_clients_bytes(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway({})
    generated = [r.headers.get("x-request-id") for r in await every_kind_of_answer(gw.client)]
    assert all(generated) and len(set(generated)) == len(generated), generated
    for given in (b"req-123", b"r\xe9q-\xc3\xa9 42"):  # latin-1 and UTF-8 bytes come back as sent
        for response in await every_kind_of_answer(gw.client, {"x-request-id": given}):  # type: ignore[dict-item]
            assert response.headers.raw.count((b"x-request-id", given)) == 1, (response.request.url, given)
            assert [k for k, _ in response.headers.raw].count(b"x-request-id") == 1
    too_long = b"x" * 200
    response = await gw.client.get("/v1/models", headers={"x-request-id": too_long})  # type: ignore[dict-item]
    replaced = response.headers["x-request-id"]
    assert replaced and replaced.encode() != too_long and len(replaced) <= 128


async def test_wrong_method_is_405_with_allow(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway({})
    for method, path, allowed in (("GET", "/v1/chat/completions", "POST"), ("PUT", "/v1/models", "GET"),
                                  ("DELETE", "/livez", "GET"), ("GET", "/v1/responses", "POST")):
        response = await gw.client.request(method, path)
        assert response.status_code == 405, (method, path)
        assert allowed in response.headers["allow"], (method, path)
        assert response.json()["error"]["code"] == "method_not_allowed"


async def test_cors_answers_preflights_and_exposes_headers_for_allowed_origins(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway({"server": {"cors_origins": [ORIGIN]}})
    preflight = await gw.client.options("/v1/chat/completions", headers={
        "origin": ORIGIN, "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type, x-stainless-os"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert {"authorization", "content-type", "x-stainless-os"} <= {
        h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")}
    assert preflight.headers["x-request-id"]
    for stream_mode in (False, True):
        answer = await gw.chat({**HELLO, "stream": stream_mode}, headers={"origin": ORIGIN})
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == ORIGIN
        assert "x-request-id" in answer.headers["access-control-expose-headers"]
    listing = await gw.client.get("/v1/models", headers={"origin": ORIGIN})
    assert listing.headers["access-control-allow-origin"] == ORIGIN

    other = await gw.chat(HELLO, headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    refused = await gw.client.options("/v1/chat/completions", headers={
        "origin": "https://evil.example", "access-control-request-method": "POST"})
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers


async def test_cors_is_off_by_default(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway({})
    preflight = await gw.client.options("/v1/chat/completions", headers={
        "origin": ORIGIN, "access-control-request-method": "POST"})
    assert preflight.status_code == 405 and "access-control-allow-origin" not in preflight.headers
    answer = await gw.chat(HELLO, headers={"origin": ORIGIN})
    assert "access-control-allow-origin" not in answer.headers


async def test_a_mid_stream_break_reads_as_a_sentence(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.default = stream([chunk(role="assistant", content="Hel"), chunk(content="lo"), cut()], done=False)
        gw = await start_gateway({}, catalogs=[provider_json("acme", up.base_url, [model_json("m1")])],
                                 environ={"ACME_API_KEY": "sk-acme-sentence-0000"})
        response = await gw.chat({**HELLO, "model": "acme/m1", "stream": True})
        events = sse_events(response.text)
        assert "event:error" in events
        message = orjson.loads(events[-1])["error"]["message"]
        assert message.startswith("the upstream stream broke: "), message
        for machine_text in ("Error", "<", "aiohttp", "Transfer", "payload"):
            assert machine_text not in message, message


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


async def test_metrics_listen_serves_metrics_alone_and_the_main_port_no_longer_does(
        start_gateway: GatewayFactory) -> None:
    metrics_sock = bound_socket()
    port = metrics_sock.getsockname()[1]
    gw = await start_gateway({"server": {"metrics_listen": f"127.0.0.1:{port}"}}, sockets=[metrics_sock])
    assert (await gw.chat(HELLO)).status_code == 200
    assert (await gw.client.get("/metrics")).status_code == 404
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as scraper:
        scraped = await scraper.get("/metrics")
        assert scraped.status_code == 200 and "gateway_requests_total" in scraped.text
        assert scraped.headers["x-request-id"]
        for path in ("/v1/models", "/livez", "/openwork/provider.json"):
            assert (await scraper.get(path)).status_code == 404, path
        assert (await scraper.post("/v1/chat/completions", json=HELLO)).status_code == 404


def test_metrics_listen_with_two_workers(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "gateway.yaml"
    config.write_text(f"catalog: [{ECHO_CATALOG}]\nserver:\n  metrics_listen: 127.0.0.1:{port}\n")
    server = GatewayProcess(["--workers", "2", "--config", str(config)])
    try:
        # Both workers serving before the first request: under load a worker still importing made the
        # queued request outlive httpx's 5 s default.
        server.wait_for_output("Application startup complete", count=2)

        async def check() -> None:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                assert (await client.post("/v1/chat/completions", json=HELLO)).status_code == 200
                assert (await client.get("/metrics")).status_code == 404
            for _ in range(4):  # whichever worker answers, it serves the metrics listener too
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as scraper:
                    scraped = await scraper.get("/metrics")
                    assert scraped.status_code == 200 and "gateway_requests_total" in scraped.text

        asyncio.run(check())
    finally:
        server.stop()
