"""The feature rows' CPU verdict: each feature's CPU per request (or stream) over the plain gateway's,
paired round by round and shown as the median with its range. Fixed numbers, no load."""

from __future__ import annotations

from pathlib import Path

from benchmarks.features import FEATURES
from benchmarks.load import StreamStats, Throughput
from benchmarks.pricing import FeatureRun, Pricing, rows


def _pricing(run: FeatureRun) -> Pricing:
    pricing = Pricing(Path("/nonexistent"), "http://127.0.0.1:9", None, None, {}, chosen=set())
    pricing.runs = [run]
    return pricing


def _feature(kind: str) -> FeatureRun:
    return FeatureRun(next(f for f in FEATURES if f.kind == kind))


def test_a_plain_rows_cpu_is_the_median_of_ratios_paired_within_rounds() -> None:
    # Round by round the feature costs 1.1x, 1.2x and 3.0x the plain gateway's CPU per request: the
    # median says 1.20x where the ratio of the totals (dominated by the odd round) would say ~1.9x.
    run = _feature("plain")
    run.cpu = [1.1, 1.2, 6.0]
    run.results = [Throughput(1000, 4.0, 0), Throughput(1000, 4.0, 0), Throughput(1000, 4.0, 0)]
    plain = {"plain": [(1.0, Throughput(1000, 4.0, 0)), (1.0, Throughput(1000, 4.0, 0)),
                       (2.0, Throughput(1000, 4.0, 0))], "stream": [], "resume": []}
    table = rows(_pricing(run), plain, 20)
    cpu = next(r for r in table if r.measure == "CPU per request (ms)")
    assert cpu.versus == "1.20x (1.10-3.00x)"
    assert cpu.featured == "2.767"  # the cells themselves stay totals: 8.3 s over 3,000 requests


def test_a_stream_rows_cpu_is_paired_per_stream_and_skips_a_round_without_streams() -> None:
    run = _feature("stream")
    run.cpu = [2.0, 1.5, 9.0]
    run.results = [StreamStats(100, 5000, 2.0, [], 0), StreamStats(100, 5000, 2.0, [], 0),
                   StreamStats(0, 0, 2.0, [], 0)]
    plain = {"plain": [], "resume": [], "stream": [(1.0, StreamStats(100, 5000, 2.0, [], 0)),
                                                   (1.0, StreamStats(50, 2500, 2.0, [], 0)),
                                                   (1.0, StreamStats(100, 5000, 2.0, [], 0))]}
    table = rows(_pricing(run), plain, 20)
    cpu = next(r for r in table if r.measure == "CPU per stream (ms)")
    # Round 1: 20 ms over 10 ms = 2.0x; round 2: 15 ms over 20 ms = 0.75x; round 3: no stream completed.
    assert cpu.versus == "1.38x (0.75-2.00x)"
