"""Measure what the gateway adds over a direct call to the same upstream, side by side, interleaved.

    python -m benchmarks.run                 # the full run (about 8 minutes on 2 cores)
    python -m benchmarks.run --quick         # a smoke run of a few hundred requests
    python -m benchmarks.run --out results.md --soak 1000000

On a machine with 2 or more cores the gateway is pinned to core 0 and the upstream and the load
(wrk and this runner's asyncio clients) to core 1, so the gateway's numbers are one core's worth.
The gateway runs with every feature on: gateway keys, routing through an alias, metrics, failover
armed (retries, circuit breaker), access log off (its default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.load import (
    StreamStats,
    Target,
    Throughput,
    closed_loop,
    open_loop,
    percentile,
    run_wrk,
    streams,
    wrk_available,
)

KEY = "bench-gateway-key"
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Settings:
    seconds: float
    latency_seconds: float
    stream_seconds: float
    stream_concurrency: int
    stream_chunks: int
    stream_interval_ms: float
    soak: int


FULL = Settings(seconds=10, latency_seconds=10, stream_seconds=10, stream_concurrency=256, stream_chunks=50,
                stream_interval_ms=20, soak=1_000_000)
QUICK = Settings(seconds=1, latency_seconds=1, stream_seconds=1, stream_concurrency=16, stream_chunks=10,
                 stream_interval_ms=5, soak=300)


class Process:
    """A child process pinned to a core, ready once it printed `ready_text`."""

    def __init__(self, args: list[str], core: int | None, ready_text: str, env: dict[str, str] | None = None) -> None:
        prefix = ["taskset", "-c", str(core)] if core is not None else []
        self.popen = subprocess.Popen(prefix + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      env=env, cwd=ROOT)
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            if ready_text in line:
                break
        else:
            raise RuntimeError(f"{args} exited before it was ready")
        # Keep reading so a chatty child never blocks on a full pipe.
        self._drain = asyncio.get_event_loop().run_in_executor(None, self._read_rest)

    def _read_rest(self) -> None:
        assert self.popen.stdout is not None
        for _ in self.popen.stdout:
            pass

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_mb(self, field: str = "VmRSS") -> float:
        for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.popen.kill()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cores() -> tuple[int | None, int | None]:
    """(gateway core, load core) when there are two cores to split, else no pinning."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) >= 2 and subprocess.run(["which", "taskset"], capture_output=True).returncode == 0:
        return available[0], available[1]
    return None, None


def write_config(directory: Path, upstream_port: int, gateway_port: int) -> Path:
    catalog = {"id": "bench", "name": "Bench upstream", "npm": "@ai-sdk/openai-compatible",
               "env": ["BENCH_UPSTREAM_KEY"], "doc": "https://example.invalid",
               "api": f"http://127.0.0.1:{upstream_port}/v1",
               "models": [{"id": "fast", "name": "Fast", "attachment": False, "reasoning": False, "tool_call": True,
                           "temperature": True, "release_date": "2025-01-01", "last_updated": "2025-01-01",
                           "open_weights": True, "limit": {"context": 128000, "output": 8192},
                           "modalities": {"input": ["text"], "output": ["text"]},
                           "cost": {"input": 1.0, "output": 2.0}}]}
    (directory / "catalog.json").write_text(json.dumps(catalog))
    config = directory / "gateway.yaml"
    config.write_text(
        f"server: {{host: 127.0.0.1, port: {gateway_port}}}\n"
        f"catalog: [{directory / 'catalog.json'}]\n"
        "models:\n  bench: {targets: [bench/fast]}\n"
        "auth:\n  keys:\n    - {name: bench, key: '${BENCH_GATEWAY_KEY}'}\n")
    return config


async def throughput(target: Target, connections: int, seconds: float) -> Throughput:
    if wrk_available():
        return await asyncio.to_thread(run_wrk, target, connections, seconds)
    return await closed_loop(target, connections, seconds)


