"""The batch writer of Teams: a batch every flush_interval, and one at once when a concurrency slot is freed."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from gateway.config.schema import StateSettings
from gateway.errors import LimitExceeded
from gateway.state.memory import MemoryCounters
from gateway.state.split import SplitStore
from gateway.state.sqlite import SQLiteStore
from gateway.state.store import (
    Check,
    CounterStore,
    LedgerRow,
    LedgerStore,
    LimitSettings,
    Settlement,
    UsageQuery,
    UsageTotal,
    Verdict,
)
from gateway.teams.limits import Scoped
from gateway.teams.service import Teams

ONE_SLOT = (Scoped("key:team", LimitSettings(concurrency=1)),)


def _row(request_id: str) -> LedgerRow:
    return LedgerRow(1.0, request_id, "team", "m", "p", "p/m", 200, None, 1, 2, 0, 0, None, 1.0, None, 1, 0,
                     "/v1/chat/completions")


async def test_a_freed_slot_is_written_at_once_not_at_the_next_interval(tmp_path: Path) -> None:
    # The interval is the longest allowed; the freed slot must be seen well within it.
    teams = Teams(StateSettings(path=str(tmp_path / "state.db"), flush_interval=1.0))
    await teams.start()
    try:
        ticket = await teams.admit("team", ONE_SLOT, 0, 0.0, 60.0)
        with pytest.raises(LimitExceeded):
            await teams.admit("team", ONE_SLOT, 0, 0.0, 60.0)
        teams.settle(ticket, 0, 0.0)
        for _ in range(40):  # 0.4 s at most
            await asyncio.sleep(0.01)
            try:
                await teams.admit("team", ONE_SLOT, 0, 0.0, 60.0)
                break
            except LimitExceeded:
                continue
        else:
            raise AssertionError("the freed slot waited for the next interval")
    finally:
        await teams.stop()


async def test_rows_are_written_every_interval_and_at_stop(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    teams = Teams(StateSettings(path=str(path), flush_interval=0.05))
    await teams.start()
    try:
        teams.record(_row("first"))
        for _ in range(200):  # 2 s at most: the batch is written by the loop alone
            await asyncio.sleep(0.01)
            with sqlite3.connect(path) as db:
                if db.execute("SELECT count(*) FROM ledger").fetchone()[0]:
                    break
        else:
            raise AssertionError("the flush loop never wrote the row")
        teams.record(_row("second"))
    finally:
        await teams.stop()
    with sqlite3.connect(path) as db:
        assert [r[0] for r in db.execute("SELECT request_id FROM ledger ORDER BY id")] == ["first", "second"]


class _SwallowsOneCancel:
    """Counters whose settle loses the first cancel that lands in it, as a Redis client mid-call can."""

    def __init__(self, real: CounterStore) -> None:
        self.real = real
        self.entered = asyncio.Event()
        self.swallowed = 0

    async def admit(self, checks: Sequence[Check], now: float) -> Verdict:
        return await self.real.admit(checks, now)

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        if not self.swallowed:
            self.entered.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.swallowed += 1  # and carries on as if nothing happened
        await self.real.settle(settlements)

    async def spent(self, scope: str, period: str) -> float:
        return await self.real.spent(scope, period)

    def upkeep_due(self) -> bool:
        return True  # so that an idle flush loop enters settle


async def test_stop_ends_even_when_a_cancel_is_lost_in_a_backend_call(tmp_path: Path) -> None:
    teams = Teams(StateSettings(path=str(tmp_path / "state.db"), flush_interval=0.05))
    shared = teams.store
    counters = _SwallowsOneCancel(shared.counters)
    teams.store = SplitStore(shared.keys, counters, shared.ledger, (shared.close,))
    await teams.start()
    await asyncio.wait_for(counters.entered.wait(), 5)  # the flush loop is inside settle
    stopping = asyncio.ensure_future(teams.stop())
    done, _ = await asyncio.wait({stopping}, timeout=5)
    assert done, "Teams.stop() never ended: the flush loop lost its cancel and went on"
    assert counters.swallowed == 1


class _Counted:
    """Counters and ledger of the real store, counting the calls that reach them."""

    def __init__(self, counters: CounterStore, ledger: LedgerStore) -> None:
        self.counters, self.ledger = counters, ledger
        self.settles = self.appends = 0
        self.appended = asyncio.Event()

    async def admit(self, checks: Sequence[Check], now: float) -> Verdict:
        return await self.counters.admit(checks, now)

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        self.settles += 1
        await self.counters.settle(settlements)

    async def spent(self, scope: str, period: str) -> float:
        return await self.counters.spent(scope, period)

    def upkeep_due(self) -> bool:
        return self.counters.upkeep_due()

    async def append(self, rows: Sequence[LedgerRow]) -> None:
        self.appends += 1
        await self.ledger.append(rows)
        self.appended.set()

    async def usage(self, query: UsageQuery) -> list[UsageTotal]:
        return await self.ledger.usage(query)

    async def prune(self, before: float) -> int:
        return await self.ledger.prune(before)


async def test_an_interval_with_nothing_queued_reaches_no_store(tmp_path: Path) -> None:
    # The interval's timer is fired by hand: with nothing queued (one worker, in-process counters, no
    # budget) it wakes nobody and calls no store, and arms itself again; a queued row wakes the writer.
    teams = Teams(StateSettings(path=str(tmp_path / "state.db"), flush_interval=1.0))
    shared = teams.store
    counted = _Counted(shared.counters, shared.ledger)
    teams.store = SplitStore(shared.keys, counted, counted, (shared.close,))
    await teams.start()
    try:
        await asyncio.sleep(0)  # the flush loop arms its first timer
        due = teams._due
        assert due is not None and teams._timer is not None
        for _ in range(4):
            first = teams._timer
            teams._batch_due(due)
            assert teams._timer is not first and not due.done()
        await asyncio.sleep(0)
        assert (counted.settles, counted.appends) == (0, 0)
        teams.record(_row("one"))
        teams._batch_due(due)
        assert due.done()
        await asyncio.wait_for(counted.appended.wait(), 5)
        assert (counted.settles, counted.appends) == (1, 1)
    finally:
        await teams.stop()


async def test_spent_not_yet_written_behind_keeps_the_batches_coming(tmp_path: Path) -> None:
    # In-process counters owe the file their settled spend: an empty batch is still due until it is written.
    store = SQLiteStore(str(tmp_path / "state.db"))
    counters = MemoryCounters(store, write_every=0.0)
    try:
        assert not counters.upkeep_due()
        check = Check("key:team", "spend", 10.0, 1.0, "total")
        verdict = await counters.admit([check], 1.0)
        counters._pending[("key:team", "total")] = 0.5  # as a settle that could not write it behind
        assert counters.upkeep_due()
        await counters.settle([Settlement((check,), (0.5,), verdict.grant, 2.0)])
        assert not counters.upkeep_due() and await store.spent("key:team", "total") == 1.0
    finally:
        await store.close()
