"""transport.Transport.send: one POST through aiohttp's connector, request and response, without
ClientSession._request (gateway/upstream/transport/ says why and lists the aiohttp parts used).

The first test fails when aiohttp changes the code the transport mirrors, so that the copy is checked
again; the others hold send's behaviour against real servers on 127.0.0.1: the bytes sent, the
connection reused, every timeout and error mapped, a cancelled send closing its connection.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import client_proto, helpers, http_writer, payload
from yarl import URL

from gateway.errors import StreamCut, UpstreamConnectError, UpstreamTimeout
from gateway.upstream.endpoint import Endpoint
from gateway.upstream.transport import Transport
from gateway.upstream.transport.batch import WriteBatch
from gateway.upstream.transport.request import UpstreamRequest, lean_head

# What Transport._exchange/_post mirror (ClientSession._request: its timer, its inner
# _connect_and_send_request and its error handling) or call, as aiohttp 3.14 has it. A change fails
# this test: compare the new code with transport.py's, then update these digests.
MIRRORED = {
    "ClientSession._request": "32986b8105faf5f8",
    "TimeoutHandle": "23fc5ffb5afeae9a",
    "TimerNoop": "b4f13ddb0874fa07",
    "BaseConnector.connect": "b9fe1f4d3e57ad12",
    "ResponseHandler.set_response_params": "2eb047e322481533",
    "ClientResponse.start": "bcbf178da3660180",
    "ClientRequest.send": "82b495aa06760c64",
    # What UpstreamRequest.lean and lean_head copy: the request's build.
    "ClientRequest.__init__": "8636fdb3a4b93b5f",
    "ClientRequest.update_host": "0ecb92db47ed7184",
    "ClientRequest.update_headers": "4443c95d4332a9a8",
    "ClientRequest.update_cookies": "845538402789dd8c",
    "ClientRequest.update_content_encoding": "8838c75e15e3df06",
    "ClientRequest.update_auth": "8f961a424637457a",
    "ClientRequest.update_proxy": "8223718c00258332",
    "ClientRequest.update_body_from_data": "05b09c13b46521ad",
    "ClientRequest.update_transfer_encoding": "bdf48822001f774d",
    "ClientRequest.update_expect_continue": "82689b67b41d69a1",
    "BytesPayload.__init__": "ec976aa8666637a1",
    # What UpstreamRequest.send relies on: a small body's write waits for nothing unless paused.
    "ClientRequest.write_bytes": "f3b5cbcb26f2c27d",
    "StreamWriter.write": "17a5fa94c65dcab6",
    "StreamWriter.write_eof": "c7e545df80b9eb68",
    "StreamWriter.drain": "3c8995114497133d",
}

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _source(name: str) -> str:
    owner, _, method = name.partition(".")
    cls = {"ClientSession": aiohttp.ClientSession, "TimeoutHandle": helpers.TimeoutHandle,
           "TimerNoop": helpers.TimerNoop, "BaseConnector": aiohttp.BaseConnector,
           "ResponseHandler": client_proto.ResponseHandler, "ClientResponse": aiohttp.ClientResponse,
           "ClientRequest": aiohttp.ClientRequest, "BytesPayload": payload.BytesPayload,
           "StreamWriter": http_writer.StreamWriter}[owner]
    return inspect.getsource(getattr(cls, method) if method else cls)


def test_aiohttps_request_path_is_the_one_the_transport_mirrors() -> None:
    changed = [name for name, digest in MIRRORED.items()
               if hashlib.sha256(_source(name).encode()).hexdigest()[:16] != digest]
    assert not changed, f"aiohttp changed {changed}: re-check transport._exchange/_post against it"


HEADERS = [
    {},
    {"Authorization": "Bearer k", "Content-Type": "application/json", "Accept": "application/json"},
    {"x-api-key": "k", "anthropic-version": "2023-06-01", "host": "elsewhere.example", "X-Two": "a"},
    {"HOST": "h", "accept": "text/event-stream", "content-type": "application/json; charset=utf-8"},
]
URLS = ["http://127.0.0.1:8080/v1/chat/completions", "https://api.example.com/v1/messages?beta=true",
        "https://[::1]:443/x", "http://example.com/"]


@pytest.mark.parametrize("headers", HEADERS)
@pytest.mark.parametrize("where", URLS)
async def test_a_lean_request_is_the_one_aiohttp_builds(headers: dict[str, str], where: str) -> None:
    """Every attribute of the request, the headers in their order, the body's bytes and headers."""
    session = aiohttp.ClientSession()
    try:
        url, body, timer = URL(where), b'{"model": "m"}' * 3, helpers.TimerNoop()
        built = UpstreamRequest("POST", url, headers=headers, data=body, loop=asyncio.get_running_loop(),
                                 timer=timer, session=session, response_class=aiohttp.ClientResponse)
        head = lean_head(url, headers)
        assert head is not None
        lean = UpstreamRequest.lean(url, head, body, timer, session, WriteBatch(asyncio.get_running_loop()))
        assert list(lean.headers.items()) == list(built.headers.items())
        assert type(lean.headers) is type(built.headers)
        mine, theirs = dict(vars(lean)), dict(vars(built))
        lean_body, built_body = mine.pop("_body"), theirs.pop("_body")
        assert (type(lean_body), lean_body._value, list(lean_body.headers.items()), lean_body.size) == \
            (type(built_body), built_body._value, list(built_body.headers.items()), built_body.size)
        del mine["headers"], theirs["headers"], mine["_lean"], mine["_batch"]
        assert mine == theirs
        assert lean.connection_key == built.connection_key
        assert lean.request_info == built.request_info
    finally:
        await session.close()