async def measure(settings: Settings, label: str) -> str:
    gateway_core, load_core = cores()
    if load_core is not None:
        os.sched_setaffinity(0, {load_core})
    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    upstream_port, gateway_port = free_port(), free_port()
    config = write_config(work, upstream_port, gateway_port)
    env = {**os.environ, "BENCH_UPSTREAM_KEY": "upstream-key", "BENCH_GATEWAY_KEY": KEY}
    upstream = Process([sys.executable, "-m", "benchmarks.upstream", "--port", str(upstream_port)], load_core,
                       "benchmark upstream on", env)
    gateway = Process([sys.executable, "-m", "gateway", "serve", "--config", str(config)], gateway_core,
                      "Uvicorn running on", env)
    bare_port = free_port()
    bare = Process([sys.executable, "-m", "benchmarks.bare_proxy", "--port", str(bare_port), "--upstream",
                    f"http://127.0.0.1:{upstream_port}/v1/chat/completions"], gateway_core, "Uvicorn running on")
    direct = Target("direct", f"http://127.0.0.1:{upstream_port}/v1/chat/completions", "fast")
    via = Target("gateway", f"http://127.0.0.1:{gateway_port}/v1/chat/completions", "bench",
                 {"Authorization": f"Bearer {KEY}"})
    proxy = Target("bare", f"http://127.0.0.1:{bare_port}/v1/chat/completions", "fast")
    rows: list[tuple[str, str, str, str, str]] = []
    phases: dict[str, float] = {}
    try:
        idle_rss = gateway.memory_mb()
        started = time.perf_counter()
        await throughput(via, 32, min(2.0, settings.seconds))  # warm-up: pools, caches, JIT-free paths
        # (a) throughput at fixed concurrency, interleaved, with CPU per request of each proxy.
        for connections in (32, 128):
            results: dict[str, list[Throughput]] = {"direct": [], "bare": [], "gateway": []}
            cpu = {"bare": 0.0, "gateway": 0.0}
            for _ in range(2):
                results["direct"].append(await throughput(direct, connections, settings.seconds))
                for target, process in ((proxy, bare), (via, gateway)):
                    before = process.cpu_seconds()
                    results[target.name].append(await throughput(target, connections, settings.seconds))
                    cpu[target.name] += process.cpu_seconds() - before
            d, b, g = (sum(r.rps for r in results[k]) / 2 for k in ("direct", "bare", "gateway"))
            errors = sum(r.errors for r in results["gateway"])
            rows.append((f"throughput, {connections} connections (req/s)", f"{d:,.0f}", f"{b:,.0f}", f"{g:,.0f}",
                         f"{g / d:.2f}x direct, {g / b:.2f}x bare" + (f" ({errors} errors)" if errors else "")))
            if connections == 32:
                per = {k: cpu[k] / sum(r.requests for r in results[k]) * 1000 for k in cpu}
                rows.append(("CPU per request (ms)", "", f"{per['bare']:.3f}", f"{per['gateway']:.3f}",
                             f"{per['gateway'] / per['bare']:.2f}x bare"))
        phases["throughput"] = time.perf_counter() - started

        # (b) added latency at a fixed open-loop rate, measured from the scheduled send time.
        started = time.perf_counter()
        for rate in (20, 200):
            lat: dict[str, list[float]] = {"direct": [], "bare": [], "gateway": []}
            for _ in range(2):
                for target in (direct, proxy, via):
                    lat[target.name] += await open_loop(target, rate, settings.latency_seconds / 2)
            for q in (50, 99):
                d, b, g = (percentile(lat[k], q) * 1000 for k in ("direct", "bare", "gateway"))
                rows.append((f"latency at {rate} req/s, p{q} (ms)", f"{d:.2f}", f"{b:.2f}", f"{g:.2f}",
                             f"+{g - d:.2f} ms (bare +{b - d:.2f})"))
        phases["latency"] = time.perf_counter() - started

        # (c) streaming: TTFT and throughput of many concurrent paced streams.
        started = time.perf_counter()
        stats: dict[str, StreamStats] = {}
        for target in (direct, proxy, via):
            stats[target.name] = await streams(target, settings.stream_concurrency, settings.stream_seconds,
                                               settings.stream_chunks, settings.stream_interval_ms)
        n, c = settings.stream_concurrency, settings.stream_chunks
        d, b, g = stats["direct"], stats["bare"], stats["gateway"]
        for q in (50, 99):
            dt, bt, gt = (percentile(x.ttft, q) * 1000 for x in (d, b, g))
            rows.append((f"stream TTFT p{q}, {n} concurrent (ms)", f"{dt:.2f}", f"{bt:.2f}", f"{gt:.2f}",
                         f"+{gt - dt:.2f} ms (bare +{bt - dt:.2f})"))
        rows.append((f"streams/s, {n} concurrent {c}-chunk streams", f"{d.streams_per_second:,.1f}",
                     f"{b.streams_per_second:,.1f}", f"{g.streams_per_second:,.1f}",
                     f"{g.streams_per_second / d.streams_per_second:.2f}x direct"
                     + (f" ({g.incomplete} incomplete)" if g.incomplete else "")))
        rows.append(("chunks/s", f"{d.chunks_per_second:,.0f}", f"{b.chunks_per_second:,.0f}",
                     f"{g.chunks_per_second:,.0f}", f"{g.chunks_per_second / d.chunks_per_second:.2f}x direct"))
        phases["streams"] = time.perf_counter() - started

        # (d, e) memory: idle, peak, and flat across a long run.
        started = time.perf_counter()
        before = gateway.memory_mb()
        done = 0
        rate = max(1.0, next(float(r[3].replace(",", "")) for r in rows if r[0].startswith("throughput, 32")))
        while done < settings.soak:
            left = settings.soak - done
            result = await throughput(via, 32, min(120.0, max(1.0, left / rate * 1.05)))
            done += result.requests
        after = gateway.memory_mb()
        rows.append(("RSS idle / peak (MB)", "", "", f"{idle_rss:.1f} / {gateway.memory_mb('VmHWM'):.1f}",
                     "target idle <= 80"))
        rows.append((f"RSS before / after {done:,} requests (MB)", "", "", f"{before:.1f} / {after:.1f}",
                     f"{after - before:+.1f} MB"))
        phases["soak"] = time.perf_counter() - started
    finally:
        gateway.stop()
        bare.stop()
        upstream.stop()

    upstream_ceiling = await upstream_only(load_core)
    lines = [f"### {label}", "", machine(gateway_core, load_core), "",
             "| measure | direct | bare proxy | gateway | gateway vs |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", f"Upstream's own ceiling (wrk straight at it, one core): {upstream_ceiling}.",
              f"Load tool: {'wrk' if wrk_available() else 'asyncio client (wrk not installed)'}. "
              "Phases: " + ", ".join(f"{k} {v:.0f}s" for k, v in phases.items()) + "."]
    return "\n".join(lines) + "\n"


