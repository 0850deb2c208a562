"""One thread for a store's slow work (batched writes, reports, pruning), run in order off the event loop.

What `loop.run_in_executor` on a one-thread ThreadPoolExecutor did, at a seventh of the cost per call
(~17k instructions a round trip against ~119k, counted by callgrind on uvloop): a queue put, and one
callback back on the loop, without concurrent.futures' Future, its condition variable and the
executor's semaphore. The usage ledger hands it a batch every `state.flush_interval`.

Work handed over always runs, in order, even if its caller stops waiting: a ledger batch is written
whether or not the flush that sent it was cancelled (an executor dropped work not yet started).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


class Worker:
    """Runs `await worker.run(work, *args)` on its thread; `close()` runs what is queued, then joins it."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None  # started on first use: after a fork, in the process using it
        self._closed = False

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        if self._closed:  # nothing queued behind close() could ever be answered
            raise RuntimeError(f"{self._name}: closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._thread is None:
            # A daemon, so a store never closed cannot hold the process at exit; close() joins it.
            self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
            self._thread.start()
        self._jobs.put((work, args, future, loop))
        return await future

    def close(self) -> None:
        """Finish what was handed over, then stop the thread (blocks until it has); run() refuses after."""
        self._closed = True
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            work, args, future, loop = job
            try:
                result = work(*args)
            except BaseException as error:  # the caller's to handle, as an executor would hand it back
                _answer(loop, future, None, error)
            else:
                _answer(loop, future, result, None)


def _answer(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any,
            error: BaseException | None) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
        loop.call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
