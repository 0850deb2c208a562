"""Run the gateway under uvicorn (uvloop, httptools): one process, or a supervisor and N workers.

Every signal the gateway answers is handled here and nowhere else:
- SIGTERM / SIGINT: graceful drain (gateway/drain.py). Readiness turns 503 at once, the listener
  closes after `server.drain_delay`, requests in flight finish until `server.drain_timeout`, then
  the rest end with `gateway_shutting_down`; flush hooks run; exit code 0. A second signal stops
  waiting: what still runs is ended at once.
- SIGHUP: reload the config in place (Gateway.request_reload: read, fetched and built in a thread,
  swapped on the loop; a refused config keeps the running one; nothing in flight is cut).
With `server.workers: N` the supervisor binds the socket, starts N workers sharing it, forwards
SIGTERM/SIGINT/SIGHUP to every worker (each drains or reloads itself; no rolling restart), restarts a
worker that dies while serving, and exits 0 once all of them drained cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import resource
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from gateway import metrics
from gateway.config import Settings, load_settings
from gateway.config.validate import check_bind, is_loopback
from gateway.connections import BoundedHttpProtocol
from gateway.errors import ConfigError

log = logging.getLogger("gateway")
__all__ = ["GatewayServer", "Supervisor", "check_bind", "is_loopback", "serve", "uvicorn_config"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_STARTUP_FAILURE = 3  # a worker that could not start: restarting it would fail the same way
# uvicorn's own cancel of connections left after the drain is a last resort: our cut comes first.
_CUT_MARGIN = 5.0


def uvicorn_config(app: Any, settings: Settings, *, host: str, port: int, **overrides: Any) -> uvicorn.Config:
    """The one uvicorn Config every server of the gateway runs with (workers and tests included): uvloop,
    the bounded httptools protocol (gateway/connections.py) carrying `settings.server`'s limits.

    uvicorn's proxy-header middleware is off: it would trust X-Forwarded-* from 127.0.0.1 whatever
    `server.trusted_proxies` says (the one place the gateway reads them), and it is a layer of work
    on every request for nothing else. The app is declared ASGI3: the gateway's entry is a plain function
    handing back the endpoint's awaitable (gateway/app.py), which uvicorn would otherwise take for ASGI2."""
    options: dict[str, Any] = {
        "host": host, "port": port, "loop": "uvloop", "http": BoundedHttpProtocol, "access_log": False,
        "log_level": "info", "lifespan": "on", "interface": "asgi3", "server_header": False, "proxy_headers": False,
        "timeout_graceful_shutdown": _graceful_timeout(settings), **overrides}
    config = uvicorn.Config(app, **options)
    config.gateway_limits = settings.server  # type: ignore[attr-defined]  # read by BoundedHttpProtocol
    return config


def _graceful_timeout(settings: Settings) -> float:
    server = settings.server
    return max(server.drain_timeout - server.drain_delay, 0.0) + _CUT_MARGIN


def serve(settings: Settings, *, host: str, port: int, workers: int) -> int:
    """Serve until drained; the process's exit code (0 after a clean drain)."""
    log.info("gateway on http://%s:%d (%s)", host, port, check_bind(settings, host))
    raise_file_limit(settings.server.max_connections)
    metrics_socket = bind_metrics(settings, port)
    extra = [metrics_socket] if metrics_socket is not None else []
    if workers == 1:
        from gateway.app import build_app

        gateway = build_app(settings, bind_host=host)
        config = uvicorn_config(gateway, settings, host=host, port=port)
        server = GatewayServer(config, gateway)
        server.run(sockets=[config.bind_socket(), *extra] if extra else None)
        return 0 if server.started else _STARTUP_FAILURE
    # Several processes: each worker builds its own app from the same file, and metrics are
    # aggregated through prometheus-client's multiprocess directory.
    directory = tempfile.mkdtemp(prefix="gateway-metrics-")
    metrics.setup_multiprocess(directory)
    try:
        return Supervisor(settings, host, port, workers, extra).run()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def bind_metrics(settings: Settings, port: int) -> socket.socket | None:
    """The `server.metrics_listen` socket: /metrics only, unauthenticated as Prometheus expects, so an
    operator can keep it off the public address."""
    address = settings.server.metrics_address
    if address is None:
        return None
    host, metrics_port = address
    if metrics_port == port:
        raise ConfigError(f"{settings.source}: server.metrics_listen: port {metrics_port} is the gateway's own "
                          "port; give /metrics a port of its own")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, metrics_port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"{settings.source}: server.metrics_listen: cannot listen on {host}:{metrics_port} "
                          f"({exc.strerror})") from None
    sock.listen(128)  # scrapes queue from now on, even before a worker has started
    sock.set_inheritable(True)  # worker processes serve it too
    log.info("metrics on http://%s:%d/metrics (and not on the main port)", host, metrics_port)
    return sock


