"""Open the state store that `state:` names: the one place a backend is chosen.

Two halves, each from its own backend: the records (managed keys and the usage ledger) and the
counters (limits and budgets). The SQLite file serves both on one host; `state.backend: redis` takes
the counters to Redis, shared by every replica, with a per-replica fallback while Redis is down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.config.schema import StateSettings
from gateway.state.store import StateStore

if TYPE_CHECKING:  # imported when used: a gateway without Redis never loads redis-py
    from gateway.state.fallback import FallbackCounters


def open_store(settings: StateSettings) -> StateStore:
    records = open_records(settings)
    if settings.backend == "sqlite":
        return records  # its own counters too
    from gateway.state.split import SplitStore

    counters = open_counters(settings)
    return SplitStore(records.keys, counters, records.ledger, (counters.close, records.close))


def open_records(settings: StateSettings) -> StateStore:
    """Keys and ledger: the SQLite file, or PostgreSQL with `state.ledger`. Either way the result also
    carries the SQLite file's counters, used when `state.backend` is sqlite."""
    from gateway.state.sqlite import SQLiteStore

    assert settings.path is not None  # the config loader always resolves it
    local = SQLiteStore(settings.path)
    if settings.ledger is None:
        return local
    from gateway.state.postgres import PostgresStore
    from gateway.state.split import SplitStore

    # Keys and the ledger are shared by every replica through PostgreSQL; the counters stay here.
    shared = PostgresStore(settings.ledger, settings.ledger_queue_rows)
    return SplitStore(shared.keys, local, shared.ledger, (shared.close, local.close))


def open_counters(settings: StateSettings) -> FallbackCounters:
    """The Redis counters behind their per-replica fallback."""
    from gateway.state.fallback import FallbackCounters
    from gateway.state.redis import RedisConnection
    from gateway.state.redis_counters import RedisCounters

    assert settings.redis_url is not None  # checked when the config was loaded
    return FallbackCounters(RedisCounters(RedisConnection(settings.redis_url)), settings.on_failure)
