"""Managed-key and usage operations, shared by `gateway keys|usage` and /admin: validate, apply, describe.

Inputs arrive as KeySpec / KeyChanges (validated by the caller's edge: argparse or the admin API);
outputs are plain JSON-ready dicts. Key values appear only once: in what `create` returns.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import re
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from gateway.routing import Router
from gateway.state.store import KeyExists, KeyMissing, KeyRecord, StateError, StateStore, UsageQuery, UsageTotal
from gateway.teams.keys import KeyChanges, KeySpec, apply_input, new_key
from gateway.teams.limits import period_of

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


async def create_key(store: StateStore, spec: KeySpec, config_names: Collection[str], now: float
                     ) -> tuple[str, KeyRecord]:
    if spec.name in config_names:
        raise KeyExists(f"`{spec.name}` is a key name in the config (auth.keys); choose another name")
    value, digest, prefix = new_key()
    fields = set(spec.model_fields_set) - {"name"}
    record = dataclasses.replace(apply_input(KeyRecord(spec.name, digest, prefix, now), spec, fields, now),
                                 updated_at=None)
    await store.keys.create_key(record)
    return value, record


async def update_key(store: StateStore, name: str, changes: KeyChanges, now: float) -> KeyRecord:
    record = await _existing(store, name)
    if record.revoked_at is not None:
        raise StateError(f"the key `{name}` is revoked; create a new key instead")
    updated = apply_input(record, changes, set(changes.model_fields_set), now)
    await store.keys.update_key(updated)
    return updated


async def revoke_key(store: StateStore, name: str, now: float) -> KeyRecord:
    record = await _existing(store, name)
    if record.revoked_at is not None:
        return record
    revoked = dataclasses.replace(record, revoked_at=now, updated_at=now)
    await store.keys.update_key(revoked)
    return revoked


async def _existing(store: StateStore, name: str) -> KeyRecord:
    record = await store.keys.get_key(name)
    if record is None:
        raise KeyMissing(f"no managed key named `{name}` (gateway keys list shows them)")
    return record


def _time(value: float | None) -> str | None:
    return None if value is None else dt.datetime.fromtimestamp(value, dt.UTC).isoformat(timespec="seconds")


def describe(record: KeyRecord, now: float) -> dict[str, Any]:
    """A key as listings show it: never the key, only its prefix."""
    limits = record.limits
    state = "revoked" if record.revoked_at is not None else "expired" if not record.active(now) else "active"
    return {
        "name": record.name, "prefix": record.prefix + "…", "state": state,
        "models": list(record.models) if record.models is not None else None,
        "rpm": limits.rpm, "tpm": limits.tpm, "concurrency": limits.concurrency,
        "budget_usd": limits.budget_usd, "period": limits.period if limits.budget_usd is not None else None,
        "soft_ratio": limits.soft_ratio if limits.budget_usd is not None else None,
        "expires": _time(record.expires_at), "metadata": record.metadata,
        "created": _time(record.created_at), "updated": _time(record.updated_at), "revoked": _time(record.revoked_at),
    }


async def show(store: StateStore, name: str, now: float, router: Router | None) -> dict[str, Any]:
    """describe() plus this period's spend and which of the key's models have no price (counted as free)."""
    record = await _existing(store, name)
    shown = describe(record, now)
    period, ends = period_of(record.limits.period, now)
    spent = await store.counters.spent(f"key:{record.name}", period)
    shown["spend"] = {"period": period, "spent_usd": round(spent, 6), "resets": _time(ends)}
    if router is not None:
        shown["unpriced_models"] = unpriced(router, record.models)
    return shown


def unpriced(router: Router, globs: tuple[str, ...] | None, limit: int = 20) -> dict[str, Any]:
    from gateway.auth import models_pattern

    pattern = models_pattern(globs)
    free = sorted(rid for rid, route in router.routes.items()
                  if (pattern is None or pattern.match(rid))
                  and any(t.model.cost is None or t.model.cost.input is None for t in route.targets))
    return {"count": len(free), "examples": free[:limit],
            "note": "models without a catalog price count as free against budgets"}


def time_bound(text: str | None, now: float, default: float) -> float:
    """`7d`, `24h`, `30m` (ago), an ISO date or date-time (UTC unless it says), or the default."""
    if text is None or text == "":
        return default
    relative = _RELATIVE.match(text.strip())
    if relative:
        return now - float(relative.group(1)) * _UNITS[relative.group(2)]
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"`{text}` is neither a span like 7d / 24h / 30m nor an ISO date like 2026-12-01") from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


async def usage(store: StateStore, query: UsageQuery) -> list[dict[str, Any]]:
    totals: Sequence[UsageTotal] = await store.ledger.usage(query)
    rows = []
    for total in totals:
        row = dataclasses.asdict(total)
        row[query.by] = row.pop("group")
        row["cost_usd"] = round(row["cost_usd"], 6)
        rows.append(row)
    return rows


def render(rows: Iterable[dict[str, Any]], columns: Sequence[str], fmt: str) -> str:
    rows = list(rows)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)
