"""Back-off bounds and the circuit breaker's states."""

from __future__ import annotations

from gateway.config.schema import BreakerPolicy, RetryPolicy
from gateway.failover.backoff import Backoff
from gateway.failover.breaker import CircuitBreaker, State, Ticket


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


def admitted(b: CircuitBreaker, now: float) -> Ticket:
    ticket = b.admit(now)
    assert ticket is not None
    return ticket


def test_opens_after_consecutive_failures_then_probes_and_closes() -> None:
    b, changes = breaker(failures=3, cooldown=10)
    for t in range(3):
        b.failed(admitted(b, t), t)
    assert b.state is State.OPEN and b.admit(5) is None
    probe = admitted(b, 13)
    assert probe.probe and b.state is State.HALF_OPEN
    assert b.admit(13.1) is None, "only one probe at a time"
    b.succeeded(probe, 14)
    assert b.state is State.CLOSED and b.admit(14) is not None
    assert changes == [State.OPEN, State.HALF_OPEN, State.CLOSED]


def test_open_turns_half_open_by_time_without_a_request() -> None:
    b, changes = breaker(failures=1, cooldown=10)
    b.failed(admitted(b, 0), 0)
    b.tick(9.9)
    assert b.state is State.OPEN
    b.tick(10)
    assert b.state is State.HALF_OPEN and changes == [State.OPEN, State.HALF_OPEN]


def test_a_straggling_success_cannot_close_a_freshly_opened_circuit() -> None:
    b, _ = breaker(failures=1, cooldown=10)
    straggler = admitted(b, 0)  # admitted while closed, answers late
    b.failed(admitted(b, 1), 1)
    assert b.state is State.OPEN
    b.succeeded(straggler, 2)
    assert b.state is State.OPEN, "an outcome of a request admitted before the circuit opened is ignored"
    probe = admitted(b, 12)
    b.succeeded(straggler, 12.5)
    assert b.state is State.HALF_OPEN, "only the probe may close it"
    b.failed(probe, 13)
    assert b.state is State.OPEN and b.admit(14) is None


def test_a_probe_without_a_verdict_frees_the_slot() -> None:
    b, _ = breaker(failures=1, cooldown=10)
    b.failed(admitted(b, 0), 0)
    probe = admitted(b, 10)
    assert b.admit(10.5) is None
    b.released(probe)
    assert b.admit(10.6) is not None


def test_an_early_probe_is_admitted_once_per_cooldown() -> None:
    b, _ = breaker(failures=1, cooldown=10)
    b.failed(admitted(b, 0), 0)
    early = b.admit_early(1)
    assert early is not None and early.probe
    assert b.admit_early(1.1) is None, "the probe is out"
    b.released(early)
    assert b.admit_early(2) is None, "one early probe per cooldown"
    assert b.admit_early(11.5) is not None


def test_failed_probe_reopens_and_retry_after_extends_cooldown() -> None:
    b, _ = breaker(failures=1, cooldown=5)
    b.failed(admitted(b, 0), 0, retry_after=30)
    assert b.admit(10) is None
    probe = admitted(b, 31)
    b.failed(probe, 31)
    assert b.state is State.OPEN and b.admit(33) is None


def test_failure_ratio_over_window() -> None:
    b, _ = breaker(failures=100, failure_ratio=0.5, min_requests=10, window=60)
    for t in range(1, 10):
        b.succeeded(admitted(b, t), t) if t % 2 else b.failed(admitted(b, t), t)
    assert b.state is State.CLOSED, "9 outcomes are fewer than min_requests"
    b.failed(admitted(b, 10), 10)
    assert b.state is State.OPEN, "5 failures in 10 reaches the 0.5 ratio"


def test_old_outcomes_leave_the_window() -> None:
    b, _ = breaker(failures=100, failure_ratio=0.5, min_requests=4, window=10)
    for t in range(3):
        b.failed(admitted(b, t), t)
    for t in range(100, 104):
        b.succeeded(admitted(b, t), t)
    b.failed(admitted(b, 104), 104)
    assert b.state is State.CLOSED
