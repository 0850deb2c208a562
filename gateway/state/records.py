"""Managed keys and ledger rows as SQL columns: one encoding for every SQL backend (SQLite, PostgreSQL).

Keys keep their list and mapping fields as JSON text, so a key reads back the same whichever store
wrote it; ledger rows are their named tuple's fields in order.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson

from gateway.state.store import KeyRecord, LedgerRow, LimitSettings

KEY_COLUMNS = "name, digest, prefix, created_at, updated_at, revoked_at, expires_at, models, limits, metadata"
LEDGER_COLUMNS = LedgerRow._fields  # a row is a tuple of its values in this order, bound as it is


def key_values(record: KeyRecord) -> tuple[Any, ...]:
    return (record.name, record.digest, record.prefix, record.created_at, record.updated_at, record.revoked_at,
            record.expires_at, None if record.models is None else orjson.dumps(record.models).decode(),
            orjson.dumps(asdict(record.limits)).decode(), orjson.dumps(record.metadata).decode())


def key_record(row: tuple[Any, ...]) -> KeyRecord:
    name, digest, prefix, created, updated, revoked, expires, models, limits, metadata = row
    return KeyRecord(name=name, digest=bytes(digest), prefix=prefix, created_at=created, updated_at=updated,
                     revoked_at=revoked, expires_at=expires,
                     models=None if models is None else tuple(orjson.loads(models)),
                     limits=LimitSettings(**orjson.loads(limits)), metadata=orjson.loads(metadata))
