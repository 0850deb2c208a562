"""The embedded state store: one SQLite file (WAL) shared by every worker process on one host.

Exact across workers because every admission is one `BEGIN IMMEDIATE` transaction: SQLite's write
lock serialises the read-check-reserve of every process, and a transaction on a few small rows
takes microseconds. Two connections per process, each used by one thread only: the event loop's
(admission and key operations, short and bounded) and a background thread's (batched settlements,
ledger rows, usage queries, pruning), so the slow work never holds up a request. WAL with
`synchronous=NORMAL` keeps every committed transaction through a process crash (`kill -9`); only a
power loss can drop the last ones, and nothing can corrupt the file.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from gateway.state.migrations import migrate
from gateway.state.records import KEY_COLUMNS as _KEY_COLUMNS
from gateway.state.records import LEDGER_COLUMNS as _LEDGER_COLUMNS
from gateway.state.records import key_record as _key_record
from gateway.state.records import key_values as _key_values
from gateway.state.store import (
    WINDOW_SECONDS,
    Check,
    CheckState,
    KeyExists,
    KeyMissing,
    KeyRecord,
    LedgerRow,
    Settlement,
    UsageQuery,
    UsageTotal,
    Verdict,
)
from gateway.state.worker import Worker

T = TypeVar("T")

_INSERT_ROW = (f"INSERT INTO ledger ({', '.join(_LEDGER_COLUMNS)}) "
               f"VALUES ({', '.join('?' for _ in _LEDGER_COLUMNS)})")
_GROUPS = {
    "key": "key",
    "model": "model",
    "provider": "coalesce(provider, '-')",
    "day": "strftime('%Y-%m-%d', at, 'unixepoch')",
    "status": "CAST(status AS TEXT)",
}


def _null(value: None) -> None:
    return value


# None binds as NULL with or without this. Without it, sqlite3 looks for an adapter for each None by
# raising and clearing an AttributeError (~3k instructions; a ledger row has two or three Nones): with
# one registered the lookup is one dict hit. Process-wide, and it changes no value anyone binds.
sqlite3.register_adapter(type(None), _null)


def _connect(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA busy_timeout=10000")
    return connection


@contextlib.contextmanager
def _write(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction that takes the lock up front, so no reader upgrades into a deadlock."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


class SQLiteStore:
    """KeyStore, CounterStore and LedgerStore over one file; see gateway.state.store for the contract."""

    def __init__(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = _connect(path)
        migrate(self._db, path)
        self._background_db = _connect(path)
        self._background = Worker("gateway-state")
        # Reservations are kept per worker, so a worker that dies leaves nothing held: the others see
        # its heartbeat stop and give its reservations back.
        self.worker = secrets.token_hex(8)
        self._last_beat = 0.0
        self._last_sweep = 0.0

    @property
    def keys(self) -> SQLiteStore:
        return self

    @property
    def counters(self) -> SQLiteStore:
        return self

    @property
    def ledger(self) -> SQLiteStore:
        return self

    async def close(self) -> None:
        await self._in_background(self._retire)
        await self._in_background(self._background_db.close)
        self._background.close()
        self._db.close()

    def _retire(self) -> None:
        """A clean exit: nothing of this worker is in flight any more."""
        with _write(self._background_db) as db:
            _forget(db, self.worker)

    async def _in_background(self, work: Any, *args: Any) -> Any:
        return await self._background.run(work, *args)

    # ------------------------------------------------------------------ keys

    async def create_key(self, record: KeyRecord) -> None:
        try:
            with _write(self._db) as db:
                db.execute("INSERT INTO keys (name, digest, prefix, created_at, updated_at, revoked_at, expires_at, "
                           "models, limits, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", _key_values(record))
                db.execute("UPDATE meta SET value = value + 1 WHERE name = 'keys_generation'")
        except sqlite3.IntegrityError:
            raise KeyExists(f"a key named `{record.name}` already exists") from None

    async def update_key(self, record: KeyRecord) -> None:
        with _write(self._db) as db:
            values = _key_values(record)
            changed = db.execute("UPDATE keys SET digest = ?, prefix = ?, created_at = ?, updated_at = ?, "
                                 "revoked_at = ?, expires_at = ?, models = ?, limits = ?, metadata = ? "
                                 "WHERE name = ?", (*values[1:], values[0])).rowcount
            if not changed:
                raise KeyMissing(f"no key named `{record.name}`")
            db.execute("UPDATE meta SET value = value + 1 WHERE name = 'keys_generation'")

    async def get_key(self, name: str) -> KeyRecord | None:
        row = self._db.execute(f"SELECT {_KEY_COLUMNS} FROM keys WHERE name = ?", (name,)).fetchone()
        return _key_record(row) if row else None

    async def list_keys(self) -> list[KeyRecord]:
        return [_key_record(r) for r in self._db.execute(f"SELECT {_KEY_COLUMNS} FROM keys ORDER BY name")]

    async def keys_generation(self) -> int:
        return self.keys_generation_now()

    def keys_generation_now(self) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE name = 'keys_generation'").fetchone()[0])

    # ------------------------------------------------------------------ counters

    async def admit(self, checks: Sequence[Check], now: float) -> Verdict:
        with _write(self._db) as db:
            verdict, levels = self._decide(db, checks, now)
            if not verdict.granted and checks[verdict.refused or 0].kind in ("concurrency", "spend") \
                    and _sweep(db, self.worker, time.time()):
                verdict, levels = self._decide(db, checks, now)  # a dead worker's reservations were given back
            if verdict.granted:
                for check, level in zip(checks, levels, strict=True):
                    _reserve(db, check, level, now, self.worker)
        return verdict

    @staticmethod
    def _decide(db: sqlite3.Connection, checks: Sequence[Check], now: float) -> tuple[Verdict, list[float]]:
        states: list[CheckState] = []
        levels: list[float] = []
        refused: int | None = None
        retry_after = 0.0
        for index, check in enumerate(checks):
            state, level, wait = _evaluate(db, check, now)
            states.append(state)
            levels.append(level)
            if wait is not None and refused is None:
                refused, retry_after = index, wait
        if refused is not None:
            return Verdict(False, tuple(states), refused, retry_after), levels
        return Verdict(True, tuple(states)), levels

    def upkeep_due(self) -> bool:
        return time.time() - self._last_beat >= _BEAT_SECONDS

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        """Also this worker's heartbeat: an empty batch still says it is alive (at most once a second)."""
        if settlements or time.time() - self._last_beat >= _BEAT_SECONDS:
            await self._in_background(self._settle, settlements)

    def _settle(self, settlements: Sequence[Settlement]) -> None:
        beat = time.time()
        with _write(self._background_db) as db:
            for settlement in settlements:
                for check, actual in zip(settlement.checks, settlement.actual, strict=True):
                    _apply(db, check, actual, self.worker)
            db.execute("INSERT OR REPLACE INTO workers (id, seen) VALUES (?, ?)", (self.worker, beat))
            if beat - self._last_sweep >= _SWEEP_SECONDS:
                _sweep(db, self.worker, beat)
                self._last_sweep = beat
        self._last_beat = beat

    async def add_spent(self, amounts: Sequence[tuple[str, str, float]]) -> None:
        """Spend settled elsewhere (in-process counters, gateway.state.memory), added to the shared totals."""
        if amounts:
            await self._in_background(self._add_spent, amounts)

    def _add_spent(self, amounts: Sequence[tuple[str, str, float]]) -> None:
        with _write(self._background_db) as db:
            db.executemany(_ADD_SPENT, amounts)

    async def spent(self, scope: str, period: str) -> float:
        row = self._db.execute("SELECT total(spent) FROM spend WHERE scope = ? AND period = ?",
                               (scope, period)).fetchone()
        return float(row[0])

    # ------------------------------------------------------------------ ledger

    async def append(self, rows: Sequence[LedgerRow]) -> None:
        if rows:
            await self._in_background(self._append, rows)

    def _append(self, rows: Sequence[LedgerRow]) -> None:
        with _write(self._background_db) as db:
            # A row is its values in column order; as an exact tuple, since sqlite3 reads a tuple
            # subclass's items one by one through __getitem__ (~0.8k instructions each).
            db.executemany(_INSERT_ROW, map(tuple, rows))

    async def usage(self, query: UsageQuery) -> list[UsageTotal]:
        result: list[UsageTotal] = await self._in_background(self._usage, query)
        return result

    def _usage(self, query: UsageQuery) -> list[UsageTotal]:
        group = _GROUPS[query.by]
        where = "at >= ? AND at < ?" + (" AND key = ?" if query.key is not None else "")
        args: tuple[Any, ...] = (query.since, query.until) + ((query.key,) if query.key is not None else ())
        rows = self._background_db.execute(
            f"SELECT {group} AS g, count(*), sum(status >= 400), total(input_tokens), total(output_tokens), "
            f"total(cached_tokens), total(reasoning_tokens), total(cost_usd) FROM ledger WHERE {where} "
            "GROUP BY g ORDER BY g", args)
        return [UsageTotal(str(g), n, int(e or 0), int(i), int(o), int(c), int(r), float(cost))
                for g, n, e, i, o, c, r, cost in rows]

    async def prune(self, before: float) -> int:
        result: int = await self._in_background(self._prune, before)
        return result

    def _prune(self, before: float) -> int:
        with _write(self._background_db) as db:
            return int(db.execute("DELETE FROM ledger WHERE at < ?", (before,)).rowcount)


