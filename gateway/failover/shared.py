"""Circuits and latencies shared by every replica through Redis (`state.backend: redis`), off the
request path.

Each replica keeps deciding on its own circuits (gateway/failover/health.py), so a request never
waits for Redis. One background task per process then, every CIRCUITS_EVERY seconds and in one
round trip, publishes the circuits this replica opened (with the cooldown left) or closed, and takes
what the others published since its last look: a circuit opened by failures through replica A is
open on replica B within that period. Half-open comes by time on each replica alike (each lets its
own probe through); the first probe that succeeds closes the circuit everywhere. Every STATS_EVERY
seconds each replica publishes its per-target latency EWMAs and failure windows and takes the
others': LatencyStats blends the EWMAs, so `strategy: latency` ranks by what the whole fleet
measured, and each breaker's `failure_ratio` counts every replica's outcomes in the window (the
count of consecutive failures stays per replica: "consecutive" has no order across replicas).

Cooldowns travel as "open until" in Redis's own clock (TIME in the scripts), so replicas' clocks
never need to agree. When Redis is down the circuits simply stay local: the task tries again with
the connection's back-off and, once Redis answers, publishes every circuit still open here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Sequence

from gateway import tasks
from gateway.failover.breaker import State
from gateway.failover.health import Health
from gateway.state.fallback import FallbackCounters
from gateway.state.redis import RedisConnection, Unavailable, key
from gateway.state.store import StateStore

log = logging.getLogger("gateway")

CIRCUITS_EVERY = 0.2  # seconds between circuit syncs: a peer's opening is seen here within this
# (a local opening or closing is published at once, not at the next tick)
STATS_EVERY = 1.0  # seconds between syncs of latencies and failure windows
STATS_FRESH_MS = 5_000  # a replica that stopped publishing (gone, or cut off) stops counting after this

# KEYS: circuits hash, version counter. ARGV: version the caller last saw, its origin, then triples
# (target, "open"|"closed", seconds the circuit stays open). Each entry is "state|until_ms|origin|seq"
# with seq from the version counter, so a reader applies each change once and in order.
# Returns {version, now_ms} when nothing changed since the caller's version, else the hash appended.
# Keys expire after a day without news (86400 s): they outlive a quiet day, not a deployment that is gone.
CIRCUITS_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 3, #ARGV, 3 do
  local seq = redis.call('INCR', KEYS[2])
  local untl = now + math.floor(tonumber(ARGV[i + 2]) * 1000)
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1] .. '|' .. untl .. '|' .. ARGV[2] .. '|' .. seq)
end
if #ARGV > 2 then
  redis.call('EXPIRE', KEYS[1], 86400)
  redis.call('EXPIRE', KEYS[2], 86400)
end
local version = redis.call('GET', KEYS[2]) or '0'
local out = {version, tostring(now)}
if version ~= ARGV[1] then
  for _, item in ipairs(redis.call('HGETALL', KEYS[1])) do out[#out + 1] = item end
end
return out
"""