@pytest.mark.parametrize(("where", "headers"), [
    ("http://user:secret@example.com/v1", {}),
    ("http://example.com/v1#part", {}),
    ("http://example.com/v1", {"Content-Length": "3"}),
    ("http://example.com/v1", {"Transfer-Encoding": "chunked"}),
    ("http://example.com/v1", {"Content-Encoding": "gzip"}),
    ("http://example.com/v1", {"Expect": "100-continue"}),
    ("http://example.com/v1", {"cookie": "a=b"}),
])
def test_a_request_aiohttp_builds_differently_is_left_to_aiohttp(where: str, headers: dict[str, str]) -> None:
    assert lean_head(URL(where), headers) is None


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Starts a server on 127.0.0.1 running `handler` per connection; returns its base URL."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return head + await reader.readexactly(length)


ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


async def test_requests_go_out_as_before_and_reuse_one_connection(
        serve: Callable[[Handler], Awaitable[str]], transport: Transport) -> None:
    received: list[bytes] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while not reader.at_eof():
            try:
                received.append(await _read_request(reader))
            except asyncio.IncompleteReadError:
                break
            writer.write(ANSWER)

    base = await serve(handler)
    endpoint = Endpoint("fake", None, base + "/v1", {"Authorization": "Bearer k", "Accept": "application/json"})
    for n in range(3):
        response = await transport.send(endpoint, {"n": n}, connect=5, read=5, total=5,
                                        headers={"anthropic-beta": "x"} if n == 2 else None)
        assert (response.status, await response.read_all(100)) == (200, b"{}")
        response.release()
    port = base.rsplit(":", 1)[1]
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nAuthorization: Bearer k\r\n"
            b"Accept: application/json\r\n" % port.encode())
    assert received[0] == head + b'Content-Length: 7\r\nContent-Type: application/octet-stream\r\n\r\n{"n":0}'
    assert received[2] == head + (b"anthropic-beta: x\r\nContent-Length: 7\r\n"
                                  b'Content-Type: application/octet-stream\r\n\r\n{"n":2}')
    assert connections == 1, "the pooled connection is reused"


