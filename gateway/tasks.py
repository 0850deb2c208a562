"""Ending the gateway's background tasks at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def stop(task: asyncio.Task[Any]) -> None:
    """Cancel `task` until it has ended. One cancel is not always enough: a cancel that lands in a
    backend call can be lost (the Redis client can lose one, and asyncio.wait_for in Python 3.11 did,
    gh-86296), and a background loop that goes on would hold the gateway's shutdown forever."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    with contextlib.suppress(asyncio.CancelledError):
        task.result()