def _evaluate(db: sqlite3.Connection, check: Check, now: float) -> tuple[CheckState, float, float | None]:
    """The check's state now, the level to build on, and the wait before it passes (None: it passes).

    A few indexed rows per check (one per worker at most): bucket levels, in-flight counts and
    reserved sums are kept up to date in place, so admission costs the same whatever is in flight.
    """
    if check.kind == "requests" or check.kind == "tokens":
        rate = check.limit / WINDOW_SECONDS
        row = db.execute(_BUCKET, (check.scope, check.kind)).fetchone()
        level = max(0.0, row[0] - (now - row[1]) * rate) if row else 0.0
        over = level + min(check.amount, check.limit) - check.limit
        after = level + check.amount if over <= 0 else level
        state = CheckState(after, max(0.0, check.limit - after), after / rate if rate else 0.0)
        return state, level, (over / rate if rate else WINDOW_SECONDS) if over > 0 else None
    if check.kind == "concurrency":
        used = db.execute("SELECT total(count) FROM inflight WHERE scope = ?", (check.scope,)).fetchone()[0]
    else:
        used = db.execute("SELECT total(spent + reserved) FROM spend WHERE scope = ? AND period = ?",
                          (check.scope, check.period)).fetchone()[0]
    passes = used + check.amount <= check.limit if check.kind == "concurrency" else used < check.limit
    after = used + check.amount if passes else used
    return CheckState(after, max(0.0, check.limit - after), 0.0), 0.0, None if passes else 0.0


