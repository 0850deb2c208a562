"""Client connections are bounded before any request reaches the app: head size (431), head and body
read timeouts (408), a connection cap (503), and no reading of a body after an early answer.

Raw sockets, because the point is what happens on the wire when a client misbehaves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from tests.conftest import GatewayFactory, RunningGateway

# A read that never comes back within this is the failure these tests look for (not a sync mechanism).
WAIT = 5.0


async def gateway(start_gateway: GatewayFactory, **server: Any) -> RunningGateway:
    return await start_gateway({"server": server})


OPENED: list[asyncio.StreamWriter] = []


@pytest.fixture(autouse=True)
def _close_sockets(start_gateway: GatewayFactory) -> Iterator[None]:
    """Close every raw connection before the gateway stops (even when a test failed half-way)."""
    yield
    while OPENED:
        OPENED.pop().close()


async def connect(gw: RunningGateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    url = urlsplit(gw.base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    OPENED.append(writer)
    return reader, writer


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the gateway sends until it closes the connection."""
    async with asyncio.timeout(WAIT):
        return await reader.read(-1)


def status_and_error(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, orjson.loads(body)["error"] if body.startswith(b"{") else {}


def request_id(raw: bytes) -> bytes | None:
    head = raw.partition(b"\r\n\r\n")[0]
    return next((line.partition(b":")[2].strip() for line in head.split(b"\r\n")[1:]
                 if line.lower().startswith(b"x-request-id:")), None)


async def refused(gw: RunningGateway, reason: str) -> float:
    text = (await gw.client.get("/metrics")).text
    line = f'gateway_connections_refused_total{{reason="{reason}"}} '
    return sum(float(row.split(" ")[-1]) for row in text.splitlines() if row.startswith(line))


async def test_a_head_over_the_limit_is_refused_with_431_at_once(
    start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    gw = await gateway(start_gateway, max_header_bytes=8192)
    reader, writer = await connect(gw)
    # Never finished: without the limit the server would wait for the rest of this header forever.
    writer.write(b"GET /livez HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 100_000)
    status, error = status_and_error(await until_closed(reader))
    assert status == 431 and error["code"] == "request_header_fields_too_large" and "8192" in error["message"]
    assert await refused(gw, "header_too_large") == 1
    assert any("server.max_header_bytes" in r.getMessage() for r in caplog.records)
    # A head under the limit is served as before.
    response = await gw.client.get("/livez", headers={"x-fine": "b" * 6000})
    assert response.status_code == 200


async def test_a_silent_connection_is_closed_after_the_header_timeout(start_gateway: GatewayFactory) -> None:
    gw = await gateway(start_gateway, header_timeout=0.2)
    reader, _writer = await connect(gw)
    assert await until_closed(reader) == b""  # nothing was asked, so nothing is answered
    assert await refused(gw, "header_timeout") == 1


async def test_a_head_that_trickles_gets_408(start_gateway: GatewayFactory) -> None:
    gw = await gateway(start_gateway, header_timeout=0.2)
    reader, writer = await connect(gw)
    writer.write(b"GET /livez HTTP/1.1\r\nhost: x\r\n")  # and then nothing more
    status, error = status_and_error(await until_closed(reader))
    assert status == 408 and error["code"] == "request_timeout"


async def test_a_body_that_never_arrives_gets_408(start_gateway: GatewayFactory) -> None:
    gw = await gateway(start_gateway, body_timeout=0.2)
    reader, writer = await connect(gw)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 b"content-length: 500\r\n\r\n{\"model\": ")
    status, error = status_and_error(await until_closed(reader))
    assert status == 408 and "body" in error["message"]
    assert await refused(gw, "body_timeout") == 1


async def test_connections_beyond_the_cap_get_503_at_once(start_gateway: GatewayFactory) -> None:
    gw = await gateway(start_gateway, max_connections=3)
    await gw.client.get("/livez")  # the test client's own pooled connection is one of the three
    held = []
    for _ in range(2):
        reader, writer = await connect(gw)
        writer.write(b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n")
        async with asyncio.timeout(WAIT):
            assert b" 200 " in await reader.readuntil(b"\r\n\r\n")  # served, and kept open
        held.append(writer)
    reader, writer = await connect(gw)
    status, error = status_and_error(await until_closed(reader))
    assert status == 503 and error["code"] == "too_many_connections"
    assert await refused(gw, "too_many_connections") == 1


@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "content-length"])
async def test_after_a_413_the_connection_is_closed_not_drained(start_gateway: GatewayFactory, declared: bool) -> None:
    gw = await gateway(start_gateway, max_body_bytes=1024)
    reader, writer = await connect(gw)
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    if declared:
        writer.write(head + b"content-length: 100000000\r\n\r\n" + b"x" * 2000)
    else:
        writer.write(head + b"transfer-encoding: chunked\r\n\r\n" + b"7d0\r\n" + b"x" * 2000 + b"\r\n")
    # The client could go on sending for ever; the gateway answers 413 and closes instead of reading on.
    status, error = status_and_error(await until_closed(reader))
    assert status == 413 and error["code"] == "payload_too_large"


async def test_an_early_401_closes_instead_of_reading_the_body(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway({"auth": {"keys": [{"name": "k", "sha256": "0" * 64}]}})
    reader, writer = await connect(gw)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
                 b"10\r\n" + b"y" * 16 + b"\r\n")
    status, _ = status_and_error(await until_closed(reader))
    assert status == 401


async def test_keep_alive_still_works_for_complete_requests(start_gateway: GatewayFactory) -> None:
    gw = await gateway(start_gateway)
    reader, writer = await connect(gw)
    for _ in range(3):
        writer.write(b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n")
        async with asyncio.timeout(WAIT):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            await reader.readexactly(length)
        assert b" 200 " in head


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(WAIT):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        await reader.readexactly(length)
    return head


async def test_a_body_timeout_shorter_than_the_head_timeout_is_kept(start_gateway: GatewayFactory) -> None:
    # The connection's one timer was set for the (long) head timeout; the body's nearer deadline must
    # still be kept, well within WAIT rather than after 30 s.
    gw = await gateway(start_gateway, header_timeout=30.0, body_timeout=0.2)
    reader, writer = await connect(gw)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 b"content-length: 500\r\n\r\n{\"model\": ")
    status, error = status_and_error(await until_closed(reader))
    assert status == 408 and "body" in error["message"]


async def test_each_request_on_a_kept_alive_connection_has_its_own_head_timeout(
    start_gateway: GatewayFactory,
) -> None:
    gw = await gateway(start_gateway, header_timeout=0.5)
    reader, writer = await connect(gw)
    # A client pausing between requests (its pace, not a synchronisation): together they outlast
    # the head timeout the connection started with, each alone is well within it.
    for _ in range(3):
        writer.write(b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n")
        assert b" 200 " in await read_answer(reader)
        await asyncio.sleep(0.3)
    # The timer from the connection's start has come and gone; a head that stalls now still gets 408.
    writer.write(b"GET /livez HTTP/1.1\r\nhost: x\r\n")
    status, error = status_and_error(await until_closed(reader))
    assert status == 408 and error["code"] == "request_timeout"


async def test_every_refusal_carries_a_request_id_the_clients_or_a_new_one(start_gateway: GatewayFactory) -> None:
    gw = await gateway(start_gateway, max_header_bytes=8192, header_timeout=0.3, body_timeout=0.2, max_connections=2)
    issued = (await gw.client.get("/livez")).headers["x-request-id"]  # what the app gives a client that sent none
    # The parser takes a header once the next line begins (it might fold): the id comes before `host`.
    head = b"POST /v1/chat/completions HTTP/1.1\r\nx-request-id: %s\r\nhost: x\r\n"
    asks = {
        431: head % b"big-1" + b"x-big: " + b"a" * 100_000,
        408: head % b"slow-head-1",  # and then nothing more
        -408: head % b"slow-body-1" + b"content-length: 500\r\n\r\n{",
    }
    answers = {}
    for key, ask in asks.items():
        reader, writer = await connect(gw)
        writer.write(ask)
        answers[key] = await until_closed(reader)
    assert [status_and_error(raw)[0] for raw in answers.values()] == [431, 408, 408]
    assert [request_id(raw) for raw in answers.values()] == [b"big-1", b"slow-head-1", b"slow-body-1"]
    # A head whose id is not a sane token, and a connection over the cap, get a new id of the usual form.
    reader, writer = await connect(gw)
    writer.write(head % (b"z" * 200) + b"x-big: " + b"a" * 100_000)
    insane = await until_closed(reader)
    _held, held_writer = await connect(gw)  # with the test client's pooled connection: the cap of two
    held_writer.write(b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n")
    reader, _ = await connect(gw)
    over_cap = await until_closed(reader)
    assert status_and_error(over_cap)[0] == 503
    for raw in (insane, over_cap):
        given = request_id(raw)
        assert given is not None and len(given) == len(issued) and given.decode() != issued, raw
        int(given, 16)  # hex, as the app's ids are
