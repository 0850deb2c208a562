"""Shared fixtures: a real gateway on 127.0.0.1 (uvicorn in the test's loop) and a catalog for fake upstreams."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from gateway.app import Gateway, build_app
from gateway.config.load import parse_settings
from gateway.server import uvicorn_config
from tests.fakes.servers import PostgresServer, RedisServer, postgres_bindir, redis_binary

ROOT = Path(__file__).resolve().parent.parent

# Every log line of the whole run (in-process gateways and subprocesses alike) lands here, and the
# session fails if any secret a test configured shows up in it: credentials never reach a log.
LOG_LINES: list[str] = []
SECRETS: set[str] = set()


def secret(value: str) -> str:
    """Register a credential value a test configures; returns it unchanged."""
    SECRETS.add(value)
    return value


class _Sink(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        LOG_LINES.append(self.format(record))


def pytest_configure(config: pytest.Config) -> None:
    sink = _Sink(logging.DEBUG)
    sink.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logging.getLogger().addHandler(sink)
    logging.getLogger("gateway").setLevel(logging.INFO)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaks = [(s, line) for line in LOG_LINES for s in SECRETS if s in line]
    if leaks:
        for value, line in leaks[:10]:
            print(f"\nSECRET LEAKED INTO THE LOG ({value[:6]}…): {line[:300]}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
ECHO_CATALOG = str(ROOT / "config" / "echo.json")

# Short timeouts and back-offs so failure scenarios finish in well under a second each.
FAST_POLICY: dict[str, Any] = {
    "timeouts": {"connect": 1, "first_byte": 1, "first_token": 1, "idle": 1, "response": 2, "total": 5},
    "retry": {"attempts": 3, "backoff_initial": 0.01, "backoff_max": 0.05},
}


def provider_json(provider_id: str, base_url: str, models: list[dict[str, Any]] | None = None,
                  env: list[str] | None = None) -> dict[str, Any]:
    """A single-provider catalog (OpenWork's custom provider layout) pointing at a fake upstream."""
    return {
        "id": provider_id,
        "name": f"Fake {provider_id}",
        "npm": "@ai-sdk/openai-compatible",
        "env": env if env is not None else [f"{provider_id.upper()}_API_KEY"],
        "doc": "https://example.invalid/docs",
        "api": base_url,
        "models": models or [model_json("m1")],
    }


def model_json(model_id: str, *, context: int = 128000, output: int = 8192, **extra: Any) -> dict[str, Any]:
    return {
        "id": model_id, "name": model_id.upper(), "attachment": False, "reasoning": False, "tool_call": True,
        "temperature": True, "release_date": "2025-01-01", "last_updated": "2025-01-01", "open_weights": False,
        "limit": {"context": context, "output": output}, "modalities": {"input": ["text"], "output": ["text"]},
        "cost": {"input": 1.0, "output": 2.0, "cache_read": 0.5}, **extra,
    }


class FakeClock:
    """The gateway's circuit clock, advanced by hand: no test waits out a cooldown."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RunningGateway:
    def __init__(self, app: Gateway, base_url: str, client: httpx.AsyncClient,
                 stop: Callable[[], Awaitable[None]]) -> None:
        self.app = app
        self.base_url = base_url
        self.client = client
        self.stop = stop  # shut the server down now (lifespan included); the fixture then skips it

    async def chat(self, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
        return await self.client.post("/v1/chat/completions", json=body, **kwargs)


GatewayFactory = Callable[..., Awaitable[RunningGateway]]


@pytest.fixture
async def start_gateway(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    """Start gateways from a config dict; catalogs given as dicts are written to files first."""
    servers: list[tuple[uvicorn.Server, list[socket.socket], httpx.AsyncClient]] = []

    async def start(config: dict[str, Any], *, catalogs: list[dict[str, Any]] = (),
                    environ: dict[str, str] | None = None, echo: bool = True,
                    clock: FakeClock | None = None, sockets: list[socket.socket] = (),
                    uvicorn_options: dict[str, Any] | None = None) -> RunningGateway:
        """`sockets`: more bound sockets the same server listens on (as `server.metrics_listen` adds one);
        `uvicorn_options` override the server's (e.g. http="httptools": the app under plain uvicorn)."""
        paths = []
        for index, catalog in enumerate(catalogs):
            path = tmp_path / f"catalog-{len(servers)}-{index}.json"
            path.write_bytes(orjson.dumps(catalog))
            paths.append(str(path))
        if echo:
            paths.append(ECHO_CATALOG)
        for name, value in (environ or {}).items():
            if name.endswith(("_KEY", "_TOKEN", "_SECRET")):
                secret(value)
        server = {"access_log": True, **config.get("server", {})}
        raw = {**config, "catalog": config.get("catalog", paths), "server": server}
        settings = parse_settings(raw, str(tmp_path / "gateway.yaml"), environ or {})
        app = build_app(settings, environ or {}, clock=clock or time.monotonic)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        uv_config = uvicorn_config(app, settings, host="127.0.0.1", port=0, log_level="warning",
                                   timeout_graceful_shutdown=None, **(uvicorn_options or {}))
        uv_config.load()
        server = uvicorn.Server(uv_config)
        server.lifespan = uv_config.lifespan_class(uv_config)
        await server.startup(sockets=[sock, *sockets])
        base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        client = httpx.AsyncClient(base_url=base_url, timeout=30)
        entry = (server, [sock, *sockets], client)
        servers.append(entry)

        async def stop_now() -> None:
            servers.remove(entry)
            await stop(*entry)

        return RunningGateway(app, base_url, client, stop_now)

    async def stop(server: uvicorn.Server, socks: list[socket.socket], client: httpx.AsyncClient) -> None:
        await client.aclose()
        server.should_exit = True
        await server.shutdown(sockets=socks)

    yield start
    for entry in list(servers):
        await stop(*entry)


def sse_events(text: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order (event: lines kept as `event:<name>` markers)."""
    out = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        for line in block.split("\n"):
            if line.startswith("event:"):
                out.append("event:" + line[6:].strip())
            elif line.startswith("data:"):
                out.append(line[5:].strip())
    return out


class GatewayProcess:
    """`gateway serve` as a real subprocess; ready once uvicorn says it is listening."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, *, session: bool = False) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--port", str(self.port), *args], cwd=ROOT,
            env=dict(os.environ) if env is None else env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=session)  # its own session: kill() reaches every worker
        self.output: list[str] = []
        assert self.process.stdout is not None
        for line in self.process.stdout:  # blocks until the server reports it listens, or exits
            self.output.append(line)
            LOG_LINES.append(line)
            if "Uvicorn running on" in line or "Application startup failed" in line:
                break
        else:
            raise AssertionError("gateway exited before listening:\n" + "".join(self.output))
        self._drain = threading.Thread(target=self._read_rest, daemon=True)
        self._drain.start()

    def _read_rest(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            LOG_LINES.append(line)

    def wait_for_output(self, text: str, count: int = 1, timeout: float = 30) -> None:
        """Poll the output until `text` appeared `count` times (e.g. every worker's startup line)."""
        deadline = time.monotonic() + timeout
        while sum(text in line for line in list(self.output)) < count:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"never saw {text!r} x{count}:\n" + "".join(self.output))
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the server and every worker at once (needs session=True): a crash, not a shutdown."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self._drain.join(timeout=10)

    def stop(self) -> str:
        self.process.terminate()
        self.process.wait(timeout=30)
        self._drain.join(timeout=10)
        return "".join(self.output)


# Real Redis and PostgreSQL (tests/fakes/servers.py): one server each per session (starting them costs
# ~0.1 s and ~1.5 s), a clean slate per test. A test may kill() and start() the shared server; the
# per-test fixtures bring it back if a previous test left it dead.

@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The session's redis-server on 127.0.0.1 (kill()/start() keep its port). Prefer `redis_url`."""
    if redis_binary() is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """redis://127.0.0.1:PORT/0 of the session's server, running and emptied (FLUSHALL) for this test."""
    redis_server.ensure_running()
    redis_server.flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL on 127.0.0.1 (kill()/start() keep port and data). Prefer `postgres_url`."""
    if postgres_bindir() is None:
        pytest.skip("PostgreSQL server binaries (initdb, postgres) are not installed")
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
async def postgres_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """postgresql://postgres@127.0.0.1:PORT/test_N: a fresh empty database for this test, dropped after."""
    postgres_server.ensure_running()
    url = await postgres_server.create_database()
    yield url
    if postgres_server.running:
        await postgres_server.drop_database(url)
