"""Real redis-server and PostgreSQL servers on 127.0.0.1 for the tests: started on free ports in a
temporary directory, killable (SIGKILL, a crash) and restartable on the SAME port and data directory.

Both are plain classes so a test can also start a dedicated server; tests/conftest.py exposes
session-scoped ones (`redis_server`, `postgres_server`) and per-test views (`redis_url` flushed,
`postgres_url` a fresh database). Nothing here is a mock: the binaries are the ones production runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

START_TIMEOUT = 30.0  # seconds; a cold initdb + start under a loaded 2-core machine takes ~2 s
POLL = 0.02


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_closed(port: int, timeout: float) -> None:
    """Until nothing accepts on the port (a killed server's socket is gone; a restart may bind it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return
        time.sleep(POLL)
    raise AssertionError(f"port {port} still accepts connections after the kill")


class _Process:
    """One server process in its own session, so kill() takes its children (postgres backends) too."""

    def __init__(self, name: str, log: Path) -> None:
        self.name = name
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                                            start_new_session=True)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited ({self.process.returncode}):\n{self.tail()}")

    def tail(self, size: int = 4000) -> str:
        return self.log.read_bytes()[-size:].decode(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):  # it may have died on its own
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def terminate(self, timeout: float = 10) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=timeout)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None


class _Server:
    """What both servers share: one process on 127.0.0.1:`port` whose kill() is a crash and whose start()
    comes back on the same port and files."""

    port: int
    _proc: _Process

    def start(self, timeout: float = START_TIMEOUT) -> None:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._proc.running

    def ensure_running(self) -> None:
        """A test may have killed the shared server: bring it back before the next one uses it."""
        if not self.running:
            self.start()

    def kill(self) -> None:
        """SIGKILL the server and its children at once: a crash; clients see dropped connections until start()."""
        self._proc.kill()
        _wait_closed(self.port, 10)

    def restart(self) -> None:
        """kill() then start() on the same port and files."""
        self.kill()
        self.start()

    async def akill(self) -> None:
        await asyncio.to_thread(self.kill)

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    def _spawn(self, argv: list[str], ready: Callable[[], bool], timeout: float, late: str,
               env: dict[str, str] | None = None) -> None:
        """Start the process and wait until `ready()`; one that exits, or is not ready within `timeout`
        (then killed), fails the test with `late` and the tail of its log."""
        self._proc.spawn(argv, env=env)
        deadline = time.monotonic() + timeout
        while not ready():
            self._proc.check_alive()
            if time.monotonic() > deadline:
                self._proc.kill()
                raise AssertionError(f"{late} within {timeout} s:\n{self._proc.tail()}")
            time.sleep(POLL)


# ---------------------------------------------------------------------------------------------- Redis

def redis_binary() -> str | None:
    return shutil.which("redis-server")


def _resp(port: int, *words: str, timeout: float = 1.0) -> bytes:
    """Send one command in RESP and return the first reply line (no client library needed here)."""
    command = f"*{len(words)}\r\n" + "".join(f"${len(w.encode())}\r\n{w}\r\n" for w in words)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(command.encode())
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        return reply.strip()


class RedisServer(_Server):
    """redis-server on 127.0.0.1:`port` with its files in `directory`; no persistence unless asked.

    `kill()` is a crash (SIGKILL); `start()` after it comes back on the same port and directory
    (empty unless `appendonly=True`, which keeps what was fsynced, as a real deployment would)."""

    def __init__(self, directory: Path, *, port: int | None = None, appendonly: bool = False,
                 binary: str | None = None) -> None:
        self.binary = binary or redis_binary() or "redis-server"
        self.directory = directory
        self.port = port or free_port()
        self.appendonly = appendonly
        directory.mkdir(parents=True, exist_ok=True)
        self._proc = _Process("redis-server", directory / "redis.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = START_TIMEOUT) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always",
                "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning"]
        self._spawn(argv, self._answers_ping, timeout, "redis-server did not answer PING")

    def _answers_ping(self) -> bool:
        try:
            return _resp(self.port, "PING") == b"+PONG"
        except OSError:
            return False  # not listening yet (or -LOADING an append-only file)

    def stop(self) -> None:
        self._proc.terminate()

    def flushall(self) -> None:
        reply = _resp(self.port, "FLUSHALL")
        if reply != b"+OK":
            raise AssertionError(f"FLUSHALL answered {reply!r}")

    def command(self, *words: str) -> bytes:
        """One raw command (its first reply line), for tests that look inside without a client."""
        return _resp(self.port, *words)


# ----------------------------------------------------------------------------------------- PostgreSQL

