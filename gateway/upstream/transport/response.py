"""An upstream answer read whole or in pieces, off aiohttp's response (see the package's docstring
for the aiohttp internals the lean read relies on)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import aiohttp

from gateway.errors import StreamCut, UpstreamProtocolError, UpstreamTimeout
from gateway.upstream.transport.chunked import ChunkedBody


class HttpResponse:
    """An upstream response whose body is read in pieces; close() drops the connection at once."""

    __slots__ = ("_body", "_idle", "_lean", "_loop", "_response", "_seen", "_since", "_watch", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse, *, total: float | None = None) -> None:
        self._response = response
        # Without a total timeout aiohttp's per-read timer context does nothing: reads may skip it.
        self._lean = total is None and type(response.content) is aiohttp.StreamReader  # not a body-less answer's
        self._loop = response._loop  # the running loop, without asking asyncio (a getpid() syscall each time)
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers
        self._watch: asyncio.TimerHandle | None = None  # the idle watch, once set_read_timeout armed it
        self._idle = 0.0
        self._seen = 0  # the body's byte count at the watch's last look
        self._since = 0.0  # loop time of the last look that saw it move
        # A chunked body still arriving is decoded by a ChunkedBody, which hands a waiting read its bytes.
        protocol = response.connection.protocol if response.connection is not None else None
        body: object = protocol._parser if protocol is not None else None
        self._body = body if isinstance(body, ChunkedBody) else None

    async def read_all(self, limit: int) -> bytes:
        """The whole body; more than `limit` bytes is refused as a malformed answer."""
        declared = self._response.content_length
        if declared is not None and declared > limit:
            raise UpstreamProtocolError(f"the upstream's answer ({declared} bytes) is over the {limit}-byte limit")
        try:
            return await self._read_bounded(limit)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamTimeout("the upstream stopped sending its answer", phase="idle") from None
        except aiohttp.ClientError as exc:
            raise StreamCut(f"the upstream connection broke while the answer was read: {reason(exc)}") from None

    async def _read_bounded(self, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        content = self._response.content
        while chunk := await content.readany():
            size += len(chunk)
            if size > limit:
                raise UpstreamProtocolError(f"the upstream's answer is over the {limit}-byte limit")
            parts.append(chunk)
            if content.at_eof():  # the body has ended: no last read only to be told so (~50 opcodes)
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def read_chunk(self, consume: Callable[[bytes], bool] | None = None) -> bytes:
        """Whatever bytes arrived next; b"" once the body has ended. A chunked body's reads that arrive
        while this waits on an empty buffer are offered to `consume` first (UpstreamResponse.read_chunk).

        A paced stream's every read waits for one piece. aiohttp's readany() spends ~15 Python calls on
        that (a timer context, a timeout assertion, and a resume of the socket after every piece, which
        re-enters the parser with no bytes, even when the socket was never paused): here, without a
        total timeout, a read is one wait on aiohttp's own waiter and aiohttp's own accounting
        (StreamReader._read_nowait_chunk's) done once for what is buffered, one piece or many (an
        unpaced stream: one per HTTP chunk), resuming the socket only when aiohttp had paused it. A
        partly read piece, an error or a total timeout go through readany().
        tests/upstream/test_transport_reads.py fails when aiohttp changes the code this copies."""
        content = self._response.content
        try:
            if self._lean:
                buffer = content._buffer
                if not buffer and content._waiter is None and not content._eof and content._exception is None \
                        and content._protocol.transport is not None:
                    waiter: asyncio.Future[bytes | None] = self._loop.create_future()
                    content._waiter = waiter  # type: ignore[assignment]
                    body = self._body
                    if body is not None:
                        body.reader, body.consume = waiter, consume
                    try:
                        # fed, ended or failed by the protocol (or the idle watch), or a read's bytes
                        handed = await waiter
                    finally:
                        content._waiter = None
                        if body is not None:
                            body.reader = body.consume = None
                    if handed:
                        return handed
                if buffer and not content._buffer_offset and content._exception is None:
                    return _take_buffered(content)
            return await content.readany()
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamTimeout("the upstream stream stalled", phase="idle") from None
        except aiohttp.ClientError as exc:
            raise StreamCut(f"the upstream stream broke: {reason(exc)}") from None

    def set_read_timeout(self, seconds: float) -> None:
        """From now on, `seconds` without a byte from the upstream fails the read (UpstreamTimeout).

        aiohttp's read timer is re-armed on every read (a timer handle cancelled and made again per
        streamed chunk); instead one timer looks at the body's byte count every quarter of `seconds`,
        so a stall is noticed between `seconds` and 1.25x that after the last byte, and a stream
        whose chunks come faster than that costs one timer, not one per chunk."""
        connection = self._response.connection
        if connection is not None and connection.protocol is not None:
            connection.protocol.read_timeout = None
            connection.protocol.start_timeout()  # drops aiohttp's pending timer
        if self._body is not None:
            self._body.take_reads()
        self._stop_watch()
        loop = self._loop
        self._idle, self._seen, self._since = seconds, self._response.content.total_bytes, loop.time()
        self._watch = loop.call_later(seconds / 4, self._look)

    def _look(self) -> None:
        content = self._response.content
        loop = self._loop
        now = loop.time()
        # Bytes arrived, or some wait unread (the client reads slower: aiohttp has paused the socket,
        # which is not the upstream stalling): the upstream is alive.
        if content.total_bytes != self._seen or content._size:  # aiohttp's count of unread bytes
            self._seen, self._since = content.total_bytes, now
        elif content.is_eof():
            self._watch = None
            return
        elif now - self._since >= self._idle:
            self._watch = None
            content.set_exception(aiohttp.ServerTimeoutError("no data from the upstream"))
            return
        self._watch = loop.call_later(self._idle / 4, self._look)

    def _stop_watch(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def release(self) -> None:
        self._stop_watch()
        # A body read to its end has already given its connection back to the pool (aiohttp closes the
        # response at the end of the body); its release() would only mark the spent body as closed.
        if not self._response.closed:
            self._response.release()

    def close(self) -> None:
        self._stop_watch()
        self._response.close()


def _take_buffered(content: aiohttp.StreamReader) -> bytes:
    """Everything buffered, with aiohttp's accounting of a read (StreamReader._read_nowait_chunk's)."""
    buffer = content._buffer
    if len(buffer) == 1:
        data = buffer.popleft()
    else:
        data = b"".join(buffer)
        buffer.clear()
    size = len(data)
    content._size -= size
    content._cursor += size
    splits = content._http_chunk_splits
    if splits:
        # Every chunk end is now at or before the cursor: all are dropped. aiohttp keeps one exactly at
        # it for readchunk(), which the gateway never calls; left there, they would count toward
        # pausing the socket. (A chunked body fed by ChunkedBody has none: aiohttp's parser marks them.)
        splits.clear()
    if content._protocol._reading_paused:
        _resume(content)
    return data


def _resume(content: aiohttp.StreamReader) -> None:
    """aiohttp paused the socket past its high-water marks: resume it once below the low ones, as its
    own read does (StreamReader._read_nowait_chunk)."""
    splits = content._http_chunk_splits
    if content._size < content._low_water and (splits is None or len(splits) < content._low_water_chunks):
        content._protocol.resume_reading()


def reason(exc: aiohttp.ClientError) -> str:
    """What went wrong, as words a client can read (never aiohttp's class names or a URL)."""
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the response ended before it was complete"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the upstream closed the connection"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return (exc.strerror or "the address could not be reached").lower()
    if isinstance(exc, aiohttp.ClientOSError) and exc.strerror:
        return exc.strerror.lower()
    return "the connection failed"
