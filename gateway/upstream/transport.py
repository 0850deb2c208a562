"""The only module that imports aiohttp: one pooled client session per process, send and read.

aiohttp's exceptions are mapped here to the gateway's UpstreamError tree, so nothing above this
module knows which HTTP client moves the bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp
import orjson
from aiohttp import hdrs
from aiohttp.connector import Connection
from aiohttp.helpers import BaseTimerContext, TimeoutHandle, TimerNoop
from aiohttp.http_writer import StreamWriter
from aiohttp.payload import BytesPayload
from multidict import CIMultiDict  # aiohttp's header type: built once per endpoint, not per request
from yarl import URL  # aiohttp's URL type: one parsed per endpoint and path, not per request

from gateway.errors import StreamCut, UpstreamConnectError, UpstreamProtocolError, UpstreamTimeout
from gateway.upstream.endpoint import Endpoint

# aiohttp's defaults, given explicitly: the connector and each response's parser are set up here.
_READ_BUFSIZE = 2**16
_CEIL_THRESHOLD = 5
_INLINE_BODY = 2**16  # StreamWriter's buffer limit: a body up to it is written without waiting for a drain
_NO_TIMER = TimerNoop()  # without a total timeout (streams): aiohttp's stateless no-op timer
# Request headers aiohttp's request acts on (a length, an encoding, cookies, 100-continue).
_ACTED_ON = (hdrs.CONTENT_LENGTH, hdrs.TRANSFER_ENCODING, hdrs.CONTENT_ENCODING, hdrs.EXPECT, hdrs.COOKIE)

# What of aiohttp this module uses beyond its documented client API, and why (an aiohttp release that
# changes one fails tests/upstream/test_transport_send.py's digests or tests/upstream's behaviour):
# - ClientRequest's constructor, send(connection) and update_auto_headers (overridden): the request,
#   built and written without ClientSession._request's layers (Transport._exchange says which);
#   for the usual request its attributes set directly (_UpstreamRequest.lean: __init__'s result)
#   and its send() short (head and small body written at once: StreamWriter, write_bytes).
# - BaseConnector.connect(request, traces, timeout), ResponseHandler.set_response_params(...),
#   ClientResponse.start(connection): _connect_and_send_request's three steps.
# - helpers.TimeoutHandle / TimerNoop: the total timeout as aiohttp's request arms it.
# - StreamReader's buffer, waiter and counts, ResponseHandler.read_timeout/_reading_paused:
#   HttpResponse.read_chunk's lean read and the idle watch (tests/upstream/test_transport_reads.py).


class HttpResponse:
    """An upstream response whose body is read in pieces; close() drops the connection at once."""

    __slots__ = ("_idle", "_lean", "_loop", "_response", "_seen", "_since", "_watch", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse, *, total: float | None = None) -> None:
        self._response = response
        # Without a total timeout aiohttp's per-read timer context does nothing: reads may skip it.
        self._lean = total is None
        self._loop = asyncio.get_running_loop()
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers
        self._watch: asyncio.TimerHandle | None = None  # the idle watch, once set_read_timeout armed it
        self._idle = 0.0
        self._seen = 0  # the body's byte count at the watch's last look
        self._since = 0.0  # loop time of the last look that saw it move

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
            raise StreamCut(f"the upstream connection broke while the answer was read: {_reason(exc)}") from None

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

    async def read_chunk(self) -> bytes:
        """Whatever bytes arrived next; b"" once the body has ended.

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
                    waiter = content._waiter = self._loop.create_future()
                    try:
                        await waiter  # fed, ended or failed by the protocol (or the idle watch)
                    finally:
                        content._waiter = None
                if buffer and not content._buffer_offset and content._exception is None:
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
                        # Every chunk end is now at or before the cursor: all are dropped. aiohttp keeps
                        # one exactly at it for readchunk(), which the gateway never calls; left there,
                        # they would count toward pausing the socket.
                        splits.clear()
                    if content._protocol._reading_paused:
                        _resume(content)
                    return data
            return await content.readany()
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamTimeout("the upstream stream stalled", phase="idle") from None
        except aiohttp.ClientError as exc:
            raise StreamCut(f"the upstream stream broke: {_reason(exc)}") from None

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
        self._stop_watch()
        loop = asyncio.get_running_loop()
        self._idle, self._seen, self._since = seconds, self._response.content.total_bytes, loop.time()
        self._watch = loop.call_later(seconds / 4, self._look)

    def _look(self) -> None:
        content = self._response.content
        loop = asyncio.get_running_loop()  # a timer callback runs in the loop
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


