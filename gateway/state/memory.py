"""Exact limit and budget counters kept in this process: admission in microseconds, no I/O.

With `server.workers: 1` on the embedded store, every request of the gateway passes through one
process, so its limits need no cross-process coordination: a few dict lookups decide what a SQLite
transaction (~50 us, most of the cost of limits on the hot path) decided. Budgets must outlive a
restart, so the settled spend of a (scope, period) is read from a `SpendBacking` (the SQLite store)
the first time it is needed, and what is settled afterwards is written behind to it with the batches
`Teams.flush` makes, at most once a second. A crash loses at most that second, like the ledger;
what was in flight (slots, reservations, bucket levels) dies with the process, as it should.

Same contract as gateway.state.store: admission atomic and all-or-nothing (no await between the
decision and the reservation), buckets that drain `limit` per minute, concurrency counted until
settled, spend admitted while spent + reserved is below the budget.

Also the fallback of a gateway whose shared counters are down: `share` scales every limit to the
part one of several replicas enforces alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from gateway.state.store import (
    WINDOW_SECONDS,
    Check,
    CheckState,
    CounterStore,
    KeyStore,
    LedgerStore,
    Settlement,
    StateStore,
    Verdict,
)

log = logging.getLogger("gateway")

_IDLE_SECONDS = 3600.0  # a spend total unused this long is dropped (read again from the backing if needed)
_SWEEP_SECONDS = 60.0


@runtime_checkable
class SpendBacking(Protocol):
    """Where settled spend is kept across restarts."""

    async def spent(self, scope: str, period: str) -> float: ...
    async def add_spent(self, amounts: Sequence[tuple[str, str, float]]) -> None: ...


class _Spend:
    """One (scope, period): spend settled (including what is not written behind yet) and reserved."""

    __slots__ = ("reserved", "settled", "used_at")

    def __init__(self, settled: float, now: float) -> None:
        self.settled = settled
        self.reserved = 0.0
        self.used_at = now


class MemoryCounters:
    """A CounterStore in this process's memory; see the module docstring."""

    def __init__(self, backing: SpendBacking | None = None, share: float = 1.0, write_every: float = 1.0) -> None:
        self._backing = backing
        self._share = share
        # Spend is written behind at most this often (seconds): each write is a transaction on another
        # thread, worth batching beyond the flush interval. A crash loses at most this much spend.
        self._write_every = write_every
        self._written = float("-inf")
        # requests/tokens buckets by kind then scope: [level, when it was last set, drain per second]
        self._buckets: dict[str, dict[str, list[float]]] = {"requests": {}, "tokens": {}}
        self._inflight: dict[str, float] = {}
        self._spend: dict[tuple[str, str], _Spend] = {}
        self._pending: dict[tuple[str, str], float] = {}  # settled spend not yet written behind
        self._writing = False
        self._last_sweep = 0.0

    async def admit(self, checks: Sequence[Check], now: float) -> Verdict:
        while True:
            decided = self._admit(checks, now)
            if isinstance(decided, Verdict):
                return decided
            # A spend total not read yet: read it, then decide again from the start. The decision
            # itself never awaits, so no other admission can slip between the check and the reservation.
            scope, period = decided
            settled = await self._backing.spent(scope, period) if self._backing is not None else 0.0
            self._spend.setdefault(decided, _Spend(settled, now))

    def _admit(self, checks: Sequence[Check], now: float) -> Verdict | tuple[str, str]:
        """One pass that reserves as it goes (admissions are almost always granted); the first refusal
        gives back what the checks before it reserved, and the rest are only evaluated."""
        states: list[CheckState] = []
        refused: int | None = None
        retry_after = 0.0
        share = self._share
        for check in checks:
            kind = check.kind
            limit = check.limit * share
            reserve = refused is None
            if kind == "requests" or kind == "tokens":
                wait = self._take_from_bucket(check, limit, now, reserve, states)
                if wait is not None and reserve:
                    refused, retry_after = len(states) - 1, wait
                continue
            if kind == "concurrency":
                passes: bool | None = self._take_slot(check, limit, reserve, states)
            else:
                passes = self._take_spend(check, limit, now, reserve, states)
                if passes is None:
                    # Read the total, then decide again from the start.
                    self._undo(checks[:len(states) if reserve else refused], now)
                    return check.scope, check.period
            if not passes and reserve:
                refused = len(states) - 1
        if refused is not None:
            self._undo(checks[:refused], now)
            return Verdict(False, tuple(states), refused, retry_after)
        return Verdict(True, tuple(states))

    def _take_from_bucket(
        self, check: Check, limit: float, now: float, reserve: bool, states: list[CheckState],
    ) -> float | None:
        """A requests/tokens bucket: record its state; None if the amount fits (reserved when `reserve`),
        else the seconds until it would."""
        rate = limit / WINDOW_SECONDS
        bucket = self._buckets[check.kind].get(check.scope)
        level = 0.0 if bucket is None else max(0.0, bucket[0] - (now - bucket[1]) * rate)
        over = level + min(check.amount, limit) - limit
        if over > 0:
            states.append(CheckState(level, max(0.0, limit - level), level / rate))
            return over / rate
        after = level + check.amount
        if reserve:
            if bucket is None:
                self._buckets[check.kind][check.scope] = [after, now, rate]
            else:
                bucket[0] = after
                bucket[1] = now
        states.append(CheckState(after, max(0.0, limit - after), after / rate))
        return None

    def _take_slot(self, check: Check, limit: float, reserve: bool, states: list[CheckState]) -> bool:
        """A concurrency limit: record its state; whether the slots fit (taken when `reserve`)."""
        used = self._inflight.get(check.scope, 0.0)
        passes = used + check.amount <= limit
        if passes and reserve:
            self._inflight[check.scope] = used + check.amount
        after = used + check.amount if passes else used
        states.append(CheckState(after, max(0.0, limit - after), 0.0))
        return passes

    def _take_spend(
        self, check: Check, limit: float, now: float, reserve: bool, states: list[CheckState],
    ) -> bool | None:
        """A budget: record its state; whether it admits (reserved when `reserve`), None if its
        settled total is not read yet (nothing recorded then)."""
        spend = self._spend.get((check.scope, check.period))
        if spend is None:
            return None
        used = spend.settled + spend.reserved
        passes = used < limit
        if passes and reserve:
            spend.reserved += check.amount
            spend.used_at = now
        after = used + check.amount if passes else used
        states.append(CheckState(after, max(0.0, limit - after), 0.0))
        return passes

    def _undo(self, reserved: Sequence[Check], now: float) -> None:
        """Give back what these checks reserved a moment ago (at `now`)."""
        for check in reserved:
            kind = check.kind
            if kind == "requests" or kind == "tokens":
                # Draining is linear, so [level at now, now] is the same bucket as before the reservation.
                self._buckets[kind][check.scope][0] -= check.amount
            elif kind == "concurrency":
                self._inflight[check.scope] -= check.amount
            else:
                self._spend[check.scope, check.period].reserved -= check.amount

    def upkeep_due(self) -> bool:
        """Settled spend is waiting to be written behind, and may be now."""
        return bool(self._pending) and self._backing is not None and \
            time.monotonic() - self._written >= self._write_every

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        """Apply at once; then write the settled spend behind. Never raises: a failed write is retried
        with the next batch, and the settlements are never applied twice."""
        tokens = self._buckets["tokens"]
        inflight = self._inflight
        pending = self._pending
        for settlement in settlements:
            for check, actual in zip(settlement.checks, settlement.actual, strict=True):
                kind = check.kind
                if kind == "requests":
                    continue  # a request stays counted
                if kind == "tokens":
                    bucket = tokens.get(check.scope)
                    if bucket is not None and actual != check.amount:
                        bucket[0] = max(0.0, bucket[0] + actual - check.amount)
                elif kind == "concurrency":
                    inflight[check.scope] = max(0.0, inflight.get(check.scope, 0.0) - check.amount)
                elif kind == "spend":
                    key = (check.scope, check.period)
                    spend = self._spend.get(key)
                    if spend is not None:  # always there: a total with a reservation is never dropped
                        spend.reserved = max(0.0, spend.reserved - check.amount)
                        spend.settled += actual
                    if actual:
                        pending[key] = pending.get(key, 0.0) + actual
        if time.monotonic() - self._written >= self._write_every:
            await self._write_behind()
        if settlements and settlements[-1].now - self._last_sweep >= _SWEEP_SECONDS:
            self._sweep(settlements[-1].now)

    async def _write_behind(self) -> None:
        if self._backing is None or not self._pending:
            return
        batch, self._pending = self._pending, {}
        self._writing = True
        self._written = time.monotonic()
        try:
            await self._backing.add_spent([(scope, period, usd) for (scope, period), usd in batch.items()])
        except Exception:
            log.exception("could not write the spend of %d budgets to the state store; retrying", len(batch))
            for key, usd in batch.items():
                self._pending[key] = self._pending.get(key, 0.0) + usd
        finally:
            self._writing = False

    def _sweep(self, now: float) -> None:
        """Keep memory bounded: drop drained buckets, free slots, and spend totals idle for an hour and
        written behind (read again from the backing when next needed)."""
        if self._writing:
            return
        self._last_sweep = now
        for kind, buckets in self._buckets.items():
            self._buckets[kind] = {s: b for s, b in buckets.items() if b[0] - (now - b[1]) * b[2] > 0}
        self._inflight = {s: n for s, n in self._inflight.items() if n > 0}
        self._spend = {k: s for k, s in self._spend.items()
                       if s.reserved > 0 or k in self._pending or now - s.used_at < _IDLE_SECONDS}

    async def spent(self, scope: str, period: str) -> float:
        spend = self._spend.get((scope, period))
        if spend is not None:
            return spend.settled
        return await self._backing.spent(scope, period) if self._backing is not None else 0.0

    async def close(self) -> None:
        await self._write_behind()


class LocalCounters:
    """A StateStore with this process's counters and the shared store's keys and ledger."""

    def __init__(self, shared: StateStore, counters: MemoryCounters) -> None:
        self._shared = shared
        self._counters = counters

    @property
    def keys(self) -> KeyStore:
        return self._shared.keys

    @property
    def counters(self) -> CounterStore:
        return self._counters

    @property
    def ledger(self) -> LedgerStore:
        return self._shared.ledger

    async def close(self) -> None:
        await self._counters.close()
        await self._shared.close()


def in_process(shared: StateStore) -> StateStore:
    """`shared` with its counters moved into this process, the spend written behind to its counters."""
    backing = shared.counters
    if not isinstance(backing, SpendBacking):  # budgets would silently restart from zero
        raise TypeError(f"{type(backing).__name__} cannot keep the spend of in-process counters")
    return LocalCounters(shared, MemoryCounters(backing))
