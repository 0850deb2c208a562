"""The gateway's server wakes its main loop once a second (the `date` header's turn) or when told to
exit, not every 0.1 s to look at `should_exit` as uvicorn's does: an idle worker's own background.

The loop's turns are counted through on_tick, and the test lets the event loop run many times over
while nothing is due: no turn may happen then, and setting should_exit ends the loop at once.
"""

from __future__ import annotations

import asyncio
import threading

import uvicorn

from gateway.server import GatewayServer


async def _app(scope: object, receive: object, send: object) -> None:
    raise AssertionError("no request in this test")


class _Counted(GatewayServer):
    def __init__(self) -> None:
        config = uvicorn.Config(_app, lifespan="off", log_level="critical")
        config.load()
        super().__init__(config, gateway=None)
        self.turns: list[int] = []
        self.waiting = asyncio.Event()

    async def on_tick(self, counter: int) -> bool:
        self.turns.append(counter)
        self.waiting.set()
        return await super().on_tick(counter)


async def _spin(times: int) -> None:
    for _ in range(times):
        await asyncio.sleep(0)


async def test_the_main_loop_waits_without_polling_and_ends_when_told() -> None:
    server = _Counted()
    loop_task = asyncio.create_task(server.main_loop())
    await server.waiting.wait()
    await _spin(200)
    assert server.turns == [0], "no turn before its second"
    assert b"date" in dict(server.server_state.default_headers)
    server.should_exit = True
    await asyncio.wait_for(loop_task, 5)
    assert server.turns == [0, 10], "one last turn, which sees should_exit"


async def test_should_exit_set_from_another_thread_wakes_the_loop() -> None:
    server = _Counted()
    loop_task = asyncio.create_task(server.main_loop())
    await server.waiting.wait()
    await _spin(10)
    setter = threading.Thread(target=setattr, args=(server, "should_exit", True))
    setter.start()
    setter.join()
    await asyncio.wait_for(loop_task, 5)
    assert server.should_exit and server.turns[-1] % 10 == 0  # every turn renews the date
