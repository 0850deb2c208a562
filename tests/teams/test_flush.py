"""The batch writer of Teams: a batch every flush_interval, and one at once when a concurrency slot is freed."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from gateway.config.schema import StateSettings
from gateway.errors import LimitExceeded
from gateway.state.split import SplitStore
from gateway.state.store import Check, CounterStore, LedgerRow, LimitSettings, Settlement, Verdict
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