# KEYS: stats hash (field "target|origin", value "<stats>|at_ms"). ARGV: origin, freshness in ms, then
# pairs (target, stats) where stats is "ewma,total,failed" (ewma empty for a target never seen to
# succeed). Stale fields (replicas gone) are deleted; returns the other replicas' fresh fields as flat
# pairs (field, stats): strings, since Lua would truncate numbers to integers.
STATS_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local mine = '|' .. ARGV[1]
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i] .. mine, ARGV[i + 1] .. '|' .. now)
end
redis.call('EXPIRE', KEYS[1], 86400)
local all = redis.call('HGETALL', KEYS[1])
local out = {}
local fresh = tonumber(ARGV[2])
for i = 1, #all, 2 do
  local field, value = all[i], all[i + 1]
  local sep = string.find(value, '|', 1, true)
  if now - tonumber(string.sub(value, sep + 1)) > fresh then
    redis.call('HDEL', KEYS[1], field)
  elseif string.sub(field, -#mine) ~= mine then
    out[#out + 1] = field
    out[#out + 1] = string.sub(value, 1, sep - 1)
  end
end
return out
"""


def connection_of(store: StateStore) -> RedisConnection:
    """The one Redis connection of this process: the one the shared counters use."""
    counters = store.counters
    if not isinstance(counters, FallbackCounters):
        raise TypeError(f"state.backend is redis but the counters are {type(counters).__name__}")
    return counters.connection


class HealthSync:
    """The background task that shares one process's circuits and latencies with its peers."""

    def __init__(self, health: Health, connection: RedisConnection, *, origin: str | None = None) -> None:
        self.health = health
        self.connection = connection
        self.origin = origin or secrets.token_hex(6)  # this process, among the replicas
        self._circuits = connection.script(CIRCUITS_LUA)
        self._stats = connection.script(STATS_LUA)
        self._keys = (key("health", "circuits"), key("health", "version"))
        self._stats_key = key("health", "stats")
        self._seen = -1  # the circuits' version last applied here
        self._applied: dict[str, int] = {}  # per target: the seq of the last peer entry applied
        self._resync = True  # publish every circuit open here at the next successful sync
        self._task: asyncio.Task[None] | None = None
        self._news = asyncio.Event()  # a local opening or closing: publish it without waiting for the tick
        health.outbox = {}
        health.wake = self._news.set

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            await tasks.stop(self._task)
            self._task = None
        self.health.outbox = None
        self.health.wake = lambda: None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stats_due = loop.time()
        while True:
            if self.connection.up or self.connection.probe_due:
                try:
                    await self.sync_circuits()
                    if loop.time() >= stats_due:
                        stats_due = loop.time() + STATS_EVERY
                        await self.sync_stats()
                except Unavailable:
                    self._resync = True  # the connection logged it and backs off; circuits stay local
                except Exception:  # a bug here must not end sharing for the life of the process
                    log.exception("sharing circuits over Redis failed; retrying")
            await self.news_or_tick()

    async def news_or_tick(self) -> None:
        """Wait for a local opening or closing, or CIRCUITS_EVERY. Not asyncio.wait_for: in Python
        3.11 it returns the event's result when the event is set in the same loop turn as a cancel
        (gh-86296), which swallowed stop()'s cancel and hung the shutdown."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CIRCUITS_EVERY):
                await self._news.wait()
        self._news.clear()

    async def sync_circuits(self) -> None:
        """Publish this replica's openings and closings, apply the others' (one round trip)."""
        outbox = self.health.outbox
        assert outbox is not None
        pending = dict(outbox)
        outbox.clear()
        if self._resync:
            pending.update((b.key, State.OPEN) for b in self.health if b.state is State.OPEN)
        try:
            reply = await self.connection.run(self._circuits, self._keys,
                                              [str(self._seen), self.origin, *self._changes(pending)])
        except Unavailable:
            for target, state in pending.items():  # unpublished: keep for the next try, newer news first
                outbox.setdefault(target, state)
            raise
        self._resync = False
        self._apply(reply)

    def _changes(self, pending: dict[str, State]) -> list[str]:
        """Flat (target, state, seconds open) for what is still true now."""
        out: list[str] = []
        for target, state in pending.items():
            if self.health.state(target) is not state:
                continue  # overtaken (a peer closed it, or the cooldown ran out): nothing to tell
            remaining = self.health.open_remaining(target) if state is State.OPEN else 0.0
            if state is State.OPEN and remaining <= 0:
                continue
            out += (target, "open" if state is State.OPEN else "closed", f"{remaining:.3f}")
        return out

    def _apply(self, reply: Sequence[bytes]) -> None:
        version, now = int(reply[0]), int(reply[1])
        if version < self._seen:
            # Redis lost our entries (restarted empty): start over, and tell it what is open here.
            self._applied.clear()
            self._resync = True
        self._seen = version
        for index in range(2, len(reply) - 1, 2):
            target = reply[index].decode()
            state, until, origin, seq = reply[index + 1].decode().split("|")
            if origin == self.origin or int(seq) <= self._applied.get(target, 0):
                continue
            self._applied[target] = int(seq)
            if state == "closed":
                if self.health.close_from_peer(target):
                    log.info("circuit for %s closed by another replica's probe", target)
            elif (remaining := (int(until) - now) / 1000) > 0 and self.health.open_from_peer(target, remaining):
                log.info("circuit for %s opened by another replica (%.1f s left)", target, remaining)

    async def sync_stats(self) -> None:
        """Publish this replica's latency EWMAs and failure windows, take the others' (one round trip)."""
        ewmas = self.health.latency.own()
        windows = self.health.windows()
        args = [self.origin, str(STATS_FRESH_MS)]
        for target in ewmas.keys() | windows.keys():
            ewma = ewmas.get(target)
            total, failed = windows.get(target, (0, 0))
            args += (target, f"{'' if ewma is None else repr(ewma)},{total},{failed}")
        reply: Sequence[bytes] = await self.connection.run(self._stats, (self._stats_key,), args)
        latencies: dict[str, list[float]] = {}
        peer_windows: dict[str, tuple[int, int]] = {}
        for index in range(0, len(reply) - 1, 2):
            target = reply[index].decode().rpartition("|")[0]
            mean, outcomes, failures = reply[index + 1].decode().split(",")
            if mean:
                latencies.setdefault(target, []).append(float(mean))
            seen = peer_windows.get(target, (0, 0))
            peer_windows[target] = (seen[0] + int(outcomes), seen[1] + int(failures))
        self.health.latency.set_peers({t: (sum(v) / len(v), len(v)) for t, v in latencies.items()})
        self.health.set_peer_windows(peer_windows)
