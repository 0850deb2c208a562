"""Interleaved rounds for the CPU ratios: the order the targets run in, round by round, and the
ratio of two targets' values paired within each round, summarised by its median and its spread.

At a moderate load a proxy mostly sleeps, and its CPU per request moves with the host (stolen time,
frequency, caches) by more than the gap between two proxies: two full runs ten minutes apart gave
the bare proxy 1.265 and 0.750 ms per request at 200 req/s. A ratio of two runs made seconds apart
in the same round cancels what drifts slowly; many short rounds and their median keep one unlucky
round from deciding; the spread says how far one round's ratio can be trusted.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


def orders(count: int) -> list[list[int]]:
    """Orders of `count` targets, one per round, in which every target runs right after every other
    equally often (a Williams design: a balanced Latin square; for an odd count, with its mirror), so
    no target always inherits what one particular target left behind (a warm cache, a busy core)."""
    if count < 1:
        return [[]]
    first, low, high = [0], 1, count - 1
    while low <= high:
        first.append(low)
        low += 1
        if low <= high:
            first.append(high)
            high -= 1
    rows = [[(target + shift) % count for target in first] for shift in range(count)]
    return rows if count % 2 == 0 or count == 1 else rows + [row[::-1] for row in rows]


def order(items: Sequence[T], round_index: int) -> list[T]:
    """The items in the order of round `round_index` (rounds beyond one square repeat it)."""
    rows = orders(len(items))
    return [items[i] for i in rows[round_index % len(rows)]]


@dataclass(frozen=True)
class Paired:
    """A subject's value over a baseline's, one ratio per round in which both were measured."""

    ratios: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.ratios) if self.ratios else math.nan

    @property
    def low(self) -> float:
        return min(self.ratios, default=math.nan)

    @property
    def high(self) -> float:
        return max(self.ratios, default=math.nan)

    def spread(self) -> str:
        """The median with the range of the rounds, e.g. '1.23x (1.10-1.40x)'; '' when nothing was paired."""
        if not self.ratios:
            return ""
        return f"{self.median:.2f}x ({self.low:.2f}-{self.high:.2f}x)"


def paired(rounds: Sequence[Mapping[str, float]], subject: str, baseline: str) -> Paired:
    """Ratios subject / baseline, round by round; a round where either is missing, NaN or the baseline
    is not positive has no ratio (it is left out, not counted as anything)."""
    ratios = []
    for values in rounds:
        top, bottom = values.get(subject, math.nan), values.get(baseline, math.nan)
        if math.isfinite(top) and math.isfinite(bottom) and bottom > 0:
            ratios.append(top / bottom)
    return Paired(tuple(ratios))
