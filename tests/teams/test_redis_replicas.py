"""Two gateways sharing limits and budgets over a real redis-server, each with its own SQLite file (keys
and ledger): exact shared limits, a shared budget and concurrency, and Redis killed under load (open:
per-replica shares; closed: 503 for limited requests), then back, shared again, without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from gateway.state.fallback import FallbackCounters
from tests.conftest import (
    FAST_POLICY,
    GatewayFactory,
    GatewayProcess,
    RunningGateway,
    model_json,
    provider_json,
    secret,
)
from tests.fakes.servers import RedisServer
from tests.fakes.upstream import FakeUpstream, chunk, ok, stall, stream

KEY = "team-key-redis-0123456789abcdef"
FREE_KEY = "free-key-redis-0123456789abcdef"
SOLO_KEY = "solo-key-redis-0123456789abcdef"  # rpm 10, used only where a test says
BODY: dict[str, Any] = {"model": "acme/m1", "messages": [{"role": "user", "content": "hi"}]}
NOW = 1_800_000_000.0  # every gateway's Teams clock, held still: no bucket drains during a test


async def replicas(start_gateway: GatewayFactory, tmp_path: Path, up: FakeUpstream, redis_url: str,
                   limits: dict[str, Any], **state: Any) -> list[RunningGateway]:
    """Two gateways on one Redis; each keeps its keys and ledger in its own SQLite file."""
    catalog = provider_json("acme", up.base_url, [model_json("m1", output=1000)])
    environ = {"ACME_API_KEY": "sk-acme", "TEAM_KEY": secret(KEY), "FREE_KEY": secret(FREE_KEY),
               "SOLO_KEY": secret(SOLO_KEY), "REDIS_URL": redis_url}
    auth = {"keys": [{"name": "team", "key": "${TEAM_KEY}", "limits": limits},
                     {"name": "free", "key": "${FREE_KEY}"},
                     {"name": "solo", "key": "${SOLO_KEY}", "limits": {"rpm": 10}}]}
    gateways = []
    for name in ("a", "b"):
        config = {**FAST_POLICY, "auth": auth, "state": {
            "backend": "redis", "redis_url": "${REDIS_URL}", "path": str(tmp_path / f"{name}.db"), **state}}
        gw = await start_gateway(config, catalogs=[catalog], environ=environ)
        gw.client.headers["authorization"] = f"Bearer {KEY}"
        gw.app.teams.clock = lambda: NOW
        gateways.append(gw)
    await until(lambda: all(counters(gw).remote.replicas == 2 for gw in gateways), gateways)
    return gateways


def counters(gw: RunningGateway) -> FallbackCounters:
    store = gw.app.teams.store.counters
    assert isinstance(store, FallbackCounters)
    return store


async def until(condition: Any, gateways: list[RunningGateway], seconds: float = 15.0) -> None:
    """Flush (settle + heartbeat) every gateway until `condition()` holds; bounded in time."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition never held")
        for gw in gateways:
            await gw.app.teams.flush()
        await asyncio.sleep(0.02)


async def spread(gateways: list[RunningGateway], count: int, body: dict[str, Any] = BODY,
                 **kwargs: Any) -> list[httpx.Response]:
    return list(await asyncio.gather(*(gateways[i % 2].chat(body, **kwargs) for i in range(count))))


async def test_an_rpm_limit_of_10_holds_across_two_replicas(start_gateway: GatewayFactory, tmp_path: Path,
                                                            redis_url: str) -> None:
    async with FakeUpstream() as up:
        gateways = await replicas(start_gateway, tmp_path, up, redis_url, {"rpm": 10})
        answers = await spread(gateways, 30)
        assert sorted(a.status_code for a in answers) == [200] * 10 + [429] * 20
        for answer in answers:
            assert answer.headers["x-ratelimit-limit-requests"] == "10"
            if answer.status_code == 429:
                assert answer.json()["error"]["code"] == "rate_limit_exceeded"
                assert int(answer.headers["retry-after"]) >= 1
                assert answer.headers["x-ratelimit-remaining-requests"] == "0"
        assert len(up.received) == 10
        # Both replicas served: the limit is the team's, not each replica's.
        assert {gateways.index(g) for g, a in zip(gateways * 15, answers, strict=True) if a.status_code == 200} \
            == {0, 1}


