"""PostgreSQL for managed keys and the usage ledger (`state.ledger`): the only module that imports asyncpg.

Several replicas share one database. The pool connects lazily, on the event loop of its first use
(the store is built before the loop runs), and the first connection brings the schema up to date
under an advisory lock (gateway.state.pg_schema). When the database cannot be reached every
operation raises StateUnavailable at once for a back-off (0.1 s doubling to 5 s) instead of waiting
on a connect timeout each time; the first success after that ends the outage. Each outage is
logged once and shown in `gateway_state_backend_up{backend="postgresql"}`. Nothing here ever
shows the URL's password: logs and messages use pg_url.describe().
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from gateway import metrics
from gateway.errors import ConfigError
from gateway.state import pg_schema, pg_url
from gateway.state.ledger_queue import QueuedLedger
from gateway.state.records import KEY_COLUMNS, LEDGER_COLUMNS, key_record, key_values
from gateway.state.store import (
    KeyExists,
    KeyMissing,
    KeyRecord,
    LedgerRow,
    StateUnavailable,
    UsageQuery,
    UsageTotal,
)

log = logging.getLogger("gateway")
T = TypeVar("T")

BACKEND = "postgresql"
CONNECT_TIMEOUT = 3.0  # seconds to open one connection: a replica must not hang on a dead host
COMMAND_TIMEOUT = 15.0  # seconds for one statement (a usage report over a long period is the slowest)
POOL_SIZE = 4  # the key poll, the ledger writer, an admin call or two; PostgreSQL connections are dear
_FIRST_DELAY, _MAX_DELAY = 0.1, 5.0

# Errors that mean "the database is not there now" rather than "this statement is wrong".
_DOWN: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
    asyncpg.exceptions.InternalClientError,  # what a connection in mid-operation raises when the server dies
    asyncpg.exceptions.OperatorInterventionError, asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.InvalidAuthorizationSpecificationError, asyncpg.exceptions.InvalidCatalogNameError,
)


class Database:
    """A lazily opened pool, the schema brought up to date once, and the up/down state of the server."""

    def __init__(self, url: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._url = url
        self.name = pg_url.describe(url)
        self._clock = clock
        self._pool: asyncpg.Pool | None = None
        self._opening: asyncio.Lock | None = None
        self.up: bool | None = None  # None until the first attempt
        self._delay = 0.0
        self._retry_at = 0.0

    def retry_in(self) -> float:
        """Seconds until the next attempt is worth making (0 when the database is up)."""
        return max(0.0, self._retry_at - self._clock())

    async def run(self, work: Callable[[asyncpg.pool.PoolConnectionProxy[Any]], Awaitable[T]]) -> T:
        """`work` on a pooled connection; StateUnavailable (fast, during a back-off) when the server is away."""
        if self.up is False and self._clock() < self._retry_at:
            raise StateUnavailable(f"PostgreSQL at {self.name} is unreachable; retrying in {self.retry_in():.1f}s")
        try:
            pool = self._pool or await self._open()
            async with pool.acquire() as connection:
                result = await work(connection)
        except _DOWN as exc:
            raise self._failed(exc) from None
        self._succeeded()
        return result

    async def _open(self) -> asyncpg.Pool:
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:  # one pool, however many callers arrive while it opens
            if self._pool is None:
                pool = await asyncpg.create_pool(self._url, min_size=1, max_size=POOL_SIZE, timeout=CONNECT_TIMEOUT,
                                                 command_timeout=COMMAND_TIMEOUT)
                try:
                    await _migrate(pool, self.name)
                except BaseException:
                    await pool.close()
                    raise
                self._pool = pool
        return self._pool

    def _failed(self, exc: BaseException) -> StateUnavailable:
        self._delay = min(_MAX_DELAY, self._delay * 2 or _FIRST_DELAY)
        self._retry_at = self._clock() + self._delay
        reason = _reason(exc)
        if self.up is not False:  # once per outage, not once per attempt
            log.error("PostgreSQL at %s is unreachable (%s): serving with the managed keys last loaded; ledger rows "
                      "queue in memory until it is back", self.name, reason)
            metrics.state_backend_up(BACKEND, False)
        self.up = False
        return StateUnavailable(f"PostgreSQL at {self.name} is unreachable ({reason})")

    def _succeeded(self) -> None:
        if self.up is not True:
            if self.up is False:
                log.warning("PostgreSQL at %s is reachable again", self.name)
            metrics.state_backend_up(BACKEND, True)
        self.up = True
        self._delay = 0.0

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), CONNECT_TIMEOUT)
            except _DOWN:  # TimeoutError included
                pool.terminate()


def _reason(exc: BaseException) -> str:
    """What went wrong, in a few words; asyncpg's messages name the user and database, never a password."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


async def _migrate(pool: asyncpg.Pool, name: str) -> None:
    """Apply the missing schema steps, in one transaction, under the gateway's advisory lock."""
    async with pool.acquire() as connection, connection.transaction():
        # Held to the end of the transaction: a second replica waits here, then finds the steps done.
        await connection.execute("SELECT pg_advisory_xact_lock($1)", pg_schema.LOCK_ID)
        await connection.execute(pg_schema.CREATE_VERSIONS)
        version = int(await connection.fetchval("SELECT coalesce(max(version), 0) FROM gateway_schema"))
        if version > len(pg_schema.MIGRATIONS):
            raise ConfigError(f"state.ledger: the database at {name} was written by a newer gateway (schema "
                              f"{version}, this one knows {len(pg_schema.MIGRATIONS)}); upgrade the gateway or "
                              "point state.ledger at another database")
        for step, script in enumerate(pg_schema.MIGRATIONS[version:], start=version + 1):
            await connection.execute(script)
            await connection.execute("INSERT INTO gateway_schema (version, applied_at) VALUES ($1, $2)",
                                     step, time.time())
            log.info("PostgreSQL at %s: schema step %d applied", name, step)


