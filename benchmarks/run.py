"""Measure what the gateway adds over a direct call to the same upstream, side by side and interleaved.

    python -m benchmarks.run                    # full run: ~5 min, plus ~10 min for the 1M-request soak
    python -m benchmarks.run --soak 200000      # the same with a shorter memory soak
    python -m benchmarks.run --quick            # smoke run, well under a minute (the test suite runs it)
    python -m benchmarks.run --out results.md   # also write the report to a file

On 2+ cores the proxies (gateway, bare proxy, LiteLLM if present) are pinned to core 0 and the fake
upstream, wrk and this runner to core 1, so a proxy's numbers are one core's worth. The gateway runs
with every feature on: a gateway key, routing, metrics, failover armed, its default timeouts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import uvloop

from benchmarks.configs import (
    ALIAS,
    GATEWAY_KEY,
    LITELLM_KEY,
    find_litellm,
    write_gateway_config,
    write_litellm_config,
)
from benchmarks.features import CUT_AFTER, FEATURES
from benchmarks.load import (
    Latencies,
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
from benchmarks.pricing import FeatureRow, FeatureRun, Pricing
from benchmarks.pricing import render as render_features
from benchmarks.pricing import rows as feature_rows
from benchmarks.procs import Meter, Reading, Service, cores, free_port
from benchmarks.report import (
    Check,
    Row,
    added_times_peer_at_most,
    at_most_idle,
    flat,
    machine,
    noise_note,
    paired_at_most,
    ratio_at_least,
    render,
    wrk_version,
)
from benchmarks.rounds import order, paired

R = TypeVar("R")


@dataclass(frozen=True)
class Rounds:
    """One phase's interleaved rounds: every target runs once per round, `seconds` each (streams: the
    counting window, which opens after a ramp of one stream's duration), the order rotated per round."""

    count: int
    seconds: float


@dataclass(frozen=True)
class Plan:
    """How much of each measurement to do; every phase is bounded by these numbers.

    The phases behind a CPU ratio (32 connections, 200 req/s, paced and unpaced streams) run as many
    short rounds: their ratios are paired within a round and judged on the median (benchmarks/rounds.py).
    """

    throughput: Rounds  # closed loop, at 32 and at 128 connections
    latency: dict[int, Rounds]  # open loop, by rate (req/s)
    paced: Rounds
    unpaced: Rounds
    features: Rounds  # each feature row interleaved with the plain gateway (closed-loop runs)
    feature_stream_seconds: float  # a feature row's stream run (window)
    feature_latency_seconds: float  # a feature row's open-loop run at its rate
    stream_concurrency: int
    stream_chunks: int
    stream_interval_ms: float
    stream_settle: float  # seconds from the last client's start to a stream window's opening
    soak: int  # requests for the memory soak (one in twenty a 20-chunk stream)
    warmup: float
    ceiling_seconds: float  # per run measuring the upstream's own ceiling


# The CPU phases take about as long as they did as two rounds of 8 s / 5 s / 6 s (streams: each run also
# has its ramp, settle and tail), except the streams', which run 8 rounds (their ratios to the raw proxy
# sit near 1: a median of 8 pairs rather than 4); the feature rows run four rounds of what were two.
FULL = Plan(throughput=Rounds(4, 4), latency={20: Rounds(2, 10), 200: Rounds(8, 1.25)}, paced=Rounds(8, 2),
            unpaced=Rounds(8, 2.75), features=Rounds(4, 4), feature_stream_seconds=3, feature_latency_seconds=2.5,
            stream_concurrency=256, stream_chunks=50, stream_interval_ms=20, stream_settle=0.25, soak=1_000_000,
            warmup=3, ceiling_seconds=3)
QUICK = Plan(throughput=Rounds(2, 1), latency={20: Rounds(1, 0.5), 200: Rounds(2, 0.5)}, paced=Rounds(2, 0.5),
             unpaced=Rounds(2, 0.5), features=Rounds(1, 1), feature_stream_seconds=1, feature_latency_seconds=0.5,
             stream_concurrency=16, stream_chunks=10, stream_interval_ms=5, stream_settle=0.1, soak=300, warmup=0.5,
             ceiling_seconds=1)


