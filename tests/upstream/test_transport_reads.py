"""transport.HttpResponse.read_chunk: a streamed body's pieces, read off aiohttp's buffer.

The usual read (nothing buffered, then one piece) skips aiohttp's readany() and does its accounting
itself (gateway/upstream/transport/response.py says why), reading aiohttp's private StreamReader state. The
first test fails when aiohttp changes the code that accounting copies, so that the copy is checked
again; the others read real chunked bodies from a server on 127.0.0.1, paced and all at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.errors import UpstreamTimeout
from gateway.upstream.endpoint import Endpoint
from gateway.upstream.transport import HttpResponse, Transport
from tests.upstream import aiohttp_code

# What HttpResponse.read_chunk copies or relies on, as aiohttp 3.14 has it. A change
# fails this test: compare the new code with transport.py's, then update these digests.
COPIED = {
    "StreamReader._read_nowait_chunk": "672849652cf250d3",
    "StreamReader._read_nowait": "05fc75740b9d4d63",
    "StreamReader.readany": "766f946ae360b8ea",
    "StreamReader._wait": "5cec4bb02a049b41",
    "StreamReader.feed_data": "7548cdda3ea70bf8",
    "StreamReader.feed_eof": "01592f4473c176b3",
    "StreamReader.set_exception": "dfa3db714fb895ed",
    # The chunk ends read_chunk drops: only readchunk() reads them, and the pause/resume counts.
    "StreamReader.begin_http_chunk_receiving": "08181269c2e3410e",
    "StreamReader.end_http_chunk_receiving": "0df4db460aba70a6",
    "StreamReader.readchunk": "935f6dbc3de38de9",
    "ResponseHandler.resume_reading": "ad1141ce3718aca7",
    "BaseProtocol.resume_reading": "21dee847a31af724",
}


def test_aiohttps_read_path_is_the_one_the_lean_read_copies() -> None:
    changed = aiohttp_code.changed(COPIED)
    assert not changed, f"aiohttp changed {changed}: re-check transport.read_chunk against it"


@pytest.fixture
async def chunked() -> AsyncIterator[tuple[str, asyncio.Queue[bytes | list[bytes] | None]]]:
    """A server that answers a request with a chunked body: one HTTP chunk per item put on the
    queue, written when it is put (None ends the body). Yields (its base URL, the queue)."""
    pieces: asyncio.Queue[bytes | list[bytes] | None] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        while (piece := await pieces.get()) is not None:
            # A list: one HTTP chunk per item, all in one write (they arrive in one socket read).
            writer.write(b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in ([piece] if isinstance(piece, bytes)
                                                                         else piece)))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", pieces
    server.close()
    await server.wait_closed()


async def _open(base: str) -> tuple[Transport, HttpResponse]:
    transport = Transport()
    await transport.start()
    endpoint = Endpoint("fake", None, base, {})
    response = await transport.send(endpoint, {"stream": True}, connect=5, read=5, first_byte=5)
    return transport, response


async def test_a_paced_body_is_read_a_piece_at_a_time(
        chunked: tuple[str, asyncio.Queue[bytes | list[bytes] | None]]) -> None:
    base, pieces = chunked
    transport, response = await _open(base)
    try:
        for n in range(300):  # more chunk ends than aiohttp's low-water count of them (all dropped as read)
            piece = b"data: %d\n\n" % n
            await pieces.put(piece)
            async with asyncio.timeout(10):
                assert await response.read_chunk() == piece
        content = response._response.content
        assert (content._size, content._cursor) == (0, content.total_bytes)
        assert content._http_chunk_splits is None  # a chunked body is fed per read: no chunk ends kept
        await pieces.put(None)
        async with asyncio.timeout(10):
            assert await response.read_chunk() == b""
        response.release()
    finally:
        await transport.close()


async def test_a_body_of_big_and_tiny_chunks_arrives_whole(
        chunked: tuple[str, asyncio.Queue[bytes | list[bytes] | None]]) -> None:
    """Megabyte chunks arrive as one piece per socket read (256 KB), tiny ones many to a read: the lean
    read takes the former, readany() the latter (joined), and every byte arrives in order."""
    base, pieces = chunked
    transport, response = await _open(base)
    sent = [bytes([65 + n]) * 1_000_000 for n in range(6)] + [b"x" * n for n in range(1, 200)]
    try:
        for piece in sent:
            await pieces.put(piece)
        await pieces.put(None)
        got = b""
        async with asyncio.timeout(30):
            while data := await response.read_chunk():
                got += data
        assert got == b"".join(sent)
        response.release()
    finally:
        await transport.close()


async def test_a_stall_fails_a_read_that_waits(chunked: tuple[str, asyncio.Queue[bytes | list[bytes] | None]]) -> None:
    base, pieces = chunked
    transport, response = await _open(base)
    try:
        await pieces.put(b"data: 1\n\n")
        assert await response.read_chunk() == b"data: 1\n\n"
        response.set_read_timeout(0.2)
        with pytest.raises(UpstreamTimeout):
            async with asyncio.timeout(10):
                await response.read_chunk()
        response.close()
    finally:
        await pieces.put(None)
        await transport.close()


async def test_many_chunks_that_arrive_together_are_one_read(
        chunked: tuple[str, asyncio.Queue[bytes | list[bytes] | None]]) -> None:
    """An unpaced stream: 60 HTTP chunks in one socket read are taken by one read_chunk, with aiohttp's
    accounting as its own reads leave it (no unread bytes, the cursor at the end, chunk ends dropped),
    and without resuming the socket (never paused) once per piece as readany() does."""
    base, pieces = chunked
    transport, response = await _open(base)
    events = [b"data: {\"n\": %d}\n\n" % n for n in range(60)]
    content = response._response.content
    protocol = content._protocol
    resumes = 0
    resume = protocol.resume_reading

    def counted(*args: bool) -> None:
        nonlocal resumes
        resumes += 1
        resume(*args)

    protocol.resume_reading = counted  # type: ignore[method-assign]
    try:
        await pieces.put(events)
        async with asyncio.timeout(10):
            assert await response.read_chunk() == b"".join(events)
        assert resumes == 0
        assert (content._size, content._cursor) == (0, content.total_bytes)
        assert content._http_chunk_splits is None  # a chunked body is fed per read: no chunk ends kept
        assert not content._protocol._reading_paused
        await pieces.put([b"data: last\n\n"])
        await pieces.put(None)
        async with asyncio.timeout(10):
            assert await response.read_chunk() == b"data: last\n\n"
            assert await response.read_chunk() == b""
        response.release()
    finally:
        await transport.close()
