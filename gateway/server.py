"""Run the gateway under uvicorn (uvloop, httptools), refusing an open bind without gateway keys."""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import tempfile

import uvicorn

from gateway import metrics
from gateway.config import Settings, load_settings
from gateway.errors import ConfigError

log = logging.getLogger("gateway")

_CONFIG_ENV = "GATEWAY_CONFIG"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings, host: str) -> str:
    """A sentence about who can reach the gateway; raises ConfigError for an open bind without keys."""
    if settings.auth.keys:
        return f"gateway keys required ({len(settings.auth.keys)} configured)"
    if settings.auth.none:
        return "WARNING: auth is `none`: anyone who can reach this address can use every provider"
    if is_loopback(host):
        return "no gateway keys configured: serving on loopback only"
    raise ConfigError(
        f"{settings.source}: auth.keys: no gateway keys are configured, so the gateway only binds a loopback "
        f"address, and {host} is not one. Add keys under auth.keys, bind 127.0.0.1, or set `auth: none` "
        "to serve without keys on purpose."
    )


def serve(settings: Settings, *, host: str, port: int, workers: int) -> None:
    log.info("gateway on http://%s:%d (%s)", host, port, check_bind(settings, host))
    common = {"host": host, "port": port, "loop": "uvloop", "http": "httptools", "access_log": False,
              "log_level": "info", "lifespan": "on", "timeout_graceful_shutdown": 30,
              "server_header": False}
    if workers == 1:
        from gateway.app import build_app

        uvicorn.run(build_app(settings), **common)  # type: ignore[arg-type]
        return
    # Several processes: each worker builds its own app from the same file, and metrics are
    # aggregated through prometheus-client's multiprocess directory.
    os.environ[_CONFIG_ENV] = settings.source
    directory = tempfile.mkdtemp(prefix="gateway-metrics-")
    metrics.setup_multiprocess(directory)
    try:
        uvicorn.run("gateway.server:worker_app", factory=True, workers=workers, **common)  # type: ignore[arg-type]
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def worker_app() -> object:
    from gateway.app import build_app

    return build_app(load_settings(os.environ[_CONFIG_ENV]))
