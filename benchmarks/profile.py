"""Profile the gateway under load with py-spy and print where its core goes.

    python -m benchmarks.profile                       # 32 connections of non-stream requests, 20 s
    python -m benchmarks.profile --mode stream --svg profile.svg
    python -m benchmarks.profile --target bare         # the bare proxy, as a baseline
    python -m benchmarks.profile --rate 200            # moderate load: 200 req/s on a fixed schedule

Starts the fake upstream and the gateway pinned as in `benchmarks.run`, puts wrk load on it, and
samples the gateway with py-spy (`pip install py-spy`; non-blocking, so the gateway is not paused)
from the load core. `--rate` replaces wrk with the open-loop client at a fixed rate: the moderate
load where per-request fixed costs (tasks, timers, wake-ups) do not amortise. Prints the functions
with the largest self and inclusive share of the samples; `--raw` keeps the collapsed stacks
(speedscope and flamegraph.pl read them), `--svg` also records a flame graph in a second pass.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks.configs import GATEWAY_KEY, write_gateway_config
from benchmarks.load import Target, open_loop, run_wrk, wrk_available
from benchmarks.procs import ROOT, Service, cores, free_port

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _short(frame: str) -> str:
    """`function (path/to/module.py:123)` -> `function (path/module.py)`: lines merged, paths trimmed."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "/lib/python3", f"{ROOT}/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['function']} ({path})"


_CLIENT = "aiohttp (upstream client)"
_LAYERS = (
    ("gateway/", "gateway"), ("benchmarks/", "bare proxy"), ("uvicorn/", "uvicorn (server, ASGI)"),
    ("aiohttp/", _CLIENT), ("multidict/", _CLIENT), ("yarl/", _CLIENT), ("starlette/", "starlette"),
    ("prometheus_client/", "prometheus_client"),
    ("asyncio/runners.py", "event loop"), ("asyncio/", "asyncio (tasks, timeouts)"),
)


def _layer(frame: str) -> str:
    return next((name for marker, name in _LAYERS if marker in frame), "other")


def summarise(raw: str, top: int) -> str:
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_short(f) for f in stack.split(";")]  # outermost first; under uvloop, callbacks are roots
        if not frames:
            continue
        n = int(count)
        total += n
        self_counts[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return "no samples (is the gateway busy? is py-spy allowed to ptrace?)"
    layers: Counter[str] = Counter()
    for frame, n in self_counts.items():
        layers[_layer(frame)] += n
    by_layer = "\n".join(f"  {n / total:6.1%}  {layer}" for layer, n in layers.most_common())
    own = "\n".join(f"  {n / total:6.1%}  {f}" for f, n in self_counts.most_common(top))
    gateway = [(f, n) for f, n in inclusive.most_common() if "gateway/" in f or "benchmarks/" in f][:top]
    whole = "\n".join(f"  {n / total:6.1%}  {f}" for f, n in gateway)
    return (f"{total} samples\n\nself time by layer (native code counts for the Python frame calling it; "
            f"'event loop' is uvloop/libuv itself):\n{by_layer}\n\nself time by function:\n{own}\n\n"
            f"inclusive time of the gateway's own functions:\n{whole}\n")


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"  # installed into the venv, maybe not on PATH
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, fmt: str, out: Path, core: int | None, rate: int = 200) -> None:
    prefix = ["taskset", "-c", str(core)] if core is not None else []
    subprocess.run([*prefix, py_spy() or "py-spy", "record", "--pid", str(pid), "--duration", str(round(seconds)),
                    "--rate", str(rate), "--nonblocking", "--format", fmt, "--output", str(out)],
                   check=True, capture_output=True, timeout=seconds + 60)


async def profile(args: argparse.Namespace) -> str:
    server_core, load_core = cores()
    if load_core is not None:
        os.sched_setaffinity(0, {load_core})
    with tempfile.TemporaryDirectory(prefix="gateway-profile-") as directory:
        work = Path(directory)
        upstream_port, port = free_port(), free_port()
        env = {**os.environ, "BENCH_UPSTREAM_KEY": "bench-upstream-key", "BENCH_GATEWAY_KEY": GATEWAY_KEY}
        upstream = Service("upstream", [sys.executable, "-m", "benchmarks.upstream", "--port", str(upstream_port)],
                           core=load_core, log=work / "upstream.log")
        gateway: Service | None = None
        try:
            upstream.wait_ready(f"http://127.0.0.1:{upstream_port}/readyz")
            api = f"http://127.0.0.1:{upstream_port}/v1"
            if args.target == "bare":
                command = [sys.executable, "-m", "benchmarks.bare_proxy", "--port", str(port), "--upstream",
                           f"{api}/chat/completions"]
                target = Target("bare", f"http://127.0.0.1:{port}/v1/chat/completions", "fast")
            else:
                config = write_gateway_config(work, api, port)
                command = [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
                target = Target("gateway", f"http://127.0.0.1:{port}/v1/chat/completions", "bench/fast",
                                {"Authorization": f"Bearer {GATEWAY_KEY}"})
            gateway = Service(args.target, command, core=server_core, log=work / "server.log", env=env)
            gateway.wait_ready(f"http://127.0.0.1:{port}/readyz")
            bodies = {"plain": [target.body()], "stream": [target.body(stream=True, chunks=50)],
                      "mix": [target.body()] * 9 + [target.body(stream=True, chunks=20)]}[args.mode]
            await asyncio.to_thread(run_wrk, target, args.connections, 3, bodies)  # warm-up
            passes = [("raw", work / "stacks.txt")] + ([("flamegraph", args.svg)] if args.svg else [])
            for fmt, out in passes:
                if args.rate:
                    # A mostly idle process: sample often, or a profile holds too few samples to read.
                    sampler = asyncio.create_task(asyncio.to_thread(record, gateway.pid, args.seconds, fmt, out,
                                                                    load_core, 1000))
                    latencies = await open_loop(target, args.rate, args.seconds + 3)
                    await sampler
                    summary = (f"{args.target}, open loop at {args.rate:g} req/s: {len(latencies.seconds):,} "
                               f"answered under py-spy ({latencies.errors} errors)")
                else:
                    load = asyncio.create_task(asyncio.to_thread(run_wrk, target, args.connections,
                                                                 args.seconds + 3, bodies))
                    await asyncio.to_thread(record, gateway.pid, args.seconds, fmt, out, load_core)
                    result = await load
                    summary = (f"{args.target}, {args.mode} load, {args.connections} connections: "
                               f"{result.rps:,.0f} req/s under py-spy ({result.errors} errors)")
            raw = (work / "stacks.txt").read_text()
            if args.raw:
                args.raw.write_text(raw)
            return summary + "\n" + summarise(raw, args.top)
        finally:
            if gateway is not None:
                gateway.stop()
            upstream.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("gateway", "bare"), default="gateway",
                        help="profile the gateway, or the bare proxy as a baseline")
    parser.add_argument("--mode", choices=("plain", "stream", "mix"), default="plain")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=0,
                        help="open-loop requests per second instead of wrk (whole answers; e.g. 200)")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--raw", type=Path, help="keep the collapsed stacks here")
    parser.add_argument("--svg", type=Path, help="also record a flame graph here (a second pass)")
    args = parser.parse_args()
    if not py_spy() or not wrk_available():
        parser.error("needs py-spy (pip install py-spy) and wrk on PATH")
    print(asyncio.run(profile(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
