"""In-process counters (one worker): the counter contract; spend seeded from and written behind to a SQLite file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from gateway.config.schema import StateSettings
from gateway.state.memory import LocalCounters, MemoryCounters
from gateway.state.sqlite import SQLiteStore
from gateway.state.store import Check, Settlement
from gateway.teams.service import Teams, Ticket

NOW = 1_800_000_000.0


async def test_admission_is_all_or_nothing_and_buckets_drain_per_minute() -> None:
    counters = MemoryCounters()
    checks = [Check("key:a", "requests", 10, 1), Check("key:a", "tokens", 100, 60)]
    first = await counters.admit(checks, NOW)
    assert first.granted and first.states[1].remaining == 40
    second = await counters.admit(checks, NOW)
    assert not second.granted and second.refused == 1
    assert second.retry_after == pytest.approx(20 / (100 / 60))
    # The refused admission reserved nothing: one request and 60 tokens are in the buckets.
    third = await counters.admit([Check("key:a", "requests", 10, 1)], NOW)
    assert third.states[0].used == 2
    # Settling with the real usage gives back what was reserved and not used.
    await counters.settle([Settlement(tuple(checks), (1, 10), first.grant, NOW)])
    assert (await counters.admit(checks, NOW)).granted
    # 12 s later a 10-per-minute bucket has drained two requests' worth.
    assert (await counters.admit([Check("key:a", "requests", 10, 1)], NOW + 12)).states[0].used == pytest.approx(2)


async def test_an_amount_over_the_whole_limit_passes_only_into_an_empty_bucket() -> None:
    counters = MemoryCounters()
    big = [Check("key:a", "tokens", 100, 500)]
    assert (await counters.admit(big, NOW)).granted
    refused = await counters.admit([Check("key:a", "tokens", 100, 1)], NOW + 60)
    assert not refused.granted and refused.retry_after == pytest.approx(301 / (100 / 60))  # 400 left + 1 - 100


async def test_concurrency_is_held_until_settled() -> None:
    counters = MemoryCounters()
    slot = (Check("key:a", "concurrency", 2, 1),)
    grants = [await counters.admit(slot, NOW) for _ in range(3)]
    assert [g.granted for g in grants] == [True, True, False]
    await counters.settle([Settlement(slot, (1,), grants[0].grant, NOW)])
    assert (await counters.admit(slot, NOW)).granted


async def test_a_refusal_or_a_total_read_midway_gives_back_what_the_checks_before_it_took(tmp_path: Path) -> None:
    shared = SQLiteStore(str(tmp_path / "state.db"))
    try:
        await shared.add_spent([("key:a", "day:x", 2.0)])  # over the budget already
        counters = MemoryCounters(shared)
        checks = (Check("key:a", "requests", 10, 1), Check("key:a", "concurrency", 1, 1),
                  Check("key:a", "spend", 1.0, 0.1, period="day:x"))
        refused = await counters.admit(checks, NOW)  # reads the total midway, then refuses on it
        assert not refused.granted and refused.refused == 2
        # Neither the read nor the refusal left the request counted or the slot taken.
        assert (await counters.admit(checks[:2], NOW)).states == (await MemoryCounters().admit(checks[:2], NOW)).states
    finally:
        await shared.close()


async def test_share_scales_every_limit() -> None:
    counters = MemoryCounters(share=0.5)
    checks = (Check("key:a", "requests", 4, 1),)
    assert [(await counters.admit(checks, NOW)).granted for _ in range(3)] == [True, True, False]


async def test_spend_is_seeded_from_the_file_and_written_behind(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    shared = SQLiteStore(path)
    try:
        await shared.add_spent([("key:a", "day:x", 0.6)])  # what an earlier run of the gateway spent
        counters = MemoryCounters(shared, write_every=0)
        spend = (Check("key:a", "spend", 1.0, 0.3, period="day:x"),)
        first = await counters.admit(spend, NOW)
        assert first.granted and first.states[0].used == pytest.approx(0.9)
        # 0.6 spent + 0.3 reserved: still below 1.0, so one more is admitted (overshoot bounded by it)...
        second = await counters.admit(spend, NOW)
        assert second.granted
        # ...and then nothing until something settles below the budget.
        assert not (await counters.admit(spend, NOW)).granted
        await counters.settle([Settlement(spend, (0.1,), first.grant, NOW),
                               Settlement(spend, (0.2,), second.grant, NOW)])
        assert await shared.spent("key:a", "day:x") == pytest.approx(0.9)  # written behind with the batch
        assert await counters.spent("key:a", "day:x") == pytest.approx(0.9)
        # A restarted gateway's counters start from the file: 0.9 spent, one more request fits.
        restarted = MemoryCounters(shared, write_every=0)
        assert (await restarted.admit(spend, NOW)).granted
        assert not (await restarted.admit(spend, NOW)).granted
    finally:
        await shared.close()


async def test_spend_is_written_at_most_every_write_every_and_all_of_it_on_close(tmp_path: Path) -> None:
    shared = SQLiteStore(str(tmp_path / "state.db"))
    try:
        counters = MemoryCounters(shared, write_every=3600)
        spend = (Check("key:a", "spend", 10.0, 1.0, period="day:x"),)
        for amount in (0.5, 0.25, 0.125):
            grant = await counters.admit(spend, NOW)
            await counters.settle([Settlement(spend, (amount,), grant.grant, NOW)])
        assert await shared.spent("key:a", "day:x") == pytest.approx(0.5)  # the first batch only
        assert await counters.spent("key:a", "day:x") == pytest.approx(0.875)
        await counters.close()  # a clean stop writes what is left
        assert await shared.spent("key:a", "day:x") == pytest.approx(0.875)
    finally:
        await shared.close()


class _FailingOnce:
    """The real store, whose first write of spend fails (a busy or briefly unwritable file)."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.failed = False

    async def spent(self, scope: str, period: str) -> float:
        return await self.store.spent(scope, period)

    async def add_spent(self, amounts: Sequence[tuple[str, str, float]]) -> None:
        if not self.failed:
            self.failed = True
            raise OSError("disk I/O error")
        await self.store.add_spent(amounts)


