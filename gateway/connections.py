"""Client connections: uvicorn's httptools protocol with the bounds it lacks.

uvicorn's httptools protocol (the fast one the gateway runs) has no limit on the size of a request's
head, no timeout for reading a head or a body (its keep-alive timeout only runs *between* requests,
so a connection that never sends a request stays forever), and its `limit_concurrency` answers a
plain-text 503 only after reading the head, so silent connections still pile up. h11 has
`h11_max_incomplete_event_size`, but h11 is the slow parser and answers 400. So this subclass adds,
cheaply and before any request reaches the app:

- a head larger than `server.max_header_bytes` is refused with 431 (counted as bytes arrive, so a
  huge header costs at most one read past the limit, never a parse of the whole thing);
- a head not complete within `server.header_timeout` of its first byte (or of the connection) is
  refused with 408 (closed silently when nothing was sent at all);
- a body not complete within `server.body_timeout` of its head is refused with 408;
- a connection beyond `server.max_connections` is answered 503 at once and closed;
- a response that completes before its request's body was read closes the connection (a 413,
  a 401 before the body): nothing is read and discarded after it;
- a connection lost mid-request calls the hook the app put in the request's scope under
  `DISCONNECT_HOOK` (the key is there, None, to say this server offers it): the app learns at once
  that its client left, without a task per request listening on receive() for it;
- every request's cycle is gateway/http_cycle.LeanCycle: uvicorn's send, with less work per answer.

The head and body timeouts share one timer per connection that is moved lazily: a phase (head,
body) only records its deadline, and the timer, when it fires, re-arms itself for a deadline that
moved on. Creating and cancelling a timer handle per phase cost more than the rest of these bounds
together on a request at moderate load; this way a busy keep-alive connection wakes for them about
once per `server.header_timeout`, not twice per request.

Each refusal carries `x-request-id` by the app's rule (gateway/request_id.py: the client's id from
the head read so far, else a new one), is one log line (at most one per reason every 10 s, with a
count) and one count in `gateway_connections_refused_total{reason}`. The limits come from the
uvicorn Config the server builds (`config.gateway_limits`), so every worker and every test server
gets its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from gateway import metrics
from gateway.config.schema import ServerSettings
from gateway.http_cycle import LeanCycle
from gateway.request_id import HEADER, LINE_KEY, new_request_id, sane_request_id

log = logging.getLogger("gateway")

DISCONNECT_HOOK = "gateway.on_disconnect"  # scope key: a callable, called when the client leaves mid-request
_CLOCK_SLACK = 0.005  # seconds: uvloop rounds timers to milliseconds, so one may fire that early
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}


def refusal(status: int, code: str, message: str, *, request_id: bytes, retry_after: int | None = None) -> bytes:
    """A whole HTTP/1.1 response with an OpenAI error body that closes the connection."""
    error_type = "service_unavailable" if status == 503 else "invalid_request_error"
    body = orjson.dumps({"error": {"message": message, "type": error_type, "code": code, "param": None}})
    head = [b"HTTP/1.1 %d %s" % (status, _REASONS[status]), b"content-type: application/json",
            b"content-length: %d" % len(body), b"connection: close", b"x-request-id: " + request_id]
    if retry_after is not None:
        head.append(b"retry-after: %d" % retry_after)
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class _Throttled:
    """One log line per reason at most every `every` seconds, saying how many were refused since."""

    def __init__(self, every: float = 10.0) -> None:
        self._every = every
        self._last: dict[str, float] = {}
        self._since: dict[str, int] = {}

    def warn(self, reason: str, message: str) -> None:
        now = time.monotonic()
        self._since[reason] = self._since.get(reason, 0) + 1
        if now - self._last.get(reason, -self._every) >= self._every:
            count = self._since.pop(reason)
            self._last[reason] = now
            log.warning("%s (%d refused for this reason since the last such line)", message, count)


class BoundedHttpProtocol(HttpToolsProtocol):
    """HttpToolsProtocol plus head size, head and body timeouts, a connection cap, and close-after-early-answer."""

    def __init__(self, config: Any, server_state: Any, app_state: Any, _loop: Any = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits: ServerSettings = getattr(config, "gateway_limits", None) or ServerSettings()
        self._max_head = limits.max_header_bytes
        self._head_timeout = limits.header_timeout
        self._body_timeout = limits.body_timeout
        self._max_connections = limits.max_connections
        self._in_head = True  # reading a request's head (or waiting for one on a new connection)
        self._head_bytes = 0
        self._timer: asyncio.TimerHandle | None = None  # fires at or before the phase's deadline
        self._deadline = 0.0  # loop time by which the current phase must end
        self._on_expiry: Callable[[], None] | None = None  # the current phase's refusal; None: no phase
        self._refused = False
        # One throttle per server (its state object is shared by all its connections).
        self._log: _Throttled = server_state.__dict__.setdefault("gateway_refusal_log", _Throttled())

    # -- connection
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self.connections) >= self._max_connections:
            self._refused = True
            self.transport = transport  # type: ignore[assignment]
            self._refuse("too_many_connections", refusal(
                503, "too_many_connections", f"The gateway has {self._max_connections} open connections, its "
                "limit; retry shortly.", request_id=self._request_id(), retry_after=1),
                f"connection refused: {self._max_connections} connections open (server.max_connections)")
            return
        super().connection_made(transport)  # type: ignore[arg-type]
        self._expect(self._head_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_phase()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._refused:
            super().connection_lost(exc)
            self._tell_the_app()

    def _tell_the_app(self) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            hook: Callable[[], None] | None = cycle.scope.get(DISCONNECT_HOOK)  # type: ignore[assignment]
            if hook is not None:
                hook()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # The parser saw at most this one read past the limit; a head still open beyond it is refused.
        if self._in_head and self._head_bytes > self._max_head and not self.transport.is_closing():
            self._refuse("header_too_large", refusal(
                431, "request_header_fields_too_large",
                f"The request's head is larger than this gateway accepts ({self._max_head} bytes).",
                request_id=self._request_id()),
                f"request refused: head over {self._max_head} bytes (server.max_header_bytes)")

    # -- parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        if self._on_expiry is None:  # else the connection's own head timeout still runs (first request)
            self._expect(self._head_timeout, self._head_timed_out)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._expect(self._body_timeout, self._body_timed_out)
        super().on_headers_complete()
        cycle = self.cycle
        if type(cycle) is RequestResponseCycle:  # the request's new cycle (not yet run): send less per answer
            # uvicorn builds the cycle inside on_headers_complete; its task has not started, so the
            # class can still change without copying uvicorn's 40 lines here.
            cycle.__class__ = LeanCycle
        scope: dict[str, Any] = self.scope  # type: ignore[assignment]  # uvicorn's TypedDict knows no extras
        scope[DISCONNECT_HOOK] = None  # offered: the app's task has not run yet
        scope[LINE_KEY] = None  # offered: LeanCycle writes the x-request-id line the middleware leaves here

    def on_message_complete(self) -> None:
        self._end_phase()
        # What arrives next is the next request's head: count it from its first byte (the parser
        # calls on_message_begin only after data_received has seen that read).
        self._in_head = True
        self._head_bytes = 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not self.transport.is_closing():
            # Answered before its body was read (413, 401, ...): close rather than read the rest.
            self._end_phase()
            self.transport.close()
            return
        super().on_response_complete()

    # -- timers
    def _head_timed_out(self) -> None:
        if self._head_bytes == 0 and (self.cycle is None or self.cycle.response_complete):
            # Nothing of a request arrived: close without a word, as for an idle keep-alive connection.
            self._refuse("header_timeout", None,
                         f"connection closed: no request within {self._head_timeout:g}s (server.header_timeout)")
            return
        self._refuse("header_timeout", refusal(
            408, "request_timeout", f"The request's head did not arrive within {self._head_timeout:g}s.",
            request_id=self._request_id()),
            f"request refused: head not complete within {self._head_timeout:g}s (server.header_timeout)")

    def _body_timed_out(self) -> None:
        started = self.cycle is not None and self.cycle.response_started
        self._refuse("body_timeout", None if started else refusal(
            408, "request_timeout", f"The request's body did not arrive within {self._body_timeout:g}s.",
            request_id=self._request_id()),
            f"request refused: body not complete within {self._body_timeout:g}s (server.body_timeout)")

    def _request_id(self) -> bytes:
        """The client's x-request-id from the head read so far, else a new one: the rule every app answer follows."""
        # The last one, as the app reads repeated headers (api/middleware.request_headers).
        given = next((value for name, value in reversed(self.headers or ()) if name == HEADER), None)
        return sane_request_id(given) or new_request_id().encode()

    def _expect(self, seconds: float, on_expiry: Callable[[], None]) -> None:
        """A phase that must end within `seconds`, else `on_expiry` refuses the request."""
        deadline = self.loop.time() + seconds
        self._deadline = deadline
        self._on_expiry = on_expiry
        timer = self._timer
        if timer is None or timer.when() > deadline:  # only a nearer deadline needs a new timer
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(deadline, self._check)

    def _end_phase(self) -> None:
        self._on_expiry = None  # the timer stays: when it fires with no phase running, it lapses

    def _check(self) -> None:
        self._timer = None
        on_expiry = self._on_expiry
        if on_expiry is None:
            return
        # A later phase moved the deadline on (the loop's clock ticks in milliseconds: allow for it).
        if self.loop.time() < self._deadline - _CLOCK_SLACK:
            self._timer = self.loop.call_at(self._deadline, self._check)
            return
        self._on_expiry = None
        on_expiry()

    def _refuse(self, reason: str, response: bytes | None, message: str) -> None:
        self._end_phase()
        metrics.connection_refused(reason)
        self._log.warn(reason, message)
        if self.transport.is_closing():
            return
        if response is not None:
            self.transport.write(response)
        self.transport.close()
