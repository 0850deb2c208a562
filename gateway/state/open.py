"""Open the state store that `state:` names. The one place a new backend is added."""

from __future__ import annotations

from gateway.config.schema import StateSettings
from gateway.state.store import StateStore


def open_store(settings: StateSettings) -> StateStore:
    from gateway.state.sqlite import SQLiteStore

    assert settings.path is not None  # the config loader always resolves it
    return SQLiteStore(settings.path)
