"""Feature rows: start one gateway per feature, measure it interleaved with the plain gateway.

The features themselves are declared in `benchmarks/features.py`; this module runs them. Every
number in a feature row is read against the plain gateway measured the same way in the same round.
"""

from __future__ import annotations

import math
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from benchmarks.configs import GATEWAY_KEY, write_gateway_config
from benchmarks.features import FEATURES, Feature
from benchmarks.load import Latencies, StreamStats, Target, Throughput, percentile, streams
from benchmarks.procs import Service, free_port
from benchmarks.rounds import paired


@dataclass
class FeatureRun:
    feature: Feature
    service: Service | None = None
    target: Target | None = None
    reason: str = ""  # why it is not measured; empty when it is
    extras: list[Service] = field(default_factory=list)  # redis-server and the like
    cpu: list[float] = field(default_factory=list)
    results: list[Throughput | StreamStats] = field(default_factory=list)
    latencies: list[Latencies] = field(default_factory=list)  # open-loop runs at `feature.latency_at`


@dataclass(frozen=True)
class FeatureRow:
    name: str
    measure: str
    plain: str
    featured: str
    versus: str


def _redis(work: Path, core: int | None, name: str) -> tuple[Service, str]:
    port = free_port()
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("redis-server is not installed")
    service = Service(f"redis ({name})", [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                          "--appendonly", "no"], core=core, log=work / f"redis-{port}.log")
    return service, f"redis://127.0.0.1:{port}/0"


def _refusal(log: str, work: Path) -> str:
    """The gateway's own reason for not starting, in one line, without the run's temporary path."""
    lines = [line.strip() for line in log.splitlines() if line.strip() and not line.startswith("Traceback")]
    return lines[-1].replace(f"{work}/", "")[:300] if lines else "it exited without a message"


