"""Load generators: wrk for closed-loop throughput, small asyncio clients for what wrk cannot do
(an open-loop fixed rate measured from the scheduled send time, and streams with time to first token).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import aiohttp
import orjson


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    model: str
    headers: dict[str, str] = field(default_factory=dict)

    def body(self, *, stream: bool = False, **extra: object) -> bytes:
        return orjson.dumps({"model": self.model, "stream": stream,
                             "messages": [{"role": "user", "content": "Say hello to the benchmark."}], **extra})


@dataclass
class Throughput:
    requests: int
    seconds: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(target: Target, connections: int, seconds: float) -> Throughput:
    """wrk with a Lua script for the POST body; one thread (the load has one core)."""
    lines = ['wrk.method = "POST"', f"wrk.body = [[{target.body().decode()}]]",
             'wrk.headers["Content-Type"] = "application/json"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in target.headers.items()]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("\n".join(lines) + "\n")
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", script.name,
                          target.url], capture_output=True, text=True, check=True).stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    assert done, out
    scale = {"s": 1.0, "ms": 0.001, "m": 60.0}[done.group(3)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = int(errors.group(1)) if errors else 0
    failed += sum(int(g) for g in socket_errors.groups()) if socket_errors else 0
    return Throughput(int(done.group(1)), float(done.group(2)) * scale, failed)


async def closed_loop(target: Target, connections: int, seconds: float) -> Throughput:
    """The same measurement without wrk: `connections` workers sending back to back."""
    body = target.body()
    headers = {"content-type": "application/json", **target.headers}
    done = errors = 0
    stop = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < stop:
                async with session.post(target.url, data=body, headers=headers) as response:
                    await response.read()
                    done += 1
                    errors += response.status != 200

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return Throughput(done, time.perf_counter() - started, errors)


async def open_loop(target: Target, rate: float, seconds: float) -> list[float]:
    """Latencies (s) at a fixed send rate, each measured from its scheduled send time."""
    body = target.body()
    headers = {"content-type": "application/json", **target.headers}
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one(scheduled: float) -> None:
            async with session.post(target.url, data=body, headers=headers) as response:
                await response.read()
                if response.status == 200:
                    latencies.append(loop.time() - scheduled)

        # Warm the connection pool so the first scheduled sends do not pay for connecting.
        await asyncio.gather(*(one(loop.time()) for _ in range(4)))
        latencies.clear()
        tasks = []
        start = loop.time() + 0.05
        for i in range(int(rate * seconds)):
            scheduled = start + i / rate
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(scheduled)))
        await asyncio.gather(*tasks)
    return latencies


@dataclass
class StreamStats:
    streams: int
    chunks: int
    seconds: float
    ttft: list[float]
    incomplete: int

    @property
    def streams_per_second(self) -> float:
        return self.streams / self.seconds

    @property
    def chunks_per_second(self) -> float:
        return self.chunks / self.seconds


async def streams(target: Target, concurrency: int, seconds: float, chunks: int, interval_ms: float) -> StreamStats:
    """`concurrency` clients streaming back to back; TTFT is the time to the first content chunk."""
    body = target.body(stream=True, bench_chunks=chunks, bench_interval_ms=interval_ms)
    headers = {"content-type": "application/json", **target.headers}
    completed = received = incomplete = 0
    ttft: list[float] = []
    stop = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def worker() -> None:
            nonlocal completed, received, incomplete
            while time.perf_counter() < stop:
                sent = time.perf_counter()
                first = None
                done = False
                async with session.post(target.url, data=body, headers=headers) as response:
                    async for line in response.content:
                        if not line.startswith(b"data: "):
                            continue
                        if line.startswith(b"data: [DONE]"):
                            done = True
                            break
                        received += 1
                        if first is None and b'"content":" ' in line:
                            first = time.perf_counter() - sent
                if done:
                    completed += 1
                    if first is not None:
                        ttft.append(first)
                else:
                    incomplete += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return StreamStats(completed, received, time.perf_counter() - started, ttft, incomplete)


def summary(values: list[float]) -> str:
    return f"n={len(values)} mean={statistics.fmean(values) * 1000:.2f}ms" if values else "n=0"
