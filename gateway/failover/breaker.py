"""One circuit breaker: take a failing target out for a cooldown, probe it, put it back.

A circuit opens after `failures` consecutive failures, or when the failure ratio over the last
`window` seconds reaches `failure_ratio` (with at least `min_requests` outcomes; with shared state the
other replicas' windows count too). It stays open for
the cooldown (at least as long as the upstream's Retry-After), then turns half-open by time and lets
one probe through: the probe's success closes it, its failure opens it again.

Every admission is a ticket. Only the ticket's own circuit generation may settle it: a request
admitted before the circuit opened cannot close it by succeeding late, and while half-open only the
probe's outcome counts. The clock is passed in, so the breaker never reads time itself.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from gateway.config.schema import BreakerPolicy


class State(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True, slots=True)
class Ticket:
    """Permission for one request to try a target; settle it exactly once."""

    key: str
    generation: int
    probe: bool


class CircuitBreaker:
    __slots__ = ("_closed", "_consecutive", "_forced_at", "_outcomes", "_probe_since", "generation", "key",
                 "on_change", "opened_until", "peers", "policy", "state")

    def __init__(self, key: str, policy: BreakerPolicy, on_change: Callable[[str, State], None]) -> None:
        self.key = key
        self.policy = policy
        self.on_change = on_change
        self.state = State.CLOSED
        self.opened_until = 0.0
        self.generation = 0
        self._probe_since: float | None = None  # when the current probe was admitted
        self._forced_at: float | None = None  # when an early probe was last let through
        self._consecutive = 0
        # Outcomes counted in ten time buckets per window: bounded memory at any request rate.
        self._outcomes: deque[list[float]] = deque()
        # Other replicas' outcomes in their current windows (total, failed), with shared state only.
        self.peers: tuple[int, int] = (0, 0)
        # The ticket of a closed circuit's current generation, handed to every request it admits: a
        # ticket is immutable, so one per generation serves them all (not one object per request).
        self._closed = Ticket(key, 0, probe=False)

    def tick(self, now: float) -> None:
        """Open turns half-open when its cooldown has passed, whether or not anyone asks."""
        if self.state is State.OPEN and now >= self.opened_until:
            self._set(State.HALF_OPEN)

    def admit(self, now: float) -> Ticket | None:
        """A ticket to try this target now, or None while it is open (or its one probe is out)."""
        if self.state is State.CLOSED:  # the usual case (tick() changes only an open circuit)
            return self._closed_ticket()
        self.tick(now)
        if self.state is State.OPEN or not self._probe_free(now):
            return None
        self._probe_since = now
        return Ticket(self.key, self.generation, probe=True)

    def admit_early(self, now: float) -> Ticket | None:
        """Every target of a plan is open: one early probe per cooldown, owned like any probe."""
        if self.state is State.CLOSED:
            return self._closed_ticket()
        if not self._probe_free(now):
            return None
        if self._forced_at is not None and now - self._forced_at < self.policy.cooldown:
            return None
        self._forced_at = now
        self._probe_since = now
        return Ticket(self.key, self.generation, probe=True)

    def remaining(self, now: float) -> float:
        """Seconds until the circuit lets a probe through (0 when it would now)."""
        if self.state is State.OPEN:
            return max(0.0, self.opened_until - now)
        return 0.0

    def succeeded(self, ticket: Ticket, now: float) -> None:
        if not self._owns(ticket):
            return
        self._consecutive = 0
        self._remember(now, ok=True)
        if ticket.probe:
            self._probe_since = None
            self._outcomes.clear()
            self.peers = (0, 0)
            self._set(State.CLOSED)

    def failed(self, ticket: Ticket, now: float, retry_after: float | None = None) -> None:
        if not self._owns(ticket):
            return
        self._consecutive += 1
        self._remember(now, ok=False)
        if ticket.probe or self._should_open():
            self._open(now, retry_after)

    def released(self, ticket: Ticket) -> None:
        """The request ended with no verdict on the upstream (client gone, client error): free the probe."""
        if self._owns(ticket) and ticket.probe:
            self._probe_since = None

    def force_open(self, until: float) -> bool:
        """Another replica opened this circuit: keep it open here until `until` too (a longer local
        cooldown stays). Requests admitted before become stragglers, as after a local opening."""
        if self.state is State.OPEN and self.opened_until >= until:
            return False
        self.opened_until = max(self.opened_until, until)
        self.generation += 1
        self._probe_since = None
        self._set(State.OPEN)
        return True

    def force_close(self) -> bool:
        """Another replica's probe succeeded: the target is back here too, with a clean failure window."""
        if self.state is State.CLOSED:
            return False
        self._consecutive = 0
        self._outcomes.clear()
        self.peers = (0, 0)  # the peers' windows were cleared by the same closing
        self._probe_since = None
        self._set(State.CLOSED)
        return True

    def _closed_ticket(self) -> Ticket:
        ticket = self._closed
        if ticket.generation != self.generation:
            ticket = self._closed = Ticket(self.key, self.generation, probe=False)
        return ticket

    def _owns(self, ticket: Ticket) -> bool:
        if ticket.generation != self.generation:
            return False  # admitted before the circuit last opened: a straggler
        return ticket.probe or self.state is State.CLOSED

    def _probe_free(self, now: float) -> bool:
        # A probe that never settles (lost to a bug or a stuck stream) frees its slot after a cooldown.
        since = self._probe_since
        return since is None or now - since >= self.policy.cooldown

    def window(self) -> tuple[int, int]:
        """This replica's outcomes in the current window: (total, failed)."""
        return int(sum(b[1] for b in self._outcomes)), int(sum(b[2] for b in self._outcomes))

    def _should_open(self) -> bool:
        if self._consecutive >= self.policy.failures:
            return True
        total, failed = self.window()
        total, failed = total + self.peers[0], failed + self.peers[1]
        if total < self.policy.min_requests:
            return False
        return failed / total >= self.policy.failure_ratio

    def _open(self, now: float, retry_after: float | None) -> None:
        self.opened_until = now + max(self.policy.cooldown, retry_after or 0.0)
        self.generation += 1
        self._probe_since = None
        self._set(State.OPEN)

    def _remember(self, now: float, *, ok: bool) -> None:
        outcomes = self._outcomes
        width = self.policy.window / 10
        if not outcomes or now - outcomes[-1][0] >= width:
            outcomes.append([now, 0, 0])
        bucket = outcomes[-1]
        bucket[1] += 1
        if not ok:
            bucket[2] += 1
        horizon = now - self.policy.window
        while outcomes and outcomes[0][0] < horizon:
            outcomes.popleft()

    def _set(self, state: State) -> None:
        if state is not self.state:
            self.state = state
            self.on_change(self.key, state)
