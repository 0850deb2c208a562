"""Open the state store that `state:` names: the one place a backend is chosen.

Two halves, each from its own backend: the records (managed keys and the usage ledger) and the
counters (limits and budgets). The SQLite file serves both on one host; a store made of parts from
different backends is a gateway.state.split.SplitStore.
"""

from __future__ import annotations

from gateway.config.schema import StateSettings
from gateway.state.store import StateStore


def open_store(settings: StateSettings) -> StateStore:
    return open_records(settings)  # its own counters too


def open_records(settings: StateSettings) -> StateStore:
    """Keys and ledger (the SQLite store also carries counters, used when `state.backend` is sqlite)."""
    from gateway.state.sqlite import SQLiteStore

    assert settings.path is not None  # the config loader always resolves it
    return SQLiteStore(settings.path)
