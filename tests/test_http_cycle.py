"""gateway/http_cycle.LeanCycle puts on the wire exactly what uvicorn's own cycle does, for every shape
of answer: the same app is served by plain uvicorn (httptools) and by the gateway's protocol, and the
raw bytes each client receives are compared (the `date` header aside)."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from gateway import http_cycle
from gateway.connections import BoundedHttpProtocol

Headers = list[tuple[bytes, bytes]]


def answers() -> dict[str, tuple[int, Headers, list[tuple[bytes, bool]]]]:
    """By path: status, headers, body pieces (bytes, more_body) the app sends."""
    json = (b"content-type", b"application/json")
    return {
        "/json": (200, [json, (b"content-length", b"7"), (b"x-gateway-model", b"m")], [(b'{"a":1}', False)]),
        "/pieces": (200, [json, (b"content-length", b"7")], [(b'{"a"', True), (b":1}", False)]),
        "/upper": (200, [(b"Content-Type", b"text/plain"), (b"Content-Length", b"2")], [(b"hi", False)]),
        "/stream": (200, [(b"content-type", b"text/event-stream")], [(b"data: 1\n\n", True), (b"", True),
                                                                    (b"data: 2\n\n", True), (b"", False)]),
        "/stream-last": (200, [(b"content-type", b"text/event-stream")], [(b"a", True), (b"b", False)]),
        "/chunked": (200, [(b"transfer-encoding", b"chunked")], [(b"abc", False)]),
        "/empty": (204, [(b"x-gateway-attempts", b"1")], [(b"", False)]),
        "/close": (200, [(b"content-length", b"2"), (b"connection", b"keep-alive, Close")], [(b"ok", False)]),
        "/list-pair": (200, [[b"content-length", b"2"], [b"x-gateway-provider", b"p"]], [(b"ok", False)]),  # type: ignore[list-item]
        "/bad-value": (200, [(b"content-length", b"2"), (b"x-gateway-model", b"a\r\nset-cookie: x")], [(b"ok", False)]),
        "/bad-name": (200, [(b"content-length", b"2"), (b"x gateway", b"v")], [(b"ok", False)]),
        "/bad-length": (200, [(b"content-length", b"2 \r\nx: y")], [(b"ok", False)]),
        "/too-long": (200, [(b"content-length", b"1")], [(b"too long", False)]),
    }


WRITTEN = [b"data: 1\n\n", b"", b"data: 2\n\n", b"x" * 5000]  # "/written": pieces given to piece_writer
offered: list[bool] = []  # per "/written" answer: whether the server offered a piece writer
FLOOD = [bytes([65 + n % 26]) * 128 * 1024 for n in range(128)]  # "/flood": 16 MB, more than the socket buffers
refused = asyncio.Event()  # "/flood": a piece the writer refused (the client is not reading)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] in ("/written", "/flood"):
        await _written(scope["path"], send)
        return
    if scope["path"] in ANSWERS:
        await _answer(scope["path"], send)
        return
    if scope["path"] in STREAMS:
        await _stream(scope["path"], send)
        return
    if scope["path"] == "/body":
        await _echo_body(receive, send)
        return
    if scope["path"] == "/misuse-stream":
        await _misuse_stream(send)
        return
    if scope["path"] == "/misuse":
        await _misuse(send)
        return
    status, headers, pieces = answers()[scope["path"]]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    for body, more in pieces:
        await send({"type": "http.response.body", "body": body, "more_body": more})


async def _written(path: str, send: Send) -> None:
    """A stream whose pieces go through http_cycle.piece_writer where the server offers it, else send()."""
    write = http_cycle.piece_writer(send)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    for body in WRITTEN if path == "/written" else FLOOD:
        if write is None or not write(body):
            if write is not None:
                refused.set()
            await send({"type": "http.response.body", "body": body, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
    offered.append(write is not None)


# Whole answers given to write_answer, by path: status, headers (the writer adds the content-length), body.
ANSWERS: dict[str, tuple[int, Headers, bytes]] = {
    "/answer": (200, [(b"content-type", b"application/json"), (b"x-gateway-model", b"m")], b'{"a":1}'),
    "/answer-new": (200, [(b"content-type", b"application/json"), (b"x-trace", b"t-1")], b"{}"),  # never remembered
    "/answer-close": (200, [(b"connection", b"close")], b"bye"),
    "/answer-list": (200, [[b"x-gateway-provider", b"p"]], b"ok"),  # type: ignore[list-item]
    "/answer-204": (204, [(b"x-gateway-attempts", b"1")], b""),
    "/bad-answer": (200, [(b"x-gateway-model", b"a\r\nset-cookie: x")], b"ok"),
}
answered: list[tuple[bool, bool]] = []  # per answer: written by write_answer, and whether it wrote a second one


async def _answer(path: str, send: Send) -> None:
    """A whole answer written by http_cycle.write_answer under the gateway's server, else by two sends."""
    status, headers, body = ANSWERS[path]
    written = http_cycle.write_answer(send, status, headers, body)
    if not written:
        head = [*headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": body})
    answered.append((written, http_cycle.write_answer(send, status, headers, body)))


# Streams given to write_stream_start / piece_writer / write_stream_end, by path: headers, first piece.
STREAMS: dict[str, tuple[Headers, bytes]] = {
    "/sse": ([(b"content-type", b"text/event-stream"), (b"x-gateway-model", b"m")], b"data: 0\n\n"),
    "/sse-empty-first": ([(b"content-type", b"text/event-stream")], b""),
    "/sse-new": ([(b"content-type", b"text/event-stream"), (b"x-trace", b"t-2")], b"data: 0\n\n"),  # never remembered
    "/sse-close": ([(b"connection", b"close")], b"data: 0\n\n"),
    # The first piece is the whole stream (head, bytes and end in one write); the last piece goes with the end.
    "/sse-whole": ([(b"content-type", b"text/event-stream"), (b"x-gateway-model", b"m")], b"data: 0\n\n"),
    "/sse-whole-empty": ([(b"content-type", b"text/event-stream")], b""),
    "/sse-last": ([(b"content-type", b"text/event-stream"), (b"x-gateway-model", b"m")], b"data: 0\n\n"),
}
streamed: list[tuple[bool, bool, bool]] = []  # per stream: start written, end written, a second end refused


async def _stream(path: str, send: Send) -> None:
    """A stream written by http_cycle's plain calls under the gateway's server, else by sends."""
    headers, first = STREAMS[path]
    more = not path.startswith("/sse-whole")
    started = http_cycle.write_stream_start(send, 200, headers, first, more)
    if not started:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": first, "more_body": more})
    if not more:
        streamed.append((started, started, not http_cycle.write_stream_end(send)))
        return
    write = http_cycle.piece_writer(send)
    for piece in WRITTEN:
        if write is None or not write(piece):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
    last = b"data: last\n\n" if path == "/sse-last" else b""
    ended = http_cycle.write_stream_end(send, last)
    if not ended:
        await send({"type": "http.response.body", "body": last})
    streamed.append((started, ended, not http_cycle.write_stream_end(send)))


bodies: list[tuple[bool, bool]] = []  # per "/body": whole_body gave the body, and a second call gave None
body_awaited = asyncio.Event()  # "/body": whole_body said no, the app waits on receive()


async def _echo_body(receive: Receive, send: Send) -> None:
    """The request's body read by http_cycle.whole_body where the server holds it whole, else by receive()."""
    body = http_cycle.whole_body(receive)
    taken = body is not None
    if body is None:
        body_awaited.set()
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
    bodies.append((taken, http_cycle.whole_body(receive) is None))
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


misused: list[bool] = []  # "/misuse": what the writer said when it must not write


async def _misuse_stream(send: Send) -> None:
    misused.append(http_cycle.write_stream_end(send))  # no head yet
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    misused.append(http_cycle.write_stream_start(send, 200, [], b"no"))  # a head was sent already
    misused.append(http_cycle.write_stream_end(send))  # not a chunked answer
    await send({"type": "http.response.body", "body": b"ok"})
    misused.append(http_cycle.write_stream_end(send))  # after the end


async def _misuse(send: Send) -> None:
    write = http_cycle.piece_writer(send)
    assert write is not None
    misused.append(write(b"no"))  # no head yet
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    misused.append(write(b"no"))  # not a chunked answer
    await send({"type": "http.response.body", "body": b"ok"})
    misused.append(write(b"no"))  # after the end


async def _serve(http: Any) -> tuple[uvicorn.Server, socket.socket]:
    config = uvicorn.Config(app, http=http, lifespan="off", log_level="critical", access_log=False)
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await server.startup(sockets=[sock])
    return server, sock


@pytest.fixture
async def servers() -> AsyncIterator[tuple[int, int]]:
    plain, plain_sock = await _serve("httptools")
    lean, lean_sock = await _serve(BoundedHttpProtocol)
    yield plain_sock.getsockname()[1], lean_sock.getsockname()[1]
    for server, sock in ((plain, plain_sock), (lean, lean_sock)):
        server.should_exit = True
        await server.shutdown(sockets=[sock])


async def exchange(port: int, request: bytes) -> bytes:
    """Everything the server sends after `request` until it closes or goes quiet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    out = b""
    try:
        while True:
            piece = await asyncio.wait_for(reader.read(65536), 0.5)
            if not piece:
                break
            out += piece
    except TimeoutError:
        pass  # kept alive: everything arrived
    writer.close()
    return re.sub(rb"date: [^\r]*\r\n", b"", out)


def request(path: str, method: str = "GET", version: str = "1.1") -> bytes:
    return f"{method} {path} HTTP/{version}\r\nhost: x\r\n\r\n".encode()


CASES = [request(path) for path in [*answers(), "/written", *ANSWERS] if path != "/too-long"] + [
    request("/written", "HEAD"), request("/written", version="1.0"),
    request("/answer", "HEAD"), request("/answer", version="1.0"), request("/answer") + request("/answer"),
    request("/answer-new") + request("/answer-new"),
    *[request(path) for path in STREAMS], request("/sse", "HEAD"), request("/sse", version="1.0"),
    request("/sse") + request("/sse") + request("/sse-new") + request("/sse-new"),
    b"POST /body HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello" + request("/answer"),
    b"POST /body HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\nhi",
    b"POST /body HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"POST /body HTTP/1.1\r\nhost: x\r\n\r\n",
    request("/json", "HEAD"), request("/json", version="1.0"), request("/stream", version="1.0"),
    request("/json") + request("/upper") + request("/stream"),  # pipelined on one connection
]


@pytest.mark.parametrize("raw", CASES, ids=[c.split(b"\r\n")[0].decode() for c in CASES])
async def test_the_wire_is_uvicorns_byte_for_byte(servers: tuple[int, int], raw: bytes) -> None:
    plain_port, lean_port = servers
    plain = await exchange(plain_port, raw)
    lean = await exchange(lean_port, raw)
    assert lean == plain
    assert lean.startswith(b"HTTP/1.1 ") or b"/bad-" in raw  # a bad header: both close without a word


async def test_pieces_written_without_send_are_the_bytes_send_would_write(servers: tuple[int, int]) -> None:
    plain_port, lean_port = servers
    offered.clear()
    plain = await exchange(plain_port, request("/written"))
    lean = await exchange(lean_port, request("/written"))
    assert offered == [False, True]  # plain uvicorn's send is not a LeanCycle's: every piece went through send
    assert lean == plain
    assert lean.endswith(b"\r\n\r\n9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n1388\r\n" + b"x" * 5000 + b"\r\n0\r\n\r\n")


async def test_an_answer_written_without_send_is_the_bytes_send_would_write(servers: tuple[int, int]) -> None:
    """The first answer's pairs are checked and remembered; the second, all remembered, is written in one join."""
    plain_port, lean_port = servers
    answered.clear()
    plain = await exchange(plain_port, request("/answer") + request("/answer") + request("/json"))
    lean = await exchange(lean_port, request("/answer") + request("/answer") + request("/json"))
    assert answered == [(False, False)] * 2 + [(True, False)] * 2, "written by the gateway's server only, once"
    assert lean == plain
    assert lean.count(b'{"a":1}') == 3
    assert lean.count(b"x-gateway-model: m\r\ncontent-length: 7\r\n\r\n") == 2
    assert all(pair in http_cycle._known for pair in ANSWERS["/answer"][1])  # so the second took the one join


async def test_a_stream_written_without_send_is_the_bytes_send_would_write(servers: tuple[int, int]) -> None:
    """The first stream's pairs are checked and remembered; the second's head and first piece go in one write."""
    plain_port, lean_port = servers
    streamed.clear()
    plain = await exchange(plain_port, request("/sse") + request("/sse"))
    lean = await exchange(lean_port, request("/sse") + request("/sse"))
    assert streamed == [(False, False, True)] * 2 + [(True, True, True)] * 2, "by the gateway's server only, once"
    assert lean == plain
    assert lean.count(b"x-gateway-model: m\r\ntransfer-encoding: chunked\r\n\r\n9\r\ndata: 0\n\n\r\n") == 2
    assert lean.count(b"\r\n0\r\n\r\n") == 2
    assert all(pair in http_cycle._known for pair in STREAMS["/sse"][0])  # so the second took the one write


async def test_a_whole_stream_or_its_last_piece_goes_with_the_end_as_send_would_write_it(
    servers: tuple[int, int]
) -> None:
    plain_port, lean_port = servers
    for path, tail in (("/sse-whole", b"9\r\ndata: 0\n\n\r\n0\r\n\r\n"), ("/sse-whole-empty", b"\r\n\r\n0\r\n\r\n"),
                       ("/sse-last", b"\r\nc\r\ndata: last\n\n\r\n0\r\n\r\n")):
        streamed.clear()
        plain = await exchange(plain_port, request(path) + request(path))
        lean = await exchange(lean_port, request(path) + request(path))
        assert streamed == [(False, False, True)] * 2 + [(True, True, True)] * 2, path
        assert lean == plain, path
        assert lean.count(tail) == 2 and lean.count(b"0\r\n\r\n") == 2, path


async def test_the_stream_writers_refuse_what_only_send_may_do(servers: tuple[int, int]) -> None:
    """No end before a stream's head, after its end, or for a Content-Length answer; no start after a head."""
    _, lean_port = servers
    misused.clear()
    await exchange(lean_port, request("/misuse-stream"))
    assert misused == [False, False, False, False]


async def test_a_bad_header_given_to_write_answer_never_reaches_the_wire(servers: tuple[int, int]) -> None:
    _, lean_port = servers
    assert await exchange(lean_port, request("/bad-answer")) == b""  # uvicorn's check refuses it: closed


async def test_a_body_that_came_whole_is_taken_without_receive(servers: tuple[int, int]) -> None:
    """whole_body gives the body the cycle holds, once; a body still arriving is left to receive()."""
    plain_port, lean_port = servers
    bodies.clear()
    whole = b"POST /body HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello"
    assert (await exchange(plain_port, whole)).endswith(b"\r\n\r\nhello")
    assert (await exchange(lean_port, whole)).endswith(b"\r\n\r\nhello")
    assert bodies == [(False, True), (True, True)]
    body_awaited.clear()
    reader, writer = await asyncio.open_connection("127.0.0.1", lean_port)
    writer.write(b"POST /body HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhe")
    await asyncio.wait_for(body_awaited.wait(), 10)  # the app found the body incomplete
    writer.write(b"llo")
    answer = await asyncio.wait_for(reader.readuntil(b"hello"), 10)
    writer.close()
    assert answer.endswith(b"content-length: 5\r\n\r\nhello")
    assert bodies[-1] == (False, True)


async def test_a_client_slower_than_the_writer_gets_every_piece_through_send(servers: tuple[int, int]) -> None:
    """Once the socket's buffers are full the writer refuses a piece and send() waits for the client;
    nothing is lost or reordered."""
    _, lean_port = servers
    refused.clear()
    reader, writer = await asyncio.open_connection("127.0.0.1", lean_port, limit=2**20)
    writer.write(request("/flood"))
    await asyncio.wait_for(refused.wait(), 30)  # the client has read nothing yet
    await reader.readuntil(b"\r\n\r\n")
    body = b""
    while not body.endswith(b"\r\n0\r\n\r\n"):
        body += await asyncio.wait_for(reader.read(2**20), 30)
    writer.close()
    size = b"%x\r\n" % len(FLOOD[0])
    assert body == b"".join(size + piece + b"\r\n" for piece in FLOOD) + b"0\r\n\r\n"


async def test_the_writer_refuses_what_only_send_may_do(servers: tuple[int, int]) -> None:
    """Before the answer's head, for a Content-Length answer and after the end, a piece is send()'s to
    handle (a HEAD request's stream is compared with uvicorn's above)."""
    _, lean_port = servers
    misused.clear()
    answer = await exchange(lean_port, request("/misuse"))
    assert misused == [False, False, False]
    assert answer.endswith(b"content-length: 2\r\n\r\nok")


async def test_a_bad_header_value_never_reaches_the_wire_even_after_a_good_one_was_remembered(
        servers: tuple[int, int]) -> None:
    _, lean_port = servers
    assert b"x-gateway-model: m\r\n" in await exchange(lean_port, request("/json"))
    assert http_cycle._known[(b"x-gateway-model", b"m")] == b"x-gateway-model: m\r\n"  # remembered now
    for path in ("/bad-value", "/bad-name", "/bad-length"):
        assert await exchange(lean_port, request(path)) == b""  # refused: uvicorn closes without an answer


async def test_a_body_longer_than_its_length_sends_nothing(servers: tuple[int, int]) -> None:
    """Where uvicorn sends the head and then closes, the lean cycle (the head waits for the body)
    closes before writing anything: a client never gets a head whose body cannot follow."""
    plain_port, lean_port = servers
    assert (await exchange(plain_port, request("/too-long"))).startswith(b"HTTP/1.1 200 OK\r\ncontent-length: 1")
    assert await exchange(lean_port, request("/too-long")) == b""


HELLO = b'{"model":"echo/echo","messages":[{"role":"user","content":"hi"}]}'
GATEWAY_REQUESTS = [
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-request-id: req-7\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(HELLO), HELLO),
    b'POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-request-id: req-8\r\ncontent-length: 8\r\n\r\nnot json',
    b'GET /nowhere HTTP/1.1\r\nhost: x\r\nx-request-id: req-9\r\n\r\n',
    b'GET /v1/models HTTP/1.1\r\nhost: x\r\nx-request-id: ' + b'z' * 200 + b'\r\n\r\n',
]