class _UpstreamRequest(aiohttp.ClientRequest):
    """aiohttp's request without its automatic User-Agent and Accept-Encoding: an upstream learns
    nothing of the client library, and the endpoint's own headers ask for answers uncompressed.

    (aiohttp's way to skip them, the session's `skip_auto_headers`, builds a multidict of the names
    to skip and copies the request's headers on every request: ~10k instructions a request.)"""

    _lean = False  # set by lean(): send() may then take its short way

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        if "Accept" not in self.headers:  # the one automatic header kept
            self.headers["Accept"] = "*/*"

    @classmethod
    def lean(cls, url: URL, head: CIMultiDict[str], body: bytes, timer: BaseTimerContext,
             session: aiohttp.ClientSession) -> _UpstreamRequest:
        """The request ClientRequest.__init__ builds for a POST of `body` to `url` with the headers
        `head` came from (_lean_head), set directly: its dozen update_* steps re-check and re-merge
        the same headers on every request (~40k instructions). tests/upstream/test_transport_send.py
        compares the two requests' every attribute and digests the code this copies."""
        request = cls.__new__(cls)
        request._session = session
        request.original_url = request.url = url
        request.method = "POST"
        request.chunked = request.compress = request.length = None
        request.loop = asyncio.get_running_loop()
        request.response_class = aiohttp.ClientResponse
        request._timer = timer
        request._ssl = True
        request.server_hostname = None
        request.version = aiohttp.HttpVersion11
        headers = request.headers = head.copy()
        headers["Content-Length"] = str(len(body))
        if "Content-Type" not in headers:
            headers["Content-Type"] = "application/octet-stream"  # what aiohttp's bytes body adds
        request._body = BytesPayload(body)
        request.proxy = request.proxy_auth = request.proxy_headers = None
        request._traces = []
        request._lean = True
        return request

    async def send(self, conn: Connection) -> aiohttp.ClientResponse:
        """ClientRequest.send for a lean request: the head (its request line, the headers) and the body
        written as aiohttp's send does, and a body under the writer's buffer limit written at once, as
        aiohttp does with an eagerly started task on Python >= 3.12, instead of in a task of its own
        (on Python 3.11 a task made, scheduled and run per request: ~34k instructions a whole answer)."""
        protocol = conn.protocol
        if not self._lean or protocol is None or self._body is None:
            return await super().send(conn)
        writer = StreamWriter(protocol, self.loop)  # no Connection header: our connector never force-closes
        await writer.write_headers(f"POST {self.url.raw_path_qs} HTTP/1.1", self.headers)
        task: asyncio.Task[None] | None = None
        if protocol.writing_paused or self._body.size is None or self._body.size > _INLINE_BODY:
            task = self.loop.create_task(self.write_bytes(writer, conn, self._get_content_length()))
            self._writer = task
        else:
            await self.write_bytes(writer, conn, None)  # nothing in it waits: the transport is not paused
        response = self.response = aiohttp.ClientResponse(  # type: ignore[assignment]  # aiohttp types it None
            self.method, self.original_url, writer=task, continue100=None, timer=self._timer,
            request_info=self.request_info, traces=self._traces, loop=self.loop, session=self._session,
            stream_writer=writer,
        )
        return response


def _lean_head(url: URL, headers: Mapping[str, str]) -> CIMultiDict[str] | None:
    """The headers ClientRequest.update_headers and update_auto_headers make of `headers` for `url`,
    in their order; None where aiohttp's request does more than _UpstreamRequest.lean copies (a
    URL with credentials or a fragment, a header it acts on): such a request is built by aiohttp."""
    if url.raw_user or url.raw_password or url.raw_fragment or not url.raw_host:
        return None
    head: CIMultiDict[str] = CIMultiDict()
    head[hdrs.HOST] = url.host_port_subcomponent or ""
    for name, value in headers.items():
        if name in hdrs.HOST_ALL:
            head[name] = value
        else:
            head.add(name, value)
    if any(name in head for name in _ACTED_ON):
        return None
    if "Accept" not in head:
        head["Accept"] = "*/*"
    return head


