"""A key change made elsewhere (the CLI, /admin on another worker) reaches a worker at its next poll.

The poll's sleep is injected, so the test says exactly when a poll happens: the change is not seen
before it and is seen after it, and every wait between polls is POLL_SECONDS, which keeps the
README's promise (a change takes effect on every worker within 1 s) without a clock in the test.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from gateway.state.sqlite import SQLiteStore
from gateway.teams.keys import POLL_SECONDS, KeySpec, ManagedKeys
from gateway.teams.manage import create_key, revoke_key


class Ticks:
    """A sleep that returns when the test says so, and tells the test when the loop is waiting."""

    def __init__(self) -> None:
        self.slept: list[float] = []
        self._go: asyncio.Queue[None] = asyncio.Queue()
        self._waiting = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self._waiting.set()
        await self._go.get()

    async def one_poll(self) -> None:
        """Let one sleep end, then wait until the loop has refreshed and is asleep again."""
        self._waiting.clear()
        self._go.put_nowait(None)
        await self._waiting.wait()


async def test_a_change_made_by_another_writer_is_seen_at_the_next_poll(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    worker, cli = SQLiteStore(path), SQLiteStore(path)
    keys, ticks = ManagedKeys(worker), Ticks()
    await keys.refresh()
    polling = asyncio.create_task(keys.poll(ticks.sleep))
    try:
        await ticks._waiting.wait()  # asleep before its first poll
        _, record = await create_key(cli, KeySpec(name="app"), (), 1000.0)
        assert keys.lookup(record.digest) is None  # not before a poll
        await ticks.one_poll()
        assert keys.lookup(record.digest) is not None
        await revoke_key(cli, "app", 1001.0)
        assert keys.lookup(record.digest) is not None
        await ticks.one_poll()
        assert keys.lookup(record.digest) is None
        assert ticks.slept == [POLL_SECONDS] * 3 and POLL_SECONDS * 2 <= 1.0  # two polls fit in the promised second
    finally:
        polling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await polling
        await worker.close()
        await cli.close()