async def test_a_failed_write_is_kept_for_the_next_batch_and_never_applied_twice(tmp_path: Path) -> None:
    shared = SQLiteStore(str(tmp_path / "state.db"))
    try:
        counters = MemoryCounters(_FailingOnce(shared), write_every=0)
        spend = (Check("key:a", "spend", 1.0, 0.5, period="day:x"), Check("key:a", "concurrency", 1, 1))
        grant = await counters.admit(spend, NOW)
        await counters.settle([Settlement(spend, (0.25, 1), grant.grant, NOW)])  # the write fails: no raise
        assert await shared.spent("key:a", "day:x") == 0.0
        assert (await counters.admit(spend, NOW)).states[0].used == pytest.approx(0.75)  # slot freed, spend kept
        await counters.settle([])  # the next batch
        assert await shared.spent("key:a", "day:x") == pytest.approx(0.25)
    finally:
        await shared.close()


async def test_one_worker_counts_in_process_and_several_share_the_file(tmp_path: Path) -> None:
    settings = StateSettings(path=str(tmp_path / "state.db"))
    one, two = Teams(settings, workers=1), Teams(settings, workers=2)
    try:
        assert isinstance(one.store, LocalCounters)
        assert isinstance(two.store.counters, SQLiteStore)
        checks = (Check("key:a", "spend", 1.0, 0.4, period="day:x"),)
        verdict = await one.store.counters.admit(checks, NOW)
        one.settle(Ticket(checks, verdict.grant, {}), tokens=0, cost=0.4)
        await one.flush()
        assert await two.store.counters.spent("key:a", "day:x") == pytest.approx(0.4)
    finally:
        await one.stop()
        await two.stop()

