"""Two gateway replicas sharing circuits through a real redis-server (`state.backend: redis`).

Each in-process gateway has its own Health, clock and state store: two replicas, as two pods would
be. Their background syncs run on real time (every 0.2 s); the tests wait for what a client could
observe with bounded polling, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.failover.breaker import State
from tests.conftest import FAST_POLICY, FakeClock, GatewayFactory, RunningGateway, model_json, provider_json
from tests.fakes.servers import RedisServer
from tests.fakes.upstream import FakeUpstream, ok, server_error

BAD, GOOD = "bad/m1", "good/m1"
ASK = {"model": "pair", "messages": [{"role": "user", "content": "hi"}]}
COOLDOWN = 30


async def replica(start_gateway: GatewayFactory, tmp_path: Path, name: str, redis_url: str,
                  bad: FakeUpstream, good: FakeUpstream) -> tuple[RunningGateway, FakeClock]:
    clock = FakeClock()
    config: dict[str, Any] = {
        **FAST_POLICY, "retry": {**FAST_POLICY["retry"], "attempts": 1},
        "breaker": {"failures": 2, "cooldown": COOLDOWN},
        "models": {"pair": {"targets": [BAD], "fallbacks": [GOOD]}},
        "state": {"backend": "redis", "redis_url": redis_url, "path": str(tmp_path / f"{name}.db")},
    }
    catalogs = [provider_json("bad", bad.base_url, [model_json("m1")]),
                provider_json("good", good.base_url, [model_json("m1")])]
    gw = await start_gateway(config, catalogs=catalogs, environ={"BAD_API_KEY": "k-bad", "GOOD_API_KEY": "k-good"},
                             clock=clock)
    return gw, clock


async def until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll what a client could observe; the syncs run every 0.2 s, so this returns well before the bound."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.02)


async def served_by_good(gw: RunningGateway) -> None:
    response = await gw.chat(ASK)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "good answer"


async def test_failures_through_a_open_the_circuit_on_b(start_gateway: GatewayFactory, tmp_path: Path,
                                                        redis_url: str) -> None:
    async with FakeUpstream() as bad, FakeUpstream() as good:
        bad.default, good.default = server_error(500), ok("good answer")
        a, clock_a = await replica(start_gateway, tmp_path, "a", redis_url, bad, good)
        b, clock_b = await replica(start_gateway, tmp_path, "b", redis_url, bad, good)
        for _ in range(2):
            await served_by_good(a)
        assert len(bad.received) == 2
        assert a.app.health.state(BAD) is State.OPEN
        await until(lambda: b.app.health.state(BAD) is State.OPEN, "B sees A's circuit open")
        for _ in range(3):
            await served_by_good(b)
        assert len(bad.received) == 2, "B skipped the target A found failing"
        assert len(good.received) == 5

        # The cooldown passes on both; A's probe succeeds and closes the circuit on B too.
        bad.default = ok("bad is back")
        for clock in (clock_a, clock_b):
            clock.advance(COOLDOWN + 1)
        response = await a.chat(ASK)
        assert response.json()["choices"][0]["message"]["content"] == "bad is back"
        assert a.app.health.state(BAD) is State.CLOSED
        await until(lambda: b.app.health.state(BAD) is State.CLOSED, "B sees A's probe close the circuit")
        assert len(bad.received) == 3, "B sent no probe of its own"
        response = await b.chat(ASK)
        assert response.json()["choices"][0]["message"]["content"] == "bad is back"


async def test_redis_killed_both_keep_serving_on_local_circuits(
        start_gateway: GatewayFactory, tmp_path: Path, redis_server: RedisServer, redis_url: str) -> None:
    async with FakeUpstream() as bad, FakeUpstream() as good:
        bad.default, good.default = server_error(500), ok("good answer")
        a, _ = await replica(start_gateway, tmp_path, "a", redis_url, bad, good)
        b, _ = await replica(start_gateway, tmp_path, "b", redis_url, bad, good)
        await redis_server.akill()
        for _ in range(2):
            await served_by_good(a)
        assert a.app.health.state(BAD) is State.OPEN, "A's own circuit works without Redis"
        await served_by_good(b)  # B still tries the target: nothing told it, and it fails over
        assert len(bad.received) == 3
        assert b.app.health.state(BAD) is State.CLOSED

        await redis_server.astart()  # back, empty: A publishes what is open on its side
        await until(lambda: b.app.health.state(BAD) is State.OPEN, "B learns of A's circuit once Redis is back",
                    timeout=15)  # both connections wait out their back-off (up to 2 s each) first
        await served_by_good(b)
        assert len(bad.received) == 3
