"""The benchmark's report: rows of numbers per peer, compared with direct and the bare proxy,
checked against the goals (issue 15: CPU, added latency, streams; issue 6: memory), rendered as
Markdown with the machine they came from."""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.procs import Reading
from benchmarks.rounds import paired


@dataclass
class Row:
    measure: str
    values: dict[str, float]
    digits: int = 2
    compare: str = "ratio"  # ratio: value / direct's; diff: value - direct's; none
    target: Check | None = None
    text: dict[str, str] = field(default_factory=dict)  # overrides the number shown for a peer
    # Per round, each peer's value in that round (CPU rows): "gateway vs bare" is then the median of the
    # ratios paired within rounds, with their range, and so is a goal checked with `paired_at_most`.
    rounds: list[dict[str, float]] = field(default_factory=list)


Check = Callable[[Row], tuple[str, bool]]


def render(title: str, machine_line: str, names: list[str], rows: list[Row]) -> list[str]:
    head = ["measure", *names, "gateway vs direct", "gateway vs bare", "goal"]
    lines = [f"### Benchmark, {title}", "", machine_line, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.text.get(n, _number(row.values.get(n, math.nan), row.digits)) for n in names]
        g, d, b = (row.values.get(n, math.nan) for n in ("gateway", "direct", "bare proxy"))
        if row.compare == "ratio":
            versus = [_ratio(g, d), _ratio(g, b)]
        elif row.compare == "diff":
            versus = [_diff(g, d), _diff(g, b)]
        else:
            versus = ["", paired(row.rounds, "gateway", "bare proxy").spread() if row.rounds else _ratio(g, b)]
        verdict = ""
        if row.target is not None:
            text, met = row.target(row)
            verdict = f"{text}: {'met' if met else '**missed**'}"
        lines.append("| " + " | ".join([row.measure, *cells, *versus, verdict]) + " |")
    return lines


def machine(server_core: int | None, load_core: int | None) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    pinning = (f"proxies pinned to core {server_core}, upstream and load to core {load_core}"
               if server_core is not None else "no pinning (fewer than 2 cores, or no taskset)")
    versions = ", ".join(f"{name} {_version(name)}" for name in ("uvloop", "httptools", "uvicorn", "aiohttp"))
    return (f"Machine: {cpu}, {os.cpu_count()} cores, Linux {platform.release()}; Python "
            f"{platform.python_version()}; {versions}; {pinning}; {time.strftime('%Y-%m-%d %H:%M')}.")


def _number(value: float, digits: int) -> str:
    return "" if math.isnan(value) else f"{value:,.{digits}f}"


def _ratio(value: float, base: float) -> str:
    return "" if math.isnan(value) or math.isnan(base) or not base else f"{value / base:.2f}x"


def _diff(value: float, base: float) -> str:
    return "" if math.isnan(value) or math.isnan(base) else f"{value - base:+.2f} ms"


def times_peer_at_most(limit: float, peer: str) -> Check:
    """The gateway's value at most `limit` times a peer's."""
    return lambda row: (f"<= {limit:g}x {peer}",
                        row.values.get("gateway", math.nan) <= limit * row.values.get(peer, math.nan))


def paired_at_most(limit: float, peer: str) -> Check:
    """The median over the row's rounds of the gateway's value over a peer's in the same round at most
    `limit` (CPU per request against the bare proxy; per stream against the raw-ASGI proxy)."""
    def check(row: Row) -> tuple[str, bool]:
        ratios = paired(row.rounds, "gateway", peer)
        if not ratios.ratios:
            return f"<= {limit:g}x {peer}, no round measured both", False
        return (f"<= {limit:g}x {peer}, median of {len(ratios.ratios)} rounds {ratios.spread()}",
                ratios.median <= limit)
    return check


def added_times_peer_at_most(limit: float, peer: str) -> Check:
    """Latency the gateway adds over direct at most `limit` times what `peer` adds, in the same run."""
    def check(row: Row) -> tuple[str, bool]:
        v = row.values
        direct = v.get("direct", math.nan)
        return (f"added <= {limit:g}x {peer}'s",
                v.get("gateway", math.nan) - direct <= limit * (v.get(peer, math.nan) - direct))
    return check


def at_most_idle(limit: float) -> Check:
    return lambda row: (f"idle <= {limit:g} MB", row.values.get("gateway", math.nan) <= limit)


def ratio_at_least(limit: float) -> Check:
    return lambda row: (f">= {limit:g}x direct",
                        row.values.get("gateway", math.nan) >= limit * row.values.get("direct", math.nan))


def flat(limit: float) -> Check:
    return lambda row: (f"flat (growth <= {limit:g} MB)", row.values.get("gateway", math.nan) <= limit)


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10).stdout
    return out.split()[1] if len(out.split()) > 1 else ""


def noise_note(measure: str, readings: Sequence[Reading]) -> str:
    """What else the machine did during a CPU row's runs (the proxies' runs, pinned to one core): time the
    hypervisor stole from each core, the proxy's core busy with anything but the proxy, and how busy the
    other cores were (the load, the upstream, and whatever else runs here), as mean / worst run."""
    pinned = [r for r in readings if r.core is not None]
    if not pinned:
        return f"{measure}: no per-core noise reading (the proxies are not pinned)."
    cores = sorted({c for r in pinned for c in r.stolen})
    stolen = ", ".join(f"core {c} {_mean_worst([r.stolen[c] for r in pinned])}" for c in cores)
    others = _mean_worst([r.others for r in pinned])
    loads = ", ".join(f"core {c} {_mean_worst([r.busy[c] for r in pinned if r.core != c])}" for c in cores
                      if any(r.core != c for r in pinned))
    worst = max(max(r.stolen.values(), default=0.0) for r in pinned)
    verdict = " Noisy: read this row's ratios with care." if worst > 0.02 or max(
        (r.others for r in pinned if not math.isnan(r.others)), default=0.0) > 0.05 else ""
    return (f"Noise under '{measure}' ({len(pinned)} runs, mean / worst run): stolen by the hypervisor: {stolen}; "
            f"the proxy's core busy with other work: {others}; other cores busy: {loads or 'n/a'}.{verdict}")


def _mean_worst(shares: Sequence[float]) -> str:
    values = [s for s in shares if not math.isnan(s)]
    if not values:
        return "n/a"
    return f"{sum(values) / len(values):.1%} / {max(values):.1%}"