class CountingBatch(WriteBatch):
    """The transport's write batch, counting the writes handed to it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.writes = 0

    def add(self, transport: asyncio.WriteTransport, data: bytes) -> None:
        self.writes += 1
        super().add(transport, data)


async def test_only_a_request_beside_another_in_flight_waits_for_the_write_batch(
        serve: Callable[[Handler], Awaitable[str]], transport: Transport) -> None:
    """Alone, a request is written at once (the batch would only cost it a loop pass); while another
    holds a connection its write joins the batch, and both are answered whole."""
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while not reader.at_eof():
            try:
                request = await _read_request(reader)
            except asyncio.IncompleteReadError:
                break
            if request.endswith(b'{"hold":1}'):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
                await release.wait()
                writer.write(b"{}")
            else:
                writer.write(ANSWER)

    endpoint = Endpoint("fake", None, await serve(handler), {"Content-Type": "application/json"})
    batch = transport._batch = CountingBatch(asyncio.get_running_loop())
    alone = await transport.send(endpoint, {"n": 1}, connect=5, read=5, total=5)
    assert (await alone.read_all(100), batch.writes) == (b"{}", 0)
    alone.release()
    held = await transport.send(endpoint, {"hold": 1}, connect=5, read=5, total=5)  # its body not read yet
    beside = await transport.send(endpoint, {"n": 2}, connect=5, read=5, total=5)
    assert (await beside.read_all(100), batch.writes) == (b"{}", 1)
    beside.release()
    release.set()
    assert await held.read_all(100) == b"{}"
    held.release()


@pytest.mark.parametrize("size", [10, 2**16, 2**16 + 1, 3_000_000])
async def test_a_body_of_any_size_arrives_whole(
        serve: Callable[[Handler], Awaitable[str]], transport: Transport, size: int) -> None:
    """Up to the writer's buffer limit a lean request's body is written at once, past it by aiohttp's
    writer task: both send every byte after the head."""
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await _read_request(reader))
        writer.write(ANSWER)

    endpoint = Endpoint("fake", None, await serve(handler), {"Content-Type": "application/json"})
    text = "x" * (size - len('{"t":""}'))
    response = await transport.send(endpoint, {"t": text}, connect=5, read=30, total=30)
    assert await response.read_all(100) == b"{}"
    response.release()
    head, _, body = received[0].partition(b"\r\n\r\n")
    assert body == b'{"t":"%s"}' % text.encode()
    assert head.endswith(b"Content-Length: %d" % size)


async def test_the_total_timeout_bounds_the_headers_and_the_body(
        serve: Callable[[Handler], Awaitable[str]], transport: Transport) -> None:
    stop = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await stop.wait()

    async def half_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(ANSWER[:-1])
        await stop.wait()

    try:
        endpoint = Endpoint("fake", None, await serve(silent), {})
        with pytest.raises(UpstreamTimeout) as waited:
            await transport.send(endpoint, {}, connect=5, read=0.2, total=0.2)
        assert waited.value.phase == "first_byte"
        endpoint = Endpoint("fake", None, await serve(half_body), {})
        response = await transport.send(endpoint, {}, connect=5, read=0.2, total=0.2)
        with pytest.raises(UpstreamTimeout) as stalled:
            await response.read_all(100)
        assert stalled.value.phase == "idle"
        response.close()
    finally:
        stop.set()


async def test_a_whole_answer_read_in_time_is_not_cut_by_the_total_timer_later(
        serve: Callable[[Handler], Awaitable[str]], transport: Transport) -> None:
    """The total timer ends with the body: the task that sent the request goes on unharmed."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(ANSWER)
        await writer.drain()

    endpoint = Endpoint("fake", None, await serve(handler), {})
    response = await transport.send(endpoint, {}, connect=5, read=0.05, total=0.05)
    assert await response.read_all(100) == b"{}"
    response.release()
    done = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.2, done.set_result, None)  # well past the total timeout
    await done  # a stray total timer would cancel this wait


async def test_connection_failures_are_upstream_connect_errors(
        serve: Callable[[Handler], Awaitable[str]], transport: Transport) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.close()

    endpoint = Endpoint("fake", None, await serve(hang_up), {})
    with pytest.raises(UpstreamConnectError, match="dropped the connection before answering"):
        await transport.send(endpoint, {}, connect=5, read=5, total=5)
    closed = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = closed.sockets[0].getsockname()[1]
    closed.close()
    await closed.wait_closed()
    with pytest.raises(UpstreamConnectError, match="cannot connect to fake"):
        await transport.send(Endpoint("fake", None, f"http://127.0.0.1:{port}", {}), {}, connect=5, read=5)


async def test_a_cancelled_send_closes_its_connection(
        serve: Callable[[Handler], Awaitable[str]], transport: Transport) -> None:
    got = asyncio.Event()
    ended = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        got.set()
        await reader.read()  # b"" once the gateway closes the connection
        ended.set()

    endpoint = Endpoint("fake", None, await serve(handler), {})
    sending = asyncio.create_task(transport.send(endpoint, {}, connect=5, read=5, first_byte=5))
    await got.wait()
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    async with asyncio.timeout(10):
        await ended.wait()


async def test_a_body_cut_short_is_a_stream_cut(
        serve: Callable[[Handler], Awaitable[str]], transport: Transport) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(ANSWER[:-1])
        writer.close()

    response = await transport.send(Endpoint("fake", None, await serve(handler), {}), {},
                                    connect=5, read=5, total=5)
    with pytest.raises(StreamCut):
        await response.read_all(100)
    response.close()
