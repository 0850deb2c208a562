"""Upstream request writes made in one pass of the loop's ready callbacks, sent together at its end.

Why: a write to an upstream that sleeps in its poll wakes it, and on a VM that wake-up (an
inter-processor interrupt) is paid by the writer, ~10 us. Requests that arrive together are handled
one after the other in one pass; written as each is built, the upstream can answer one and fall
asleep again before the next, and every request pays a wake-up (measured: 0.7 a stream at 256
concurrent streams). Written back to back after the pass, the first wakes it and the rest find it
awake. aiohttp's own request does the same by writing its body from a task of its own (one loop
callback later); this keeps that order without the task. A request alone (no other upstream
request in flight: the usual case at moderate load) is written at once, as the batch would only
cost it one more loop pass."""

from __future__ import annotations

import asyncio

from aiohttp.base_protocol import BaseProtocol
from aiohttp.client_exceptions import ClientConnectionResetError
from aiohttp.http_writer import StreamWriter


class WriteBatch:
    """The writes waiting for the end of the current pass; one per loop (the Transport's session's)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._pending: list[tuple[asyncio.WriteTransport, bytes]] = []

    def add(self, transport: asyncio.WriteTransport, data: bytes) -> None:
        if not self._pending:
            self.loop.call_soon(self._flush)
        self._pending.append((transport, data))

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for transport, data in pending:
            if not transport.is_closing():  # closed meanwhile (a cancelled request): its answer is not awaited
                transport.write(data)


class BatchedWriter(StreamWriter):
    """aiohttp's request writer whose socket writes go through a WriteBatch. Used for a lean request
    written inline (request.py: one write of at most _INLINE_BODY bytes on a transport not paused)
    while another request is in flight, so nothing waits on the buffer it leaves until the flush."""

    def __init__(self, protocol: BaseProtocol, loop: asyncio.AbstractEventLoop, batch: WriteBatch) -> None:
        super().__init__(protocol, loop)
        self.batch = batch

    def _write(self, chunk: bytes) -> None:  # type: ignore[override]  # aiohttp types it Buffer
        self._writelines((chunk,))

    def _writelines(self, chunks: tuple[bytes, ...]) -> None:  # type: ignore[override]
        data = b"".join(chunks)
        self.buffer_size += len(data)
        self.output_size += len(data)
        transport = self._protocol.transport
        if transport is None or transport.is_closing():
            raise ClientConnectionResetError("Cannot write to closing transport")
        self.batch.add(transport, data)