def raise_file_limit(max_connections: int) -> None:
    """Each client connection may hold an upstream one too: lift the soft open-file limit to the hard
    one, and say so when even that is too low for `server.max_connections`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    needed = 2 * max_connections + 64
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning("open-file limit %d is below the %d that server.max_connections=%d may need; lower it or "
                    "raise the limit (ulimit -n)", soft, needed, max_connections)


class GatewayServer(uvicorn.Server):
    """uvicorn's server with the gateway's signals (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, gateway: Any) -> None:
        self._wake: asyncio.Future[None] | None = None  # the main loop's, while it waits
        super().__init__(config)
        self.gateway = gateway  # gateway.app.Gateway; Any to keep this module free of the app's imports
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def should_exit(self) -> bool:
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        """uvicorn's flag, which also wakes the main loop at once (thread- and signal-safe)."""
        self._should_exit = value
        wake = self._wake
        if value and wake is not None:
            wake.get_loop().call_soon_threadsafe(_resolve, wake)

    async def main_loop(self) -> None:
        """uvicorn's main loop, woken once a second (its turn that renews the `date` header) or when told
        to exit, instead of every 0.1 s to look at `should_exit`: ~20k instructions a wake, 200k of an
        idle worker's second (callgrind)."""
        loop = asyncio.get_running_loop()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            self._wake = wake = loop.create_future()
            timer = loop.call_later(1.0, _resolve, wake)
            try:
                await wake
            finally:
                timer.cancel()
                self._wake = None
            counter = (counter + 10) % 864000  # on_tick's count of 0.1 s turns: each wake is a second's turn
            should_exit = await self.on_tick(counter)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self._on_signal) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is None:  # still starting: nothing to drain yet
            self.should_exit = sig != signal.SIGHUP
            return
        self._loop.call_soon_threadsafe(self._handle, sig)

    def _handle(self, sig: int) -> None:
        if sig == signal.SIGHUP:
            self.gateway.request_reload()
            return
        drain = self.gateway.drain
        server = self.gateway.runtime.settings.server
        if drain.begin(server.drain_delay, server.drain_timeout):
            assert self._loop is not None
            self._loop.call_later(server.drain_delay, self._close_listener)
        else:
            log.warning("second %s: ending what still runs now", signal.Signals(sig).name)
            drain.cut()
            self.should_exit = True

    def _close_listener(self) -> None:
        self.should_exit = True  # uvicorn closes the listener, then waits for open connections


def _resolve(wake: asyncio.Future[None]) -> None:
    if not wake.done():
        wake.set_result(None)


def _run_worker(source: str, sockets: list[socket.socket], host: str, port: int, last_good: str) -> None:
    """One worker process (spawned): build the app from the config file and serve the shared sockets
    (the main one, and `server.metrics_listen`'s when set: the app tells them apart by port).

    A worker started while the file on disk is refused (one that replaces a dead worker, say) starts
    from the last config the supervisor validated instead, so a bad edit cannot turn into a crash loop.
    """
    from gateway.app import build_app
    from gateway.cli import configure_logging

    configure_logging()
    try:
        try:
            settings = load_settings(source)
            gateway = build_app(settings, bind_host=host)
        except ConfigError as exc:
            log.error("worker %d: %s is refused; starting from the last valid config instead:\n%s",
                      os.getpid(), source, exc)
            settings = load_settings(source, text=Path(last_good).read_text(encoding="utf-8"))
            gateway = build_app(settings, bind_host=host)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(_STARTUP_FAILURE)
    server = GatewayServer(uvicorn_config(gateway, settings, host=host, port=port), gateway)
    server.run(sockets=sockets)
    if not server.started:
        sys.exit(_STARTUP_FAILURE)


