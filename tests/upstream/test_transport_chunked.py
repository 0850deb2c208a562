"""transport/chunked.py: a chunked answer's body decoded by llhttp and fed to aiohttp's StreamReader per read.

Each test has a server on 127.0.0.1 write exact bytes (its script: one socket write per item, with a
round trip to the client between them where the test needs separate reads), and reads the answer
through the Transport as the gateway does, on asyncio's loop and on uvloop's (conftest.py). The
first test fails when aiohttp changes the code the decoder stands in for or feeds, so that the
stand-in is checked again.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator

import pytest

from gateway.errors import StreamCut
from gateway.upstream.endpoint import Endpoint
from gateway.upstream.transport import HttpResponse, Transport
from tests.upstream import aiohttp_code

# The aiohttp code HeadFirst and ChunkedBody answer or feed, as aiohttp 3.14 has it: the protocol's
# calls to its parser (data_received, connection_lost, pause/resume) and the StreamReader's feed side.
RELIED_ON = {
    "ResponseHandler.data_received": "9bf7ecf8e50516cd",
    "ResponseHandler.connection_lost": "84b98dfd8035e493",
    "ResponseHandler.set_response_params": "2eb047e322481533",
    "BaseProtocol.pause_reading": "c35fb392028cd397",
    "BaseProtocol.resume_reading": "21dee847a31af724",
    "StreamReader.feed_data": "7548cdda3ea70bf8",
    "StreamReader.feed_eof": "01592f4473c176b3",
    "StreamReader.on_eof": "ec49ed5553582498",
}

_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
Script = list[bytes | asyncio.Event]


def test_the_aiohttp_code_the_decoder_stands_in_for_is_unchanged() -> None:
    changed = aiohttp_code.changed(RELIED_ON)
    assert not changed, f"aiohttp changed {changed}: re-check transport/chunked.py against it"


def _chunk(data: bytes, extension: bytes = b"") -> bytes:
    return b"%x%s\r\n%s\r\n" % (len(data), extension, data)


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[Script], list[int]]]:
    """A server answering each request with the next script: its bytes items written one write each
    (drained), an Event item waited for (the test sets it once it has read what came before). Yields
    (base URL, the scripts, one entry per connection it accepted)."""
    scripts: list[Script] = []
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections))
        try:
            while scripts:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                              if line.startswith(b"content-length:"))
                await reader.readexactly(length)
                for item in scripts.pop(0):
                    if isinstance(item, asyncio.Event):
                        await item.wait()
                        continue
                    writer.write(item)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", scripts, connections
    server.close()
    await server.wait_closed()


async def _send(transport: Transport, base: str) -> HttpResponse:
    return await transport.send(Endpoint("fake", None, base, {}), {"stream": True}, connect=5, read=5,
                                first_byte=5)


async def _read(transport: Transport, base: str) -> bytes:
    """The whole body through read_chunk, as the relay reads a stream."""
    response = await _send(transport, base)
    got = b""
    async with asyncio.timeout(10):
        while data := await response.read_chunk():
            got += data
    response.release()
    return got


EVENTS = [b'data: {"n": %d}\n\n' % n for n in range(40)]
_WHOLE = _HEAD + b"".join(map(_chunk, EVENTS)) + b"0\r\n\r\n"


@pytest.mark.parametrize("writes", [
    pytest.param([_HEAD + b"".join(map(_chunk, EVENTS)) + b"0\r\n\r\n"], id="head-and-body-in-one-write"),
    pytest.param([_HEAD, b"".join(map(_chunk, EVENTS)) + b"0\r\n\r\n"], id="head-then-body"),
    pytest.param([_HEAD[:20], _HEAD[20:] + _chunk(EVENTS[0])] + [_chunk(e) for e in EVENTS[1:]] + [b"0\r\n\r\n"],
                 id="head-in-two-writes-then-a-chunk-a-write"),
    pytest.param([_WHOLE[i:i + 7] for i in range(0, len(_WHOLE), 7)], id="seven-bytes-a-write"),
    pytest.param([_HEAD + b"".join(_chunk(e, b";ext=1") for e in EVENTS) + b"0\r\nx-trailer: yes\r\n\r\n"],
                 id="chunk-extensions-and-a-trailer"),
    # Not the spelling HeadFirst looks for: aiohttp's parser reads the head with the body bytes after it.
    pytest.param([_HEAD.replace(b"chunked", b"Chunked") + b"".join(map(_chunk, EVENTS)) + b"0\r\n\r\n"],
                 id="Transfer-Encoding-Chunked-capitalised"),
])
async def test_a_chunked_body_arrives_whole_however_it_is_written(
        server: tuple[str, list[Script], list[int]], transport: Transport, writes: Script) -> None:
    base, scripts, _ = server
    scripts.append(writes)
    assert await _read(transport, base) == b"".join(EVENTS)


async def test_a_connection_is_reused_after_a_chunked_body_and_a_length_body_after_it_reads_as_before(
        server: tuple[str, list[Script], list[int]], transport: Transport) -> None:
    base, scripts, connections = server
    whole = b'{"whole": true}'
    scripts += [
        [_HEAD + _chunk(b"data: 1\n\n") + b"0\r\n\r\n"],
        [b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(whole), whole)],
        [_HEAD, _chunk(b"data: 2\n\n"), b"0\r\n\r\n"],
    ]
    assert await _read(transport, base) == b"data: 1\n\n"
    assert await _read(transport, base) == whole
    assert await _read(transport, base) == b"data: 2\n\n"
    assert len(connections) == 1


@pytest.mark.parametrize("direct", [False, True], ids=["through-aiohttps-protocol", "straight-from-the-connection"])
async def test_a_malformed_chunk_after_good_ones_delivers_them_then_cuts_the_stream(
        server: tuple[str, list[Script], list[int]], transport: Transport, direct: bool) -> None:
    """Read through aiohttp's protocol, or (past set_read_timeout) straight from the connection."""
    base, scripts, _ = server
    read = asyncio.Event()
    scripts.append([_HEAD + _chunk(b"data: 1\n\n") + _chunk(b"data: 2\n\n"), read, b"zz\r\nnot a chunk\r\n"])
    response = await _send(transport, base)
    async with asyncio.timeout(10):
        assert await response.read_chunk() == b"data: 1\n\ndata: 2\n\n"
        if direct:
            response.set_read_timeout(5)
        read.set()
        with pytest.raises(StreamCut):
            await response.read_chunk()
    response.close()


