"""The process's one aiohttp session: a POST to an upstream, up to its answer's headers."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson
from aiohttp.helpers import BaseTimerContext, TimeoutHandle, TimerNoop
from multidict import CIMultiDict
from yarl import URL

from gateway.cutoff import Cutoff
from gateway.errors import UpstreamConnectError, UpstreamTimeout
from gateway.upstream.endpoint import Endpoint
from gateway.upstream.transport.batch import WriteBatch
from gateway.upstream.transport.chunked import read_head_first
from gateway.upstream.transport.request import UpstreamRequest, lean_head
from gateway.upstream.transport.response import HttpResponse, reason

# aiohttp's defaults, given explicitly: the connector and each response's parser are set up here.
_READ_BUFSIZE = 2**16
_CEIL_THRESHOLD = 5
_NO_TIMER = TimerNoop()  # without a total timeout (streams): aiohttp's stateless no-op timer


class Transport:
    """One aiohttp session for the whole process, opened in the app's lifespan."""

    def __init__(self, *, limit: int = 0, limit_per_host: int = 0) -> None:
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._session: aiohttp.ClientSession | None = None
        self._batch: WriteBatch | None = None
        self._timeouts: dict[tuple[float, float, float | None], aiohttp.ClientTimeout] = {}
        self._urls: dict[tuple[str, str], URL] = {}
        # By the endpoint's headers object (kept, so its id is never reused while cached) and URL.
        self._heads: dict[tuple[int, str, str], tuple[Mapping[str, str], CIMultiDict[str] | None]] = {}

    async def start(self) -> None:
        self._batch = WriteBatch(asyncio.get_running_loop())
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
            head = lean_head(url, sent)
        else:
            sent = endpoint.headers
            head = self._head(sent, endpoint.base_url, path, url)
        body = orjson.dumps(payload)
        try:
            if first_byte is None:
                response = await self._exchange(url, sent, head, body, timeout)
            else:
                with Cutoff(first_byte):
                    response = await self._exchange(url, sent, head, body, timeout)
        except aiohttp.ConnectionTimeoutError:
            raise UpstreamConnectError(f"connecting to {endpoint.provider_id} timed out after {connect:g}s") \
                from None
        except TimeoutError:
            waited = first_byte if first_byte is not None else (total or read)
            raise UpstreamTimeout(f"no response from {endpoint.provider_id} within {waited:g}s",
                                  phase="first_byte") from None
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamConnectError(f"cannot connect to {endpoint.provider_id}: {reason(exc)}") from None
        except aiohttp.ClientError as exc:
            raise UpstreamConnectError(f"{endpoint.provider_id} dropped the connection before answering: "
                                       f"{reason(exc)}") from None
        return HttpResponse(response, total=total)

    async def _exchange(self, url: URL, headers: Mapping[str, str], head: CIMultiDict[str] | None, body: bytes,
                        limits: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        """One POST on a pooled connection, up to the response's headers: what ClientSession._request
        does for this one kind of request, with the same total timer, without the rest (redirects,
        cookies, auth, proxies, tracing, retries (never for a POST), merging the session's default
        headers, building the URL): ~40k instructions a request. (The aiohttp parts it uses
        are listed in the package's docstring.)"""
        deadline: TimeoutHandle | None = None
        handle: asyncio.TimerHandle | None = None
        timer: BaseTimerContext = _NO_TIMER
        if limits.total is not None:  # bounds everything up to the end of the body, as in aiohttp
            assert self._batch is not None
            deadline = TimeoutHandle(self._batch.loop, limits.total,
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
            assert self._batch is not None
            request = UpstreamRequest.lean(url, head, body, timer, session, self._batch)
        else:  # the unusual request (_lean_head says which): built by aiohttp itself
            request = UpstreamRequest("POST", url, headers=headers, data=body, loop=asyncio.get_running_loop(),
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
            read_head_first(protocol)
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
            entry = self._heads[key] = (headers, lean_head(url, headers))
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
