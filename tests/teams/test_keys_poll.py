"""A key change made elsewhere (the CLI, /admin on another worker) reaches a worker at its next poll.

The poll's timer is injected, so the test says exactly when a poll happens: the change is not seen
before it and is seen after it, and every timer between polls is POLL_SECONDS, which keeps the
README's promise (a change takes effect on every worker within 1 s) without a clock in the test.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

from gateway.state.sqlite import SQLiteStore
from gateway.state.store import KeyRecord
from gateway.teams.keys import POLL_SECONDS, KeySpec, ManagedKeys
from gateway.teams.manage import create_key, revoke_key


class Ticks:
    """loop.call_later for the poll: keeps the one pending timer, which the test fires when it says."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.pending: tuple[Callable[[asyncio.Future[None]], None], asyncio.Future[None]] | None = None
        self.armed = asyncio.Event()

    def later(self, delay: float, callback: Callable[[asyncio.Future[None]], None],
              due: asyncio.Future[None], /) -> Ticks:
        self.delays.append(delay)
        self.pending = (callback, due)
        self.armed.set()
        return self

    def cancel(self) -> None:
        self.pending = None

    async def one_poll(self) -> None:
        """Fire the pending timer, then wait until the poll has looked (and refreshed) and armed the next."""
        assert self.pending is not None
        callback, due = self.pending
        self.pending = None
        self.armed.clear()
        callback(due)
        await self.armed.wait()


async def test_a_change_made_by_another_writer_is_seen_at_the_next_poll(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    worker, cli = SQLiteStore(path), SQLiteStore(path)
    keys, ticks = ManagedKeys(worker), Ticks()
    await keys.refresh()
    polling = asyncio.create_task(keys.poll(ticks.later))
    try:
        await ticks.armed.wait()  # waiting for its first poll
        _, record = await create_key(cli, KeySpec(name="app"), (), 1000.0)
        assert keys.lookup(record.digest) is None  # not before a poll
        await ticks.one_poll()
        assert keys.lookup(record.digest) is not None
        await revoke_key(cli, "app", 1001.0)
        assert keys.lookup(record.digest) is not None
        await ticks.one_poll()
        assert keys.lookup(record.digest) is None
        assert ticks.delays == [POLL_SECONDS] * 3 and POLL_SECONDS * 2 <= 1.0  # two polls fit in the promised second
    finally:
        polling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await polling
        await worker.close()
        await cli.close()


class _CountedQueries(SQLiteStore):
    """The real store, counting the reads the poll makes."""

    now_reads = 0
    lists = 0

    def keys_generation_now(self) -> int:
        self.now_reads += 1
        return super().keys_generation_now()

    async def list_keys(self) -> list[KeyRecord]:
        self.lists += 1
        return await super().list_keys()


async def test_an_unchanged_generation_is_read_in_the_timer_and_wakes_nothing(tmp_path: Path) -> None:
    # Polls with no change read the generation from the timer callback and arm the next timer there:
    # the poll's task is not resumed (its future stays pending) and the keys are not listed again.
    store = _CountedQueries(str(tmp_path / "state.db"))
    keys, ticks = ManagedKeys(store), Ticks()
    await keys.refresh()
    polling = asyncio.create_task(keys.poll(ticks.later))
    try:
        await ticks.armed.wait()
        assert ticks.pending is not None
        due = ticks.pending[1]
        for _ in range(5):
            callback, fired = ticks.pending
            callback(fired)  # synchronously: no await between the look and the next timer
            assert ticks.pending is not None and ticks.pending[1] is due
        assert not due.done() and store.now_reads == 1 + 5 and store.lists == 1  # 1: the first refresh
        await create_key(SQLiteStore(store.path), KeySpec(name="app"), (), 1000.0)
        await ticks.one_poll()
        assert due.done() and store.lists == 2 and keys.names == {"app"}
    finally:
        polling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await polling
        await store.close()


class _Remote(SQLiteStore):
    """A store that cannot read the generation at once, as PostgreSQL: every poll awaits it."""

    awaited = 0

    def keys_generation_now(self) -> None:
        return None

    async def keys_generation(self) -> int:
        self.awaited += 1
        return await super().keys_generation()


async def test_a_store_that_must_be_awaited_is_asked_at_every_poll(tmp_path: Path) -> None:
    store = _Remote(str(tmp_path / "state.db"))
    keys, ticks = ManagedKeys(store), Ticks()
    await keys.refresh()
    polling = asyncio.create_task(keys.poll(ticks.later))
    try:
        await ticks.armed.wait()
        for _ in range(3):
            await ticks.one_poll()
        assert store.awaited == 1 + 3
    finally:
        polling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await polling
        await store.close()
