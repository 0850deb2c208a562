"""Versioned schema of the SQLite store: PRAGMA user_version counts the migrations applied.

A store written by an older gateway opens in a newer one (the missing steps run, in one
transaction, once, even when several workers start together); a store written by a newer gateway
is refused rather than misread. Append steps; never edit one that shipped.
"""

from __future__ import annotations

import sqlite3

from gateway.errors import ConfigError

MIGRATIONS: tuple[str, ...] = (
    # 1: keys, counters, ledger
    """
    CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta (name, value) VALUES ('keys_generation', 0);
    CREATE TABLE keys (
        name TEXT PRIMARY KEY, digest BLOB NOT NULL UNIQUE, prefix TEXT NOT NULL, created_at REAL NOT NULL,
        updated_at REAL, revoked_at REAL, expires_at REAL, models TEXT, limits TEXT NOT NULL, metadata TEXT NOT NULL
    );
    CREATE TABLE buckets (
        scope TEXT NOT NULL, kind TEXT NOT NULL, level REAL NOT NULL, at REAL NOT NULL, PRIMARY KEY (scope, kind)
    ) WITHOUT ROWID;
    CREATE TABLE holds (
        id INTEGER PRIMARY KEY, scope TEXT NOT NULL, kind TEXT NOT NULL, period TEXT NOT NULL,
        amount REAL NOT NULL, expires REAL NOT NULL
    );
    CREATE INDEX holds_by_scope ON holds (scope, kind, period);
    CREATE TABLE spend (
        scope TEXT NOT NULL, period TEXT NOT NULL, spent REAL NOT NULL, PRIMARY KEY (scope, period)
    ) WITHOUT ROWID;
    CREATE TABLE ledger (
        id INTEGER PRIMARY KEY, at REAL NOT NULL, request_id TEXT NOT NULL, key TEXT NOT NULL, model TEXT NOT NULL,
        provider TEXT, served_model TEXT, status INTEGER NOT NULL, error_type TEXT,
        input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL, cost_usd REAL, duration_ms REAL NOT NULL, ttft_ms REAL,
        attempts INTEGER NOT NULL, fallbacks INTEGER NOT NULL, endpoint TEXT NOT NULL
    );
    CREATE INDEX ledger_by_time ON ledger (at);
    """,
    # 2: per-worker running sums instead of one hold row per request, so admission is O(1) whatever is
    #    in flight, and a dead worker's reservations are given back when its heartbeat stops
    """
    CREATE TABLE spend_by_worker (
        scope TEXT NOT NULL, period TEXT NOT NULL, worker TEXT NOT NULL, spent REAL NOT NULL, reserved REAL NOT NULL,
        PRIMARY KEY (scope, period, worker)
    ) WITHOUT ROWID;
    INSERT INTO spend_by_worker (scope, period, worker, spent, reserved) SELECT scope, period, '', spent, 0 FROM spend;
    DROP TABLE spend;
    ALTER TABLE spend_by_worker RENAME TO spend;
    DROP TABLE holds;
    CREATE TABLE inflight (
        scope TEXT NOT NULL, worker TEXT NOT NULL, count REAL NOT NULL, PRIMARY KEY (scope, worker)
    ) WITHOUT ROWID;
    CREATE TABLE workers (id TEXT PRIMARY KEY, seen REAL NOT NULL) WITHOUT ROWID;
    """,
)


def migrate(db: sqlite3.Connection, path: str) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > len(MIGRATIONS):
            raise ConfigError(f"{path}: state.path: this store was written by a newer gateway (schema {version}, "
                              f"this one knows {len(MIGRATIONS)}); upgrade the gateway or point state.path elsewhere")
        for step, script in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in script.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {step}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
