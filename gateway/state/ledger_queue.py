"""A LedgerStore whose `append` never waits on the database: rows queue in memory for a writer task.

For a networked ledger (PostgreSQL) that may be slow or away. The queue is bounded
(`state.ledger_queue_rows`): past the bound the oldest rows are dropped, counted in
`gateway_ledger_rows_dropped_total` and logged once per outage; up to the bound none is lost. Every
row gets a sequence number under this queue's random writer id when it is queued, and the sink
inserts idempotently on (writer, seq), so a batch retried after an unclear failure (the server died
after committing, before answering) is not written twice. `close()` writes what is left, within a
deadline, before the process exits.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from gateway import metrics, tasks
from gateway.state.store import LedgerRow, StateUnavailable, UsageQuery, UsageTotal

log = logging.getLogger("gateway")

BATCH_ROWS = 2000  # one insert round; large enough that a backlog clears in seconds once the database is back
CLOSE_SECONDS = 10.0  # at exit: how long to keep trying to write what is queued
_ERROR_PAUSE = 1.0  # after an unexpected error (not an outage): a pause, so a bad row cannot spin the loop


class LedgerSink(Protocol):
    """Where the queue writes: idempotent on (writer, seq); raises StateUnavailable while down."""

    async def write(self, writer: uuid.UUID, rows: Sequence[tuple[int, LedgerRow]]) -> None: ...
    async def usage(self, query: UsageQuery) -> list[UsageTotal]: ...
    async def prune(self, before: float) -> int: ...
    def retry_in(self) -> float: ...  # seconds until the backend is worth trying again


class QueuedLedger:
    def __init__(self, sink: LedgerSink, bound: int, backend: str) -> None:
        self._sink = sink
        self._bound = bound
        self._backend = backend
        self._writer = uuid.uuid4()
        self._seq = itertools.count(1)
        self._rows: deque[tuple[int, LedgerRow]] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._dropped = 0  # in the current outage; logged once when it starts and summed when it ends

    @property
    def queued(self) -> int:
        return len(self._rows)

    async def append(self, rows: Sequence[LedgerRow]) -> None:
        if not rows:
            return
        self._rows.extend(zip(self._seq, rows, strict=False))
        over = len(self._rows) - self._bound
        if over > 0:
            for _ in range(over):
                self._rows.popleft()
            self._drop(over)
        metrics.ledger_queued(len(self._rows))
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._write_loop())
        assert self._wake is not None
        self._wake.set()

    def _drop(self, count: int) -> None:
        if not self._dropped:
            log.error("ledger queue full (%d rows) while %s is unreachable: dropping the oldest rows until it is "
                      "back (counted in gateway_ledger_rows_dropped_total)", self._bound, self._backend)
        self._dropped += count
        metrics.ledger_dropped(count)

    async def _write_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._rows:
                try:
                    await self._write_batch()
                except StateUnavailable:
                    await asyncio.sleep(max(self._sink.retry_in(), 0.05))  # the database's back-off
                except Exception:
                    log.exception("could not write %d ledger rows to %s; retrying", len(self._rows), self._backend)
                    await asyncio.sleep(_ERROR_PAUSE)

    async def _write_batch(self) -> None:
        batch = list(itertools.islice(self._rows, BATCH_ROWS))
        await self._sink.write(self._writer, batch)
        # Rows dropped at the front while this batch was in flight are gone already: pop by sequence.
        last = batch[-1][0]
        while self._rows and self._rows[0][0] <= last:
            self._rows.popleft()
        metrics.ledger_queued(len(self._rows))
        if self._dropped:
            log.warning("ledger writing to %s again; %d rows were dropped while it was unreachable",
                        self._backend, self._dropped)
            self._dropped = 0

    async def usage(self, query: UsageQuery) -> list[UsageTotal]:
        return await self._sink.usage(query)

    async def prune(self, before: float) -> int:
        return await self._sink.prune(before)

    async def close(self, deadline: float = CLOSE_SECONDS) -> None:
        """Stop the writer and write what is queued, trying until `deadline` seconds have passed."""
        if self._task is not None:
            await tasks.stop(self._task)
            self._task = None
        ends = time.monotonic() + deadline
        while self._rows:
            try:
                await self._write_batch()
            except StateUnavailable:
                if time.monotonic() + self._sink.retry_in() >= ends:
                    break
                await asyncio.sleep(max(self._sink.retry_in(), 0.05))
            except Exception:
                log.exception("could not write ledger rows to %s at exit", self._backend)
                break
        if self._rows:
            log.error("%d ledger rows could not be written to %s before exit", len(self._rows), self._backend)
