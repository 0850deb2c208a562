"""A chunked answer's body handed to aiohttp's StreamReader once per socket read, not once per HTTP chunk.

aiohttp's parser gives each HTTP chunk of a body to the answer's StreamReader through three Python
calls (begin_http_chunk_receiving, feed_data, end_http_chunk_receiving): ~4.8k instructions a chunk.
A model's stream is one HTTP chunk per event, so a 50-chunk stream paid ~260k instructions for them,
more than the whole gap between the gateway and a raw-ASGI proxy. So once aiohttp's parser has read
an answer's head (status, headers, keep-alive: all as before), a chunked body goes to llhttp through
httptools instead, the C parser uvicorn already runs, whose every chunk is appended to a list by a C
call; the read's pieces reach the StreamReader in one feed_data. What reads the StreamReader (its
buffer, waiter, eof, errors, the connection's release at the end) is aiohttp's, unchanged.

aiohttp's protocol calls its parser's feed_data(data) -> (messages, upgraded, tail), feed_eof() and
pause_reading(); the two classes here answer those calls in its place (ResponseHandler._parser).
tests/upstream/test_transport_chunked.py digests the aiohttp code this relies on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httptools
from aiohttp import StreamReader
from aiohttp.client_proto import ResponseHandler
from aiohttp.http_exceptions import TransferEncodingError

# llhttp is told what aiohttp's parser already read: a chunked answer's head. It then reads the body.
_CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
_NOTHING: tuple[tuple[()], bool, bytes] = ((), False, b"")  # no new answer: what aiohttp's parser returns then


def read_head_first(protocol: ResponseHandler) -> None:
    """Called once the protocol's parser is set for an answer (set_response_params): the head that
    arrives next goes to that parser on its own, and a chunked body after it to ChunkedBody."""
    protocol._parser = HeadFirst(protocol, protocol._parser)  # type: ignore[assignment]


class HeadFirst:
    """aiohttp's parser, given the answer's head apart from any body bytes that came in the same read
    (an unpaced stream is one read), so that the body can go elsewhere. Once a head is parsed it
    steps aside: aiohttp's parser is the protocol's again, or ChunkedBody for a chunked body."""

    __slots__ = ("_parser", "_protocol")

    def __init__(self, protocol: ResponseHandler, parser: Any) -> None:
        self._protocol = protocol
        self._parser = parser

    def feed_data(self, data: bytes) -> tuple[Any, bool, bytes]:
        parser = self._parser
        end = data.find(b"\r\n\r\n") + 4
        if end == 3 or data.find(b"chunked", 0, end) < 0:
            # No head's end in this read, or not a chunked head as servers write it: aiohttp's parser reads
            # it all, body bytes included, and keeps the answer once it has its head.
            result: tuple[Any, bool, bytes] = parser.feed_data(data)
            if result[0]:
                self._protocol._parser = parser
            return result
        messages, upgraded, tail = parser.feed_data(data[:end])
        body = data[end:]
        if messages:
            self._protocol._parser = parser
            message, payload = messages[-1]
            # The parser has read nothing of this body: a plain chunked one (not 1xx, not compressed, not
            # one a status ends at once) can go.
            if not upgraded and message.chunked and type(payload) is StreamReader and not payload.is_eof():
                chunked = ChunkedBody(self._protocol, payload)
                self._protocol._parser = chunked  # type: ignore[assignment]
                if body:
                    chunked.feed_data(body)
                return messages, False, b""
        if upgraded or not body:
            return messages, upgraded, tail + body
        more, upgraded, tail = parser.feed_data(body)
        if more:
            self._protocol._parser = parser
        return [*messages, *more], upgraded, tail

    def feed_eof(self) -> Any:
        return self._parser.feed_eof()

    def pause_reading(self) -> None:
        self._parser.pause_reading()


class _Body:
    """What llhttp finds in a body: its pieces, and whether it ended. httptools calls these methods by the
    names it finds on the object it is given when the parser is made. Not the ChunkedBody itself: the
    parser holds what it is given, and a ChunkedBody holding its parser holding it would be a reference
    cycle, left (with the answer's StreamReader, buffers and connection objects) for the cyclic GC to find
    after every stream (~70 us of collections per paced 50-chunk stream at 256 in flight, perf)."""

    __slots__ = ("ended", "on_body", "pieces")

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.on_body = self.pieces.append  # a C call per HTTP chunk, no Python frame
        self.ended = False

    def on_message_complete(self) -> None:
        self.ended = True


class ChunkedBody(asyncio.Protocol):
    """One answer's chunked body: each read decoded by llhttp, its pieces fed to the StreamReader at once.

    aiohttp's protocol (`_protocol`) calls it as its parser. Once take_reads() is called it is also the
    connection's protocol, so that reads come here straight from the event loop; it forwards the
    rest to aiohttp's protocol, and gives the connection back when the body ends or breaks."""

    __slots__ = ("_body", "_content", "_direct", "_llhttp", "_pieces", "_protocol", "consume", "reader")

    def __init__(self, protocol: ResponseHandler, content: StreamReader) -> None:
        self._protocol = protocol
        self._content = content
        self._direct = False  # the connection's protocol (take_reads)
        # The StreamReader's waiter while HttpResponse.read_chunk waits on an empty buffer: a read's
        # bytes are handed to it directly (see _deliver).
        self.reader: asyncio.Future[bytes | None] | None = None
        # Offered such a read first, while the reader waits: a read it takes is spent (HttpResponse.read_chunk).
        self.consume: Callable[[bytes], bool] | None = None
        self._body = _Body()
        self._pieces = self._body.pieces
        self._llhttp = httptools.HttpResponseParser(self._body)
        # As lax as aiohttp's parser is with an answer (outside its debug mode).
        self._llhttp.set_dangerous_leniencies(lenient_headers=True, lenient_optional_cr_before_lf=True,
                                              lenient_spaces_after_chunk_size=True)
        self._llhttp.feed_data(_CHUNKED_HEAD)

    def feed_data(self, data: bytes) -> tuple[tuple[()], bool, bytes]:
        error: httptools.HttpParserError | None = None
        try:
            self._llhttp.feed_data(data)
        except httptools.HttpParserError as exc:
            error = exc
        self._fed(error)
        return _NOTHING

    def _fed(self, error: httptools.HttpParserError | None) -> None:
        """What llhttp found in a read goes on: its pieces, then the body's end or its error."""
        pieces = self._pieces
        if pieces:  # what came before an error is delivered first, as aiohttp's parser does
            self._deliver(pieces[0] if len(pieces) == 1 else b"".join(pieces))
            pieces.clear()
        if self._body.ended:
            if self._direct:
                self._give_back()
            if error is not None:  # bytes after the answer's end: this connection is not used again
                self._protocol.force_close()
            # What comes after the end waits for the next answer's parser (aiohttp's protocol keeps it).
            self._protocol._parser = None
            self._content.feed_eof()  # releases the connection to the pool
        elif error is not None:
            raise TransferEncodingError(f"malformed chunked body: {error}") from None

    def _deliver(self, data: bytes) -> None:
        """A paced stream's every read finds the reader waiting on an empty buffer: the bytes are counted
        as aiohttp counts a read (total fed, cursor) and offered to `consume`; if it does not take them
        they go to the reader as the waiter's result, instead of through StreamReader.feed_data, its
        buffer and its accounting when read (~100 Python opcodes a chunk)."""
        reader, content = self.reader, self._content
        if reader is None or reader.done() or content._buffer:
            content.feed_data(data)
            return
        size = len(data)
        content.total_bytes += size
        content._cursor += size
        consume = self.consume
        if consume is not None:
            try:
                if consume(data):
                    return  # spent: the reader waits on
            except Exception as exc:  # a failure of the reader's own: raised where it waits
                self.reader = content._waiter = None
                reader.set_exception(exc)
                return
        self.reader = content._waiter = None
        reader.set_result(data)

    def feed_eof(self) -> None:
        """The connection closed: a body not ended is incomplete (aiohttp's parser raises the same)."""
        if not self._body.ended:
            raise TransferEncodingError("Not enough data to satisfy transfer length header.")

    def pause_reading(self) -> None:
        """Nothing to hold: each read is fed whole (aiohttp pauses the socket itself)."""

    def take_reads(self) -> None:
        """From now on the connection's reads come here from the event loop, not through aiohttp's
        protocol, whose data_received (~60 Python opcodes a read) mostly re-arms its read timer: called
        by HttpResponse.set_read_timeout once it has retired that timer (a stream past its first token)."""
        transport = self._protocol.transport
        if transport is None or self._body.ended or self._direct or self._protocol.read_timeout is not None:
            return
        self._direct = True
        transport.set_protocol(self)

    def _give_back(self) -> None:
        self._direct = False
        transport = self._protocol.transport
        if transport is not None:
            transport.set_protocol(self._protocol)

    # asyncio.Protocol, after take_reads: reads decoded here, the rest forwarded to aiohttp's protocol.

    def data_received(self, data: bytes) -> None:
        """A read decoded as feed_data does; the usual one (one piece of a body that goes on: a paced
        stream's) in this one frame."""
        error: httptools.HttpParserError | None = None
        try:
            self._llhttp.feed_data(data)
        except httptools.HttpParserError as exc:
            error = exc
        else:
            pieces = self._pieces
            if len(pieces) == 1 and not self._body.ended:
                self._deliver(pieces.pop())
                return
        try:
            self._fed(error)
        except TransferEncodingError:
            # aiohttp's protocol answers a malformed body its own way: its parser (this object, whose
            # llhttp stays in error) raises again when it is given the read.
            self._give_back()
            self._protocol.data_received(data)

    def eof_received(self) -> None:
        self._protocol.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._protocol.connection_lost(exc)

    def pause_writing(self) -> None:
        self._protocol.pause_writing()

    def resume_writing(self) -> None:
        self._protocol.resume_writing()
