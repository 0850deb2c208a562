"""Request writes made in one pass of the loop go out together after it (transport/batch.py)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp.client_exceptions import ClientConnectionResetError

from gateway.upstream.transport.batch import BatchedWriter, WriteBatch


async def _connected() -> tuple[asyncio.Transport, socket.socket]:
    ours, peer = socket.socketpair()
    transport, _ = await asyncio.get_running_loop().connect_accepted_socket(asyncio.Protocol, ours)
    peer.setblocking(False)
    return transport, peer


def _received(peer: socket.socket) -> bytes:
    try:
        return peer.recv(65536)
    except BlockingIOError:
        return b""


async def _after_this_pass() -> None:
    """Resumes once the callbacks scheduled before it have run (a callback, not a clock)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_soon(done.set_result, None)
    await done


async def test_writes_of_one_pass_wait_for_its_end_then_go_out_in_order() -> None:
    batch = WriteBatch(asyncio.get_running_loop())
    (first, first_peer), (second, second_peer) = await _connected(), await _connected()
    try:
        batch.add(first, b"one ")
        batch.add(second, b"two")
        batch.add(first, b"three")
        assert (_received(first_peer), _received(second_peer)) == (b"", b"")
        await _after_this_pass()
        assert (_received(first_peer), _received(second_peer)) == (b"one three", b"two")
        batch.add(second, b"four")  # a later pass schedules its own flush
        await _after_this_pass()
        assert _received(second_peer) == b"four"
    finally:
        first.close(), second.close(), first_peer.close(), second_peer.close()


async def test_a_connection_closed_before_the_flush_is_skipped_and_the_rest_written() -> None:
    batch = WriteBatch(asyncio.get_running_loop())
    (closed, closed_peer), (open_, open_peer) = await _connected(), await _connected()
    try:
        batch.add(closed, b"never")
        batch.add(open_, b"sent")
        closed.close()  # a cancelled request closes its connection
        await _after_this_pass()
        assert _received(open_peer) == b"sent"
        assert _received(closed_peer) == b""  # end of stream: the close, not the request
    finally:
        open_.close(), closed_peer.close(), open_peer.close()


async def test_the_writer_counts_what_it_hands_over_and_refuses_a_closing_connection() -> None:
    loop = asyncio.get_running_loop()
    transport, peer = await _connected()
    try:
        protocol = type("Protocol", (), {"transport": transport, "_paused": False})()
        writer = BatchedWriter(protocol, loop, WriteBatch(loop))  # type: ignore[arg-type]  # the two attributes it reads
        writer._writelines((b"head\r\n\r\n", b"body"))
        assert (writer.buffer_size, writer.output_size) == (12, 12)
        await _after_this_pass()
        assert _received(peer) == b"head\r\n\r\nbody"
        transport.close()
        with pytest.raises(ClientConnectionResetError):
            writer._write(b"late")
    finally:
        transport.close(), peer.close()