def postgres_bindir() -> Path | None:
    """Where initdb and postgres live: on PATH (/usr/local/bin here and in CI) or Debian's versioned dir."""
    found = shutil.which("initdb")
    if found and shutil.which("postgres"):
        return Path(found).resolve().parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "postgres").exists():
            return Path(candidate)
    return None


_NOBODY = 65534  # PostgreSQL refuses to run as root: as root we run it as `nobody` (uid/gid 65534)


def _drop_privileges() -> list[str]:
    """The argv prefix that runs a server unprivileged: empty unless we are root.

    initdb and postgres both refuse uid 0 by design (a server compromise must not own the machine),
    and CI runs as root, so there we exec them through util-linux's setpriv as `nobody`."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise RuntimeError("running as root and setpriv (util-linux) is missing: cannot start PostgreSQL")
    return [setpriv, f"--reuid={_NOBODY}", f"--regid={_NOBODY}", "--clear-groups", "--"]


class PostgresServer(_Server):
    """A PostgreSQL cluster (initdb once) on 127.0.0.1:`port`, superuser `postgres`, trust auth, durability
    off towards the disk (fsync=off: the tests measure the gateway, not the disk; a killed process still
    loses no acknowledged commit, since synchronous_commit stays on and the OS keeps what was written).
    kill() is a crash of the whole server
    (postmaster and backends); start() after it runs crash recovery on the same data directory and port.

    `root` must be traversable by the server's user: as root we make it ours under /tmp and hand it to
    `nobody` (pytest's tmp_path lives under a 0700 root directory, which nobody cannot enter)."""

    READY = b"database system is ready to accept connections"

    def __init__(self, root: Path | None = None, *, port: int | None = None, bindir: Path | None = None) -> None:
        self.bindir = bindir or postgres_bindir() or Path("/usr/local/bin")
        self.root = root or Path(tempfile.mkdtemp(prefix="gateway-pg-"))
        self._owns_root = root is None
        self.port = port or free_port()
        self.data = self.root / "data"
        self.user = "postgres"
        self._proc = _Process("postgres", self.root / "postgres.log")
        self._databases = 0

    @property
    def admin_url(self) -> str:
        return self.url("postgres")

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        """initdb (once per data directory)."""
        prefix = _drop_privileges()
        self.root.mkdir(parents=True, exist_ok=True)
        if prefix:
            os.chown(self.root, _NOBODY, _NOBODY)
            self.root.chmod(0o700)
        log = self.root / "initdb.log"
        with log.open("wb") as out:
            done = subprocess.run(
                [*prefix, str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user, "-A", "trust",
                 "-E", "UTF8", "--locale=C", "--no-sync"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=self._env(), timeout=120)
        if done.returncode != 0:
            raise AssertionError(f"initdb failed ({done.returncode}):\n{log.read_text(errors='replace')[-4000:]}")

    def start(self, timeout: float = START_TIMEOUT) -> None:
        if not (self.data / "PG_VERSION").exists():
            self.init()
        ready_before = self._log_count(self.READY)
        argv = [*_drop_privileges(), str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                "-c", "fsync=off", "-c", "full_page_writes=off",
                "-c", "max_connections=200", "-c", "shared_buffers=32MB", "-c", "log_min_messages=warning",
                "-c", "log_min_error_statement=panic"]  # tests provoke errors; the log need not list them
        # The server announces readiness in its log (once per start, also after crash recovery).
        self._spawn(argv, lambda: self._log_count(self.READY) > ready_before, timeout, "postgres not ready",
                    env=self._env())

    def _log_count(self, text: bytes) -> int:
        return self._proc.log.read_bytes().count(text) if self._proc.log.exists() else 0

    def _env(self) -> dict[str, str]:
        # C locale: initdb must not depend on which locales the machine generated.
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}

    def stop(self) -> None:
        """Fast shutdown (SIGINT: disconnect clients, checkpoint, exit), then remove our files."""
        if self._proc.process is not None:
            try:
                self._proc.process.send_signal(signal.SIGINT)
                self._proc.process.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            self._proc.kill()
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def new_database_name(self) -> str:
        self._databases += 1
        return f"test_{self._databases}"

    async def create_database(self) -> str:
        """A fresh, empty database (copied from template1: ~0.1 s); returns its URL."""
        import asyncpg  # the tests' client for PostgreSQL; the gateway has its own module for it

        name = self.new_database_name()
        connection = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        return self.url(name)

    async def drop_database(self, url: str) -> None:
        import asyncpg

        name = url.rsplit("/", 1)[1]
        connection = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()
