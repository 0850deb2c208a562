"""Graceful drain of a real `gateway serve` process: SIGTERM with 20 streams in flight."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, GatewayFactory, GatewayProcess, model_json, provider_json, secret, sse_events
from tests.fakes.upstream import FakeUpstream, chunk, gate, stall, stream

STREAMS = 20
ASK = {"model": "drain/m1", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


def start(tmp_path: Path, up: FakeUpstream, *, delay: float, timeout: float, workers: int = 1) -> GatewayProcess:
    catalog = tmp_path / "drain.json"
    catalog.write_text(json.dumps(provider_json("drain", up.base_url, [model_json("m1")])))
    config = tmp_path / "gateway.yaml"
    config.write_text(f"catalog: [{catalog}, {ROOT / 'config' / 'echo.json'}]\n"
                      f"server: {{drain_delay: {delay}, drain_timeout: {timeout}, workers: {workers}}}\n"
                      "timeouts: {idle: 120, first_token: 120}\n")
    env = {**os.environ, "DRAIN_API_KEY": secret("sk-drain-test-0123456789")}
    server = GatewayProcess(["--config", str(config)], env=env)
    wait_until(lambda: "".join(server.output).count("Application startup complete") >= workers)
    return server


def wait_until(condition: Callable[[], bool], timeout: float = 20) -> None:
    """Poll an observable condition (a log line, a refused port) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


async def open_streams(client: httpx.AsyncClient, up: FakeUpstream, n: int) -> list[asyncio.Task[str]]:
    """Start n streams and return once each has its first chunk (so all are truly in flight)."""
    first = asyncio.Semaphore(0)

    async def one() -> str:
        async with client.stream("POST", "/v1/chat/completions", json=ASK) as response:
            assert response.status_code == 200
            text = ""
            signalled = False
            async for piece in response.aiter_text():
                text += piece
                if not signalled:
                    signalled = True
                    first.release()
            return text

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    for _ in range(n):
        await first.acquire()
    return tasks


async def exit_code(server: GatewayProcess) -> int:
    return await asyncio.to_thread(server.process.wait, 30)


async def test_sigterm_lets_20_streams_finish_refuses_new_connections_and_exits_0(tmp_path: Path) -> None:
    opened = asyncio.Event()
    async with FakeUpstream() as up:
        up.default = stream([chunk(role="assistant", content="first"), gate(opened),
                             chunk(content=" second"), chunk(finish_reason="stop")])
        server = start(tmp_path, up, delay=3, timeout=30)
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=60,
                                         limits=httpx.Limits(max_connections=STREAMS + 5)) as client:
                assert (await client.get("/readyz")).status_code == 200
                streams = await open_streams(client, up, STREAMS)

                server.process.send_signal(signal.SIGTERM)
                # At once: readiness is off, while the listener still accepts (the drain delay).
                async with httpx.AsyncClient(base_url=server.url, timeout=10) as fresh:
                    ready = await fresh.get("/readyz")
                assert ready.status_code == 503 and ready.json()["status"] == "draining"
                # After the delay: no new connection is accepted, and every stream is still open.
                await asyncio.to_thread(wait_until, lambda: refuses_connections(server.port))
                assert not any(task.done() for task in streams)

                opened.set()
                bodies = await asyncio.gather(*streams)
            for body in bodies:
                events = sse_events(body)
                assert events[-1] == "[DONE]" and "event:error" not in events
            assert await exit_code(server) == 0
        finally:
            output = server.stop()
    assert "draining: readiness is off; 20 request(s) in flight" in output


async def test_streams_open_at_the_drain_deadline_end_with_gateway_shutting_down(tmp_path: Path) -> None:
    async with FakeUpstream() as up:
        up.default = stream([chunk(role="assistant", content="first"), stall()])
        server = start(tmp_path, up, delay=0.1, timeout=1)
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=60,
                                         limits=httpx.Limits(max_connections=STREAMS + 5)) as client:
                streams = await open_streams(client, up, STREAMS)
                server.process.send_signal(signal.SIGTERM)
                bodies = await asyncio.gather(*streams)
            for body in bodies:
                events = sse_events(body)
                assert "[DONE]" not in events
                assert events[-2] == "event:error"
                error = json.loads(events[-1])["error"]
                assert error["code"] == "gateway_shutting_down" and error["type"] == "server_error"
            assert await exit_code(server) == 0
            # The upstream requests were cancelled, not left running.
            await up._wait(lambda: up.disconnects >= STREAMS, 10)
        finally:
            output = server.stop()
    assert "ending 20 request(s) still in flight with gateway_shutting_down" in output


