"""Circuits and latencies shared between replicas through a real redis-server (gateway/failover/shared.py).

Two Health objects with their own clocks and their own HealthSync are two replicas; each sync call
here is the round trip the background task makes every 0.2 s, called directly so the order is exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.config.schema import BreakerPolicy
from gateway.failover.breaker import State
from gateway.failover.health import Health
from gateway.failover.shared import HealthSync
from gateway.state.redis import RedisConnection, Unavailable
from tests.conftest import FakeClock
from tests.fakes.servers import RedisServer

TARGET = "acme/m1"
POLICY = BreakerPolicy(failures=2, cooldown=30)


class Replica:
    def __init__(self, url: str, name: str) -> None:
        self.clock = FakeClock()
        self.health = Health(POLICY, self.clock)
        self.changes: list[tuple[str, State]] = []
        self.health.configure(POLICY, [TARGET, "acme/m2"], lambda key, state: self.changes.append((key, state)))
        self.connection = RedisConnection(url)
        self.sync = HealthSync(self.health, self.connection, origin=name)

    def fail(self, times: int) -> None:
        for _ in range(times):
            ticket = self.health.admit(TARGET)
            assert ticket is not None
            self.health.failed(ticket)


@pytest.fixture
async def replicas(redis_url: str) -> AsyncIterator[tuple[Replica, Replica]]:
    a, b = Replica(redis_url, "a"), Replica(redis_url, "b")
    await a.sync.sync_circuits()
    await b.sync.sync_circuits()
    yield a, b
    for replica in (a, b):
        await replica.sync.stop()
        await replica.connection.close()


async def synced_after_outage(replica: Replica) -> None:
    """A pooled connection from before the outage fails once more (the background task just tries
    again at its next turn): a bounded number of turns, as the task would take them."""
    for _ in range(3):
        try:
            await replica.sync.sync_circuits()
            return
        except Unavailable:
            continue
    raise AssertionError("Redis is back but the sync never went through")


async def test_a_circuit_opened_on_one_replica_opens_on_the_other(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    a.fail(2)
    assert a.health.state(TARGET) is State.OPEN
    assert b.health.admit(TARGET) is not None, "not shared before the sync"
    await a.sync.sync_circuits()
    await b.sync.sync_circuits()
    assert b.health.state(TARGET) is State.OPEN
    assert b.health.admit(TARGET) is None
    assert (TARGET, State.OPEN) in b.changes, "B's metrics hear of it like of a local opening"
    # B's clock differs from A's; the cooldown left travels, not A's clock reading.
    assert 29 < b.health.remaining([TARGET]) <= 30
    assert b.health.state("acme/m2") is State.CLOSED


async def test_a_peer_opening_is_not_published_back(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    a.fail(2)
    await a.sync.sync_circuits()
    await b.sync.sync_circuits()
    assert b.health.outbox == {}
    assert a.health.outbox == {}


async def test_half_open_by_time_on_both_and_a_probe_closes_it_everywhere(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    a.fail(2)
    await a.sync.sync_circuits()
    await b.sync.sync_circuits()
    for replica in (a, b):
        replica.clock.advance(30.5)
        replica.health.tick()
        assert replica.health.state(TARGET) is State.HALF_OPEN
    probe = a.health.admit(TARGET)
    assert probe is not None and probe.probe
    a.health.succeeded(probe)
    assert a.health.state(TARGET) is State.CLOSED
    await a.sync.sync_circuits()
    await b.sync.sync_circuits()
    assert b.health.state(TARGET) is State.CLOSED, "B closes on A's probe without sending its own"
    ticket = b.health.admit(TARGET)
    assert ticket is not None and not ticket.probe


async def test_a_failed_probe_reopens_it_on_the_other_replica(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    a.fail(2)
    await a.sync.sync_circuits()
    await b.sync.sync_circuits()
    for replica in (a, b):
        replica.clock.advance(31)
        replica.health.tick()
    probe = b.health.admit(TARGET)
    assert probe is not None
    b.health.failed(probe)
    await b.sync.sync_circuits()
    await a.sync.sync_circuits()
    assert a.health.state(TARGET) is State.OPEN
    assert 29 < a.health.remaining([TARGET]) <= 30


async def test_a_replica_started_later_learns_what_is_open(redis_url: str) -> None:
    a = Replica(redis_url, "a")
    a.fail(2)
    await a.sync.sync_circuits()
    late = Replica(redis_url, "late")
    await late.sync.sync_circuits()
    assert late.health.state(TARGET) is State.OPEN
    for replica in (a, late):
        await replica.connection.close()


async def test_latency_is_blended_across_replicas(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    a.health.latency.observe(TARGET, 0.4)
    a.health.latency.observe("acme/m2", 0.1)
    b.health.latency.observe(TARGET, 0.2)
    await a.sync.sync_stats()
    await b.sync.sync_stats()
    await a.sync.sync_stats()
    assert b.health.latency.get("acme/m2") == pytest.approx(0.1), "B ranks a target it never tried by A's time"
    assert b.health.latency.get(TARGET) == pytest.approx(0.3)
    assert a.health.latency.get(TARGET) == pytest.approx(0.3)
    assert b.health.latency.own() == {TARGET: 0.2}, "what B publishes stays its own measurement"


async def test_the_failure_ratio_counts_every_replicas_window(redis_url: str) -> None:
    policy = BreakerPolicy(failures=100, failure_ratio=0.5, min_requests=10, window=60, cooldown=30)
    a, b = Replica(redis_url, "a"), Replica(redis_url, "b")
    for replica in (a, b):
        replica.health.configure(policy, [TARGET], lambda key, state: None)
    for _ in range(6):  # A: 6 failures of 6, below min_requests alone
        a.fail(1)
    ticket = b.health.admit(TARGET)
    assert ticket is not None
    b.health.succeeded(ticket)  # B: 1 success
    assert a.health.state(TARGET) is State.CLOSED
    await a.sync.sync_stats()
    await b.sync.sync_stats()
    assert b.health.breaker(TARGET).peers == (6, 6)
    for _ in range(2):
        b.fail(1)  # B's 3rd outcome: 9 of 9 overall, still under min_requests=10
    assert b.health.state(TARGET) is State.CLOSED
    b.fail(1)  # 10 outcomes, 9 failed: the shared ratio opens it on B
    assert b.health.state(TARGET) is State.OPEN
    for replica in (a, b):
        await replica.connection.close()


async def test_redis_down_keeps_circuits_local_and_republishes_when_back(
        redis_server: RedisServer, replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    await redis_server.akill()
    a.fail(2)
    with pytest.raises(Unavailable):
        await a.sync.sync_circuits()
    assert a.health.state(TARGET) is State.OPEN, "the local circuit works without Redis"
    assert a.health.admit(TARGET) is None
    assert not a.connection.up
    await redis_server.astart()  # back, and empty (no persistence)
    await synced_after_outage(a)
    await synced_after_outage(b)
    assert a.connection.up
    assert b.health.state(TARGET) is State.OPEN, "A told the empty Redis what is open on its side"




async def test_news_arriving_with_a_cancel_does_not_swallow_the_cancel() -> None:
    """A deploy must not hang on shutdown. stop() cancels the background task; when a circuit change
    was announced in that same loop turn, asyncio.wait_for returned the wait's result instead of
    raising (cpython gh-86296), the task went on syncing, and stop() waited for it forever."""
    replica = Replica("redis://127.0.0.1:1/0", "a")  # nothing listens: no round trip is made here
    waiting = asyncio.create_task(replica.sync.news_or_tick())
    for _ in range(100):  # until it waits (polling pace)
        if replica.sync._news._waiters:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.001)
    replica.health.wake()  # news, and in the same turn the cancel
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await replica.connection.close()


async def test_stop_ends_the_task_when_news_arrives_in_the_same_loop_turn(replicas: tuple[Replica, Replica]) -> None:
    """A circuit changing just as the gateway shuts down, through the real task: stop()'s one cancel can
    land in the next round trip and be lost in the Redis client (this test fails with news_or_tick's
    fix alone), the task loops on and the shutdown never ends. stop() cancels until the task has ended."""
    a, _ = replicas
    a.sync.start()
    await asyncio.sleep(0.1)  # the task spends all but one round trip of each 0.2 s in its wait
    a.health.wake()  # news, and stop()'s cancel before the task has woken for it
    stopping = asyncio.ensure_future(a.sync.stop())
    done, _ = await asyncio.wait({stopping}, timeout=5)
    assert done, "stop() never ended: the sync task swallowed its cancel and went on"
