"""The Redis counters' fallback against a real redis-server that is killed and restarted: each replica's
share of a limit while Redis is down, and no spend lost to the outage, even when Redis comes back empty."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.errors import LimitsUnavailable
from gateway.state.fallback import FallbackCounters
from gateway.state.redis import RedisConnection
from gateway.state.redis_counters import RedisCounters
from gateway.state.store import Check, Settlement
from tests.fakes.servers import RedisServer

NOW = 1_800_000_000.0
SPEND = Check("key:a", "spend", 1.0, 0.3, period="day:x", expires=NOW + 600)


class Clock:
    """The connection's back-off clock, moved by hand: no test waits for a probe."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def pair(redis_url: str, redis_server: RedisServer) -> AsyncIterator[tuple[FallbackCounters, Clock]]:
    """A replica's counters and its clock, with a second replica's heartbeat in the registry."""
    clock = Clock()
    other = RedisConnection(redis_url)
    await RedisCounters(other).settle([])
    await other.close()
    store = FallbackCounters(RedisCounters(RedisConnection(redis_url, clock=clock)), "open", clock=clock)
    await store.settle([])
    assert store.remote.replicas == 2
    yield store, clock
    await store.close()
    redis_server.ensure_running()


async def recover(store: FallbackCounters, clock: Clock, server: RedisServer) -> None:
    await server.astart()
    clock.now += 10  # past the back-off and the heartbeat interval
    await store.settle([])
    assert store.connection.up


async def test_while_redis_is_down_each_replica_enforces_its_share(pair: tuple[FallbackCounters, Clock],
                                                                   redis_server: RedisServer) -> None:
    store, _ = pair
    assert (await store.admit([SPEND], NOW)).granted  # Redis has 0.3 reserved: the replica saw it
    await redis_server.akill()
    rpm = [Check("key:a", "requests", 10, 1)]
    assert sum([(await store.admit(rpm, NOW)).granted for _ in range(10)]) == 5  # 10 / 2 replicas
    slots = [Check("key:a", "concurrency", 3, 1)]
    assert sum([(await store.admit(slots, NOW)).granted for _ in range(3)]) == 1  # 3 // 2
    # The budget's remainder when Redis went down, 1.0 - 0.3 in flight, split in two: 0.35 for this
    # replica, which admits while its reservations are below that (0, then 0.3), then refuses.
    assert [(await store.admit([SPEND], NOW)).granted for _ in range(3)] == [True, True, False]
    assert not store.connection.up


async def test_on_failure_closed_refuses_while_redis_is_down(redis_url: str, redis_server: RedisServer) -> None:
    store = FallbackCounters(RedisCounters(RedisConnection(redis_url)), "closed")
    try:
        assert (await store.admit([Check("key:a", "requests", 10, 1)], NOW)).granted
        await redis_server.akill()
        with pytest.raises(LimitsUnavailable) as refused:
            await store.admit([Check("key:a", "requests", 10, 1)], NOW)
        assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "1"}
    finally:
        await store.close()
        redis_server.ensure_running()


async def test_no_spend_is_lost_to_an_outage_even_when_redis_comes_back_empty(
        pair: tuple[FallbackCounters, Clock], redis_server: RedisServer) -> None:
    store, clock = pair
    before = await store.admit([SPEND], NOW)
    await store.settle([Settlement((SPEND,), (0.25,), before.grant, NOW)])
    assert await store.spent("key:a", "day:x") == pytest.approx(0.25)
    during = await store.admit([SPEND], NOW)  # granted by Redis, settled after it died
    await redis_server.akill()
    local = await store.admit([SPEND], NOW)  # granted on this replica's share
    assert local.granted
    await store.settle([Settlement((SPEND,), (0.1,), during.grant, NOW),
                        Settlement((SPEND,), (0.05,), local.grant, NOW)])
    assert await store.spent("key:a", "day:x") == pytest.approx(0.25 + 0.05)  # what it knows, meanwhile
    await recover(store, clock, redis_server)  # restarted without persistence: empty
    # Re-seeded with the 0.25 it had seen, plus the settlement Redis missed and the spend made locally.
    assert await store.spent("key:a", "day:x") == pytest.approx(0.25 + 0.1 + 0.05)
    assert (await store.admit([SPEND], NOW)).granted  # Redis decides again
