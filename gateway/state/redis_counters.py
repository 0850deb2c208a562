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
_MAX_SEEN = 10_000  # budgets (scope, period) remembered from admissions, most recent kept


@dataclass(frozen=True, slots=True)
class Spend:
    """An amount of a budget's spend: a floor to raise its total to (re-seeding a Redis that came back
    empty), or spend to add (settled while Redis was down)."""

    scope: str
    period: str
    usd: float


@dataclass(frozen=True, slots=True)
class Seen:
    """A budget as its last admission saw it: settled spend, and that plus every reservation in flight."""

    spent: float
    used: float


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
        # What the last admission of each budget saw (bounded): the fallback's shares and re-seeding use it.
        self.seen: dict[tuple[str, str], Seen] = {}
        self._admit = connection.script(ADMIT)
        self._settle = connection.script(SETTLE)

    async def admit(self, checks: Sequence[Check], now: float) -> Verdict:
        self._grants += 1
        grant = f"{self.replica}:{self._grants}"
        keys: list[str] = []
        fields: list[str] = []
        for check in checks:
            keys.extend(_keys(check))
            fields.extend((check.kind, repr(float(check.limit)), repr(float(check.amount)), repr(check.expires),
                           str(spend_ttl(check.period)) if check.kind == "spend" else "0"))
        reply = (await self.connection.run(self._admit, keys, (repr(now), grant, " ".join(fields)))).split()
        states = tuple(CheckState(float(reply[i]), float(reply[i + 1]), float(reply[i + 2]))
                       for i in range(3, len(reply), 4))
        for index, check in enumerate(checks):
            if check.kind == "spend":
                self._see(check.scope, check.period, float(reply[6 + 4 * index]), states[index].used)
        if reply[0] == b"1":
            return Verdict(True, states, grant=grant)
        return Verdict(False, states, int(reply[1]), float(reply[2]))

    def _see(self, scope: str, period: str, spent: float, used: float) -> None:
        key = (scope, period)
        self.seen.pop(key, None)  # re-inserted last: the least recently seen go first
        self.seen[key] = Seen(spent, used)
        if len(self.seen) > _MAX_SEEN:
            del self.seen[next(iter(self.seen))]

    async def settle(self, settlements: Sequence[Settlement], floors: Sequence[Spend] = (),
                     owed: Sequence[Spend] = ()) -> None:
        """One round trip: re-seeded totals (`floors`), settlements, spend settled while Redis was down
        (`owed`), and the heartbeat, whose answer updates `replicas`, `fresh` and `seen`."""
        keys = [key("replicas"), key("epoch")]
        fields: list[str] = []
        spends: list[tuple[str, str]] = []  # the budgets whose settled totals the answer carries, in order

        def spend_op(kind: str, scope: str, period: str, amount: float, actual: float, grant: str) -> None:
            keys.extend(_spend_keys(scope, period))
            spends.append((scope, period))
            fields.extend((kind, repr(float(amount)), repr(float(actual)), grant, str(spend_ttl(period))))

        # Floors first: they restore totals as they were before what this batch settles.
        for entry in floors:
            spend_op("floor", entry.scope, entry.period, 0.0, entry.usd, "-")
        for settlement in settlements:
            for check, actual in zip(settlement.checks, settlement.actual, strict=True):
                if check.kind == "spend":
                    spend_op("spend", check.scope, check.period, check.amount, actual, str(settlement.grant))
                elif check.kind != "requests":  # a request counts once admitted, whatever it did
                    keys.extend(_keys(check))
                    fields.extend((check.kind, repr(float(check.amount)), repr(float(actual)), str(settlement.grant),
                                   "0"))
        for entry in owed:
            spend_op("add", entry.scope, entry.period, 0.0, entry.usd, "-")
        reply = await self.connection.run(self._settle, keys, (self.replica, repr(DEAD_AFTER), " ".join(fields)))
        live, fresh, *totals = reply.split()
        self.replicas = max(1, int(live))
        self.fresh = fresh == b"1"
        for (scope, period), spent in zip(spends, totals, strict=True):
            seen = self.seen.get((scope, period))
            self._see(scope, period, float(spent), seen.used if seen is not None else float(spent))

    async def leave(self) -> None:
        """A clean exit: stop counting as a replica now, not when the heartbeat lapses."""
        await self.connection.call(lambda: self.connection.client.zrem(key("replicas"), self.replica))

    async def spent(self, scope: str, period: str) -> float:
        totals = _spend_keys(scope, period)[0]
        value = await self.connection.call(lambda: self.connection.client.hget(totals, "spent"))
        return float(value) if value is not None else 0.0
