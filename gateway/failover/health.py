"""What the gateway has learnt about each target: its circuit, its latencies, what it refuses.

One Health object lives as long as the process and is handed to every Runtime a config reload
builds, so a reload neither forgets a failing target nor the latencies the `latency` strategy and
the adaptive first-token limit rely on. Time comes from an injected clock (tests advance it).

With `state.backend: redis` the replicas share circuits (gateway/failover/shared.py): this object
then keeps an outbox of its own openings and closings for the background sync to publish, and takes
other replicas' through open_from_peer/close_from_peer. Requests never wait for Redis.
"""

from __future__ import annotations

import asyncio
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
        self._keys: set[str] | None = None  # the configured targets (None: any)
        # Shared circuits only: the latest local transition per target not yet published (None: not shared).
        self.outbox: dict[str, State] | None = None
        self._from_peer = False  # applying another replica's transition: not ours to publish
        self.wake: Callable[[], None] = lambda: None  # tells the sync there is news to publish now
        self._loop: asyncio.AbstractEventLoop | None = None  # set while the cooldown timer runs
        self._timer: asyncio.TimerHandle | None = None

    @property
    def enabled(self) -> bool:
        return self.policy.enabled

    def configure(self, policy: BreakerPolicy, keys: Iterable[str] | None,
                  on_change: Callable[[str, State], None]) -> None:
        """A (re)loaded config: new thresholds; state kept for targets that still exist."""
        self.policy = policy
        self._on_change = on_change
        if keys is not None:
            alive = self._keys = set(keys)
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

    def start_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        """Turn open circuits half-open when their cooldown ends, whether or not anyone asks, so that the
        gauges and alerts of idle targets tell the truth: one timer, armed for the first cooldown to end
        and none while every circuit is closed (a task woke every second for it, ~30k instructions)."""
        self._loop = loop
        self._arm()

    def stop_timer(self) -> None:
        self._loop = None
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._loop is None:
            return
        first: float | None = None
        for breaker in self._breakers.values():
            if breaker.state is State.OPEN and (first is None or breaker.opened_until < first):
                first = breaker.opened_until
        if first is not None:
            self._timer = self._loop.call_later(max(0.0, first - self.clock()), self._on_time)

    def _on_time(self) -> None:
        self._timer = None
        self.tick()
        self._arm()

    def windows(self) -> dict[str, tuple[int, int]]:
        """Per target with outcomes in its window: (total, failed) seen by this replica."""
        out = {}
        for breaker in list(self._breakers.values()):
            window = breaker.window()
            if window[0]:
                out[breaker.key] = window
        return out

    def set_peer_windows(self, windows: dict[str, tuple[int, int]]) -> None:
        """The other replicas' windows, summed per target; targets missing had none."""
        for breaker in list(self._breakers.values()):
            breaker.peers = windows.get(breaker.key, (0, 0))

    def open_remaining(self, key: str) -> float:
        """Seconds this circuit stays open (0 unless it is open)."""
        breaker = self._breakers.get(key)
        return breaker.remaining(self.clock()) if breaker is not None else 0.0

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(list(self._breakers.values()))

    def open_from_peer(self, key: str, remaining: float) -> bool:
        """Another replica opened `key` for `remaining` more seconds: open it here too."""
        if not self.policy.enabled or (self._keys is not None and key not in self._keys):
            return False
        return self._as_peer(lambda: self.breaker(key).force_open(self.clock() + remaining))

    def close_from_peer(self, key: str) -> bool:
        """Another replica's probe closed `key`: close it here too."""
        breaker = self._breakers.get(key)
        return breaker is not None and self._as_peer(breaker.force_close)

    def _as_peer(self, change: Callable[[], bool]) -> bool:
        self._from_peer = True
        try:
            return change()
        finally:
            self._from_peer = False

    def _on_change_of(self, key: str, state: State) -> None:
        # Half-open comes by time on every replica alike: only openings and closings are news.
        if self.outbox is not None and not self._from_peer and state is not State.HALF_OPEN:
            self.outbox[key] = state
            self.wake()
        if state is State.OPEN and self._loop is not None:
            self._arm()  # its cooldown may end first
        self._on_change(key, state)