@pytest.mark.parametrize("workers", [2])
async def test_every_worker_drains_and_reloads(tmp_path: Path, workers: int) -> None:
    opened = asyncio.Event()
    async with FakeUpstream() as up:
        up.default = stream([chunk(role="assistant", content="first"), gate(opened), chunk(finish_reason="stop")])
        server = start(tmp_path, up, delay=0.5, timeout=30, workers=workers)
        try:
            # SIGHUP reaches every worker: each reloads in place (no worker is replaced).
            pids = {line.split("[")[1].split("]")[0] for line in server.output if "Started server process" in line}
            server.process.send_signal(signal.SIGHUP)
            await asyncio.to_thread(wait_until, lambda: "".join(server.output).count("config reloaded") == workers)

            async with httpx.AsyncClient(base_url=server.url, timeout=60,
                                         limits=httpx.Limits(max_connections=STREAMS + 5)) as client:
                streams = await open_streams(client, up, STREAMS)
                server.process.send_signal(signal.SIGTERM)
                await asyncio.to_thread(wait_until, lambda: "".join(server.output).count("draining:") == workers)
                await asyncio.to_thread(wait_until, lambda: refuses_connections(server.port))
                opened.set()
                bodies = await asyncio.gather(*streams)
            assert all(sse_events(body)[-1] == "[DONE]" for body in bodies)
            assert await exit_code(server) == 0
        finally:
            output = server.stop()
    assert len(pids) == workers
    assert {line.split("[")[1].split("]")[0] for line in output.splitlines() if "Started server process" in line} \
        == pids


async def test_flush_hooks_run_once_in_order_after_the_server_stopped(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway({})
    ran: list[str] = []

    async def failing() -> None:
        ran.append("failing")
        raise RuntimeError("the database is down")

    async def ledger() -> None:
        ran.append("ledger")

    gateway.app.drain.add_flush_hook("failing", failing)
    gateway.app.drain.add_flush_hook("ledger", ledger)
    assert (await gateway.client.get("/readyz")).status_code == 200
    gateway.app.drain.begin(0, 30)  # what SIGTERM does
    response = await gateway.client.get("/readyz")
    assert response.status_code == 503 and response.json()["status"] == "draining"
    assert ran == []
    await gateway.stop()
    await gateway.app.drain.flush()  # a second call does nothing
    assert ran == ["failing", "ledger"], "a failing hook must not keep the next one from running"


async def test_a_stream_cut_by_the_drain_ends_in_the_called_apis_error_shape(start_gateway: GatewayFactory) -> None:
    """/v1/messages (Anthropic's API) gets Anthropic's `error` event, not OpenAI's body."""
    async with FakeUpstream() as up:
        up.default = stream([chunk(role="assistant", content="first"), stall()])
        gateway = await start_gateway({}, catalogs=[provider_json("drain", up.base_url, [model_json("m1")])],
                                      environ={"DRAIN_API_KEY": "sk-drain-test-0123456789"})
        body = {"model": "drain/m1", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "x"}]}
        async with gateway.client.stream("POST", "/v1/messages", json=body) as response:
            assert response.status_code == 200
            pieces = response.aiter_bytes()
            received = await anext(pieces)
            gateway.app.drain.begin(0, 0)  # SIGTERM with no time left: cut what runs now
            async for piece in pieces:
                received += piece
        blocks = [b for b in received.decode().split("\n\n") if b]
        head, data = blocks[-1].split("\n", 1)
        assert head == "event: error"
        error = json.loads(data.removeprefix("data: "))
        assert error["type"] == "error" and "shutting down" in error["error"]["message"], error
        assert not any(b.startswith("event: message_stop") for b in blocks)
        await up._wait(lambda: up.disconnects >= 1, 10)
