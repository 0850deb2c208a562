"""The benchmark's CPU verdicts: the order of targets per round, ratios paired within a round, their
median and spread, and how the report shows and judges them. Fixed numbers, no load."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest

from benchmarks.report import Row, paired_at_most, render, times_peer_at_most
from benchmarks.rounds import order, orders, paired


@pytest.mark.parametrize("count", [2, 3, 4, 5, 6])
def test_every_target_follows_every_other_equally_often(count: int) -> None:
    rows = orders(count)
    assert all(sorted(row) == list(range(count)) for row in rows)
    follows = Counter((a, b) for row in rows for a, b in itertools.pairwise(row))
    assert set(follows) == {(a, b) for a in range(count) for b in range(count) if a != b}
    assert len(set(follows.values())) == 1, follows


def test_rounds_rotate_the_order_and_repeat_after_a_square() -> None:
    peers = ["direct", "bare", "raw", "gateway"]
    rounds = [order(peers, i) for i in range(8)]
    assert rounds[0] == ["direct", "bare", "gateway", "raw"]
    assert rounds[1] == ["bare", "raw", "direct", "gateway"]
    assert rounds[4:] == rounds[:4]
    assert {r[0] for r in rounds[:4]} == set(peers)  # each starts one round


def test_paired_ratios_come_from_the_same_round_and_skip_rounds_without_both() -> None:
    rounds = [{"gateway": 1.2, "bare": 1.0}, {"gateway": 1.5, "bare": 1.0}, {"gateway": 2.2, "bare": 2.0},
              {"gateway": 3.0, "bare": math.nan}, {"gateway": 1.0, "bare": 0.0}, {"bare": 1.0}]
    result = paired(rounds, "gateway", "bare")
    assert result.ratios == pytest.approx((1.2, 1.5, 1.1))
    assert result.median == pytest.approx(1.2)
    assert (result.low, result.high) == (pytest.approx(1.1), pytest.approx(1.5))
    assert result.spread() == "1.20x (1.10-1.50x)"


def test_an_even_number_of_rounds_has_the_middle_two_as_median() -> None:
    result = paired([{"g": 1.0, "b": 1.0}, {"g": 1.4, "b": 1.0}, {"g": 1.2, "b": 1.0}, {"g": 9.0, "b": 1.0}], "g", "b")
    assert result.median == pytest.approx(1.3)  # one wild round moves the median by half a step, not the verdict


def test_nothing_paired_is_no_ratio() -> None:
    result = paired([{"gateway": 1.0}], "gateway", "bare")
    assert math.isnan(result.median) and result.spread() == ""


def _cpu_row(rounds: list[dict[str, float]], check_peer: str = "bare proxy", limit: float = 1.1) -> Row:
    totals = {name: sum(r[name] for r in rounds) / len(rounds) for name in rounds[0]}
    return Row("CPU per request at 200 req/s (ms)", {"direct": math.nan, **totals}, 3, "none",
               paired_at_most(limit, check_peer), rounds=rounds)


def test_the_verdict_is_the_median_paired_ratio_not_the_ratio_of_totals() -> None:
    # One round with ten times the CPU (a noisy host) decides the ratio of totals (12.6 / 12 = 1.05x,
    # "met"); paired round by round, two of three rounds say 1.3x.
    row = _cpu_row([{"gateway": 10.0, "bare proxy": 10.0}, {"gateway": 1.3, "bare proxy": 1.0},
                    {"gateway": 1.3, "bare proxy": 1.0}])
    assert times_peer_at_most(1.1, "bare proxy")(row)[1]
    text, met = row.target(row)  # type: ignore[misc]
    assert not met
    assert text == "<= 1.1x bare proxy, median of 3 rounds 1.30x (1.00-1.30x)"


def test_a_median_under_the_limit_is_met() -> None:
    row = _cpu_row([{"gateway": 1.0, "bare proxy": 1.0}, {"gateway": 1.05, "bare proxy": 1.0},
                    {"gateway": 2.0, "bare proxy": 1.0}])
    assert row.target is not None and row.target(row)[1]


def test_a_row_with_no_paired_round_is_missed_and_says_why() -> None:
    row = _cpu_row([{"gateway": 1.0, "bare proxy": math.nan}])
    assert row.target is not None and row.target(row) == ("<= 1.1x bare proxy, no round measured both", False)


def test_the_report_shows_the_paired_median_and_spread_beside_the_totals() -> None:
    row = _cpu_row([{"gateway": 1.2, "bare proxy": 1.0, "raw ASGI": 1.0},
                    {"gateway": 1.8, "bare proxy": 1.2, "raw ASGI": 0.9},
                    {"gateway": 1.1, "bare proxy": 1.0, "raw ASGI": 1.0}], "raw ASGI", 1.0)
    lines = render("test", "machine", ["direct", "bare proxy", "raw ASGI", "gateway"], [row])
    cells = [c.strip() for c in lines[-1].strip("|").split("|")]
    assert cells[1:5] == ["", "1.067", "0.967", "1.367"]  # the phase's totals per peer
    assert cells[6] == "1.20x (1.10-1.50x)"  # gateway vs bare: median of the paired rounds
    assert cells[7] == "<= 1x raw ASGI, median of 3 rounds 1.20x (1.10-2.00x): **missed**"