class Pricing:
    def __init__(self, work: Path, api: str, server_core: int | None, load_core: int | None,
                 env: dict[str, str], chosen: set[str] | None) -> None:
        self.work, self.api, self.env = work, api, env
        self.server_core, self.load_core = server_core, load_core
        self.runs = [FeatureRun(f) for f in FEATURES if chosen is None or f.name in chosen]

    def start(self) -> None:
        """Start every feature's gateway at once (start-up is the slow part), then wait for each."""
        ports: dict[str, int] = {}
        for number, run in enumerate(self.runs):
            env = dict(self.env)
            try:
                for _service in run.feature.services:  # only redis so far
                    service, url = _redis(self.work, self.load_core, run.feature.name)
                    run.extras.append(service)
                    env["BENCH_REDIS_URL"] = url
            except RuntimeError as error:
                run.reason = str(error)
                continue
            port = ports[run.feature.name] = free_port()
            config = write_gateway_config(self.work, self.api, port, run.feature.config, name=f"feature-{number}")
            run.service = Service(run.feature.name, [sys.executable, "-m", "gateway", "serve", "--config",
                                                     str(config)],
                                  core=self.server_core, log=self.work / f"feature-{number}.log", env=env)
            headers = {"Authorization": f"Bearer {GATEWAY_KEY}"}
            if run.feature.wire == "anthropic":
                headers["anthropic-version"] = "2023-06-01"
            run.target = Target(run.feature.name, f"http://127.0.0.1:{port}{run.feature.path}", run.feature.model,
                                headers, run.feature.wire)
        for run in self.runs:
            if run.service is None:
                continue
            try:
                run.service.wait_ready(f"http://127.0.0.1:{ports[run.feature.name]}/readyz", timeout=60)
            except RuntimeError:
                run.reason = f"the gateway refused this config: {_refusal(run.service.tail(), self.work)}"
                run.service.stop()

    async def probe(self, chunks: int, interval_ms: float) -> None:
        """One request per feature: a feature whose endpoint does not answer 200 is not measured."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            for run in self.measured():
                assert run.target is not None
                stream = run.feature.kind != "plain"
                body = run.target.body(stream=stream, chunks=chunks, interval_ms=interval_ms)
                try:
                    async with session.post(run.target.url, data=body,
                                            headers=run.target.request_headers()) as response:
                        text = (await response.read())[:300].decode(errors="replace")
                        if response.status != 200:
                            run.reason = f"POST {run.feature.path} answered {response.status}: {text}"
                except (aiohttp.ClientError, TimeoutError) as error:
                    run.reason = f"POST {run.feature.path} failed: {error!r}"
            for run in self.measured():
                if run.feature.kind == "resume":
                    assert run.target is not None
                    check = await streams(run.target, 1, 0.01, chunks, interval_ms, max_streams=1, at_least=True)
                    if check.incomplete:
                        run.reason = "a stream cut after content was not continued to a clean end"

    def measured(self) -> list[FeatureRun]:
        return [run for run in self.runs if not run.reason and run.service is not None]

    def stop(self) -> None:
        for run in self.runs:
            for service in [run.service, *run.extras]:
                if service is not None:
                    service.stop()

    def services(self) -> list[Service]:
        return [s for run in self.runs for s in [run.service, *run.extras] if s is not None]


def rows(pricing: Pricing, plain: dict[str, list[tuple[float, Throughput | StreamStats]]],
         interval_ms: float, plain_latencies: dict[int, list[Latencies]] | None = None) -> list[FeatureRow]:
    """The feature table: each measured feature against the plain gateway of the same kind.

    Time to resume: the wait for the chunk after the cut, minus the plain stream's wait for the same
    chunk, minus one pacing interval (the new upstream stream's own time to its first chunk)."""
    out: list[FeatureRow] = []
    for run in pricing.runs:
        name = run.feature.name
        if run.reason or not run.results:
            out.append(FeatureRow(name, "not measured", "", "", run.reason or "no results"))
            continue
        base = plain[run.feature.kind]
        base_cpu, base_results = sum(c for c, _ in base), [r for _, r in base]
        cpu_versus = _cpu_versus(run, base)
        if run.feature.kind == "plain":
            ours = [r for r in run.results if isinstance(r, Throughput)]
            theirs = [r for r in base_results if isinstance(r, Throughput)]
            rate, base_rate = _rate(ours), _rate(theirs)
            cpu = sum(run.cpu) / max(1, sum(r.requests for r in ours)) * 1000
            base_per = base_cpu / max(1, sum(r.requests for r in theirs)) * 1000
            out.append(FeatureRow(name, "req/s, 32 connections", f"{base_rate:,.0f}", f"{rate:,.0f}",
                                  _ratio(rate, base_rate)))
            out.append(FeatureRow("", "CPU per request (ms)", f"{base_per:.3f}", f"{cpu:.3f}", cpu_versus))
            at = run.feature.latency_at
            if at is not None and run.latencies:
                out += _added_latency(at, run.latencies, (plain_latencies or {}).get(at, []))
            continue
        mine = [r for r in run.results if isinstance(r, StreamStats)]
        others = [r for r in base_results if isinstance(r, StreamStats)]
        if run.feature.kind == "stream":
            seconds, base_seconds = sum(s.seconds for s in mine), sum(s.seconds for s in others)
            done, base_done = sum(s.streams for s in mine), sum(s.streams for s in others)
            chunks, base_chunks = sum(s.chunks for s in mine) / seconds, sum(s.chunks for s in others) / base_seconds
            cpu = sum(run.cpu) / max(1, done) * 1000
            base_per = base_cpu / max(1, base_done) * 1000
            out.append(FeatureRow(name, "streams/s, unpaced 50-chunk", f"{base_done / base_seconds:,.1f}",
                                  f"{done / seconds:,.1f}", _ratio(done / seconds, base_done / base_seconds)))
            out.append(FeatureRow("", "content chunks/s", f"{base_chunks:,.0f}", f"{chunks:,.0f}",
                                  _ratio(chunks, base_chunks)))
            out.append(FeatureRow("", "CPU per stream (ms)", f"{base_per:.3f}", f"{cpu:.3f}", cpu_versus))
            continue
        gaps = [g for s in mine for g in s.gaps]
        base_gaps = [g for s in others for g in s.gaps]
        for q in (50, 99):
            gap, base_gap = percentile(gaps, q) * 1000, percentile(base_gaps, q) * 1000
            out.append(FeatureRow(name if q == 50 else "", f"wait for the chunk after the cut, p{q} (ms)",
                                  f"{base_gap:.1f}", f"{gap:.1f}",
                                  f"time to resume {gap - base_gap - interval_ms:+.1f} ms"
                                  if not math.isnan(gap) else ""))
        incomplete = sum(s.incomplete for s in mine)
        out.append(FeatureRow("", "streams completed after the cut", "",
                              f"{sum(len(s.gaps) for s in mine)}", f"{incomplete} incomplete"))
    return out


def _served(result: Throughput | StreamStats) -> int:
    return result.requests if isinstance(result, Throughput) else result.streams


def _cpu_versus(run: FeatureRun, base: list[tuple[float, Throughput | StreamStats]]) -> str:
    """The feature's CPU per request (or stream) over the plain gateway's, paired round by round (round i
    of both ran in the same interleaved round), as the median with its range: see benchmarks/rounds.py."""
    rounds = [{"feature": cpu / _served(result) if _served(result) else math.nan,
               "plain": base_cpu / _served(base_result) if _served(base_result) else math.nan}
              for cpu, result, (base_cpu, base_result) in zip(run.cpu, run.results, base, strict=False)]
    return paired(rounds, "feature", "plain").spread()


def _added_latency(rate: int, mine: list[Latencies], plain: list[Latencies]) -> list[FeatureRow]:
    """p50 and p99 at a fixed rate, and what the feature adds to the plain gateway's."""
    ours = [s for r in mine for s in r.seconds]
    theirs = [s for r in plain for s in r.seconds]
    out = []
    for q in (50, 99):
        value, base = percentile(ours, q) * 1000, percentile(theirs, q) * 1000
        added = "" if math.isnan(value) or math.isnan(base) else f"added {value - base:+.2f} ms"
        out.append(FeatureRow("", f"latency at {rate} req/s, p{q} (ms)", f"{base:.2f}", f"{value:.2f}", added))
    return out


def _rate(results: list[Throughput]) -> float:
    seconds = sum(r.seconds for r in results)
    return sum(r.requests for r in results) / seconds if seconds else math.nan


def _ratio(value: float, base: float) -> str:
    return "" if math.isnan(value) or math.isnan(base) or not base else f"{value / base:.2f}x"


def render(feature_rows: list[FeatureRow], notes: list[str]) -> list[str]:
    lines = ["| feature | measure | plain gateway | with the feature | feature vs plain |", "|---|---|---|---|---|"]
    lines += [f"| {r.name} | {r.measure} | {r.plain} | {r.featured} | {r.versus} |" for r in feature_rows]
    return lines + (["", *notes] if notes else [])

