"""The upstream request: aiohttp's ClientRequest without its automatic headers, and for the usual
request (a POST of bytes with the endpoint's headers) built and written directly."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

import aiohttp
from aiohttp import hdrs
from aiohttp.connector import Connection
from aiohttp.helpers import BaseTimerContext
from aiohttp.http_writer import StreamWriter
from aiohttp.payload import BytesPayload
from multidict import CIMultiDict  # aiohttp's header type: built once per endpoint, not per request
from yarl import URL  # aiohttp's URL type: one parsed per endpoint and path, not per request

from gateway.upstream.transport.batch import BatchedWriter, WriteBatch

_INLINE_BODY = 2**16  # StreamWriter's buffer limit: a body up to it is written without waiting for a drain
# Request headers aiohttp's request acts on (a length, an encoding, cookies, 100-continue).
_ACTED_ON = (hdrs.CONTENT_LENGTH, hdrs.TRANSFER_ENCODING, hdrs.CONTENT_ENCODING, hdrs.EXPECT, hdrs.COOKIE)


class UpstreamRequest(aiohttp.ClientRequest):
    """aiohttp's request without its automatic User-Agent and Accept-Encoding: an upstream learns
    nothing of the client library, and the endpoint's own headers ask for answers uncompressed.

    (aiohttp's way to skip them, the session's `skip_auto_headers`, builds a multidict of the names
    to skip and copies the request's headers on every request: ~10k instructions a request.)"""

    _lean = False  # set by lean(): send() may then take its short way
    _batch: WriteBatch

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        if "Accept" not in self.headers:  # the one automatic header kept
            self.headers["Accept"] = "*/*"

    @classmethod
    def lean(cls, url: URL, head: CIMultiDict[str], body: bytes, timer: BaseTimerContext,
             session: aiohttp.ClientSession, batch: WriteBatch) -> UpstreamRequest:
        """The request ClientRequest.__init__ builds for a POST of `body` to `url` with the headers
        `head` came from (lean_head), set directly: its dozen update_* steps re-check and re-merge
        the same headers on every request (~40k instructions). tests/upstream/test_transport_send.py
        compares the two requests' every attribute and digests the code this copies."""
        request = cls.__new__(cls)
        request._session = session
        request.original_url = request.url = url
        request.method = "POST"
        request.chunked = request.compress = request.length = None
        request.loop = batch.loop  # the session's loop (asyncio.get_running_loop() is a getpid() syscall)
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
        request._batch = batch
        return request

    async def send(self, conn: Connection) -> aiohttp.ClientResponse:
        """ClientRequest.send for a lean request: the head (its request line, the headers) and the body
        written as aiohttp's send does, and a body under the writer's buffer limit written at once, as
        aiohttp does with an eagerly started task on Python >= 3.12, instead of in a task of its own
        (on Python 3.11 a task made, scheduled and run per request: ~34k instructions a whole answer)."""
        protocol = conn.protocol
        if not self._lean or protocol is None or self._body is None:
            return await super().send(conn)
        # No Connection header in either writer: our connector never force-closes.
        inline = not protocol.writing_paused and self._body.size is not None and self._body.size <= _INLINE_BODY
        # Batched only while another upstream request holds a connection: then more writes may come in
        # this pass. A request alone (the usual one at moderate load) goes out at once, without waiting
        # one more loop pass for a batch that would hold it alone.
        batched = inline and len(conn._connector._acquired) > 1
        writer = BatchedWriter(protocol, self.loop, self._batch) if batched else StreamWriter(protocol, self.loop)
        await writer.write_headers(f"POST {self.url.raw_path_qs} HTTP/1.1", self.headers)
        task: asyncio.Task[None] | None = None
        if inline:
            await self.write_bytes(writer, conn, None)  # nothing in it waits: the transport is not paused
        else:  # written from a task of its own, as aiohttp does: already a loop callback later, no batch
            task = self.loop.create_task(self.write_bytes(writer, conn, self._get_content_length()))
            self._writer = task
        response = self.response = aiohttp.ClientResponse(  # type: ignore[assignment]  # aiohttp types it None
            self.method, self.original_url, writer=task, continue100=None, timer=self._timer,
            request_info=self.request_info, traces=self._traces, loop=self.loop, session=self._session,
            stream_writer=writer,
        )
        return response


def lean_head(url: URL, headers: Mapping[str, str]) -> CIMultiDict[str] | None:
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
