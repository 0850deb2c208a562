"""Back-off bounds and the circuit breaker's states."""

from __future__ import annotations

from gateway.config.schema import BreakerPolicy, RetryPolicy
from gateway.failover.backoff import Backoff
from gateway.failover.breaker import CircuitBreaker, State


def test_backoff_is_jittered_capped_and_honours_retry_after() -> None:
    backoff = Backoff(RetryPolicy(backoff_initial=0.5, backoff_max=2.0, retry_after_max=10))
    for attempt in range(1, 8):
        for _ in range(50):
            delay = backoff.delay(attempt, None)
            assert delay is not None and 0 <= delay <= min(2.0, 0.5 * 2 ** (attempt - 1))
    assert backoff.delay(1, 4.0) == 4.0
    assert backoff.delay(1, 11.0) is None, "a Retry-After longer than allowed means: skip this target"


def breaker(**policy: float) -> tuple[CircuitBreaker, list[State]]:
    changes: list[State] = []
    b = CircuitBreaker("p/m", BreakerPolicy(**policy), lambda key, state: changes.append(state))
    return b, changes


def test_opens_after_consecutive_failures_then_probes_and_closes() -> None:
    b, changes = breaker(failures=3, cooldown=10)
    for t in range(3):
        assert b.allow(t)
        b.record_failure(t)
    assert b.state is State.OPEN and not b.allow(5)
    assert b.allow(13), "after the cooldown one probe goes through"
    assert b.state is State.HALF_OPEN and not b.allow(13.1), "only one probe at a time"
    b.record_success(14)
    assert b.state is State.CLOSED and b.allow(14)
    assert changes == [State.OPEN, State.HALF_OPEN, State.CLOSED]


def test_failed_probe_reopens_and_retry_after_extends_cooldown() -> None:
    b, _ = breaker(failures=1, cooldown=5)
    b.record_failure(0, retry_after=30)
    assert not b.allow(10) and b.allow(31)
    b.record_failure(31)
    assert b.state is State.OPEN and not b.allow(33)


def test_failure_ratio_over_window() -> None:
    b, _ = breaker(failures=100, failure_ratio=0.5, min_requests=10, window=60)
    for t in range(1, 10):
        b.record_success(t) if t % 2 else b.record_failure(t)
    assert b.state is State.CLOSED, "9 outcomes are fewer than min_requests"
    b.record_failure(10)
    assert b.state is State.OPEN, "5 failures in 10 reaches the 0.5 ratio"


def test_old_outcomes_leave_the_window() -> None:
    b, _ = breaker(failures=100, failure_ratio=0.5, min_requests=4, window=10)
    for t in range(3):
        b.record_failure(t)
    for t in range(100, 104):
        b.record_success(t)
    b.record_failure(104)
    assert b.state is State.CLOSED
