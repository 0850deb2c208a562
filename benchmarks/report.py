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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

Check = Callable[[dict[str, float]], tuple[str, bool]]


@dataclass
class Row:
    measure: str
    values: dict[str, float]
    digits: int = 2
    compare: str = "ratio"  # ratio: value / direct's; diff: value - direct's; none
    target: Check | None = None
    text: dict[str, str] = field(default_factory=dict)  # overrides the number shown for a peer


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
            versus = ["", _ratio(g, b)]
        verdict = ""
        if row.target is not None:
            text, met = row.target(row.values)
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
    """The gateway's value at most `limit` times a peer's (CPU per request against the bare proxy)."""
    return lambda v: (f"<= {limit:g}x {peer}", v.get("gateway", math.nan) <= limit * v.get(peer, math.nan))


def added_times_peer_at_most(limit: float, peer: str) -> Check:
    """Latency the gateway adds over direct at most `limit` times what `peer` adds, in the same run."""
    def check(v: dict[str, float]) -> tuple[str, bool]:
        direct = v.get("direct", math.nan)
        return (f"added <= {limit:g}x {peer}'s",
                v.get("gateway", math.nan) - direct <= limit * (v.get(peer, math.nan) - direct))
    return check


def at_most_idle(limit: float) -> Check:
    return lambda v: (f"idle <= {limit:g} MB", v.get("gateway", math.nan) <= limit)


def ratio_at_least(limit: float) -> Check:
    return lambda v: (f">= {limit:g}x direct", v.get("gateway", math.nan) >= limit * v.get("direct", math.nan))


def flat(limit: float) -> Check:
    return lambda v: (f"flat (growth <= {limit:g} MB)", v.get("gateway", math.nan) <= limit)


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10).stdout
    return out.split()[1] if len(out.split()) > 1 else ""
