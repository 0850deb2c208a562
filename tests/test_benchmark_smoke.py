"""The benchmark runner itself still works (a quick run of a few hundred requests), so it never rots.

No timing is asserted here: numbers belong in the benchmark's report, not in a test.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

from tests.conftest import ROOT


async def test_quick_benchmark_produces_a_full_table(tmp_path: Path) -> None:
    out = tmp_path / "bench.md"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), timeout=240)
    assert process.returncode == 0, output.decode()[-3000:]
    table = out.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| measure")]
    measures = [row.split("|")[1].strip() for row in rows]
    for expected in ("throughput, 32 connections", "CPU per request", "latency at 200 req/s, p99",
                     "stream TTFT p50", "streams/s", "chunks/s", "RSS idle / peak", "RSS before / after"):
        assert any(m.startswith(expected) for m in measures), (expected, measures)
    for row in rows:
        gateway = row.split("|")[4]
        assert re.search(r"\d", gateway), row
    assert "errors" not in table and "incomplete" not in table, table
    assert "Upstream's own ceiling" in table
