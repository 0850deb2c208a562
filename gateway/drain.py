"""Graceful drain of one worker: readiness off at once, work in flight finishes, leftovers end cleanly.

The server (gateway/server.py) owns the signals and calls `begin()` on SIGTERM; the listener closes
after `server.drain_delay`. Requests register while they run; whatever is still running when
`server.drain_timeout` (counted from SIGTERM) runs out is cancelled through `cut()`, and the chat
endpoint turns that cancellation into a `gateway_shutting_down` error: an SSE `error` event for a
stream that already started, a 503 for anything else. Flush hooks (the usage ledger's, say) run
once, after the last request ended and before the process exits.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable

from gateway.errors import GatewayError

log = logging.getLogger("gateway")

FlushHook = Callable[[], Awaitable[None]]

# Tasks the drain deadline cancelled and that have not yet said so. Module-level so that the code
# that catches the cancellation (the stream relay, deep inside any inbound protocol) needs no handle
# on the Drain: a cancelled task is the one running that code.
_CUT: weakref.WeakSet[asyncio.Task[object]] = weakref.WeakSet()

# Each flush hook gets this long; a hook that hangs (a database that is down) must not keep a
# terminating pod alive until the kubelet kills it.
FLUSH_TIMEOUT = 10.0


class ShuttingDown(GatewayError):
    status = 503
    type = "server_error"
    code = "gateway_shutting_down"

    def __init__(self) -> None:
        super().__init__("The gateway is shutting down and could not finish this request in time; retry it.",
                         headers={"retry-after": "1"})


class Drain:
    """Drain state of one worker process. Created with the app; lives as long as the process."""

    def __init__(self) -> None:
        self.draining = False
        self._tasks: set[asyncio.Task[object]] = set()
        self._cutting = False
        self._hooks: list[tuple[str, FlushHook]] = []
        self._flushed = False

    # -- requests ---------------------------------------------------------------------------------

    @property
    def refusing(self) -> bool:
        """The deadline passed: a request that arrives now could not finish, so it is refused at once."""
        return self._cutting

    def track(self, task: asyncio.Task[object]) -> None:
        self._tasks.add(task)

    def untrack(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if self._cutting:  # only cut() puts this drain's tasks in _CUT (a WeakSet: Python work per call)
            _CUT.discard(task)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    # -- the drain itself -------------------------------------------------------------------------

    def begin(self, delay: float, timeout: float) -> bool:
        """Start draining: readiness turns 503 now, and whatever still runs after `timeout` is cut.

        False (and nothing scheduled) if the drain had already started. Called on the event loop.
        """
        if self.draining:
            return False
        self.draining = True
        asyncio.get_running_loop().call_later(timeout, self.cut)
        log.warning("draining: readiness is off; %d request(s) in flight; the listener closes in %.1fs; "
                    "requests still running in %.1fs are ended", len(self._tasks), delay, timeout)
        return True

    def cut(self) -> int:
        """The deadline: cancel every request still running; they end with `gateway_shutting_down`."""
        self._cutting = True
        victims = [t for t in self._tasks if not t.done()]
        for task in victims:
            _CUT.add(task)
            task.cancel()
        if victims:
            log.warning("drain deadline: ending %d request(s) still in flight with gateway_shutting_down",
                        len(victims))
        return len(victims)

    # -- flush hooks ------------------------------------------------------------------------------

    def add_flush_hook(self, name: str, hook: FlushHook) -> None:
        """Run `hook` once before the process exits, after the last request ended (e.g. write queued rows)."""
        self._hooks.append((name, hook))

    async def flush(self) -> None:
        """Run every flush hook once, in registration order, each bounded by FLUSH_TIMEOUT."""
        if self._flushed:
            return
        self._flushed = True
        for name, hook in self._hooks:
            try:
                async with asyncio.timeout(FLUSH_TIMEOUT):
                    await hook()
            except TimeoutError:
                log.error("flush hook %s did not finish within %.0fs; exiting without it", name, FLUSH_TIMEOUT)
            except Exception:
                log.exception("flush hook %s failed", name)


def consume_cut() -> bool:
    """Called on CancelledError: True (and the cancellation withdrawn) when the drain deadline caused it,
    so the caller ends its request with ShuttingDown; False for any other cancellation (re-raise it)."""
    task = asyncio.current_task()
    if task is None or task not in _CUT:
        return False
    _CUT.discard(task)
    task.uncancel()
    return True