@dataclass
class Peer:
    """One column of the table: a target, and the proxy process behind it (none for direct)."""

    name: str
    target: Target
    service: Service | None = None
    idle_rss: float = math.nan


PHASES = ("throughput", "latency", "streams", "features", "soak")


class Bench:
    def __init__(self, plan: Plan, load: str, litellm: str | None, work: Path, features: set[str] | None,
                 phases: set[str] | None = None, also: list[Path] | None = None) -> None:
        self.plan = plan
        self.only = phases  # None: every phase
        self.also = also or []  # other trees' gateways, measured beside this one (an A/B in one run)
        self.features = features
        self.pricing: Pricing | None = None
        self.feature_rows: list[FeatureRow] = []
        self.feature_notes: list[str] = []
        self.use_wrk = load == "wrk" or (load == "auto" and wrk_available())
        self.litellm = litellm
        self.work = work
        self.server_core, self.load_core = cores()
        self.peers: list[Peer] = []
        self.upstream: Service | None = None
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.errors: dict[str, int] = {}
        self.phases: dict[str, float] = {}
        self.readings: dict[str, list[Reading]] = {}  # the last interleaved phase's, by peer, in round order

    # -- processes ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.load_core is not None:
            os.sched_setaffinity(0, {self.load_core})  # this runner, and wrk as its child
        upstream_port = free_port()
        env = {**os.environ, "BENCH_UPSTREAM_KEY": "bench-upstream-key", "BENCH_GATEWAY_KEY": GATEWAY_KEY}
        self.upstream = Service("upstream", [sys.executable, "-m", "benchmarks.upstream", "--port",
                                             str(upstream_port)], core=self.load_core, log=self.work / "upstream.log")
        self.upstream.wait_ready(f"http://127.0.0.1:{upstream_port}/readyz")
        api = f"http://127.0.0.1:{upstream_port}/v1"
        self.peers.append(Peer("direct", Target("direct", f"{api}/chat/completions", "fast")))

        port = free_port()
        bare = Service("bare proxy", [sys.executable, "-m", "benchmarks.bare_proxy", "--port", str(port),
                                      "--upstream", f"{api}/chat/completions"],
                       core=self.server_core, log=self.work / "bare.log")
        self.peers.append(Peer("bare proxy", Target("bare proxy", f"http://127.0.0.1:{port}/v1/chat/completions",
                                                    "fast"), bare))
        bare.wait_ready(f"http://127.0.0.1:{port}/readyz")

        port = free_port()
        raw = Service("raw ASGI", [sys.executable, "-m", "benchmarks.raw_asgi_proxy", "--port", str(port),
                                   "--upstream", f"{api}/chat/completions"],
                      core=self.server_core, log=self.work / "raw.log")
        self.peers.append(Peer("raw ASGI", Target("raw ASGI", f"http://127.0.0.1:{port}/v1/chat/completions",
                                                  "fast"), raw))
        raw.wait_ready(f"http://127.0.0.1:{port}/readyz")

        port = free_port()
        config = write_gateway_config(self.work, api, port)
        gateway = Service("gateway", [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
                          core=self.server_core, log=self.work / "gateway.log", env=env)
        self.peers.append(Peer("gateway", Target("gateway", f"http://127.0.0.1:{port}/v1/chat/completions",
                                                 ALIAS, {"Authorization": f"Bearer {GATEWAY_KEY}"}), gateway))
        gateway.wait_ready(f"http://127.0.0.1:{port}/readyz")
        for tree in self.also:
            self._start_other_gateway(tree, api, env)
        if self.features != set():
            self.pricing = Pricing(self.work, api, self.server_core, self.load_core, env, self.features)
            self.pricing.start()

        if self.litellm:
            port = free_port()
            config = write_litellm_config(self.work, api)
            service = Service("litellm", [self.litellm, "--config", str(config), "--port", str(port),
                                          "--host", "127.0.0.1", "--num_workers", "1"],
                              core=self.server_core, log=self.work / "litellm.log",
                              env={**env, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})  # no fetch at start-up
            self.peers.append(Peer("litellm", Target("litellm", f"http://127.0.0.1:{port}/v1/chat/completions",
                                                     "fast", {"Authorization": f"Bearer {LITELLM_KEY}"}), service))
            service.wait_ready(f"http://127.0.0.1:{port}/health/liveliness", timeout=180)
        time.sleep(1)  # let start-up allocations settle before the idle reading
        for peer in self.proxies():
            assert peer.service is not None
            peer.idle_rss = peer.service.memory_mb()

    def _start_other_gateway(self, tree: Path, api: str, env: dict[str, str]) -> None:
        """A peer `gateway@<tree's name>`: the gateway package of another checkout, on the same config."""
        name = f"gateway@{tree.name}"
        port = free_port()
        config = write_gateway_config(self.work, api, port, name=name)
        service = Service(name, [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
                          core=self.server_core, log=self.work / f"{name}.log",
                          env={**env, "PYTHONPATH": str(tree.resolve())}, cwd=tree)
        self.peers.append(Peer(name, Target(name, f"http://127.0.0.1:{port}/v1/chat/completions", ALIAS,
                                            {"Authorization": f"Bearer {GATEWAY_KEY}"}), service))
        service.wait_ready(f"http://127.0.0.1:{port}/readyz")

    def wants(self, phase: str) -> bool:
        return self.only is None or phase in self.only

    def report(self, label: str, ceiling: str) -> str:
        lines = render(label, machine(self.server_core, self.load_core), [p.name for p in self.peers], self.rows)
        lines += ["", f"Upstream's own ceiling: {ceiling}.", "", *self.notes]
        if self.feature_rows:
            lines += ["", "#### What each feature costs (same run, interleaved with the plain gateway)", "",
                      *render_features(self.feature_rows, self.feature_notes)]
        if self.errors:
            lines += ["", "Failures: " + ", ".join(f"{k}: {v}" for k, v in self.errors.items()) + "."]
        lines += ["", f"Load: {'wrk ' + wrk_version() if self.use_wrk else 'asyncio client (no wrk)'} for "
                  "closed-loop throughput; aiohttp clients for open-loop latency and streams. Phases: "
                  + ", ".join(f"{k} {v:.0f} s" for k, v in self.phases.items()) + "."]
        return "\n".join(lines) + "\n"

    def stop(self) -> None:
        for peer in self.peers:
            if peer.service is not None:
                peer.service.stop()
        if self.pricing is not None:
            self.pricing.stop()
        if self.upstream is not None:
            self.upstream.stop()

    def proxies(self) -> list[Peer]:
        return [p for p in self.peers if p.service is not None]

    def peer(self, name: str) -> Peer:
        return next(p for p in self.peers if p.name == name)

    # -- measurements ------------------------------------------------------------------------

    async def throughput(self, target: Target, connections: int, seconds: float,
                         bodies: list[bytes] | None = None, max_requests: int | None = None) -> Throughput:
        if self.use_wrk and max_requests is None:
            return await asyncio.to_thread(run_wrk, target, connections, seconds, bodies)
        return await closed_loop(target, connections, seconds, bodies, max_requests)

    def _count_errors(self, name: str, count: int) -> None:
        if count:
            self.errors[name] = self.errors.get(name, 0) + count

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.phases[name] = time.perf_counter() - started

    async def run(self) -> None:
        with self.phase("warm-up"):
            for peer in self.proxies():
                await self.throughput(peer.target, 32, self.plan.warmup)
        if self.wants("throughput"):
            with self.phase("throughput"):
                await self.measure_throughput()
        if self.wants("latency"):
            with self.phase("latency"):
                await self.measure_latency()
        if self.wants("streams"):
            with self.phase("streams"):
                await self.measure_streams(self.plan.stream_interval_ms, paced=True)
                await self.measure_streams(0, paced=False)
        if self.pricing is not None and self.wants("features"):
            with self.phase("features"):
                await self.measure_features(self.pricing)
        if self.wants("soak"):
            with self.phase("soak"):
                await self.soak()
            self.memory_rows()

    async def interleave(self, rounds: Rounds, run: Callable[[Peer, Meter], Awaitable[R]], *,
                         upstream: bool = False) -> dict[str, list[R]]:
        """`run` for every peer once per round, in the round's order; results by peer, in round order. `run`
        starts and stops the meter around what it measures (the peer's proxy; for direct nothing, or the
        upstream with `upstream`); the readings go to `self.readings`, by peer, in round order."""
        results: dict[str, list[R]] = {p.name: [] for p in self.peers}
        self.readings = {p.name: [] for p in self.peers}
        for index in range(rounds.count):
            for peer in order(self.peers, index):
                if peer.service is not None:
                    meter = Meter(peer.service, self.server_core)
                else:
                    meter = Meter(self.upstream, self.load_core) if upstream else Meter(None, None)
                results[peer.name].append(await run(peer, meter))
                assert meter.reading is not None, "the run did not stop its meter"
                self.readings[peer.name].append(meter.reading)
        return results

    def cpu_row(self, measure: str, per_round: dict[str, list[float]], count: dict[str, list[int]],
                target: Check | None = None, text: dict[str, str] | None = None) -> None:
        """A CPU row: per peer its metered CPU over all rounds divided by what it served while metered (ms),
        per round the same for that round (the ratios are paired from these), and a note on what else the
        host did meanwhile."""
        totals = {n: sum(cpu) / max(1, sum(count[n])) * 1000 for n, cpu in per_round.items()}
        rounds = [{n: cpu[i] / count[n][i] * 1000 if count[n][i] else math.nan for n, cpu in per_round.items()}
                  for i in range(min(map(len, per_round.values())))]
        self.rows.append(Row(measure, totals, 3, "none", target, text or {}, rounds))
        for peer in self.peers:
            if peer.name.startswith("gateway@"):  # an A/B: each gateway against the raw-ASGI proxy, paired
                versus = [f"{name} vs raw ASGI {paired(rounds, name, 'raw ASGI').spread()}"
                          for name in ("gateway", peer.name)]
                self.notes.append(f"{measure}: " + ", ".join(versus))
        self.notes.append(noise_note(measure, [r for p in self.proxies() for r in self.readings[p.name]]))

    async def measure_throughput(self) -> None:
        phase = self.plan.throughput
        for connections in (32, 128):
            async def run(peer: Peer, meter: Meter, connections: int = connections) -> Throughput:
                meter.start()
                result = await self.throughput(peer.target, connections, phase.seconds)
                meter.stop()
                self._count_errors(peer.name, result.errors)
                return result

            rps = await self.interleave(phase, run, upstream=True)
            values = {name: sum(r.requests for r in runs) / sum(r.seconds for r in runs) for name, runs in rps.items()}
            self.rows.append(Row(f"throughput, {connections} connections (req/s)", values, 0))
            if connections == 32:
                cpu = {name: [r.cpu for r in self.readings[name]] for name in rps}
                served = {name: [r.requests for r in runs] for name, runs in rps.items()}
                upstream = sum(cpu["direct"]) / max(1, sum(served["direct"])) * 1000
                self.cpu_row("CPU per request, 32 connections (ms)", cpu, served,
                             text={"direct": f"({upstream:.3f} upstream)"})
                busy = self._busy("gateway")
                if not math.isnan(busy[0]):
                    self.notes.append(
                        f"While the gateway ran at 32 connections, core {self.server_core} (gateway) was "
                        f"{busy[0]:.0%} busy and core {self.load_core} (upstream + wrk + runner) {busy[1]:.0%}: "
                        "the gateway's core is the bottleneck when the first is near 100% and the second is not.")

    def _busy(self, name: str) -> tuple[float, float]:
        """How busy the server and the load core were over `name`'s runs of the last phase (mean)."""
        if self.server_core is None or self.load_core is None or not self.readings.get(name):
            return math.nan, math.nan
        runs = self.readings[name]
        return (sum(r.busy[self.server_core] for r in runs) / len(runs),
                sum(r.busy[self.load_core] for r in runs) / len(runs))

    async def measure_latency(self) -> None:
        for rate, phase in self.plan.latency.items():
            async def run(peer: Peer, meter: Meter, rate: int = rate, seconds: float = phase.seconds) -> Latencies:
                result = await open_loop(peer.target, rate, seconds, meter)
                self._count_errors(peer.name, result.errors)
                return result

            runs = await self.interleave(phase, run)
            samples = {name: [s for r in rs for s in r.seconds] for name, rs in runs.items()}
            for q in (50, 99):
                values = {name: percentile(s, q) * 1000 for name, s in samples.items()}
                check = added_times_peer_at_most(1.2, "bare proxy") if rate == 200 and q == 99 else None
                self.rows.append(Row(f"latency at {rate} req/s, p{q} (ms)", values, 2, "diff", check))
            late = sum(r.late_sends for rs in runs.values() for r in rs)
            if late:
                self.notes.append(f"At {rate} req/s the load client itself sent {late} requests more than 1 ms late "
                                  "(their latency still counts from the schedule).")
            if rate == 200:
                self.cpu_row("CPU per request at 200 req/s (ms)",
                             {name: [r.cpu for r in self.readings[name]] for name in runs},
                             {name: [len(r.seconds) for r in rs] for name, rs in runs.items()},
                             paired_at_most(1.1, "bare proxy"))

    async def measure_streams(self, interval_ms: float, *, paced: bool) -> None:
        plan = self.plan
        phase = plan.paced if paced else plan.unpaced

        async def run(peer: Peer, meter: Meter) -> StreamStats:
            result = await streams(peer.target, plan.stream_concurrency, phase.seconds, plan.stream_chunks,
                                   interval_ms, settle=plan.stream_settle, meter=meter)
            self._count_errors(f"{peer.name} (incomplete streams)", result.incomplete)
            return result

        stats = await self.interleave(phase, run)
        n, c = plan.stream_concurrency, plan.stream_chunks
        busy = self._busy("gateway")
        if not math.isnan(busy[0]):
            self.notes.append(f"While the gateway relayed {'paced' if paced else 'unpaced'} streams: core "
                              f"{self.server_core} {busy[0]:.0%} busy, core {self.load_core} {busy[1]:.0%}.")
        how = f"{n} concurrent {c}-chunk streams" + (f", {interval_ms:g} ms apart" if paced else ", unpaced")
        seconds = {name: sum(s.seconds for s in runs) for name, runs in stats.items()}
        completed = {name: sum(s.streams for s in runs) for name, runs in stats.items()}
        if paced:
            ttft = {name: [t for s in runs for t in s.ttft] for name, runs in stats.items()}
            for q in (50, 99):
                values = {name: percentile(t, q) * 1000 for name, t in ttft.items()}
                self.rows.append(Row(f"stream TTFT p{q}, {n} concurrent (ms)", values, 2, "diff"))
        self.rows.append(Row(f"streams/s, {how}", {k: completed[k] / seconds[k] for k in stats}, 1,
                             target=ratio_at_least(0.92) if paced else None))
        self.rows.append(Row("chunks/s" + ("" if paced else ", unpaced"),
                             {k: sum(s.chunks for s in stats[k]) / seconds[k] for k in stats}, 0))
        # Paced, every chunk is its own read and send (a real model's stream); unpaced, a stream arrives in
        # one or a few reads. The relay is held to the raw-ASGI proxy's CPU in both. The CPU is the window's
        # (steady state: every client connected, 256 streams in flight), per stream completed in it.
        self.cpu_row(f"CPU per {c}-chunk stream, {'paced' if paced else 'unpaced'} (ms)",
                     {name: [r.cpu for r in self.readings[name]] for name in stats},
                     {name: [s.streams for s in runs] for name, runs in stats.items()},
                     paired_at_most(1.0, "raw ASGI"))

    async def measure_features(self, pricing: Pricing) -> None:
        plan = self.plan
        await pricing.probe(plan.stream_chunks, plan.stream_interval_ms)
        runs = pricing.measured()
        gateway = self.peer("gateway")
        service = gateway.service
        assert service is not None
        for run in runs:
            assert run.target is not None
            if run.feature.kind == "plain":
                await self.throughput(run.target, 32, plan.warmup)
        kinds = sorted({run.feature.kind for run in runs})
        rates = sorted({run.feature.latency_at for run in runs if run.feature.latency_at is not None})
        plain: dict[str, list[tuple[float, Throughput | StreamStats]]] = {"plain": [], "stream": [], "resume": []}
        plain_latencies: dict[int, list[Latencies]] = {rate: [] for rate in rates}

        async def baseline(kind: str) -> None:
            plain[kind].append(await self._price(kind, gateway.target, service, "gateway"))

        async def baseline_latency(rate: int) -> None:
            plain_latencies[rate].append(await self._open_loop(gateway.target, rate, "gateway"))

        async def featured(run: FeatureRun) -> None:
            assert run.target is not None and run.service is not None
            cpu, result = await self._price(run.feature.kind, run.target, run.service, run.feature.name)
            run.cpu.append(cpu)
            run.results.append(result)
            if run.feature.latency_at is not None:
                run.latencies.append(await self._open_loop(run.target, run.feature.latency_at, run.feature.name))

        # Every step once per round, the order rotated round by round as in the main table's CPU rows, so a
        # feature's CPU is paired with the plain gateway's of the same round (benchmarks/rounds.py).
        steps: list[Callable[[], Awaitable[None]]] = [
            *(functools.partial(baseline, kind) for kind in kinds),
            *(functools.partial(baseline_latency, rate) for rate in rates),
            *(functools.partial(featured, run) for run in runs)]
        for index in range(plan.features.count):
            for step in order(steps, index):
                await step()
        self.feature_rows = feature_rows(pricing, plain, plan.stream_interval_ms, plain_latencies)
        self.feature_notes = [f"{run.feature.name}: {run.feature.note}" for run in runs if run.feature.note]

    async def _open_loop(self, target: Target, rate: int, name: str) -> Latencies:
        """A feature row's latency at a fixed rate (as long as the main table's run at that rate)."""
        result = await open_loop(target, rate, self.plan.feature_latency_seconds)
        self._count_errors(f"{name} (features, {rate} req/s)", result.errors)
        return result

    async def _price(self, kind: str, target: Target, service: Service,
                     name: str) -> tuple[float, Throughput | StreamStats]:
        """One measurement of one kind for a feature row (or its plain-gateway baseline): CPU and result."""
        plan = self.plan
        before = service.cpu_seconds()
        result: Throughput | StreamStats
        if kind == "plain":
            result = await self.throughput(target, 32, plan.features.seconds)
            self._count_errors(f"{name} (features)", result.errors)
        elif kind == "stream":
            # CPU over the counting window, as the main table's stream rows (not the clients' set-up).
            meter = Meter(service, self.server_core)
            result = await streams(target, plan.stream_concurrency, plan.feature_stream_seconds, plan.stream_chunks,
                                   0, settle=plan.stream_settle, meter=meter)
            self._count_errors(f"{name} (features, incomplete streams)", result.incomplete)
            assert meter.reading is not None
            return meter.reading.cpu, result
        else:
            result = await streams(target, 32, plan.feature_stream_seconds, plan.stream_chunks, plan.stream_interval_ms,
                                   at_least=True, gap_at=CUT_AFTER + 1)
            self._count_errors(f"{name} (features, incomplete streams)", result.incomplete)
        return service.cpu_seconds() - before, result

    async def soak(self) -> None:
        gateway = self.peer("gateway")
        assert gateway.service is not None
        target = gateway.target
        bodies = [target.body()] * 19 + [target.body(stream=True, chunks=20)]
        before = gateway.service.memory_mb()
        samples = [before]
        done = errors = 0
        started = time.perf_counter()
        rate = next((r.values["gateway"] for r in self.rows if r.measure.startswith("throughput, 32")), 1000.0)
        while done < self.plan.soak:
            left = self.plan.soak - done
            if self.use_wrk and left > 2 * rate:
                # Slices of at most a minute, sized from the measured rate, until the count is reached.
                result = await self.throughput(target, 32, min(60.0, max(1.0, left / rate)), bodies)
            else:
                result = await self.throughput(target, 32, 600, bodies, max_requests=left)
            done += result.requests + result.errors
            errors += result.errors
            samples.append(gateway.service.memory_mb())
        elapsed = time.perf_counter() - started
        after = gateway.service.memory_mb()
        self._count_errors("gateway (soak)", errors)
        self.rows.append(Row(f"RSS before / after {done:,} requests (MB)", {"gateway": after - before}, 1, "none",
                             flat(5.0), text={"gateway": f"{before:.1f} / {after:.1f}"}))
        trail = ", ".join(f"{s:.1f}" for s in samples[:: max(1, len(samples) // 12)])
        self.notes.append(f"Soak: {done:,} requests (one in twenty a 20-chunk stream) through the gateway in "
                          f"{elapsed:.0f} s ({done / elapsed:,.0f} req/s); RSS along the way (MB): {trail}, "
                          f"{after:.1f}.")

    def memory_rows(self) -> None:
        idle = {p.name: p.idle_rss for p in self.proxies()}
        peak = {}
        for p in self.proxies():
            assert p.service is not None
            peak[p.name] = p.service.memory_mb("VmHWM")
        self.rows.append(Row("RSS idle / peak (MB)", {"direct": math.nan, **idle}, 1, "none", at_most_idle(80),
                             text={k: f"{idle[k]:.1f} / {peak[k]:.1f}" for k in idle}))

    # -- report ------------------------------------------------------------------------------

async def upstream_ceiling(bench: Bench) -> str:
    """The fake upstream alone on the proxies' core, load from the other: what it can do with one core."""
    port = free_port()
    service = Service("upstream (ceiling)", [sys.executable, "-m", "benchmarks.upstream", "--port", str(port)],
                      core=bench.server_core, log=bench.work / "ceiling.log")
    try:
        service.wait_ready(f"http://127.0.0.1:{port}/readyz")
        target = Target("upstream", f"http://127.0.0.1:{port}/v1/chat/completions", "fast")
        seconds = bench.plan.ceiling_seconds
        plain = await bench.throughput(target, 32, seconds)
        stream = await bench.throughput(target, 32, seconds, [target.body(stream=True, chunks=50)])
        caveat = "" if bench.use_wrk else " (a lower bound: without wrk the asyncio client saturates first)"
        return (f"{plain.rps:,.0f} req/s and {stream.rps:,.0f} unpaced 50-chunk streams/s at 32 connections with "
                f"a core of its own{caveat}; sharing core {bench.load_core} with the load it is the 'direct' column")
    finally:
        service.stop()


async def main_async(plan: Plan, label: str, load: str, litellm: str | None, features: set[str] | None,
                     phases: set[str] | None = None, also: list[Path] | None = None) -> str:
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as directory:
        bench = Bench(plan, load, litellm, Path(directory), features, phases, also)
        try:
            bench.start()
            await bench.run()
        except BaseException:
            extra = bench.pricing.services() if bench.pricing else []
            for service in [p.service for p in bench.peers if p.service] + [bench.upstream] + extra:
                if service is not None and service.log.exists():
                    print(f"--- {service.name} log (tail) ---\n{service.tail()}", file=sys.stderr)
            raise
        finally:
            bench.stop()
        with bench.phase("upstream ceiling"):
            ceiling = await upstream_ceiling(bench)
        return bench.report(label, ceiling)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop every child


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run (seconds, a few hundred requests each)")
    parser.add_argument("--soak", type=int, help="requests for the memory soak (default 1,000,000; quick: 300)")
    parser.add_argument("--out", type=Path, help="also write the Markdown report to this file")
    parser.add_argument("--load", choices=("auto", "wrk", "asyncio"), default="auto",
                        help="closed-loop load generator (default: wrk when installed)")
    parser.add_argument("--litellm", help="path of a `litellm` executable to include LiteLLM proxy as a peer "
                                          "(default: used when litellm is importable here)")
    parser.add_argument("--features", default="all",
                        help="feature rows to measure: 'all' (default), 'none', or names from benchmarks/features.py "
                             "separated by ';'")
    parser.add_argument("--phases", help=f"measure only these phases, separated by ',' (of {', '.join(PHASES)})")
    parser.add_argument("--also", type=Path, action="append", default=[], metavar="TREE",
                        help="also measure the gateway of another checkout (e.g. a worktree), in the same run")
    args = parser.parse_args(argv)
    phases = set(args.phases.split(",")) if args.phases else None
    if phases and phases - set(PHASES):
        parser.error(f"unknown phase(s) {sorted(phases - set(PHASES))}; known: {', '.join(PHASES)}")
    if sys.platform != "linux":
        parser.error("the benchmark reads /proc: Linux only")
    plan = QUICK if args.quick else FULL
    if args.soak is not None:
        plan = replace(plan, soak=args.soak)
    signal.signal(signal.SIGTERM, _terminate)
    features = {"all": None, "none": set()}.get(args.features, set(args.features.split(";")))
    if features:
        unknown = features - {f.name for f in FEATURES}
        if unknown:
            parser.error(f"unknown feature(s) {sorted(unknown)}; known: {[f.name for f in FEATURES]}")
    report = uvloop.run(main_async(plan, "quick run" if args.quick else "full run", args.load,
                                    find_litellm(args.litellm), features, phases, args.also))
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