_BUCKET = "SELECT level, at FROM buckets WHERE scope = ? AND kind = ?"
_SET_BUCKET = "INSERT OR REPLACE INTO buckets (scope, kind, level, at) VALUES (?, ?, ?, ?)"
_HOLD_SLOT = ("INSERT INTO inflight (scope, worker, count) VALUES (?, ?, ?) "
              "ON CONFLICT (scope, worker) DO UPDATE SET count = count + excluded.count")
_RESERVE = ("INSERT INTO spend (scope, period, worker, spent, reserved) VALUES (?, ?, ?, 0, ?) "
            "ON CONFLICT (scope, period, worker) DO UPDATE SET reserved = reserved + excluded.reserved")
_ADD_SPENT = ("INSERT INTO spend (scope, period, worker, spent, reserved) VALUES (?, ?, '', ?, 0) "
              "ON CONFLICT (scope, period, worker) DO UPDATE SET spent = spent + excluded.spent")
_SWEEP_SECONDS = 5.0
_BEAT_SECONDS = 1.0
_DEAD_AFTER = 15.0  # seconds without a heartbeat (one a second) before a worker's reservations are given back


def _reserve(db: sqlite3.Connection, check: Check, level: float, now: float, worker: str) -> None:
    if check.kind == "requests" or check.kind == "tokens":
        db.execute(_SET_BUCKET, (check.scope, check.kind, level + check.amount, now))
    elif check.kind == "concurrency":
        db.execute(_HOLD_SLOT, (check.scope, worker, check.amount))
    else:
        db.execute(_RESERVE, (check.scope, check.period, worker, check.amount))


def _apply(db: sqlite3.Connection, check: Check, actual: float, worker: str) -> None:
    if check.kind == "tokens":
        if actual != check.amount:
            db.execute("UPDATE buckets SET level = max(0.0, level + ?) WHERE scope = ? AND kind = 'tokens'",
                       (actual - check.amount, check.scope))
    elif check.kind == "concurrency":
        db.execute("UPDATE inflight SET count = max(0.0, count - ?) WHERE scope = ? AND worker = ?",
                   (check.amount, check.scope, worker))
    elif check.kind == "spend":
        db.execute("UPDATE spend SET reserved = max(0.0, reserved - ?), spent = spent + ? "
                   "WHERE scope = ? AND period = ? AND worker = ?",
                   (check.amount, actual, check.scope, check.period, worker))


def _sweep(db: sqlite3.Connection, me: str, now: float) -> int:
    """Give back what workers that stopped beating (killed, crashed) still held; True if there were any."""
    dead = [r[0] for r in db.execute("SELECT id FROM workers WHERE seen < ? AND id != ?", (now - _DEAD_AFTER, me))]
    for worker in dead:
        _forget(db, worker)
    return len(dead)


def _forget(db: sqlite3.Connection, worker: str) -> None:
    """Fold a gone worker's spend into the shared row and drop what it had reserved or in flight."""
    db.execute("INSERT INTO spend (scope, period, worker, spent, reserved) "
               "SELECT scope, period, '', spent, 0 FROM spend WHERE worker = ? AND true "
               "ON CONFLICT (scope, period, worker) DO UPDATE SET spent = spent + excluded.spent", (worker,))
    db.execute("DELETE FROM spend WHERE worker = ?", (worker,))
    db.execute("DELETE FROM inflight WHERE worker = ?", (worker,))
    db.execute("DELETE FROM workers WHERE id = ?", (worker,))