_BUMP = "UPDATE gateway_meta SET value = value + 1 WHERE name = 'keys_generation' AND EXISTS (SELECT 1 FROM k)"
_INSERT_KEY = (f"WITH k AS (INSERT INTO gateway_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
               f"RETURNING 1) {_BUMP}")
_UPDATE_KEY = ("WITH k AS (UPDATE gateway_keys SET digest = $2, prefix = $3, created_at = $4, updated_at = $5, "
               "revoked_at = $6, expires_at = $7, models = $8, limits = $9, metadata = $10 WHERE name = $1 "
               f"RETURNING 1) {_BUMP} RETURNING value")


class PostgresKeys:
    """KeyStore: one statement per change, which also moves the generation every replica polls."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_key(self, record: KeyRecord) -> None:
        async def insert(connection: Any) -> None:
            await connection.execute(_INSERT_KEY, *key_values(record))

        try:
            await self._db.run(insert)
        except asyncpg.UniqueViolationError:
            raise KeyExists(f"a key named `{record.name}` already exists") from None

    async def update_key(self, record: KeyRecord) -> None:
        changed = await self._db.run(lambda c: c.fetchval(_UPDATE_KEY, *key_values(record)))
        if changed is None:
            raise KeyMissing(f"no key named `{record.name}`")

    async def get_key(self, name: str) -> KeyRecord | None:
        row = await self._db.run(lambda c: c.fetchrow(f"SELECT {KEY_COLUMNS} FROM gateway_keys WHERE name = $1", name))
        return key_record(tuple(row)) if row is not None else None

    async def list_keys(self) -> list[KeyRecord]:
        rows = await self._db.run(lambda c: c.fetch(f"SELECT {KEY_COLUMNS} FROM gateway_keys ORDER BY name"))
        return [key_record(tuple(r)) for r in rows]

    async def keys_generation(self) -> int:
        value = await self._db.run(lambda c: c.fetchval(
            "SELECT value FROM gateway_meta WHERE name = 'keys_generation'"))
        return int(value)

    def keys_generation_now(self) -> None:
        return None  # a network round trip: the poll awaits keys_generation()


_INSERT_ROWS = (f"INSERT INTO gateway_ledger (writer, seq, {', '.join(LEDGER_COLUMNS)}) "
                f"VALUES ({', '.join(f'${i}' for i in range(1, len(LEDGER_COLUMNS) + 3))}) "
                "ON CONFLICT (writer, seq) DO NOTHING")
# The same groups as the SQLite store's, and the same order: byte order (COLLATE "C"), as SQLite sorts.
_GROUPS = {
    "key": "key",
    "model": "model",
    "provider": "coalesce(provider, '-')",
    "day": "to_char(to_timestamp(at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    "status": "status::text",
}


class PostgresLedger:
    """The ledger's SQL: idempotent batch inserts (a retried batch adds nothing twice), reports, pruning."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def retry_in(self) -> float:
        return self._db.retry_in()

    async def write(self, writer: uuid.UUID, rows: Sequence[tuple[int, LedgerRow]]) -> None:
        values = [(writer, seq, *row) for seq, row in rows]

        async def insert(connection: Any) -> None:
            await connection.executemany(_INSERT_ROWS, values)

        await self._db.run(insert)

    async def usage(self, query: UsageQuery) -> list[UsageTotal]:
        group = _GROUPS[query.by]
        where = "at >= $1 AND at < $2" + (" AND key = $3" if query.key is not None else "")
        args: tuple[Any, ...] = (query.since, query.until) + ((query.key,) if query.key is not None else ())
        sql = (f"SELECT {group}, count(*), count(*) FILTER (WHERE status >= 400), "
               "coalesce(sum(input_tokens), 0)::bigint, coalesce(sum(output_tokens), 0)::bigint, "
               "coalesce(sum(cached_tokens), 0)::bigint, coalesce(sum(reasoning_tokens), 0)::bigint, "
               f"coalesce(sum(cost_usd), 0)::float8 FROM gateway_ledger WHERE {where} "
               f"GROUP BY 1 ORDER BY {group} COLLATE \"C\"")
        rows = await self._db.run(lambda c: c.fetch(sql, *args))
        return [UsageTotal(str(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows]

    async def prune(self, before: float) -> int:
        status = await self._db.run(lambda c: c.execute("DELETE FROM gateway_ledger WHERE at < $1", before))
        return int(status.rpartition(" ")[2] or 0)


class PostgresStore:
    """Managed keys and the ledger in PostgreSQL; what the counters use is chosen beside it (open.py)."""

    def __init__(self, url: str, queue_rows: int) -> None:
        self.database = Database(url)
        self.keys = PostgresKeys(self.database)
        self.ledger = QueuedLedger(PostgresLedger(self.database), queue_rows, BACKEND)

    async def close(self) -> None:
        await self.ledger.close()
        await self.database.close()
