"""What the gateway has learnt about each target: its circuit, its latencies, what it refuses.

One Health object lives as long as the process and is handed to every Runtime a config reload
builds, so a reload neither forgets a failing target nor the latencies the `latency` strategy and
the adaptive first-token limit rely on. Time comes from an injected clock (tests advance it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from gateway.config.schema import BreakerPolicy
from gateway.failover.breaker import CircuitBreaker, State, Ticket
from gateway.routing import LatencyStats

Clock = Callable[[], float]


class Health:
    def __init__(self, policy: BreakerPolicy, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.policy = policy
        self.latency = LatencyStats()
        self.no_prefill: set[str] = set()  # targets that refused a prefill continuation
        self._breakers: dict[str, CircuitBreaker] = {}
        self._on_change: Callable[[str, State], None] = lambda key, state: None

    @property
    def enabled(self) -> bool:
        return self.policy.enabled

    def configure(self, policy: BreakerPolicy, keys: Iterable[str] | None,
                  on_change: Callable[[str, State], None]) -> None:
        """A (re)loaded config: new thresholds; state kept for targets that still exist."""
        self.policy = policy
        self._on_change = on_change
        if keys is not None:
            alive = set(keys)
            for key in [k for k in self._breakers if k not in alive]:
                del self._breakers[key]
            self.latency.retain(alive)
            self.no_prefill &= alive
        for breaker in self._breakers.values():
            breaker.policy = policy
            breaker.on_change = on_change

    def breaker(self, key: str) -> CircuitBreaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = CircuitBreaker(key, self.policy, self._on_change_of)
        return breaker

    def state(self, key: str) -> State:
        breaker = self._breakers.get(key)
        return breaker.state if breaker is not None else State.CLOSED

    def admit(self, key: str) -> Ticket | None:
        if not self.policy.enabled:
            return Ticket(key, 0, probe=False)
        return self.breaker(key).admit(self.clock())

    def admit_early(self, keys: Iterable[str]) -> Ticket | None:
        """Every target is open: an early probe of the one whose cooldown ends first, once per its
        cooldown; None while that probe is out (everyone else is shed)."""
        first = min(keys, key=lambda k: self.breaker(k).opened_until, default=None)
        return None if first is None else self.breaker(first).admit_early(self.clock())

    def remaining(self, keys: Iterable[str]) -> float:
        """Seconds until the first of these circuits lets a probe through."""
        now = self.clock()
        return min((self.breaker(k).remaining(now) for k in keys), default=0.0)

    def still_admitted(self, ticket: Ticket) -> bool:
        """May the request that holds this ticket try again (the circuit did not open meanwhile)?"""
        if not self.policy.enabled:
            return True
        breaker = self.breaker(ticket.key)
        return breaker.generation == ticket.generation and breaker.state is not State.OPEN

    def succeeded(self, ticket: Ticket) -> None:
        if self.policy.enabled:
            self.breaker(ticket.key).succeeded(ticket, self.clock())

    def failed(self, ticket: Ticket, retry_after: float | None = None) -> None:
        if self.policy.enabled:
            self.breaker(ticket.key).failed(ticket, self.clock(), retry_after)

    def released(self, ticket: Ticket) -> None:
        if self.policy.enabled:
            self.breaker(ticket.key).released(ticket)

    def tick(self) -> None:
        """Turn every circuit whose cooldown has passed half-open (called on a timer and at scrape time)."""
        now = self.clock()
        for breaker in list(self._breakers.values()):
            breaker.tick(now)

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(list(self._breakers.values()))

    def _on_change_of(self, key: str, state: State) -> None:
        self._on_change(key, state)