async def test_a_body_cut_by_the_closed_connection_is_a_cut_stream(
        server: tuple[str, list[Script], list[int]], transport: Transport) -> None:
    base, scripts, _ = server
    scripts.append([_HEAD + _chunk(b"data: 1\n\n") + b"40\r\nonly part of it"])
    response = await _send(transport, base)
    got = b""
    with pytest.raises(StreamCut, match="ended before it was complete"):
        async with asyncio.timeout(10):
            while data := await response.read_chunk():
                got += data
    assert got.startswith(b"data: 1\n\n")
    response.close()


async def test_bytes_after_the_end_of_a_body_keep_the_connection_out_of_the_pool(
        server: tuple[str, list[Script], list[int]], transport: Transport) -> None:
    base, scripts, connections = server
    scripts += [[_HEAD + _chunk(b"data: 1\n\n") + b"0\r\n\r\ngarbage after the end"],
                [_HEAD + _chunk(b"data: 2\n\n") + b"0\r\n\r\n"]]
    assert await _read(transport, base) == b"data: 1\n\n"
    assert await _read(transport, base) == b"data: 2\n\n"
    assert len(connections) == 2


async def test_an_interim_100_continue_before_the_answer_is_skipped(
        server: tuple[str, list[Script], list[int]], transport: Transport) -> None:
    base, scripts, _ = server
    scripts.append([b"HTTP/1.1 100 Continue\r\n\r\n" + _HEAD + b"".join(map(_chunk, EVENTS)) + b"0\r\n\r\n"])
    assert await _read(transport, base) == b"".join(EVENTS)