class Transport:
    """One aiohttp session for the whole process, opened in the app's lifespan."""

    def __init__(self, *, limit: int = 0, limit_per_host: int = 0) -> None:
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float, float, float | None], aiohttp.ClientTimeout] = {}
        self._urls: dict[tuple[str, str], URL] = {}
        # By the endpoint's headers object (kept, so its id is never reused while cached) and URL.
        self._heads: dict[tuple[int, str, str], tuple[Mapping[str, str], CIMultiDict[str] | None]] = {}

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._limit, limit_per_host=self._limit_per_host, ttl_dns_cache=300, keepalive_timeout=60,
            timeout_ceil_threshold=_CEIL_THRESHOLD,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Upstream cookies must never be kept: they would be shared by every client of the gateway.
            cookie_jar=aiohttp.DummyCookieJar(),
            # Answers are relayed byte for byte, so ask for them uncompressed and never decode them.
            auto_decompress=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self, endpoint: Endpoint, payload: dict[str, Any], *, connect: float, read: float,
        total: float | None = None, first_byte: float | None = None, path: str = "/chat/completions",
        headers: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        """POST the payload to the endpoint's base URL + `path`; returns once the headers are in (or raises).

        `total` bounds everything up to the end of the body (whole answers); `first_byte` bounds only
        the wait for the headers (streams, whose body is bounded chunk by chunk by `read`). `headers`
        (per request, e.g. a client's anthropic-beta) go over the endpoint's own.
        """
        assert self._session is not None, "Transport.start() was not awaited"
        timeout = self._timeout(connect, read, total)
        url = self._url(endpoint.base_url, path)
        sent: Mapping[str, str]
        if headers:
            sent = {**endpoint.headers, **headers}
            head = _lean_head(url, sent)
        else:
            sent = endpoint.headers
            head = self._head(sent, endpoint.base_url, path, url)
        body = orjson.dumps(payload)
        try:
            if first_byte is None:
                response = await self._exchange(url, sent, head, body, timeout)
            else:
                async with asyncio.timeout(first_byte):
                    response = await self._exchange(url, sent, head, body, timeout)
        except aiohttp.ConnectionTimeoutError:
            raise UpstreamConnectError(f"connecting to {endpoint.provider_id} timed out after {connect:g}s") \
                from None
        except TimeoutError:
            waited = first_byte if first_byte is not None else (total or read)
            raise UpstreamTimeout(f"no response from {endpoint.provider_id} within {waited:g}s",
                                  phase="first_byte") from None
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamConnectError(f"cannot connect to {endpoint.provider_id}: {_reason(exc)}") from None
        except aiohttp.ClientError as exc:
            raise UpstreamConnectError(f"{endpoint.provider_id} dropped the connection before answering: "
                                       f"{_reason(exc)}") from None
        return HttpResponse(response, total=total)

    async def _exchange(self, url: URL, headers: Mapping[str, str], head: CIMultiDict[str] | None, body: bytes,
                        limits: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        """One POST on a pooled connection, up to the response's headers: what ClientSession._request
        does for this one kind of request, with the same total timer, without the rest (redirects,
        cookies, auth, proxies, tracing, retries (never for a POST), merging the session's default
        headers, building the URL): ~40k instructions a request. (The aiohttp parts it uses
        are listed at the top of this module.)"""
        deadline: TimeoutHandle | None = None
        handle: asyncio.TimerHandle | None = None
        timer: BaseTimerContext = _NO_TIMER
        if limits.total is not None:  # bounds everything up to the end of the body, as in aiohttp
            deadline = TimeoutHandle(asyncio.get_running_loop(), limits.total,
                                     ceil_threshold=limits.ceil_threshold)
            handle = deadline.start()
            timer = deadline.timer()
        try:
            with timer:
                response = await self._post(url, headers, head, body, limits, timer)
        except BaseException:
            if deadline is not None:
                deadline.close()
            if handle is not None:
                handle.cancel()
            raise
        if handle is not None:  # the total timer ends with the connection (the body read to its end)
            if response.connection is not None:
                response.connection.add_callback(handle.cancel)
            else:
                handle.cancel()
        return response

    async def _post(self, url: URL, headers: Mapping[str, str], head: CIMultiDict[str] | None, body: bytes,
                    limits: aiohttp.ClientTimeout, timer: BaseTimerContext) -> aiohttp.ClientResponse:
        """aiohttp's _connect_and_send_request, and its errors as aiohttp's request raises them."""
        session = self._session
        assert session is not None and session.connector is not None, "Transport.start() was not awaited"
        if head is not None:
            request = _UpstreamRequest.lean(url, head, body, timer, session)
        else:  # the unusual request (_lean_head says which): built by aiohttp itself
            request = _UpstreamRequest("POST", url, headers=headers, data=body, loop=asyncio.get_running_loop(),
                                       timer=timer, session=session, response_class=aiohttp.ClientResponse)
        try:
            try:
                connection = await session.connector.connect(request, traces=[], timeout=limits)
            except TimeoutError as exc:
                raise aiohttp.ConnectionTimeoutError(f"Connection timeout to host {url}") from exc
            protocol = connection.protocol
            assert protocol is not None
            protocol.set_response_params(
                timer=timer, read_until_eof=True, auto_decompress=False, read_timeout=limits.sock_read,
                read_bufsize=_READ_BUFSIZE, timeout_ceil_threshold=_CEIL_THRESHOLD,
            )
            try:
                response = await request.send(connection)
                try:
                    await response.start(connection)
                except BaseException:
                    response.close()
                    raise
            except BaseException:
                connection.close()
                raise
        except aiohttp.ClientError:
            raise
        except OSError as exc:  # a bare OSError becomes aiohttp's ClientOSError, as its request does
            if exc.errno is None and isinstance(exc, TimeoutError):
                raise
            raise aiohttp.ClientOSError(*exc.args) from exc
        return response

    def _head(self, headers: Mapping[str, str], base: str, path: str, url: URL) -> CIMultiDict[str] | None:
        """_lean_head of an endpoint's own headers, made once per endpoint and path."""
        key = (id(headers), base, path)
        entry = self._heads.get(key)
        if entry is None or entry[0] is not headers:
            if len(self._heads) >= 1024:  # endpoints are rebuilt by reloads: drop the old ones
                self._heads.clear()
            entry = self._heads[key] = (headers, _lean_head(url, headers))
        return entry[1]

    def _url(self, base: str, path: str) -> URL:
        """The parsed URL (aiohttp would parse the string again on every request)."""
        key = (base, path)
        url = self._urls.get(key)
        if url is None:
            url = URL(base + path)
            if len(self._urls) < 1024:  # bases come from the config and paths from the dialects: few
                self._urls[key] = url
        return url

    def _timeout(self, connect: float, read: float, total: float | None) -> aiohttp.ClientTimeout:
        key = (connect, read, total)
        timeout = self._timeouts.get(key)
        if timeout is None:
            # Policy values repeat, so a small cache saves building one per request. A read timeout
            # no shorter than the total can never fire first, and aiohttp re-arms it on every read:
            # whole answers (read == total) go without it.
            sock_read = None if total is not None and read >= total else read
            timeout = aiohttp.ClientTimeout(total=total, sock_connect=connect, sock_read=sock_read)
            if len(self._timeouts) < 256:
                self._timeouts[key] = timeout
        return timeout


def _resume(content: aiohttp.StreamReader) -> None:
    """aiohttp paused the socket past its high-water marks: resume it once below the low ones, as its
    own read does (StreamReader._read_nowait_chunk)."""
    splits = content._http_chunk_splits
    if content._size < content._low_water and (splits is None or len(splits) < content._low_water_chunks):
        content._protocol.resume_reading()


def _reason(exc: aiohttp.ClientError) -> str:
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
