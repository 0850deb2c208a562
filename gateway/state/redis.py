"""The one Redis connection of a gateway process, and the only module that imports redis-py.

What it adds to the client: whether Redis is up (a failed call marks it down at once; a probe off
the request path brings it back with back-off, no restart), short socket timeouts so a dead Redis
costs a request at most `TIMEOUT` before it falls back, no retries but one reconnect of a broken
connection (the fallback is the retry), and the key scheme. Every key carries ONE hash tag,
`{gateway}`: on Redis Cluster all of a deployment's keys live in one slot, so a script may touch any
of them (an admission checks a key's, a model's and a provider's limits in one atomic step). One
shard carries the counters; a Redis shard serves far more operations than a gateway fleet's
admissions.

Other parts of the gateway that share state over Redis reuse this connection: `script()` registers
a Lua script, `call()` runs one (or any coroutine on the client) and turns a Redis failure into
`Unavailable`, `up` says whether Redis answered last.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError, RedisError

from gateway import metrics
from gateway.state.redis_url import describe

log = logging.getLogger("gateway")

T = TypeVar("T")

TAG = "{gateway}"  # the hash tag of every key (see the module docstring)
TIMEOUT = 0.5  # seconds to connect or to answer: longer than any healthy round trip, short for a request
MAX_CONNECTIONS = 64  # per process; a request waits (up to TIMEOUT) for a free one rather than opening more
BACKOFF_FIRST = 0.25  # seconds before the first probe of a Redis that went down; doubled up to BACKOFF_MAX
BACKOFF_MAX = 2.0

Script = AsyncScript


class Unavailable(Exception):
    """Redis did not answer (down, unreachable, too slow, or refusing writes); the message says why."""


def key(*parts: str) -> str:
    """`{gateway}:part:part`: every key the gateway keeps in Redis."""
    return ":".join((TAG, *parts))


class RedisConnection:
    def __init__(self, url: str, *, clock: Callable[[], float] = time.monotonic, timeout: float = TIMEOUT) -> None:
        self.shown = describe(url)  # for logs: never the password
        pool = BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=timeout, socket_timeout=timeout,
            socket_connect_timeout=timeout, health_check_interval=0,
            # One immediate retry on a broken connection only: after Redis restarts, each pooled connection
            # fails once on the dead socket, and the retry reconnects it. Never on a timeout: that would double
            # what a request waits for a Redis that is slow, and the fallback is the better retry.
            retry=Retry(NoBackoff(), 1, supported_errors=(ConnectionError,)))
        self.client: Redis = Redis(connection_pool=pool)
        self._clock = clock
        self.up = True  # until a call fails: the first admission tries Redis
        self._backoff = BACKOFF_FIRST
        self._retry_at = 0.0
        metrics.state_backend_up("redis", True)

    def script(self, source: str) -> Script:
        return self.client.register_script(source)

    async def call(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run `work` (a call on `client`); a Redis failure marks the backend down and raises Unavailable."""
        try:
            result = await work()
        except (RedisError, OSError) as exc:
            self.mark_down(exc)
            raise Unavailable(f"Redis at {self.shown}: {type(exc).__name__}: {exc}") from None
        self.mark_up()
        return result

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[str | float]) -> Any:
        return await self.call(lambda: script(keys=keys, args=args))

    @property
    def probe_due(self) -> bool:
        """Down, and the back-off has passed: time for a background call to try again."""
        return not self.up and self._clock() >= self._retry_at

    def mark_down(self, exc: BaseException) -> None:
        now = self._clock()
        if self.up:
            log.error("Redis at %s is unavailable (%s); limits fall back until it answers again",
                      self.shown, type(exc).__name__)
            metrics.state_backend_up("redis", False)
            self.up = False
            self._backoff = BACKOFF_FIRST
        elif now >= self._retry_at:
            self._backoff = min(BACKOFF_MAX, self._backoff * 2)  # a probe failed: wait longer before the next
        else:
            return  # one more of the calls that were in flight when Redis went: the back-off stands
        # Jitter: replicas that lost Redis together do not all come back in the same instant.
        self._retry_at = now + self._backoff * random.uniform(0.8, 1.2)

    def mark_up(self) -> None:
        if not self.up:
            log.warning("Redis at %s answers again; limits are shared again", self.shown)
            metrics.state_backend_up("redis", True)
            self.up = True

    async def close(self) -> None:
        await self.client.aclose()
