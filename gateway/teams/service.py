"""Teams at run time, one per worker process: admission, settlement, the ledger writer, key refresh.

Admission is on the hot path and is one call to the counter store (one SQLite transaction), and
none at all for a request no limit applies to. Everything else leaves the hot path: a finished
request only appends its settlement and ledger row to in-memory lists, and a background task
writes them in batches every `state.flush_interval` (sooner when a concurrency slot is released,
so the next request sees it free). A crash loses at most the last batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from gateway import metrics, tasks
from gateway.config.schema import StateSettings
from gateway.state.memory import in_process
from gateway.state.open import open_store
from gateway.state.store import Check, LedgerRow, Settlement, StateStore
from gateway.teams.keys import ManagedKeys
from gateway.teams.limits import Scoped, build_checks, period_of, rate_headers, refusal

log = logging.getLogger("gateway")

_MAX_QUEUED = 200_000  # rows kept in memory while the store cannot be written; the oldest go first
_PRUNE_SECONDS = 3600.0


class Ticket:
    """A granted admission: what was reserved, and the headers that tell the client its limits."""

    __slots__ = ("checks", "grant", "holds_slot", "raw_headers")

    def __init__(self, checks: tuple[Check, ...], grant: object, raw_headers: list[tuple[bytes, bytes]],
                 holds_slot: bool = False) -> None:
        self.checks = checks
        self.grant = grant
        self.raw_headers = raw_headers  # encoded once, as the answer's head takes them
        self.holds_slot = holds_slot  # a concurrency slot, which settling must free at once

    @property
    def headers(self) -> dict[str, str]:
        """The same as text, for an error answer."""
        return {name.decode(): value.decode() for name, value in self.raw_headers}


def _resolve(due: asyncio.Future[None]) -> None:
    if not due.done():
        due.set_result(None)


class Teams:
    def __init__(self, settings: StateSettings, clock: Callable[[], float] = time.time, workers: int = 1) -> None:
        store = open_store(settings)
        # One worker process on the embedded store: nothing else admits against these counters, so
        # they live in this process (microseconds instead of a SQLite transaction per request), the
        # spend written behind to the file. Several workers share the file's counters.
        self.store: StateStore = in_process(store) if workers == 1 and settings.backend == "sqlite" else store
        self.clock = clock
        self.keys = ManagedKeys(self.store.keys)
        self._interval = settings.flush_interval
        self._retention = settings.ledger_retention_days * 86400.0
        self._rows: list[LedgerRow] = []
        # Queue a finished request's row: the list's own append (called for every request, no Python
        # frame), so flush() empties this one list in place rather than swapping it for another.
        self.record: Callable[[LedgerRow], None] = self._rows.append
        self._settlements: list[Settlement] = []
        self._due: asyncio.Future[None] | None = None  # resolved when the next batch is due
        self._timer: asyncio.TimerHandle | None = None  # the interval's timer, while the flush loop runs
        self._tasks: list[asyncio.Task[None]] = []
        self._budgets: dict[str, Scoped] = {}  # keys with a budget that were used, for the budget gauges
        self._published = 0.0

    def wall_clock(self) -> float:
        return self.clock()

    async def start(self) -> None:
        await self.keys.refresh()
        loop = asyncio.get_running_loop()
        self._due = loop.create_future()  # now: a slot freed before the loop first runs still wakes it
        self._tasks = [loop.create_task(self.keys.poll()), loop.create_task(self._flush_loop()),
                       loop.create_task(self._prune_loop())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            await tasks.stop(task)
        self._tasks = []
        await self.flush()
        await self.store.close()

    async def admit(self, key: str, scoped: Sequence[Scoped], tokens: int, worst_cost: float,
                    hold_seconds: float) -> Ticket:
        """Reserve against every limit or raise the 429 of the first that refuses."""
        now = self.clock()
        checks = build_checks(scoped, tokens, worst_cost, now, hold_seconds)
        if scoped[0].limits.budget_usd is not None and scoped[0].scope[:4] == "key:":
            self._budgets[key] = scoped[0]  # the key's own limits come first, when it has any
        holds_slot = False
        for item in scoped:
            if item.limits.concurrency is not None:
                holds_slot = True
        verdict = await self.store.counters.admit(checks, now)
        if not verdict.granted:
            assert verdict.refused is not None
            check = checks[verdict.refused]
            metrics.key_refused(key, check.scope.partition(":")[0], "budget" if check.kind == "spend" else check.kind)
            raise refusal(checks, verdict, now)
        return Ticket(checks, verdict.grant, rate_headers(checks, verdict), holds_slot)

    def settle(self, ticket: Ticket, tokens: float, cost: float) -> None:
        """Replace the ticket's reservations with what was used (written with the next batch)."""
        actual = tuple([tokens if c.kind == "tokens" else cost if c.kind == "spend" else 1.0 for c in ticket.checks])
        self._settlements.append(Settlement(ticket.checks, actual, ticket.grant, self.clock()))
        if ticket.holds_slot and self._due is not None:
            _resolve(self._due)  # flush now, so that the next request finds the slot free

    async def flush(self) -> None:
        settlements, self._settlements = self._settlements, []
        rows = self._rows[:]
        self._rows.clear()
        try:
            await self.store.counters.settle(settlements)
        except Exception:
            log.exception("could not settle %d requests in the state store; retrying", len(settlements))
            self._settlements[:0] = settlements
        else:
            await self._publish_budgets()
        try:
            await self.store.ledger.append(rows)
        except Exception:
            log.exception("could not write %d ledger rows; keeping them for the next batch", len(rows))
            self._rows[:0] = rows
            del self._rows[:-_MAX_QUEUED]

    async def _publish_budgets(self) -> None:
        """Per key with a budget: the share of it used this period (for the soft-budget alert). At most
        once a second: the gauges are scraped far less often, and this reads every such key's spend."""
        now = self.clock()
        if abs(now - self._published) < 1.0:
            return
        self._published = now
        for key, scoped in self._budgets.items():
            limits = scoped.limits
            assert limits.budget_usd is not None
            spent = await self.store.counters.spent(scoped.scope, period_of(limits.period, now)[0])
            metrics.key_budget(key, spent / limits.budget_usd, limits.soft_ratio)

    async def _flush_loop(self) -> None:
        """A batch every `flush_interval`, or at once when a slot is freed. One future and one timer per
        batch (asyncio.wait_for on an Event made a task, two more futures and a TimeoutError besides)."""
        loop = asyncio.get_running_loop()
        assert self._due is not None
        due = self._due
        self._timer = loop.call_later(self._interval, self._batch_due, due)
        try:
            while True:
                await due
                self._timer.cancel()
                # The next batch's future exists before this one is written: a slot freed meanwhile
                # brings the next batch forward too.
                self._due = due = loop.create_future()
                self._timer = loop.call_later(self._interval, self._batch_due, due)
                try:
                    await self.flush()
                except Exception:
                    log.exception("state flush failed")
        finally:
            self._timer.cancel()

    def _batch_due(self, due: asyncio.Future[None]) -> None:
        """The interval's timer: wake the writer only for a batch with something in it or for the
        store's own upkeep (a heartbeat, spend to write behind, a probe of a backend that is down, the
        budget gauges), else wait another interval. An idle gateway's empty batch was a task resumed and
        three store calls 4 times a second; this check is one timer callback."""
        if self._rows or self._settlements or self.store.counters.upkeep_due() or (
                self._budgets and abs(self.clock() - self._published) >= 1.0):
            _resolve(due)
        else:
            self._timer = due.get_loop().call_later(self._interval, self._batch_due, due)

    async def _prune_loop(self) -> None:
        while True:
            try:
                pruned = await self.store.ledger.prune(self.clock() - self._retention)
                if pruned:
                    log.info("pruned %d ledger rows older than the retention", pruned)
            except Exception:
                log.exception("ledger pruning failed")
            await asyncio.sleep(_PRUNE_SECONDS)

    async def spent(self, scope: str, period: str) -> tuple[float, str, float | None]:
        """Settled spend of a scope in its current period, the period's name and when it ends."""
        key, ends = period_of(period, self.clock())
        return await self.store.counters.spent(scope, key), key, ends
