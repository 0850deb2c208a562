"""The store's background thread: work runs in order off the loop, errors come back, nothing handed over is lost."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gateway.state.worker import Worker


async def test_work_runs_in_order_on_its_own_thread_and_errors_come_back() -> None:
    worker = Worker("test-worker")
    done: list[int] = []

    def step(n: int) -> str:
        done.append(n)
        return threading.current_thread().name

    def fail() -> None:
        raise ValueError("no such table")

    try:
        names = await asyncio.gather(*(worker.run(step, n) for n in range(20)))
        assert done == list(range(20)) and set(names) == {"test-worker"}
        with pytest.raises(ValueError, match="no such table"):
            await worker.run(fail)
        assert await worker.run(step, 20) == "test-worker"  # the thread outlives a failed job
    finally:
        worker.close()


async def test_a_job_whose_caller_stopped_waiting_still_runs_and_close_finishes_the_queue() -> None:
    worker = Worker("test-worker")
    release = threading.Event()
    done: list[str] = []
    try:
        blocker = asyncio.ensure_future(worker.run(release.wait, 10))
        abandoned = asyncio.ensure_future(worker.run(done.append, "abandoned"))
        await asyncio.sleep(0)
        abandoned.cancel()
        queued = asyncio.ensure_future(worker.run(done.append, "queued"))
        await asyncio.sleep(0)
        release.set()
        assert await blocker is True
        await queued
        assert done == ["abandoned", "queued"]
        last = asyncio.ensure_future(worker.run(done.append, "at close"))
        await asyncio.sleep(0)  # handed over, not waited for
    finally:
        worker.close()
    assert done == ["abandoned", "queued", "at close"]
    last.cancel()
    with pytest.raises(RuntimeError, match="closed"):  # as an executor after shutdown: never a silent hang
        await worker.run(done.append, "after close")
    assert done == ["abandoned", "queued", "at close"]


def test_one_worker_serves_one_event_loop_after_another() -> None:
    worker = Worker("test-worker")
    try:
        assert asyncio.run(worker.run(sum, [1, 2])) == 3
        assert asyncio.run(worker.run(sum, [3, 4])) == 7
    finally:
        worker.close()
