"""Circuit breakers per target: take a failing target out for a cooldown, probe it, put it back.

A circuit opens after `failures` consecutive failures, or when the failure ratio over the last
`window` seconds reaches `failure_ratio` (with at least `min_requests` outcomes). It stays open for
the cooldown (at least as long as the upstream's Retry-After), then lets one probe through
(half-open): success closes it, failure opens it again. State lives in memory, per process.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from enum import IntEnum

from gateway.config.schema import BreakerPolicy


class State(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    __slots__ = ("_consecutive", "_outcomes", "_policy", "key", "on_change", "opened_until", "probing", "state")

    def __init__(self, key: str, policy: BreakerPolicy, on_change: Callable[[str, State], None]) -> None:
        self.key = key
        self._policy = policy
        self.on_change = on_change
        self.state = State.CLOSED
        self.opened_until = 0.0
        self.probing = False
        self._consecutive = 0
        # Outcomes counted in ten time buckets per window: bounded memory at any request rate.
        self._outcomes: deque[list[float]] = deque()

    def allow(self, now: float) -> bool:
        """May a request try this target now? In half-open, only one probe at a time."""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN:
            if now < self.opened_until:
                return False
            self._set(State.HALF_OPEN)
        if self.probing:
            return False
        self.probing = True
        return True

    def force_probe(self) -> None:
        """Every target is open: let this one through anyway, as a half-open probe."""
        if self.state is State.OPEN:
            self._set(State.HALF_OPEN)
        self.probing = True

    def record_success(self, now: float) -> None:
        self._consecutive = 0
        self.probing = False
        self._remember(now, ok=True)
        if self.state is not State.CLOSED:
            self._outcomes.clear()
            self._set(State.CLOSED)

    def record_failure(self, now: float, retry_after: float | None = None) -> None:
        self._consecutive += 1
        self.probing = False
        self._remember(now, ok=False)
        if self.state is State.HALF_OPEN or self._should_open():
            self._open(now, retry_after)
        elif retry_after is not None and self.state is State.OPEN:
            self.opened_until = max(self.opened_until, now + retry_after)

    def release_probe(self) -> None:
        """A probe that ended without a verdict (cancelled, or a client error) frees the slot."""
        self.probing = False

    def _should_open(self) -> bool:
        if self.state is State.OPEN:
            return False
        if self._consecutive >= self._policy.failures:
            return True
        total = sum(b[1] for b in self._outcomes)
        if total < self._policy.min_requests:
            return False
        return sum(b[2] for b in self._outcomes) / total >= self._policy.failure_ratio

    def _open(self, now: float, retry_after: float | None) -> None:
        self.opened_until = now + max(self._policy.cooldown, retry_after or 0.0)
        self._set(State.OPEN)

    def _remember(self, now: float, *, ok: bool) -> None:
        outcomes = self._outcomes
        width = self._policy.window / 10
        if not outcomes or now - outcomes[-1][0] >= width:
            outcomes.append([now, 0, 0])
        bucket = outcomes[-1]
        bucket[1] += 1
        if not ok:
            bucket[2] += 1
        horizon = now - self._policy.window
        while outcomes and outcomes[0][0] < horizon:
            outcomes.popleft()

    def _set(self, state: State) -> None:
        if state is not self.state:
            self.state = state
            self.on_change(self.key, state)


class Breakers:
    """All circuit breakers of this process, created on first use."""

    def __init__(self, policy: BreakerPolicy, on_change: Callable[[str, State], None] | None = None) -> None:
        self._policy = policy
        self._on_change = on_change or (lambda key, state: None)
        self._breakers: dict[str, CircuitBreaker] = {}

    @property
    def enabled(self) -> bool:
        return self._policy.enabled

    def get(self, key: str) -> CircuitBreaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = CircuitBreaker(key, self._policy, self._on_change)
        return breaker

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(list(self._breakers.values()))

    @staticmethod
    def now() -> float:
        return time.monotonic()
