"""Open circuits turn half-open on a timer armed for the end of the first cooldown, not a ticker.

An idle gateway with every circuit closed has no timer at all; an opening arms one for its cooldown's
end (the earliest of several), and when it fires the circuit turns half-open with nobody asking.
The clock is injected: the timer's delay is read from it, and the test moves it before the timer fires.
"""

from __future__ import annotations

import asyncio

from gateway.config.schema import BreakerPolicy
from gateway.failover.breaker import State
from gateway.failover.health import Health
from tests.conftest import FakeClock


def _open(health: Health, key: str) -> None:
    ticket = health.admit(key)
    assert ticket is not None
    health.failed(ticket)
    assert health.state(key) is State.OPEN


async def test_no_timer_while_closed_and_one_for_the_first_cooldown_to_end() -> None:
    clock = FakeClock()
    health = Health(BreakerPolicy(failures=1, cooldown=30), clock)
    loop = asyncio.get_running_loop()
    health.start_timer(loop)
    try:
        ticket = health.admit("p/a")
        assert ticket is not None
        health.succeeded(ticket)
        assert health._timer is None, "nothing open: nothing to wake for"
        _open(health, "p/a")
        assert health._timer is not None and abs(health._timer.when() - (loop.time() + 30)) < 1
        clock.advance(10)
        _open(health, "p/b")  # ends 10 s later than p/a's: the timer stays on p/a's end
        assert abs(health._timer.when() - (loop.time() + 20)) < 1
    finally:
        health.stop_timer()
    assert health._timer is None


async def test_the_timer_turns_an_idle_open_circuit_half_open() -> None:
    clock = FakeClock()
    health = Health(BreakerPolicy(failures=1, cooldown=0.05), clock)
    changes: asyncio.Queue[tuple[str, State]] = asyncio.Queue()
    health.configure(health.policy, None, lambda key, state: changes.put_nowait((key, state)))
    health.start_timer(asyncio.get_running_loop())
    try:
        _open(health, "p/a")
        assert await changes.get() == ("p/a", State.OPEN)
        clock.advance(0.05)  # the cooldown has passed on the gateway's clock; the timer fires ~50 ms later
        assert await asyncio.wait_for(changes.get(), 5) == ("p/a", State.HALF_OPEN)
        assert health._timer is None, "no open circuit is left to wait for"
    finally:
        health.stop_timer()
