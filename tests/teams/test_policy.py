"""Pure limit policy: calendar periods (cached until they end) and OpenAI's header formats."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.state.store import Check, CheckState, Verdict
from gateway.teams.limits import duration, period_of, rate_headers


def _at(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(("period", "times", "names"), [
    ("day", ["2026-12-31T23:59:59", "2027-01-01T00:00:00", "2026-12-31T12:00:00"],
     ["day:2026-12-31", "day:2027-01-01", "day:2026-12-31"]),
    ("week", ["2026-12-27T23:59:59", "2026-12-28T00:00:00", "2027-01-03T23:59:59", "2026-12-21T00:00:00"],
     ["week:2026-W52", "week:2026-W53", "week:2026-W53", "week:2026-W52"]),
    ("month", ["2027-02-28T23:59:59", "2027-03-01T00:00:00", "2027-01-31T00:00:00"],
     ["month:2027-02", "month:2027-03", "month:2027-01"]),
])
def test_periods_roll_at_their_utc_boundary_whichever_way_the_clock_moves(
        period: str, times: list[str], names: list[str]) -> None:
    for text, name in zip(times, names, strict=True):
        for _ in range(2):  # the second call is served from the cache
            got, ends = period_of(period, _at(text))
            assert got == name, text
            assert ends is not None and ends > _at(text)
    assert period_of("total", _at(times[0])) == ("total", None)


def test_headers_show_the_tightest_limits_in_openai_formats() -> None:
    checks = (Check("key:a", "requests", 60, 1), Check("model:m", "requests", 10, 1),
              Check("key:a", "tokens", 200000, 8192))
    verdict = Verdict(True, (CheckState(1, 59, 1.0), CheckState(3, 7, 18.0), CheckState(8192, 191808, 2.46)))
    assert dict(rate_headers(checks, verdict)) == {
        b"x-ratelimit-limit-requests": b"10", b"x-ratelimit-remaining-requests": b"7",
        b"x-ratelimit-reset-requests": b"18s", b"x-ratelimit-limit-tokens": b"200000",
        b"x-ratelimit-remaining-tokens": b"191808", b"x-ratelimit-reset-tokens": b"2.5s"}
    assert [duration(s) for s in (0.02, 1.0, 360.0, 75.25)] == [b"20ms", b"1s", b"6m0s", b"1m15.2s"]
