"""Limit and budget counters in Redis, shared by every replica: the CounterStore contract of
gateway.state.store, one Lua script per admission and one per batch of settlements.

A Redis failure raises `Unavailable` (gateway.state.redis); what to do then is gateway.state.fallback's
job. Holds (concurrency slots, spend reservations) carry their expiry, so what a killed replica held
stops counting when its requests could no longer be running. Every settlement batch is also this
replica's heartbeat in a registry, which tells each replica how many share the limits.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.state.redis import RedisConnection, key
from gateway.state.redis_lua import ADMIT, SETTLE
from gateway.state.store import Check, CheckState, Settlement, Verdict

DEAD_AFTER = 5.0  # seconds without a heartbeat (one a second) before a replica no longer counts
_KEEP_DAYS = {"day": 2, "week": 8, "month": 32}


@dataclass(frozen=True, slots=True)
class Floor:
    """Raise a spend total to at least `spent`: re-seeds a Redis that came back empty."""

    scope: str
    period: str
    spent: float
    ttl: int


def _keys(check: Check) -> tuple[str, ...]:
    if check.kind == "requests" or check.kind == "tokens":
        return (key("bucket", check.kind, check.scope),)
    if check.kind == "concurrency":
        return (key("inflight", check.scope),)
    return _spend_keys(check.scope, check.period)


def _spend_keys(scope: str, period: str) -> tuple[str, str]:
    return key("spend", scope, period), key("held", scope, period)


def spend_ttl(period: str) -> int:
    """Seconds to keep a spend total after a write: longer than its whole period plus a day, so it outlives
    the period whenever it was last written (0 for a `total` budget: kept for ever)."""
    return _KEEP_DAYS.get(period.partition(":")[0], 0) * 86400


class RedisCounters:
    """CounterStore over one RedisConnection; see gateway.state.store for the contract."""

    def __init__(self, connection: RedisConnection) -> None:
        self.connection = connection
        self.replica = secrets.token_hex(8)
        self.replicas = 1  # live replicas sharing the limits, from the last heartbeat's answer
        self.fresh = False  # the last heartbeat found Redis without our epoch marker (it restarted empty)
        self._grants = 0
        self._admit = connection.script(ADMIT)
        self._settle = connection.script(SETTLE)

    async def admit(self, checks: Sequence[Check], now: float) -> Verdict:
        self._grants += 1
        grant = f"{self.replica}:{self._grants}"
        keys: list[str] = []
        args: list[str | float] = [repr(now), grant]
        for check in checks:
            keys.extend(_keys(check))
            args.extend((check.kind, repr(float(check.limit)), repr(float(check.amount)), repr(check.expires),
                         spend_ttl(check.period) if check.kind == "spend" else 0))
        reply = await self.connection.run(self._admit, keys, args)
        states = tuple(CheckState(float(reply[i]), float(reply[i + 1]), float(reply[i + 2]))
                       for i in range(3, len(reply), 3))
        if int(reply[0]):
            return Verdict(True, states, grant=grant)
        return Verdict(False, states, int(reply[1]), float(reply[2]))

    async def settle(self, settlements: Sequence[Settlement], floors: Sequence[Floor] = (),
                     owed: Sequence[Floor] = ()) -> None:
        """One round trip: settlements, re-seeded totals (`floors`), spend settled while Redis was down
        (`owed`), and the heartbeat, whose answer updates `replicas` and `fresh`."""
        keys = [key("replicas"), key("epoch")]
        args: list[str | float] = [self.replica, DEAD_AFTER]
        for settlement in settlements:
            for check, actual in zip(settlement.checks, settlement.actual, strict=True):
                if check.kind == "requests":
                    continue  # a request counts once it is admitted, whatever it did
                keys.extend(_keys(check))
                args.extend((check.kind, repr(float(check.amount)), repr(float(actual)), str(settlement.grant),
                             spend_ttl(check.period) if check.kind == "spend" else 0))
        for kind, entries in (("floor", floors), ("add", owed)):
            for entry in entries:
                keys.extend(_spend_keys(entry.scope, entry.period))
                args.extend((kind, "0", repr(float(entry.spent)), "", entry.ttl))
        live, fresh = await self.connection.run(self._settle, keys, args)
        self.replicas = max(1, int(live))
        self.fresh = bool(int(fresh))

    async def spent(self, scope: str, period: str) -> float:
        totals = _spend_keys(scope, period)[0]
        value = await self.connection.call(lambda: self.connection.client.hget(totals, "spent"))
        return float(value) if value is not None else 0.0