async def test_past_its_first_token_a_stream_reads_straight_from_the_connection_and_gives_it_back(
        server: tuple[str, list[Script], list[int]], transport: Transport) -> None:
    """After set_read_timeout (the relay's idle watch) the body's decoder is the connection's protocol:
    each paced chunk read as it comes, and aiohttp's protocol has the connection again at the end (the
    next answer on it reads as before)."""
    base, scripts, connections = server
    steps = [asyncio.Event() for _ in EVENTS]
    script: Script = [_HEAD + _chunk(EVENTS[0])]
    for event, step in zip(EVENTS[1:], steps, strict=False):
        script += [step, _chunk(event)]
    scripts += [[*script, steps[-1], b"0\r\n\r\n"], [_HEAD + _chunk(b"data: next\n\n") + b"0\r\n\r\n"]]
    response = await _send(transport, base)
    connection = response._response.connection
    assert connection is not None and connection.transport is not None
    socket, protocol = connection.transport, connection.protocol
    async with asyncio.timeout(10):
        assert await response.read_chunk() == EVENTS[0]
        response.set_read_timeout(5)
        assert type(socket.get_protocol()).__name__ == "ChunkedBody"
        for event, step in zip(EVENTS[1:], steps, strict=False):
            step.set()
            assert await response.read_chunk() == event
        steps[-1].set()
        assert await response.read_chunk() == b""
    response.release()
    assert socket.get_protocol() is protocol
    assert await _read(transport, base) == b"data: next\n\n"
    assert len(connections) == 1


async def test_a_stream_closed_while_reading_straight_from_the_connection_ends_its_connection(
        server: tuple[str, list[Script], list[int]], transport: Transport) -> None:
    """A client that goes away closes the upstream answer mid-body: the connection closes (aiohttp's
    protocol is told), and the next request opens a new one."""
    base, scripts, connections = server
    never = asyncio.Event()
    scripts += [[_HEAD + _chunk(b"data: 1\n\n"), never], [_HEAD + _chunk(b"data: 2\n\n") + b"0\r\n\r\n"]]
    response = await _send(transport, base)
    connection = response._response.connection
    assert connection is not None and connection.protocol is not None
    protocol = connection.protocol
    async with asyncio.timeout(10):
        assert await response.read_chunk() == b"data: 1\n\n"
        response.set_read_timeout(5)
        closed = protocol.closed  # set by aiohttp's protocol's connection_lost
        response.close()
        assert closed is not None
        await closed
        never.set()
        assert await _read(transport, base) == b"data: 2\n\n"
    assert len(connections) == 2


async def test_a_big_body_read_straight_from_the_connection_pauses_and_resumes_it(
        server: tuple[str, list[Script], list[int]], transport: Transport) -> None:
    """Megabytes arriving faster than they are read fill aiohttp's buffer past its high-water mark: the
    socket is paused and resumed as with aiohttp's own protocol, and every byte arrives in order."""
    base, scripts, _ = server
    sent = [bytes([65 + n]) * 1_000_000 for n in range(6)]
    scripts.append([_HEAD + _chunk(b"data: 0\n\n"), *map(_chunk, sent), b"0\r\n\r\n"])
    response = await _send(transport, base)
    content = response._response.content
    protocol = content._protocol
    paused = asyncio.Event()
    pause = protocol.pause_reading

    def counted() -> None:
        paused.set()
        pause()

    protocol.pause_reading = counted  # type: ignore[method-assign]
    async with asyncio.timeout(30):
        got = await response.read_chunk()
        response.set_read_timeout(5)
        assert protocol.transport is not None
        assert type(protocol.transport.get_protocol()).__name__ == "ChunkedBody"
        await paused.wait()  # the buffer filled past its mark while nothing was read
        while data := await response.read_chunk():
            got += data
    assert got == b"data: 0\n\n" + b"".join(sent)
    response.release()