async def upstream_only(core: int | None) -> str:
    port = free_port()
    upstream = Process([sys.executable, "-m", "benchmarks.upstream", "--port", str(port)], core,
                       "benchmark upstream on")
    try:
        result = await throughput(Target("up", f"http://127.0.0.1:{port}/v1/chat/completions", "fast"), 32, 2)
        return f"{result.rps:,.0f} req/s at 32 connections"
    finally:
        upstream.stop()


def machine(gateway_core: int | None, load_core: int | None) -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine())
    pinning = (f"gateway pinned to core {gateway_core}, upstream and load to core {load_core}"
               if gateway_core is not None else "no pinning (fewer than 2 cores or no taskset)")
    return (f"Machine: {model}, {os.cpu_count()} cores; Python {platform.python_version()}; {pinning}; "
            f"{time.strftime('%Y-%m-%d')}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few hundred requests")
    parser.add_argument("--soak", type=int, help="requests for the memory soak (default 1,000,000; quick: 300)")
    parser.add_argument("--out", help="also write the Markdown table to this file")
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    if args.soak is not None:
        settings = Settings(**{**settings.__dict__, "soak": args.soak})
    report = asyncio.run(measure(settings, "quick run" if args.quick else "full run"))
    print(report)
    if args.out:
        Path(args.out).write_text(report)


if __name__ == "__main__":
    main()