def validate_file(source: str, host: str) -> str:
    """The config file's text if a gateway would start (or reload) on it: the same checks, nothing served."""
    from gateway.catalog import load_catalog
    from gateway.config.validate import check_against_catalog
    from gateway.failover.health import Health
    from gateway.runtime import RuntimeParts

    text = Path(source).read_text(encoding="utf-8")
    settings = load_settings(source, text=text)
    catalog = load_catalog(settings.catalog)
    check_against_catalog(settings, catalog)
    check_bind(settings, host)
    RuntimeParts.prepare(settings, catalog, Health(settings.breaker))
    return text


class Supervisor:
    """Starts N workers on one socket, forwards signals to them, and replaces one that dies."""

    def __init__(self, settings: Settings, host: str, port: int, workers: int,
                 extra: list[socket.socket] | None = None) -> None:
        self._settings = settings
        self._extra = extra or []  # more sockets every worker serves (server.metrics_listen)
        self._host = host
        self._port = port
        self._count = workers
        self._drain_delay = settings.server.drain_delay
        self._close_at: float | None = None
        self._context = multiprocessing.get_context("spawn")
        self._pending: list[int] = []
        self._workers: list[Any] = []
        self._stopping = False
        # The last config text that passed validation: what a replacement worker starts from.
        handle, self._last_good = tempfile.mkstemp(prefix="gateway-config-", suffix=".yaml")
        os.close(handle)

    def run(self) -> int:
        try:
            return self._run()
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self._last_good)

    def _run(self) -> int:
        self._validate()
        config = uvicorn_config(None, self._settings, host=self._host, port=self._port)
        main = config.bind_socket()
        main.listen(config.backlog)  # clients queue until a worker is up, rather than being refused
        sockets = [main, *self._extra]
        original = {sig: signal.signal(sig, self._queue) for sig in _SIGNALS}
        try:
            self._workers = [self._spawn(sockets) for _ in range(self._count)]
            log.info("supervisor %d started %d workers", os.getpid(), self._count)
            while self._stopping is False or any(w.is_alive() for w in self._workers):
                multiprocessing.connection.wait([w.sentinel for w in self._workers], timeout=0.1)
                self._forward_signals()
                if not self._stopping:
                    self._replace_dead(sockets)
                elif self._close_at is not None and time.monotonic() >= self._close_at:
                    # The workers close their listeners after the drain delay; the socket this process
                    # holds must go too, or the kernel would keep accepting connections nobody serves.
                    for sock in sockets:
                        sock.close()
                    self._close_at = None
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
            for sock in sockets:
                sock.close()
        codes = [w.exitcode for w in self._workers]
        log.info("supervisor %d: every worker stopped (exit codes %s)", os.getpid(), codes)
        return 0 if all(code == 0 for code in codes) else 1

    def _queue(self, sig: int, frame: FrameType | None) -> None:
        self._pending.append(sig)

    def _spawn(self, sockets: list[socket.socket]) -> Any:
        worker = self._context.Process(target=_run_worker, name="gateway-worker",
                                       args=(self._settings.source, sockets, self._host, self._port,
                                             self._last_good))
        worker.start()
        return worker

    def _validate(self) -> None:
        """Check the file as a start would; keep it as the last good config when it passes. Each worker
        still reloads (and counts the reload, refused or not) on its own."""
        try:
            text = validate_file(self._settings.source, self._host)
        except (ConfigError, OSError, UnicodeDecodeError) as exc:
            log.error("supervisor: %s is refused; workers keep their config, and a replaced worker starts "
                      "from the last valid one:\n%s", self._settings.source, exc)
            return
        Path(self._last_good).write_text(text, encoding="utf-8")

    def _forward_signals(self) -> None:
        while self._pending:
            sig = self._pending.pop(0)
            if sig == signal.SIGHUP:
                self._validate()
            if sig != signal.SIGHUP and not self._stopping:
                self._stopping = True
                self._close_at = time.monotonic() + self._drain_delay
            for worker in self._workers:
                if worker.is_alive() and worker.pid is not None:
                    os.kill(worker.pid, signal.SIGHUP if sig == signal.SIGHUP else signal.SIGTERM)

    def _replace_dead(self, sockets: list[socket.socket]) -> None:
        for index, worker in enumerate(self._workers):
            if worker.exitcode is None:
                continue
            if worker.exitcode == _STARTUP_FAILURE:
                log.error("worker %s could not start; stopping the other workers", worker.pid)
                self._pending.append(signal.SIGTERM)
                return
            log.error("worker %s died (exit code %s); starting a new one", worker.pid, worker.exitcode)
            if worker.pid is not None:
                metrics.process_dead(worker.pid)
            self._workers[index] = self._spawn(sockets)