async def test_a_head_read_with_part_of_the_body_leaves_the_rest_to_aiohttps_parser(
        server: tuple[str, list[Script], list[int]], transport: Transport) -> None:
    """A chunked head HeadFirst does not split off ("Chunked"), read with half the body: aiohttp's parser
    is mid-chunk, so the rest of the body is its to read too."""
    base, scripts, _ = server
    body = b"".join(map(_chunk, EVENTS)) + b"0\r\n\r\n"
    half = len(body) // 2 + 3  # inside a chunk
    read = asyncio.Event()
    scripts.append([_HEAD.replace(b"chunked", b"Chunked") + body[:half], read, body[half:]])
    response = await _send(transport, base)
    async with asyncio.timeout(10):
        got = await response.read_chunk()
        read.set()
        while data := await response.read_chunk():
            got += data
    assert got == b"".join(EVENTS)
    response.release()


async def test_a_chunked_204_has_no_body_and_its_connection_serves_the_next_request(
        server: tuple[str, list[Script], list[int]], transport: Transport) -> None:
    base, scripts, connections = server
    scripts += [[b"HTTP/1.1 204 No Content\r\ntransfer-encoding: chunked\r\n\r\n"],
                [_HEAD + _chunk(b"data: 1\n\n") + b"0\r\n\r\n"]]
    assert await _read(transport, base) == b""
    assert await _read(transport, base) == b"data: 1\n\n"
    assert len(connections) == 1


@pytest.mark.parametrize("direct", [False, True], ids=["through-aiohttps-protocol", "straight-from-the-connection"])
async def test_reads_a_consumer_takes_while_a_read_waits_are_spent_and_the_wait_goes_on(
        server: tuple[str, list[Script], list[int]], transport: Transport, direct: bool) -> None:
    """Each read that arrives while read_chunk(consume) waits is offered to `consume` as it arrives: the
    consumer here lets the server write the next read, so it is called from the connection's callback, not
    after the wait. What it takes is spent (counted as read); the first it refuses is the read's result."""
    base, scripts, _ = server
    steps = [asyncio.Event() for _ in range(4)]
    script: Script = [_HEAD + _chunk(EVENTS[0])]
    for event, step in zip(EVENTS[1:5], steps, strict=True):
        script += [step, _chunk(event)]
    scripts.append([*script, b"0\r\n\r\n"])
    response = await _send(transport, base)
    offered: list[bytes] = []

    def consume(data: bytes) -> bool:
        offered.append(data)
        if len(offered) == 3:
            return False
        steps[len(offered)].set()
        return True

    async with asyncio.timeout(10):
        assert await response.read_chunk() == EVENTS[0]
        if direct:
            response.set_read_timeout(5)
        steps[0].set()
        assert await response.read_chunk(consume) == EVENTS[3]
        assert offered == EVENTS[1:4]
        steps[3].set()
        assert await response.read_chunk() + await response.read_chunk() == EVENTS[4]
        assert await response.read_chunk() == b""
    assert response._response.content.total_bytes == len(b"".join(EVENTS[:5]))
    response.release()


async def test_a_consumer_that_fails_fails_the_read_it_was_offered_by(
        server: tuple[str, list[Script], list[int]], transport: Transport) -> None:
    base, scripts, _ = server
    step = asyncio.Event()
    scripts.append([_HEAD + _chunk(EVENTS[0]), step, _chunk(EVENTS[1]), b"0\r\n\r\n"])
    response = await _send(transport, base)

    def consume(data: bytes) -> bool:
        raise RuntimeError(f"cannot take {data!r}")

    async with asyncio.timeout(10):
        assert await response.read_chunk() == EVENTS[0]
        response.set_read_timeout(5)
        step.set()
        with pytest.raises(RuntimeError, match="cannot take"):
            await response.read_chunk(consume)
    response.close()


async def test_a_chunked_answer_read_to_its_end_leaves_no_reference_cycle(
        server: tuple[str, list[Script], list[int]], transport: Transport) -> None:
    """What reads a body is freed when the answer is done with, not left for the cyclic GC to find (which
    under load walks every stream's objects again and again before it does)."""
    base, scripts, _ = server
    scripts.append([_HEAD + _chunk(EVENTS[0]), *map(_chunk, EVENTS[1:3]), b"0\r\n\r\n"])
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        assert await _read(transport, base) == b"".join(EVENTS[:3])
        gc.collect()
        left = sorted({type(o).__name__ for o in gc.garbage if type(o).__module__.startswith(("gateway", "aiohttp"))})
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
        gc.enable()
    assert left == []
