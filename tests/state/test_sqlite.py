"""The SQLite store against a real file: migrations, keys, atomic admission, settlement, the ledger."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.state.migrations import MIGRATIONS
from gateway.state.sqlite import SQLiteStore
from gateway.state.store import (
    Check,
    KeyExists,
    KeyMissing,
    KeyRecord,
    LedgerRow,
    LimitSettings,
    Settlement,
    UsageQuery,
)

NOW = 1_800_000_000.0


def _row(at: float, key: str, status: int = 200, cost: float | None = 0.01) -> LedgerRow:
    return LedgerRow(at=at, request_id="r", key=key, model="m", provider="p", served_model="p/m", status=status,
                     error_type=None, input_tokens=10, output_tokens=5, cached_tokens=0, reasoning_tokens=0,
                     cost_usd=cost, duration_ms=1.0, ttft_ms=None, attempts=1, fallbacks=0)


async def test_keys_round_trip_and_every_change_moves_the_generation(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "state.db"))
    try:
        start = await store.keys_generation()
        record = KeyRecord("team-a", b"\x01" * 32, "gw-abcd", NOW, models=("echo/*",),
                           limits=LimitSettings(rpm=10, budget_usd=5.0, period="day"), metadata={"team": "a"})
        await store.create_key(record)
        assert await store.get_key("team-a") == record
        with pytest.raises(KeyExists):
            await store.create_key(record)
        changed = KeyRecord("team-a", b"\x01" * 32, "gw-abcd", NOW, revoked_at=NOW + 1)
        await store.update_key(changed)
        assert [k.revoked_at for k in await store.list_keys()] == [NOW + 1]
        with pytest.raises(KeyMissing):
            await store.update_key(KeyRecord("nobody", b"\x02" * 32, "gw-x", NOW))
        assert await store.keys_generation() == start + 2
    finally:
        await store.close()


async def test_a_store_from_an_older_version_opens_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    sqlite3.connect(path).close()  # schema version 0: as an older gateway would leave a fresh file
    store = SQLiteStore(str(path))
    await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(ConfigError, match="newer gateway"):
        SQLiteStore(str(path))


async def test_admission_is_all_or_nothing_and_reports_the_refusing_check(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "state.db"))
    try:
        checks = [Check("key:a", "requests", 10, 1), Check("key:a", "tokens", 100, 60)]
        first = await store.admit(checks, NOW)
        assert first.granted and first.states[1].remaining == 40
        second = await store.admit(checks, NOW)
        assert not second.granted and second.refused == 1
        assert second.retry_after == pytest.approx(20 / (100 / 60))
        # The refused admission reserved nothing: one request and 60 tokens are in the buckets.
        third = await store.admit([Check("key:a", "requests", 10, 1)], NOW)
        assert third.states[0].used == 2
        # Settling with the real usage gives back what was reserved and not used.
        await store.settle([Settlement(tuple(checks), (1, 10), first.grant, NOW)])
        assert (await store.admit(checks, NOW)).granted
    finally:
        await store.close()


async def test_reservations_hold_until_settled_and_a_dead_workers_are_given_back(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    store, other = SQLiteStore(path), SQLiteStore(path)
    try:
        checks = (Check("key:a", "concurrency", 1, 1), Check("key:a", "spend", 1.0, 0.7, period="day:x"))
        assert (await other.admit(checks, NOW)).granted
        await other.settle([])  # its heartbeat
        assert not (await store.admit(checks, NOW)).granted  # the other worker's request is in flight
        with sqlite3.connect(path) as db:  # the other worker is killed: its heartbeat stops
            db.execute("UPDATE workers SET seen = 0 WHERE id = ?", (other.worker,))
        first = await store.admit(checks, NOW)
        assert first.granted  # what the dead worker held was given back
        await store.settle([Settlement(checks, (1, 0.4), first.grant, NOW)])
        assert await store.spent("key:a", "day:x") == pytest.approx(0.4)
        again = await store.admit(checks, NOW)
        assert again.granted  # 0.4 spent < 1.0: admitted, reserving 0.7 (overshoot bounded by it)
        assert not (await store.admit((checks[1],), NOW)).granted  # 0.4 + 0.7 reserved >= 1.0
        await store.settle([Settlement(checks, (1, 0.7), again.grant, NOW)])
        assert await store.spent("key:a", "day:x") == pytest.approx(1.1)
        assert not (await store.admit((checks[1],), NOW)).granted
        assert (await store.admit((Check("key:a", "spend", 1.0, 0.7, period="day:y"),), NOW)).granted
    finally:
        await store.close()
        await other.close()


async def test_ledger_rows_sum_by_group_and_prune(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "state.db"))
    try:
        await store.append([_row(NOW, "a"), _row(NOW + 1, "a", status=502, cost=None), _row(NOW + 86400, "b")])
        totals = await store.usage(UsageQuery(NOW, NOW + 10 * 86400, by="key"))
        assert [(t.group, t.requests, t.errors, t.input_tokens) for t in totals] == [("a", 2, 1, 20), ("b", 1, 0, 10)]
        days = await store.usage(UsageQuery(NOW, NOW + 10 * 86400, by="day", key="a"))
        assert len(days) == 1 and days[0].cost_usd == pytest.approx(0.01)
        assert await store.prune(NOW + 10) == 2
        assert [t.group for t in await store.usage(UsageQuery(0, NOW * 2))] == ["b"]
    finally:
        await store.close()


@pytest.mark.parametrize("count", [1, 87])
async def test_ledger_rows_are_written_in_order_with_every_value(tmp_path: Path, count: int) -> None:
    """Each row exactly as given (rows are bound as their tuples), in order."""
    rows = [LedgerRow(NOW + i / 7, f"req-{i}", f"key-{i % 3}", "m", None if i % 5 == 0 else "p",
                      None if i % 5 == 0 else "p/m", 200 + i, "timeout" if i % 4 == 0 else None, i, 2 * i, i % 2,
                      i % 3, None if i % 6 == 0 else i / 1000, 1.5 + i, None if i % 2 else i / 3, 1 + i % 2, i % 2,
                      "/v1/chat/completions" if i % 2 else "/v1/messages") for i in range(count)]
    store = SQLiteStore(str(tmp_path / "state.db"))
    try:
        await store.append(rows)
        await store.append(rows[:2])
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "state.db") as db:
        written = [LedgerRow(*r) for r in db.execute(f"SELECT {', '.join(LedgerRow._fields)} FROM ledger ORDER BY id")]
    assert written == rows + rows[:2]


def _admit_many(path: str, count: int, results: multiprocessing.Queue[int]) -> None:
    import asyncio

    async def run() -> int:
        store = SQLiteStore(path)
        granted = 0
        for _ in range(count):
            if (await store.admit([Check("key:shared", "requests", 25, 1)], NOW)).granted:
                granted += 1
        await store.close()
        return granted

    results.put(asyncio.run(run()))


def test_two_processes_share_one_limit_exactly(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    results: multiprocessing.Queue[int] = multiprocessing.get_context("spawn").Queue()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_admit_many, args=(path, 40, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert results.get(timeout=5) + results.get(timeout=5) == 25