@pytest.mark.parametrize("raw", GATEWAY_REQUESTS, ids=["answer", "bad-json", "404", "listing-new-id"])
async def test_the_gateways_answers_carry_the_same_head_under_either_server(
        start_gateway: Any, raw: bytes) -> None:
    """Under its own server the middleware leaves the x-request-id line for the cycle to write, under
    plain uvicorn it appends the pair: the client sees the same head either way."""
    lean = await start_gateway({})
    plain = await start_gateway({}, uvicorn_options={"http": "httptools"})

    def head(wire: bytes) -> list[bytes]:
        lines = wire.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        # A new id differs per request: keep where it is, not what it is.
        return [b"x-request-id: <new>" if line.startswith(b"x-request-id: ") and b"req-" not in line else line
                for line in lines]

    lean_head = head(await exchange(int(lean.base_url.rsplit(":", 1)[1]), raw))
    assert lean_head == head(await exchange(int(plain.base_url.rsplit(":", 1)[1]), raw))
    assert any(line.startswith(b"x-request-id: ") for line in lean_head)


@pytest.mark.parametrize("size", [100, 5000], ids=["within", "over"])
async def test_a_chunked_body_that_came_whole_is_held_to_the_limit(start_gateway: Any, size: int) -> None:
    """No declared length to refuse early: the body taken whole from the cycle is measured (413 over the limit)."""
    gw = await start_gateway({"server": {"max_body_bytes": 2048}})
    body = b'{"model":"echo/echo","messages":[{"role":"user","content":"%s"}]}' % (b"x" * size)
    raw = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
           b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    answer = await exchange(int(gw.base_url.rsplit(":", 1)[1]), raw)
    assert answer.startswith(b"HTTP/1.1 413 " if size > 2048 else b"HTTP/1.1 200 ")
