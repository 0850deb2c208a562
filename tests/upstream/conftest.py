"""The upstream transport's tests run on asyncio's event loop; those of the chunked body and of TLS also on
uvloop's, the loop the gateway's server runs, whose transports differ (set_protocol, cached callbacks)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping

import pytest
import uvloop

from gateway.upstream.transport import Transport


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[
        str, Callable[[], asyncio.AbstractEventLoop]]:
    if item.path.name in ("test_transport_chunked.py", "test_transport_tls.py"):
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


@pytest.fixture
async def transport() -> AsyncIterator[Transport]:
    """A started Transport (the process's aiohttp session), closed after the test."""
    transport = Transport()
    await transport.start()
    yield transport
    await transport.close()
