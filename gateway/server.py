"""Run the gateway under uvicorn (uvloop, httptools), refusing an open bind without gateway keys."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import resource
import shutil
import tempfile
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from gateway import metrics
from gateway.config import Settings, load_settings
from gateway.connections import BoundedHttpProtocol
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


def uvicorn_config(app: Any, settings: Settings, *, host: str, port: int, **overrides: Any) -> uvicorn.Config:
    """The one uvicorn Config every server of the gateway runs with (workers and tests included): uvloop,
    the bounded httptools protocol (gateway/connections.py) carrying `settings.server`'s limits."""
    options: dict[str, Any] = {
        "host": host, "port": port, "loop": "uvloop", "http": BoundedHttpProtocol, "access_log": False,
        "log_level": "info", "lifespan": "on", "timeout_graceful_shutdown": 30, "server_header": False,
        **overrides}
    config = uvicorn.Config(app, **options)
    config.gateway_limits = settings.server  # type: ignore[attr-defined]  # read by BoundedHttpProtocol
    return config


def serve(settings: Settings, *, host: str, port: int, workers: int) -> None:
    log.info("gateway on http://%s:%d (%s)", host, port, check_bind(settings, host))
    raise_file_limit(settings.server.max_connections)
    if workers == 1:
        from gateway.app import build_app

        uvicorn.Server(uvicorn_config(build_app(settings), settings, host=host, port=port)).run()
        return
    # Several processes: each worker builds its own app from the same file, and metrics are
    # aggregated through prometheus-client's multiprocess directory.
    os.environ[_CONFIG_ENV] = settings.source
    directory = tempfile.mkdtemp(prefix="gateway-metrics-")
    metrics.setup_multiprocess(directory)
    try:
        config = uvicorn_config("gateway.server:worker_app", settings, host=host, port=port, factory=True,
                                workers=workers)
        sock = config.bind_socket()
        Multiprocess(config, sockets=[sock]).run()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


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


def worker_app() -> object:
    from gateway.app import build_app

    return build_app(load_settings(os.environ[_CONFIG_ENV]))
