"""The state interface: managed keys, limit and budget counters, the usage ledger.

Three small protocols, so that each can come from a different backend: the embedded SQLite file
(gateway.state.sqlite) serves all three on one host; Redis can take the counters and PostgreSQL the
keys and the ledger when several replicas share them. Everything is plain data in and out; callers
pass `now` (Unix seconds) so tests can move the clock, and compute calendar periods themselves.

Contract of the counters (what every backend must keep):
- `admit(checks, now)` is atomic: either every check passes and every amount is reserved, or none
  is and the verdict names the first check that refused. One round trip.
- `requests` and `tokens` checks are buckets that drain continuously: `limit` per 60 s. A check
  passes when the bucket's level plus its amount fits the limit (an amount larger than the whole
  limit passes only into an empty bucket, so no request is refused forever).
- `concurrency` checks count requests admitted and not yet settled.
- `spend` checks pass while spent + reserved (within `period`) is below the limit; the amount is
  then reserved until it is settled.
- What a worker that dies holds (in-flight slots, reservations) is given back: SQLite keeps them
  per worker and gives back a worker's when its heartbeat stops; a backend with expiring keys may
  use `expires` instead.
- `settle(settlements)` replaces each grant's reservations with what was really used: tokens put
  back into (or taken out of) the buckets, spend added to the grant's period, holds released.
  Settlements may be batched; a backend applies them in one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

CheckKind = Literal["requests", "tokens", "concurrency", "spend"]
Period = Literal["day", "week", "month", "total"]
WINDOW_SECONDS = 60.0  # requests and tokens limits are per minute


class StateError(Exception):
    """A state operation was refused (a name taken, a key missing); the message says why."""


class KeyExists(StateError):
    pass


class KeyMissing(StateError):
    pass


class StateUnavailable(StateError):
    """The backend cannot be reached now (down, restarting, unreachable); callers keep what they have
    (the last loaded keys, queued ledger rows) and try again later. The message names the backend,
    never its credentials."""


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """Limits and a budget, as a key (or model, or provider) carries them; None means unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None
    budget_usd: float | None = None
    period: Period = "month"
    soft_ratio: float = 0.8

    @property
    def empty(self) -> bool:
        return self.rpm is None and self.tpm is None and self.concurrency is None and self.budget_usd is None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A managed key as stored: never the key itself, only its SHA-256 and a short prefix to recognise it."""

    name: str
    digest: bytes
    prefix: str
    created_at: float
    models: tuple[str, ...] | None = None
    limits: LimitSettings = field(default_factory=LimitSettings)
    expires_at: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    updated_at: float | None = None
    revoked_at: float | None = None

    def active(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


# Check, CheckState, Verdict and Settlement are made for every limited request: plain (not frozen)
# slotted dataclasses, since a frozen one pays object.__setattr__ per field. Treat them as values.
@dataclass(slots=True)
class Check:
    """One limit to check at admission and the amount to reserve against it.

    `scope` names whose limit it is (`key:team-a`, `model:smart`, `provider:openai`); `period` is the
    calendar bucket of a spend check (`day:2026-12-02`, `week:2026-W49`, `month:2026-12`, `total`).
    """

    scope: str
    kind: CheckKind
    limit: float
    amount: float
    period: str = ""
    expires: float = 0.0  # concurrency and spend holds: when a crashed worker's hold stops counting


@dataclass(slots=True)
class CheckState:
    """After admission: how much of a limit is used (reservations included) and when it is free again."""

    used: float
    remaining: float
    reset_seconds: float


@dataclass(slots=True)
class Verdict:
    granted: bool
    states: tuple[CheckState, ...]
    refused: int | None = None  # index into the checks of the one that refused
    retry_after: float = 0.0  # refused: seconds until that check would pass (0 when only settling frees it)
    grant: Any = None  # backend handle, passed back in a Settlement


@dataclass(slots=True)
class Settlement:
    """What a granted request really used: one `actual` per check, in the order of the checks."""

    checks: tuple[Check, ...]
    actual: tuple[float, ...]
    grant: Any
    now: float


class LedgerRow(NamedTuple):
    """One finished request. Names and numbers only: never a key value, never prompt or answer text.

    A named tuple: made for every request, and it is already the row's values in column order, which
    every SQL backend binds as they are (a frozen dataclass paid object.__setattr__ per field, and its
    values were read out again to be written)."""

    at: float
    request_id: str
    key: str
    model: str
    provider: str | None
    served_model: str | None
    status: int
    error_type: str | None
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost_usd: float | None
    duration_ms: float
    ttft_ms: float | None
    attempts: int
    fallbacks: int
    endpoint: str = "chat"


GroupBy = Literal["key", "model", "provider", "day", "status"]


@dataclass(frozen=True, slots=True)
class UsageQuery:
    since: float
    until: float
    by: GroupBy = "key"
    key: str | None = None


@dataclass(frozen=True, slots=True)
class UsageTotal:
    group: str
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost_usd: float


class KeyStore(Protocol):
    async def create_key(self, record: KeyRecord) -> None: ...  # raises KeyExists
    async def update_key(self, record: KeyRecord) -> None: ...  # replaces by name; raises KeyMissing
    async def get_key(self, name: str) -> KeyRecord | None: ...
    async def list_keys(self) -> list[KeyRecord]: ...
    async def keys_generation(self) -> int: ...  # changes whenever any key changes; every worker polls it
    # The same read at once, without waiting, when the store can (a local file), else None. The poll
    # asks it from a timer callback: an idle worker resumes no task to learn that nothing changed.
    def keys_generation_now(self) -> int | None: ...


class CounterStore(Protocol):
    async def admit(self, checks: Sequence[Check], now: float) -> Verdict: ...
    async def settle(self, settlements: Sequence[Settlement]) -> None: ...
    async def spent(self, scope: str, period: str) -> float: ...  # settled spend, for reports and metrics
    # Would settle([]) do anything now (a heartbeat, spend to write behind, a probe of a backend that is
    # down)? Cheap and without I/O: an idle gateway asks it every flush_interval instead of settling.
    def upkeep_due(self) -> bool: ...


class LedgerStore(Protocol):
    async def append(self, rows: Sequence[LedgerRow]) -> None: ...
    async def usage(self, query: UsageQuery) -> list[UsageTotal]: ...
    async def prune(self, before: float) -> int: ...


class StateStore(Protocol):
    @property
    def keys(self) -> KeyStore: ...
    @property
    def counters(self) -> CounterStore: ...
    @property
    def ledger(self) -> LedgerStore: ...

    async def close(self) -> None: ...