async def test_two_gateway_processes_share_an_rpm_limit_of_10(tmp_path: Path, redis_url: str) -> None:
    """The same as real replicas: two `gateway serve` processes, each its own state file, one Redis."""
    async with FakeUpstream() as up:
        catalog = tmp_path / "acme.json"
        catalog.write_bytes(orjson.dumps(provider_json("acme", up.base_url, [model_json("m1")])))
        environ = {**os.environ, "ACME_API_KEY": "sk-acme", "TEAM_KEY": secret(KEY), "REDIS_URL": redis_url}
        processes = []
        try:
            for name in ("a", "b"):
                config = tmp_path / f"{name}.yaml"
                config.write_text(yaml.safe_dump({
                    "catalog": [str(catalog)], "retry": {"attempts": 1},
                    "auth": {"keys": [{"name": "team", "key": "${TEAM_KEY}", "limits": {"rpm": 10}}]},
                    "state": {"backend": "redis", "redis_url": "${REDIS_URL}", "path": f"{name}.db"}}))
                processes.append(GatewayProcess(["--config", str(config)], environ))

            async def one(index: int) -> httpx.Response:
                async with httpx.AsyncClient(base_url=processes[index % 2].url, timeout=30) as client:
                    return await client.post("/v1/chat/completions", json=BODY,
                                             headers={"authorization": f"Bearer {KEY}"})

            started = time.monotonic()
            answers = await asyncio.gather(*(one(i) for i in range(30)))
            span = time.monotonic() - started
        finally:
            for process in processes:
                process.stop()
        statuses = sorted(a.status_code for a in answers)
        assert set(statuses) <= {200, 429}, statuses
        # The bucket refills continuously (10 a minute): exactly 10 unless the 30 took 6 s or more on a
        # loaded machine, in which case one more per 6 s is right, never more.
        admitted = statuses.count(200)
        assert 10 <= admitted <= 10 + int(span * 10 / 60), (admitted, span)
        assert all(a.headers["x-ratelimit-limit-requests"] == "10" for a in answers)
        assert len(up.received) == admitted


