"""A request leaves no reference cycle behind: what served it is freed as it ends, not left for the cyclic
GC, which under load walks every request in flight again and again before it finds such garbage (the
gateway sets its young collections far apart on that account: gateway/app.py)."""

from __future__ import annotations

import gc

import pytest

from tests.conftest import GatewayFactory
from tests.failover.test_scenarios import ASK, gateway
from tests.fakes.upstream import FakeUpstream, chunk, ok, pause, stream


@pytest.mark.parametrize("streamed", [False, True], ids=["whole-answer", "paced-stream"])
async def test_a_served_request_leaves_no_garbage_of_the_gateways(start_gateway: GatewayFactory,
                                                                  streamed: bool) -> None:
    events = [chunk(role="assistant", content="")]
    for word in ("one", " two", " three"):
        events += [chunk(content=word), pause(0.01)]
    async with FakeUpstream() as up:
        up.script(*[stream([*events, chunk(finish_reason="stop")]) if streamed else ok("one two three")] * 2)
        gw = await gateway(start_gateway, up)
        body = {"model": "acme/m1", "stream": streamed, **ASK}
        assert (await gw.chat(body)).status_code == 200  # warm: what is made once is not per request
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            response = await gw.chat(body)
            gc.collect()
            left = sorted({type(o).__qualname__ for o in gc.garbage
                           if type(o).__module__.startswith(("gateway", "aiohttp", "uvicorn", "starlette"))})
        finally:
            gc.garbage.clear()
            gc.set_debug(0)
            gc.enable()
    assert response.status_code == 200 and "three" in response.text
    assert left == []
