"""Shared counters that keep serving when Redis fails (`state.backend: redis`).

While Redis answers, every admission and settlement goes to it (gateway.state.redis_counters). When
a call fails, the connection is marked down and, with `state.on_failure: open`, each replica enforces
its share of every limit alone, in memory (gateway.state.memory): `rpm`/`tpm` divided by the live
replicas the last heartbeat counted, `concurrency` likewise rounded down (at least 1, so no key is
shut out), a budget's remainder (the budget minus the spend last seen in Redis) divided the same way.
With `closed`, a request that any limit applies to is refused with a 503 instead. Requests without
limits never reach this class.

Recovery is probed off the request path: the settlement batch (every `state.flush_interval`, with
back-off while down) is also the heartbeat; once it goes through, admissions use Redis again.
Nothing spent is lost to an outage: settlements Redis missed are replayed (bounded), spend settled on
local grants is added, and if Redis came back empty (restarted without persistence) every spend total
this replica saw is restored as a floor (Redis keeps the highest any replica sends).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from gateway.errors import LimitsUnavailable
from gateway.state.memory import MemoryCounters
from gateway.state.redis import RedisConnection, Unavailable
from gateway.state.redis_counters import RedisCounters, Spend
from gateway.state.store import Check, Settlement, Verdict

HEARTBEAT_SECONDS = 1.0
_MAX_PENDING = 50_000  # settlements kept for a Redis that is down; beyond, only their spend is kept


@dataclass(frozen=True, slots=True)
class LocalGrant:
    """A request admitted on this replica's shares while Redis was down: settled where it was admitted."""

    store: MemoryCounters
    checks: tuple[Check, ...]


class FallbackCounters:
    """CounterStore: Redis while it answers, this replica's shares while it does not."""

    def __init__(self, remote: RedisCounters, on_failure: Literal["open", "closed"],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.remote = remote
        self.connection: RedisConnection = remote.connection
        self._closed = on_failure == "closed"
        self._clock = clock
        self._local = MemoryCounters()
        self._pending: list[Settlement] = []  # granted by Redis, not yet settled there
        self._owed: dict[tuple[str, str], float] = {}  # spend settled on local grants, for Redis
        self._last_beat = float("-inf")
        self._reseed = False

    async def admit(self, checks: Sequence[Check], now: float) -> Verdict:
        if self.connection.up:
            try:
                verdict = await self.remote.admit(checks, now)
            except Unavailable:
                pass  # marked down: this request and the next ones use the local shares
            else:
                return verdict
        if self._closed:
            raise LimitsUnavailable(
                "The shared rate limits and budgets cannot be checked (Redis is unavailable) and this gateway "
                "refuses limited requests until they can (`state.on_failure: closed`); retry in a moment.",
                headers={"Retry-After": "1"})
        shares = tuple(self._share(check) for check in checks)
        verdict = await self._local.admit(shares, now)
        return replace(verdict, grant=LocalGrant(self._local, shares))

    def _share(self, check: Check) -> Check:
        replicas = self.remote.replicas
        if check.kind == "requests" or check.kind == "tokens":
            return replace(check, limit=check.limit / replicas)
        if check.kind == "concurrency":
            return replace(check, limit=max(1, int(check.limit) // replicas))
        seen = self.remote.seen.get((check.scope, check.period))
        used = seen.used if seen is not None else 0.0  # spent and in flight when Redis was last asked
        return replace(check, limit=max(0.0, check.limit - used) / replicas)

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        """Local grants settle here at once; Redis's go to Redis with the heartbeat, in one round trip (kept
        for later while it is down). Never raises."""
        for settlement in settlements:
            grant = settlement.grant
            if isinstance(grant, LocalGrant):
                await grant.store.settle([Settlement(grant.checks, settlement.actual, None, settlement.now)])
                for check, actual in zip(settlement.checks, settlement.actual, strict=True):
                    if check.kind == "spend" and actual:
                        key = (check.scope, check.period)
                        self._owed[key] = self._owed.get(key, 0.0) + actual
            else:
                self._pending.append(settlement)
        self._bound_pending()
        if self.upkeep_due():
            await self._send()

    def upkeep_due(self) -> bool:
        """Something to send (settlements, owed spend, the heartbeat) and Redis up or due a probe."""
        beat_due = self._clock() - self._last_beat >= HEARTBEAT_SECONDS
        if not (self._pending or self._owed or beat_due):
            return False
        return self.connection.up or self.connection.probe_due

    async def _send(self) -> None:
        recovering = not self.connection.up
        reseed = recovering or self._reseed
        floors = [Spend(s, p, seen.spent) for (s, p), seen in self.remote.seen.items()] if reseed else []
        owed = [Spend(s, p, usd) for (s, p), usd in self._owed.items()]
        pending, self._pending = self._pending, []
        self._owed = {}
        try:
            await self.remote.settle(pending, floors, owed)
        except Unavailable:
            self._pending[:0] = pending
            for entry in owed:
                key = (entry.scope, entry.period)
                self._owed[key] = self._owed.get(key, 0.0) + entry.usd
            return
        self._last_beat = self._clock()
        # Redis lost its data since we last looked and we did not just re-seed it: do so with the next batch.
        self._reseed = self.remote.fresh and not reseed
        if recovering:
            self._local = MemoryCounters()  # a later outage starts again from what Redis says then

    def _bound_pending(self) -> None:
        """Past the bound, the oldest settlements keep only their spend (their holds expire in Redis)."""
        overflow = len(self._pending) - _MAX_PENDING
        if overflow <= 0:
            return
        for settlement in self._pending[:overflow]:
            for check, actual in zip(settlement.checks, settlement.actual, strict=True):
                if check.kind == "spend" and actual:
                    key = (check.scope, check.period)
                    self._owed[key] = self._owed.get(key, 0.0) + actual
        del self._pending[:overflow]

    async def spent(self, scope: str, period: str) -> float:
        if self.connection.up:
            try:
                return await self.remote.spent(scope, period)
            except Unavailable:
                pass
        seen = self.remote.seen.get((scope, period))
        return (seen.spent if seen is not None else 0.0) + self._owed.get((scope, period), 0.0)

    async def close(self) -> None:
        if self.connection.up:
            with contextlib.suppress(Unavailable):
                await self.remote.leave()
        await self.connection.close()
