"""The PostgreSQL keys and ledger against a real server: migrations under a crowd, the same usage
answers as SQLite, keys, pruning, and a ledger queue that survives the server going away."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway import metrics
from gateway.errors import ConfigError
from gateway.state import pg_schema
from gateway.state.postgres import PostgresStore
from gateway.state.sqlite import SQLiteStore
from gateway.state.store import KeyExists, KeyMissing, KeyRecord, LedgerRow, LimitSettings, StateUnavailable, UsageQuery
from gateway.teams import manage
from tests.fakes.servers import PostgresServer

DAY = 86400.0
NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC


def row(at: float, key: str, *, request_id: str = "r", provider: str | None = "p", status: int = 200,
        tokens: tuple[int, int, int, int] = (10, 5, 0, 0), cost: float | None = 0.01) -> LedgerRow:
    return LedgerRow(at=at, request_id=request_id, key=key, model="m", provider=provider, served_model="p/m",
                     status=status, error_type=None if status < 400 else "bad_request", input_tokens=tokens[0],
                     output_tokens=tokens[1], cached_tokens=tokens[2], reasoning_tokens=tokens[3], cost_usd=cost,
                     duration_ms=1.0, ttft_ms=None, attempts=1, fallbacks=0)


async def until(predicate: Callable[[], Awaitable[bool]], what: str, bound: float = 10.0) -> None:
    deadline = time.monotonic() + bound
    while not await predicate():
        assert time.monotonic() < deadline, f"not within {bound} s: {what}"
        await asyncio.sleep(0.02)


def metric(name: str, labels: str = "") -> float:
    for line in metrics.render(None)[0].decode().splitlines():
        if line.startswith(f"{name}{labels} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def count_rows(url: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM gateway_ledger"))
    finally:
        await connection.close()


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[PostgresStore]:
    opened = PostgresStore(postgres_url, queue_rows=1000)
    yield opened
    await opened.close()


async def test_ten_replicas_opening_one_fresh_database_apply_each_migration_once(
        postgres_url: str) -> None:
    url = postgres_url
    stores = [PostgresStore(url, queue_rows=10) for _ in range(10)]
    try:
        # Ten pools connecting at once, each bringing the schema up to date under the advisory lock.
        assert await asyncio.gather(*(s.keys.keys_generation() for s in stores)) == [0] * 10
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    connection = await asyncpg.connect(url)
    try:
        applied = [r[0] for r in await connection.fetch("SELECT version FROM gateway_schema ORDER BY version")]
        assert applied == list(range(1, len(pg_schema.MIGRATIONS) + 1))
        assert await connection.fetchval("SELECT count(*) FROM gateway_meta") == 1
    finally:
        await connection.close()


async def test_a_database_written_by_a_newer_gateway_is_refused(postgres_url: str) -> None:
    url = postgres_url
    first = PostgresStore(url, queue_rows=10)
    await first.keys.keys_generation()
    await first.close()
    connection = await asyncpg.connect(url)
    await connection.execute("INSERT INTO gateway_schema (version) VALUES (99)")
    await connection.close()
    later = PostgresStore(url, queue_rows=10)
    try:
        with pytest.raises(ConfigError, match=r"state.ledger: .* newer gateway \(schema 99"):
            await later.keys.keys_generation()
    finally:
        await later.close()


async def test_keys_round_trip_and_every_change_moves_the_generation(store: PostgresStore) -> None:
    record = KeyRecord("team-a", b"\x01" * 32, "gwk-abcd", NOW, models=("echo/*",),
                       limits=LimitSettings(rpm=10, budget_usd=5.0, period="day"), metadata={"team": "a"})
    await store.keys.create_key(record)
    assert await store.keys.get_key("team-a") == record
    assert await store.keys.get_key("nobody") is None
    with pytest.raises(KeyExists):
        await store.keys.create_key(record)
    revoked = KeyRecord("team-a", b"\x01" * 32, "gwk-abcd", NOW, revoked_at=NOW + 1, updated_at=NOW + 1)
    await store.keys.update_key(revoked)
    assert await store.keys.list_keys() == [revoked]
    with pytest.raises(KeyMissing):
        await store.keys.update_key(KeyRecord("nobody", b"\x02" * 32, "gwk-x", NOW))
    assert await store.keys.keys_generation() == 2  # the failed create and update moved nothing


# One set of rows, one expectation, both backends: `gateway usage` and /admin/usage must not care.
ROWS = [
    row(NOW - 2 * DAY, "team-b", provider=None, status=500, tokens=(7, 0, 0, 0), cost=None),
    row(NOW - DAY, "team-a", tokens=(100, 50, 20, 10), cost=0.25),
    row(NOW - DAY + 1, "Team-c", status=429, tokens=(0, 0, 0, 0), cost=0.0),
    row(NOW, "team-a", provider="q", tokens=(1, 2, 3, 4), cost=0.125),
    row(NOW + 1, "team-b", status=499, cost=0.5),
]
EXPECTED: dict[str, list[tuple[Any, ...]]] = {  # (group, requests, errors, in, out, cached, reasoning, cost)
    "key": [("Team-c", 1, 1, 0, 0, 0, 0, 0.0), ("team-a", 2, 0, 101, 52, 23, 14, 0.375),
            ("team-b", 2, 2, 17, 5, 0, 0, 0.5)],
    "provider": [("-", 1, 1, 7, 0, 0, 0, 0.0), ("p", 3, 2, 110, 55, 20, 10, 0.75), ("q", 1, 0, 1, 2, 3, 4, 0.125)],
    "day": [("2027-01-13", 1, 1, 7, 0, 0, 0, 0.0), ("2027-01-14", 2, 1, 100, 50, 20, 10, 0.25),
            ("2027-01-15", 2, 1, 11, 7, 3, 4, 0.625)],
    "status": [("200", 2, 0, 101, 52, 23, 14, 0.375), ("429", 1, 1, 0, 0, 0, 0, 0.0),
               ("499", 1, 1, 10, 5, 0, 0, 0.5), ("500", 1, 1, 7, 0, 0, 0, 0.0)],
    "model": [("m", 5, 3, 118, 57, 23, 14, 0.875)],
}


def _as_tuples(rows: list[dict[str, Any]], by: str) -> list[tuple[Any, ...]]:
    return [(r[by], r["requests"], r["errors"], r["input_tokens"], r["output_tokens"], r["cached_tokens"],
             r["reasoning_tokens"], r["cost_usd"]) for r in rows]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_usage_answers_are_the_same_on_both_backends(backend: str, tmp_path: Path,
                                                           postgres_url: str) -> None:
    store: Any = SQLiteStore(str(tmp_path / "state.db")) if backend == "sqlite" else PostgresStore(
        postgres_url, queue_rows=100)
    try:
        await store.ledger.append(ROWS)
        if backend == "postgresql":
            await until(lambda: _queue_empty(store), "the rows are written")
        for by, expected in EXPECTED.items():
            answer = await manage.usage(store, UsageQuery(NOW - 10 * DAY, NOW + DAY, by))  # type: ignore[arg-type]
            assert _as_tuples(answer, by) == expected, by
        window = await manage.usage(store, UsageQuery(NOW - DAY, NOW + 1, "key"))  # `until` is exclusive
        assert _as_tuples(window, "key") == [("Team-c", 1, 1, 0, 0, 0, 0, 0.0),
                                             ("team-a", 2, 0, 101, 52, 23, 14, 0.375)]
        one_key = await manage.usage(store, UsageQuery(NOW - 10 * DAY, NOW + DAY, "day", "team-b"))
        assert _as_tuples(one_key, "day") == [("2027-01-13", 1, 1, 7, 0, 0, 0, 0.0),
                                             ("2027-01-15", 1, 1, 10, 5, 0, 0, 0.5)]
        assert await store.ledger.prune(NOW - DAY + 1) == 2  # retention: strictly older rows go
        left = await manage.usage(store, UsageQuery(0, NOW + DAY, "model"))
        assert _as_tuples(left, "model") == [("m", 3, 2, 11, 7, 3, 4, 0.625)]
    finally:
        await store.close()


async def _queue_empty(store: PostgresStore) -> bool:
    return store.ledger.queued == 0


async def test_rows_queue_while_the_server_is_down_and_none_is_lost_up_to_the_bound(
        postgres_server: PostgresServer, postgres_url: str) -> None:
    url = postgres_url
    store = PostgresStore(url, queue_rows=50)
    dropped = metric("gateway_ledger_rows_dropped_total")
    try:
        await store.ledger.append([row(NOW, "k", request_id=f"before-{i}") for i in range(10)])
        await until(lambda: _queue_empty(store), "written while the server is up")
        assert metric("gateway_state_backend_up", '{backend="postgresql"}') == 1.0
        await postgres_server.akill()
        await store.ledger.append([row(NOW, "k", request_id=f"down-{i}") for i in range(30)])

        async def seen_down() -> bool:
            return store.database.up is False

        await until(seen_down, "the writer notices the server is gone")
        assert metric("gateway_state_backend_up", '{backend="postgresql"}') == 0.0
        with pytest.raises(StateUnavailable):  # reads say so at once, naming no password
            await store.ledger.usage(UsageQuery(0, NOW + 1))
        await store.ledger.append([row(NOW, "k", request_id=f"more-{i}") for i in range(40)])
        assert store.ledger.queued == 50  # the bound: the 20 oldest of the 70 went
        assert metric("gateway_ledger_rows_dropped_total") == dropped + 20
        await postgres_server.astart()
        await until(lambda: _queue_empty(store), "the queue is written once the server is back", bound=20)
        assert metric("gateway_state_backend_up", '{backend="postgresql"}') == 1.0
    finally:
        await store.close()
    connection = await asyncpg.connect(url)
    try:
        ids = [r[0] for r in await connection.fetch("SELECT request_id FROM gateway_ledger ORDER BY id")]
    finally:
        await connection.close()
    assert ids == ([f"before-{i}" for i in range(10)] + [f"down-{i}" for i in range(20, 30)]
                   + [f"more-{i}" for i in range(40)])


async def test_rows_queued_at_exit_are_written_by_close(postgres_url: str) -> None:
    url = postgres_url
    store = PostgresStore(url, queue_rows=100)
    await store.keys.keys_generation()  # connected and migrated
    await store.ledger.append([row(NOW, "k", request_id=f"r{i}") for i in range(25)])
    await store.close()  # the drain: whatever the writer had not sent yet goes now
    assert await count_rows(url) == 25
