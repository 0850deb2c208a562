"""The Redis counters against a real redis-server: the contract of gateway.state.store (atomic
admission, draining buckets, holds, spend by period, batched settlement), expiry of a dead replica's
holds, the replica registry, and what a Redis failure looks like to the caller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.state.redis import RedisConnection, Unavailable
from gateway.state.redis_counters import RedisCounters, Spend
from gateway.state.store import Check, Settlement
from tests.fakes.servers import RedisServer

NOW = 1_800_000_000.0


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisCounters]:
    connection = RedisConnection(redis_url)
    yield RedisCounters(connection)
    await connection.close()


async def test_admission_is_all_or_nothing_and_reports_the_refusing_check(store: RedisCounters) -> None:
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


async def test_buckets_drain_continuously_and_a_large_amount_passes_only_into_an_empty_one(
        store: RedisCounters) -> None:
    rpm = [Check("key:b", "requests", 6, 1)]  # one request frees every 10 s
    for _ in range(6):
        assert (await store.admit(rpm, NOW)).granted
    refused = await store.admit(rpm, NOW)
    assert not refused.granted and refused.retry_after == pytest.approx(10)
    assert (await store.admit(rpm, NOW + 10)).granted
    huge = [Check("key:b", "tokens", 100, 250)]
    assert (await store.admit(huge, NOW)).granted  # an empty bucket takes it, so it is never refused forever
    assert not (await store.admit([Check("key:b", "tokens", 100, 1)], NOW)).granted


async def test_reservations_hold_until_settled_and_a_dead_replicas_expire(redis_url: str) -> None:
    one, two = RedisConnection(redis_url), RedisConnection(redis_url)
    store, other = RedisCounters(one), RedisCounters(two)
    try:
        checks = (Check("key:a", "concurrency", 1, 1, expires=NOW + 30),
                  Check("key:a", "spend", 1.0, 0.7, period="day:x", expires=NOW + 30))
        assert (await other.admit(checks, NOW)).granted
        assert not (await store.admit(checks, NOW)).granted  # the other replica's request is in flight
        # The other replica dies without settling: its holds stop counting when they expire.
        assert not (await store.admit(checks, NOW + 29)).granted
        later = tuple(Check(c.scope, c.kind, c.limit, c.amount, c.period, NOW + 60) for c in checks)
        first = await store.admit(later, NOW + 31)
        assert first.granted
        await store.settle([Settlement(later, (1, 0.4), first.grant, NOW + 31)])
        assert await store.spent("key:a", "day:x") == pytest.approx(0.4)
        again = await store.admit(later, NOW + 31)
        assert again.granted  # 0.4 spent < 1.0: admitted, reserving 0.7 (overshoot bounded by it)
        assert not (await store.admit((later[1],), NOW + 31)).granted  # 0.4 + 0.7 reserved >= 1.0
        await store.settle([Settlement(later, (1, 0.7), again.grant, NOW + 31)])
        assert await store.spent("key:a", "day:x") == pytest.approx(1.1)
        assert not (await store.admit((later[1],), NOW + 31)).granted
        other_day = Check("key:a", "spend", 1.0, 0.7, period="day:y", expires=NOW + 60)
        assert (await store.admit((other_day,), NOW + 31)).granted
    finally:
        await one.close()
        await two.close()


async def test_concurrent_admissions_share_one_limit_exactly(redis_url: str) -> None:
    # 90 calls at once open up to 30 connections each: on a loaded machine that can outlast the 0.5 s a
    # request waits for Redis, which is the fallback's business, not this test's.
    connections = [RedisConnection(redis_url, timeout=10) for _ in range(3)]
    stores = [RedisCounters(c) for c in connections]
    try:
        check = [Check("key:shared", "requests", 25, 1)]
        verdicts = await asyncio.gather(*(stores[i % 3].admit(check, NOW) for i in range(90)))
        assert sum(v.granted for v in verdicts) == 25
    finally:
        for connection in connections:
            await connection.close()


async def test_settlement_batches_are_the_heartbeat_and_count_live_replicas(redis_url: str) -> None:
    connections = [RedisConnection(redis_url) for _ in range(3)]
    stores = [RedisCounters(c) for c in connections]
    try:
        for store in stores:
            await store.settle([])
        assert stores[0].fresh  # the first ever to write found no epoch marker
        await stores[0].settle([])
        assert stores[0].replicas == 3 and not stores[0].fresh
        await stores[2].leave()  # a clean exit: the others count one less at their next heartbeat
        await stores[0].settle([])
        assert stores[0].replicas == 2
    finally:
        for connection in connections:
            await connection.close()


async def test_floors_reseed_an_emptied_redis_and_owed_spend_is_added(store: RedisCounters,
                                                                      redis_server: RedisServer) -> None:
    await store.settle([], owed=[Spend("key:a", "month:2026-12", 2.5)])
    assert await store.spent("key:a", "month:2026-12") == pytest.approx(2.5)
    await store.settle([], floors=[Spend("key:a", "month:2026-12", 2.0)])  # never lowers a total
    assert await store.spent("key:a", "month:2026-12") == pytest.approx(2.5)
    redis_server.flushall()  # as a restart without persistence leaves it
    await store.settle([])
    assert store.fresh
    await store.settle([], floors=[Spend("key:a", "month:2026-12", 2.5)])
    assert await store.spent("key:a", "month:2026-12") == pytest.approx(2.5)


async def test_a_dead_redis_raises_unavailable_and_a_probe_brings_it_back(redis_server: RedisServer,
                                                                          redis_url: str) -> None:
    clock = [0.0]
    connection = RedisConnection(redis_url, clock=lambda: clock[0])
    store = RedisCounters(connection)
    try:
        check = [Check("key:c", "requests", 10, 1)]
        assert (await store.admit(check, NOW)).granted
        await redis_server.akill()
        with pytest.raises(Unavailable, match=r"Redis at redis://127\.0\.0\.1"):
            await store.admit(check, NOW)
        assert not connection.up and not connection.probe_due
        with pytest.raises(Unavailable):  # another call that was in flight: the back-off is not doubled
            await store.settle([])
        clock[0] += 0.31  # the first back-off: 0.25 s, +-20 % jitter
        assert connection.probe_due
        with pytest.raises(Unavailable):  # a failed probe doubles it
            await store.settle([])
        clock[0] += 0.35  # less than 0.5 s - 20 %
        assert not connection.probe_due
        clock[0] += 0.3  # more than 0.5 s + 20 %
        assert connection.probe_due
        await redis_server.astart()
        await store.settle([])
        assert connection.up
        assert (await store.admit(check, NOW)).granted
    finally:
        await connection.close()
        redis_server.ensure_running()
