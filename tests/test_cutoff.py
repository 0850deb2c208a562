"""gateway.cutoff.Cutoff ends a block as asyncio.timeout does, case by case (no timing asserted:
the outcomes are compared with asyncio.timeout's own on the same script)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from gateway.cutoff import Cutoff


async def _outcome(limit: Callable[[float], Any], seconds: float, work: Callable[[], Any],
                   cancel_from_outside: bool = False) -> str:
    """What a task running `work` under `limit(seconds)` ends with."""

    async def run() -> str:
        try:
            if limit is Cutoff:
                with limit(seconds):
                    await work()
            else:
                async with limit(seconds):
                    await work()
        except TimeoutError:
            return "timeout"
        return "done"

    task = asyncio.get_running_loop().create_task(run())
    if cancel_from_outside:
        await asyncio.sleep(0)  # the task is inside its block, waiting
        task.cancel()
    try:
        return await task
    except asyncio.CancelledError:
        return "cancelled"


def _never() -> Any:
    return asyncio.get_running_loop().create_future()


@pytest.mark.parametrize("case", ["expires", "finishes", "cancelled from outside", "expired and cancelled"])
async def test_a_cutoff_ends_a_block_as_asyncio_timeout_does(case: str) -> None:
    outcomes = []
    for limit in (Cutoff, asyncio.timeout):
        if case == "expires":
            outcome = await _outcome(limit, 0.0, _never)
        elif case == "finishes":
            outcome = await _outcome(limit, 3600.0, lambda: asyncio.sleep(0))
        elif case == "cancelled from outside":
            outcome = await _outcome(limit, 3600.0, _never, cancel_from_outside=True)
        else:  # the limit fires and another cancel of the same task arrives before it resumes
            outcome = await _outcome(limit, 0.0, _never, cancel_from_outside=True)
        outcomes.append(outcome)
    assert outcomes[0] == outcomes[1], outcomes
    assert outcomes[0] == {"expires": "timeout", "finishes": "done", "cancelled from outside": "cancelled",
                           "expired and cancelled": "cancelled"}[case]


async def test_a_block_that_ends_first_leaves_no_timer_and_no_cancel_behind() -> None:
    with Cutoff(0.0) as cutoff:
        pass
    assert cutoff._handle.cancelled()
    await asyncio.sleep(0)  # had the timer been left armed, it would have cancelled this task here
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_an_expired_cutoff_leaves_the_task_uncancelled_for_what_follows() -> None:
    with contextlib.suppress(TimeoutError), Cutoff(0.0):
        await _never()
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await asyncio.sleep(0)  # not cancelled again
