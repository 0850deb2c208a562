"""Managed keys: how they are made, what an admin may set on them, and every worker's cache of them.

A key is `gwk-` and 32 random bytes (base64url); only its SHA-256 is stored, with the first
characters as a prefix to recognise it in listings. Every worker keeps the active keys in memory
(a dict by digest: the hot path does no I/O for them) and polls the store's key generation a few
times a second, so a key created, changed or revoked anywhere takes effect everywhere within 1 s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import logging
import secrets
from collections.abc import Callable
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.auth import Caller, models_pattern
from gateway.state.store import KeyRecord, KeyStore, LimitSettings, StateUnavailable

log = logging.getLogger("gateway")


class Timer(Protocol):
    def cancel(self) -> None: ...


class Later(Protocol):
    """loop.call_later's shape (tests pass their own, to say when a poll happens)."""

    def __call__(self, delay: float, callback: Callable[[asyncio.Future[None]], None],
                 due: asyncio.Future[None], /) -> Timer: ...

PREFIX = "gwk-"
POLL_SECONDS = 0.25
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


def new_key() -> tuple[str, bytes, str]:
    """A fresh key: (the value, shown once; its SHA-256; the prefix kept for listings)."""
    value = PREFIX + secrets.token_urlsafe(32)
    return value, hashlib.sha256(value.encode()).digest(), value[: len(PREFIX) + 6]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    models: tuple[str, ...] | None = Field(None, max_length=100)
    rpm: int | None = Field(None, ge=1, le=10_000_000)
    tpm: int | None = Field(None, ge=1, le=10_000_000_000)
    concurrency: int | None = Field(None, ge=1, le=100_000)
    budget_usd: float | None = Field(None, gt=0, le=1e9)
    period: Literal["day", "week", "month", "total"] | None = None
    soft_ratio: float | None = Field(None, gt=0, le=1)
    expires: str | None = Field(None, max_length=40, description="ISO date or date-time, UTC unless it says")
    metadata: dict[str, str] | None = Field(None, max_length=32)

    @field_validator("models")
    @classmethod
    def _globs(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for glob in value or ():
            if not glob or len(glob) > 200:
                raise ValueError("each model glob must be 1 to 200 characters")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name, text in (value or {}).items():
            if not name or len(name) > 64 or len(text) > 256:
                raise ValueError("metadata names are 1 to 64 characters, values at most 256")
        return value

    @field_validator("expires")
    @classmethod
    def _expires(cls, value: str | None) -> str | None:
        if value is not None:
            expiry_time(value)
        return value


class KeySpec(_Input):
    """What `gateway keys create` and `POST /admin/keys` accept."""

    name: str = Field(pattern=_NAME, description="letters, digits, `.`, `_`, `-`; at most 64")


class KeyChanges(_Input):
    """What `gateway keys update` and `PATCH /admin/keys/NAME` accept; a field set to null is cleared."""


def expiry_time(text: str) -> float:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"`{text}` is not an ISO date (2026-12-31) or date-time (2026-12-31T18:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def apply_input(record: KeyRecord, given: _Input, fields: set[str], now: float) -> KeyRecord:
    """The record with the given fields set (a field given as null is cleared), stamped as updated."""
    changes: dict[str, Any] = {}
    for name in ("rpm", "tpm", "concurrency", "budget_usd"):
        if name in fields:
            changes[name] = getattr(given, name)
    for name in ("period", "soft_ratio"):
        if name in fields:
            changes[name] = getattr(given, name) or getattr(LimitSettings(), name)
    limits = dataclasses.replace(record.limits, **changes)
    return KeyRecord(
        name=record.name, digest=record.digest, prefix=record.prefix, created_at=record.created_at,
        models=given.models if "models" in fields else record.models, limits=limits,
        expires_at=(expiry_time(given.expires) if given.expires else None) if "expires" in fields
        else record.expires_at,
        metadata=dict(given.metadata or {}) if "metadata" in fields else record.metadata,
        updated_at=now, revoked_at=record.revoked_at)


def _caller(record: KeyRecord) -> Caller:
    limits = None if record.limits.empty else record.limits
    return Caller(record.name, models_pattern(record.models), limits, record.expires_at)


class ManagedKeys:
    """Every worker's in-memory view of the active managed keys, refreshed when the generation moves."""

    def __init__(self, store: KeyStore) -> None:
        self._store = store
        self._generation: int | None = None
        self._callers: dict[bytes, Caller] = {}
        self.names: frozenset[str] = frozenset()
        self._later: Later | None = None  # set while the poll runs
        self._timer: Timer | None = None

    def lookup(self, digest: bytes) -> Caller | None:
        return self._callers.get(digest)

    def any(self) -> bool:
        return bool(self._callers)

    async def refresh(self) -> None:
        try:
            generation = await self._store.keys_generation()
            if generation == self._generation:
                return
            records = await self._store.list_keys()
        except StateUnavailable:  # a shared store that is down: keep serving the keys last loaded (it logs once)
            return
        self._callers = {r.digest: _caller(r) for r in records if r.revoked_at is None}
        self.names = frozenset(r.name for r in records)
        self._generation = generation

    async def poll(self, later: Later | None = None) -> None:
        """Run until cancelled: pick up changes made by other workers, the CLI or /admin.

        Every POLL_SECONDS a timer callback reads the generation when the store can at once (SQLite);
        only a generation that moved, or a store that must be awaited, resumes this task to refresh.
        An idle worker so pays one callback and one small query per poll, not a task's resume (a task
        woken by a sleep 4 times a second was ~30k instructions a poll under callgrind)."""
        loop = asyncio.get_running_loop()
        self._later = later or loop.call_later
        while True:
            due = loop.create_future()
            self._timer = self._later(POLL_SECONDS, self._look, due)
            try:
                await due
            finally:
                self._timer.cancel()
            try:
                await self.refresh()
            except Exception:  # a busy or briefly unreadable store: keep the last view, try again
                log.exception("could not refresh managed keys from the state store")

    def _look(self, due: asyncio.Future[None]) -> None:
        """The poll's timer: wake the poll to refresh, or look again after another POLL_SECONDS."""
        try:
            generation = self._store.keys_generation_now()
        except Exception:  # refresh() tries again, and logs what is wrong
            generation = None
        if generation is not None and generation == self._generation:
            assert self._later is not None  # set by poll(), whose timer this is
            self._timer = self._later(POLL_SECONDS, self._look, due)
        elif not due.done():
            due.set_result(None)
