"""Loop handles per request: timers, tasks and callbacks the proxy asks the event loop for.

    python -m benchmarks.handles                  # the gateway, whole answers sent one at a time
    python -m benchmarks.handles --target bare    # the bare proxy, for comparison

At moderate load nothing amortises: every timer armed (and cancelled), every task created, every
callback scheduled is paid by each request on its own. This runs the proxy in this process on a
uvloop loop subclass that counts the calls made to it from Python (uvloop's own internal work does
not go through them), sends `--requests` whole-answer requests one at a time from a client on
another thread (its loop is not counted), and prints the counts per request. The upstream is the
fake one, in its own process. Counts are exact and do not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
import uvloop

from benchmarks.configs import ALIAS, GATEWAY_KEY, write_gateway_config
from benchmarks.instructions import _send
from benchmarks.load import Target
from benchmarks.procs import Service, free_port

COUNTED = ("call_soon", "call_later", "call_at", "create_task", "create_future")


class CountingLoop(uvloop.Loop):  # type: ignore[misc]
    """A uvloop loop that counts what Python code asks of it while `counting` is set."""

    counting = False
    counts: Counter[str] = Counter()

    def _count(self, name: str) -> None:
        if CountingLoop.counting:
            CountingLoop.counts[name] += 1

    def call_soon(self, *args: Any, **kwargs: Any) -> Any:
        self._count("call_soon")
        return super().call_soon(*args, **kwargs)

    def call_later(self, *args: Any, **kwargs: Any) -> Any:
        self._count("call_later")
        return super().call_later(*args, **kwargs)

    def call_at(self, *args: Any, **kwargs: Any) -> Any:
        self._count("call_at")
        return super().call_at(*args, **kwargs)

    def create_task(self, *args: Any, **kwargs: Any) -> Any:
        self._count("create_task")
        return super().create_task(*args, **kwargs)

    def create_future(self) -> Any:
        self._count("create_future")
        return super().create_future()


def _server(target: str, work: Path, api: str, port: int) -> tuple[Callable[..., uvicorn.Config], Target]:
    """How to configure the server of `target` (an app built here), and how to call it."""
    if target == "gateway":
        from gateway.app import build_app
        from gateway.config import load_settings
        from gateway.server import uvicorn_config

        settings = load_settings(write_gateway_config(work, api, port), os.environ)
        app = build_app(settings, os.environ, bind_host="127.0.0.1")
        return lambda **kw: uvicorn_config(app, settings, **kw), Target(
            "gateway", f"http://127.0.0.1:{port}/v1/chat/completions", ALIAS,
            {"Authorization": f"Bearer {GATEWAY_KEY}"})
    from benchmarks import bare_proxy

    bare = bare_proxy.build(f"{api}/chat/completions")
    return lambda **kw: uvicorn.Config(bare, http="httptools", access_log=False, **kw), Target(
        "bare", f"http://127.0.0.1:{port}/v1/chat/completions", "fast")


def measure(target: str, requests: int, warmup: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="gateway-handles-") as directory:
        work = Path(directory)
        os.environ.update({"BENCH_UPSTREAM_KEY": "bench-upstream-key", "BENCH_GATEWAY_KEY": GATEWAY_KEY})
        upstream_port, port = free_port(), free_port()
        upstream = Service("upstream", [sys.executable, "-m", "benchmarks.upstream", "--port", str(upstream_port)],
                           core=None, log=work / "upstream.log")
        try:
            upstream.wait_ready(f"http://127.0.0.1:{upstream_port}/readyz")
            config_for, load = _server(target, work, f"http://127.0.0.1:{upstream_port}/v1", port)
            config = config_for(host="127.0.0.1", port=port, loop="none", log_level="warning", lifespan="on")
            server = uvicorn.Server(config)
            loop = CountingLoop()
            thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), daemon=True)
            thread.start()
            try:
                while not server.started:
                    threading.Event().wait(0.05)
                asyncio.run(_send(load, warmup, False))
                CountingLoop.counting = True
                asyncio.run(_send(load, requests, False))
                CountingLoop.counting = False
            finally:
                server.should_exit = True
                thread.join(timeout=30)
        finally:
            upstream.stop()
        return {name: CountingLoop.counts[name] / requests for name in COUNTED}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("gateway", "bare"), default="gateway")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    per = measure(args.target, args.requests, args.warmup)
    print(f"{args.target}, whole answers one at a time: loop calls per request")
    for name, value in per.items():
        print(f"  {value:6.2f}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