async def test_a_budget_is_shared_and_overshoots_by_at_most_the_in_flight_reservations(
        start_gateway: GatewayFactory, tmp_path: Path, redis_url: str) -> None:
    async with FakeUpstream() as up:
        # m1 costs $1 / $2 per million tokens in and out: each answer costs 1000 in + 1000 out = $0.003.
        up.default = ok("x", usage={"prompt_tokens": 1000, "completion_tokens": 1000, "total_tokens": 2000})
        gateways = await replicas(start_gateway, tmp_path, up, redis_url, {"budget_usd": 0.01, "period": "day"})
        body = {**BODY, "max_tokens": 1000}
        worst = ((len(orjson.dumps(body)) // 4 + 1) * 1.0 + 1000 * 2.0) / 1e6
        served = 0
        for _ in range(5):
            answers = await spread(gateways, 4, body)
            served += sum(a.status_code == 200 for a in answers)
            for gw in gateways:
                await gw.app.teams.flush()  # settle: the real cost replaces the reservation
        spent = served * 0.003
        assert 0.01 <= spent <= 0.01 + 4 * worst  # spent up to the budget, beyond by at most one round in flight
        for gw in gateways:  # each replica refuses now, whichever served the spend
            refused = await gw.chat(body)
            assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota"
            shown = (await gw.app.teams.spent("key:team", "day"))[0]
            assert shown == pytest.approx(spent)


async def test_a_concurrency_limit_across_replicas(start_gateway: GatewayFactory, tmp_path: Path,
                                                   redis_url: str, redis_server: RedisServer) -> None:
    async with FakeUpstream() as up:
        up.default = stream([chunk(role="assistant", content=""), chunk(content="held"), stall()])
        a, b = await replicas(start_gateway, tmp_path, up, redis_url, {"concurrency": 2})
        body = {**BODY, "stream": True}
        async with contextlib.AsyncExitStack() as held:
            for gw in (a, b):  # one stream in flight through each replica
                response = await held.enter_async_context(gw.client.stream("POST", "/v1/chat/completions", json=body))
                chunks = response.aiter_raw()
                held.push_async_callback(chunks.aclose)  # kept referenced: a dropped iterator closes the stream
                assert response.status_code == 200 and await anext(chunks)
            for gw in (a, b):
                third = await gw.chat(body)
                assert third.status_code == 429 and "2 concurrent requests" in third.json()["error"]["message"]
        up.default = ok()
        # The slots come free once each replica has seen its stream end and settled it in Redis.
        await until(lambda: redis_server.command("ZCARD", "{gateway}:inflight:key:team") == b":0", [a, b])
        answers = [await gw.chat(body) for gw in (a, b)]
        assert [r.status_code for r in answers] == [200, 200]


def backend_up(text: str) -> float:
    return next(float(line.split()[-1]) for line in text.splitlines()
                if line.startswith('gateway_state_backend_up{backend="redis"}'))


async def test_redis_killed_under_load_degrades_to_shares_and_recovers(
        start_gateway: GatewayFactory, tmp_path: Path, redis_url: str, redis_server: RedisServer) -> None:
    async with FakeUpstream() as up:
        gateways = await replicas(start_gateway, tmp_path, up, redis_url, {"rpm": 1000})
        free = {"authorization": f"Bearer {FREE_KEY}"}
        try:
            # Under load (limited and unlimited requests, both replicas), Redis dies after the 10th answer:
            # no request fails because of it.
            tenth = asyncio.Event()

            async def load() -> list[int]:
                statuses = []
                for i in range(40):
                    answer = await gateways[i % 2].chat(BODY, headers=free if i % 4 >= 2 else {})
                    statuses.append(answer.status_code)
                    if i == 9:
                        tenth.set()
                return statuses

            async def kill() -> None:
                await tenth.wait()
                await redis_server.akill()

            statuses, _ = await asyncio.gather(load(), kill())
            assert statuses == [200] * 40
            assert not any(counters(gw).connection.up for gw in gateways)
            statuses = await asyncio.gather(*(gw.client.get("/readyz") for gw in gateways))
            assert [s.status_code for s in statuses] == [200, 200]
            # Degraded: each replica alone enforces its share of a limit, 10 / 2 live replicas.
            solo = {"authorization": f"Bearer {SOLO_KEY}"}
            for gw in gateways:
                answers = [await gw.chat(BODY, headers=solo) for _ in range(10)]
                assert Counter(a.status_code for a in answers) == {200: 5, 429: 5}
                assert not counters(gw).connection.up
            assert backend_up((await gateways[0].client.get("/metrics")).text) == 0
            unlimited = await spread(gateways, 4, headers=free)
            assert [a.status_code for a in unlimited] == [200] * 4
        finally:
            await redis_server.astart()
        # Back: every replica reconnects on its own (no restart) and the limit is shared again. This
        # Redis restarted empty, so the bucket starts empty: exactly 10 of 30 pass.
        await until(lambda: all(counters(gw).connection.up for gw in gateways), gateways)
        assert backend_up((await gateways[1].client.get("/metrics")).text) == 1
        answers = await spread(gateways, 30, headers=solo)
        assert sorted(a.status_code for a in answers) == [200] * 10 + [429] * 20


async def test_on_failure_closed_refuses_limited_requests_while_redis_is_down(
        start_gateway: GatewayFactory, tmp_path: Path, redis_url: str, redis_server: RedisServer) -> None:
    async with FakeUpstream() as up:
        gateways = await replicas(start_gateway, tmp_path, up, redis_url, {"rpm": 100}, on_failure="closed")
        assert [a.status_code for a in await spread(gateways, 2)] == [200, 200]
        free = {"authorization": f"Bearer {FREE_KEY}"}
        await redis_server.akill()
        try:
            for gw in gateways:
                refused = await gw.chat(BODY)
                assert refused.status_code == 503, refused.text
                error = refused.json()["error"]
                assert error["type"] == "service_unavailable" and error["code"] == "limits_unavailable"
                assert "state.on_failure: closed" in error["message"]
                assert refused.headers["retry-after"] == "1"
                assert (await gw.chat(BODY, headers=free)).status_code == 200  # no limit: Redis is not asked
        finally:
            await redis_server.astart()
        await until(lambda: all(counters(gw).connection.up for gw in gateways), gateways)
        assert [a.status_code for a in await spread(gateways, 2)] == [200, 200]
        assert len(up.received) == 2 + 2 + 2
