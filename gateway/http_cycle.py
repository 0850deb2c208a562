"""uvicorn's request/response cycle with a leaner send: the same bytes and rules, less work per answer.

uvicorn's httptools cycle checks every response header with two regular expressions and lower-cases
its name on every answer, copies the server's default headers into a new list, and writes a whole
answer's head and body in two `transport.write` calls (two syscalls, two TCP segments). At moderate
load that was a tenth of the gateway's own CPU per whole answer. `LeanCycle` (the cycle
gateway/connections.py gives every request) keeps uvicorn's behaviour and changes only the cost:

- a header pair is checked once, then its wire line is remembered, for the names whose values
  repeat (content types, the `x-gateway-*` target headers, ...): the check is the same regular
  expressions, so nothing unchecked reaches the wire; a pair with any other name (a request id, a
  rate-limit count, anything from an upstream) is checked on every answer, as before. Names with a
  meaning to the framing (content-length, transfer-encoding, connection) are never remembered;
  a content-length made of digits needs no expression;
- the server's default headers (its `date`, replaced once a second) are encoded once per list;
- the `x-request-id` line comes from the scope, where api/middleware.py leaves it (checked there by
  gateway/request_id.py's rule, which admits only valid header values), instead of the middleware
  wrapping send to add a pair to every answer's headers;
- the head of an answer with a Content-Length is written together with the first piece of its body
  (one syscall): such an answer's body is in hand by the time its head is sent (an endpoint that
  waits between the two would only delay its head). A chunked answer (a stream) writes its head at
  once, as uvicorn does.

- a stream's pieces may skip the ASGI message altogether: `piece_writer(send)` gives the endpoint the
  cycle's `write_piece` when `send` is the cycle's own (nothing wraps it), a plain call that frames
  and writes a piece of a chunked body as send() would, or says it cannot (the client reads slower
  than the gateway writes, or no chunked answer is in progress) so that send() takes that piece.
  A paced stream sends every chunk on its own: the message dict, the coroutine and its await per
  chunk were most of what the way out cost per chunk.
- a whole answer may skip them too: `write_answer(send, status, headers, body)` writes it, its
  content-length added, as the two sends would (when every pair's line is remembered, in one join
  without the general bookkeeping), or says that send() must take it;
- a request's body that came whole (the usual case: the head and body in one read, parsed before the
  app's task starts) is taken with `whole_body(receive)`, a plain call, instead of uvicorn's
  receive (an event waited on, a message dict) and its await.

Everything else (HEAD, 204/304, `connection: close`, keep-alive, flow control, the Content-Length
checks, the access log, the errors for out-of-order messages) is uvicorn's logic, kept line for
line below; tests/test_http_cycle.py compares the bytes on the wire with plain uvicorn's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE, STATUS_LINE, RequestResponseCycle
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from gateway.request_id import LINE_KEY

# Names whose values repeat from answer to answer: a checked pair of these is remembered.
_REPEATING = frozenset({
    b"content-type", b"cache-control", b"x-accel-buffering", b"x-gateway-provider", b"x-gateway-model",
    b"x-gateway-attempts", b"x-gateway-fallbacks", b"x-ratelimit-limit-requests", b"x-ratelimit-limit-tokens",
    b"allow", b"retry-after", b"vary", b"access-control-allow-origin", b"access-control-expose-headers",
    b"access-control-allow-credentials",
})
_MAX_KNOWN = 4096  # pairs remembered at most (values come from the config: few; never grows for ever)
_known: dict[tuple[bytes, bytes], bytes] = {}  # checked pair -> its line on the wire
_defaults: tuple[list[tuple[bytes, bytes]], bytes] = ([], b"")  # the server's default headers, encoded
# A chunk's size line by its size, for the usual sizes (a stream's pieces are mostly a few hundred bytes).
_SIZE_LINES = [b"%x\r\n" % size for size in range(4096)]


def _line(name: bytes, value: bytes) -> bytes:
    """The pair's line on the wire, after uvicorn's checks (its RuntimeErrors, word for word)."""
    if HEADER_RE.search(name):
        raise RuntimeError("Invalid HTTP header name.")
    if HEADER_VALUE_RE.search(value):
        raise RuntimeError("Invalid HTTP header value.")
    return b"".join((name.lower(), b": ", value, b"\r\n"))


def _default_lines(headers: list[tuple[bytes, bytes]]) -> bytes:
    global _defaults
    if _defaults[0] is not headers:
        _defaults = (headers, b"".join(_line(name, value) for name, value in headers))
    return _defaults[1]


class LeanCycle(RequestResponseCycle):
    """RequestResponseCycle whose send does less per answer (see the module's docstring)."""

    _head: bytes = b""  # a Content-Length answer's head, written with its first body piece
    _closes = False  # the app's headers said `connection: close`
    _pieces = False  # a chunked body is being sent: write_piece may write its pieces

    async def send(self, message: Any) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if not self.response_started:
            if message["type"] != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', but got '{message['type']}'.")
            self._start(message["status"], message.get("headers", ()))
        elif not self.response_complete:
            if message["type"] != "http.response.body":
                raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{message['type']}'.")
            self._body(message.get("body", b""), message.get("more_body", False))
        else:
            raise RuntimeError(f"Unexpected ASGI message '{message['type']}' sent, after response already completed.")

    def _start(self, status_code: int, pairs: Any) -> None:
        self.response_started = True
        self.waiting_for_100_continue = False
        if self.access_log:
            self.access_logger.info('%s - "%s %s HTTP/%s" %d', get_client_addr(self.scope), self.scope["method"],
                                    get_path_with_query_string(self.scope), self.scope["http_version"], status_code)
        if type(pairs) is not list:
            pairs = list(pairs)
        try:  # each pair's remembered line, looked up in C; None where not remembered
            lines: list[bytes | None] = list(map(_known.get, pairs))
        except TypeError:  # a pair given as a list (ASGI allows any iterable): not hashable
            lines = [None] * len(pairs)
        while None in lines:
            index = lines.index(None)
            lines[index] = self._framing(pairs[index])
        content: list[Any] = [STATUS_LINE[status_code], _default_lines(self.default_headers), *lines]
        request_id: bytes | None = self.scope.get(LINE_KEY)  # type: ignore[assignment]  # the middleware's line
        if request_id is not None:
            content.append(request_id)
        has_connection_close = self._closes
        if not self.keep_alive and not has_connection_close:
            content.append(b"connection: close\r\n")
        if self.chunked_encoding is None and self.scope["method"] != "HEAD" and status_code not in (204, 304):
            self.chunked_encoding = True  # neither content-length nor transfer-encoding given
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        if self.chunked_encoding is False:
            self._head = b"".join(content)  # goes out with the first piece of the body
        else:
            self.transport.write(b"".join(content))
            self._pieces = self.chunked_encoding is True and self.scope["method"] != "HEAD"

    def _framing(self, pair: Any) -> bytes:
        """A pair not remembered: checked (uvicorn's checks and framing rules), remembered if its name repeats."""
        name, value = pair
        lower = name.lower()
        if lower == b"content-length":
            line = b"".join((lower, b": ", value, b"\r\n")) if value.isdigit() and name == lower else _line(name, value)
            if self.chunked_encoding is None:
                self.expected_content_length = int(value.decode())
                self.chunked_encoding = False
            return line
        line = _line(name, value)
        if lower == b"transfer-encoding":
            if value.lower() == b"chunked":
                self.expected_content_length = 0
                self.chunked_encoding = True
        elif lower == b"connection":
            if b"close" in [token.lower().strip() for token in value.split(b",")]:
                self.keep_alive = False
                self._closes = True
        elif lower in _REPEATING and len(_known) < _MAX_KNOWN:
            _known[(name, value)] = line
        return line

    def _body(self, body: bytes, more_body: bool) -> None:
        head = self._head
        if self.scope["method"] == "HEAD":
            self.expected_content_length = 0
            if head:
                self._head = b""
                self.transport.write(head)
        elif self.chunked_encoding:
            if body:
                self.transport.write(_chunk(body, b"\r\n" if more_body else b"\r\n0\r\n\r\n"))
            elif not more_body:
                self.transport.write(b"0\r\n\r\n")
        else:
            num_bytes = len(body)
            if num_bytes > self.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_content_length -= num_bytes
            if head:
                self._head = b""
                self.transport.write(head + body)
            elif body:
                self.transport.write(body)
        if not more_body:
            if self.expected_content_length != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self._completed()

    def _completed(self) -> None:
        self.response_complete = True
        self._pieces = False
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()

    def _plain_start(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[bytes] | None:
        """The answer started, and its pairs' lines, when a plain call may write the head itself: every pair
        already checked and remembered (none has a meaning to the framing), keep-alive, no access log, not
        HEAD, 204 or 304. None otherwise (nothing changed): _start does it all (checks, framing, the log)."""
        try:  # each pair's remembered line, looked up in C; None where not remembered
            lines: list[bytes | None] = list(map(_known.get, headers))
        except TypeError:  # a pair given as a list: not hashable
            return None
        if (None in lines or self.access_log or not self.keep_alive or status in (204, 304)
                or self.scope["method"] == "HEAD"):
            return None
        self.response_started = True
        self.waiting_for_100_continue = False
        return lines  # type: ignore[return-value]  # no None in it: checked above

    def write_answer(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
        """Send a whole answer, `{"type": "http.response.start", "status": status, "headers": [*headers,
        (b"content-length", b"%d" % len(body))]}` then `{"type": "http.response.body", "body": body}`,
        without the messages and their awaits: True once done as the two sends would do it. False when
        send() must take them: the client reads slower than the gateway writes (send waits for it), the
        connection is gone, or an answer was already started."""
        if self.flow.write_paused or self.disconnected or self.response_started:
            return False
        lines = self._plain_start(status, headers)
        if lines is None:
            self._start(status, [*headers, (b"content-length", b"%d" % len(body))])
            self._body(body, False)
            return True
        # What _start and _body would write, in one join (their general bookkeeping was ~230 opcodes of
        # a whole answer's ~300 on the way out).
        self.chunked_encoding = False
        request_id: bytes | None = self.scope.get(LINE_KEY)  # type: ignore[assignment]  # the middleware's line
        self.transport.write(b"".join((STATUS_LINE[status], _default_lines(self.default_headers), *lines,
                                       b"content-length: %d\r\n" % len(body), request_id or b"", b"\r\n", body)))
        self._completed()
        return True

    def write_stream_start(self, status: int, headers: list[tuple[bytes, bytes]], first: bytes,
                           more: bool = True) -> bool:
        """Send `{"type": "http.response.start", "status": status, "headers": headers}` (no length: a
        chunked answer) then `{"type": "http.response.body", "body": first, "more_body": more}`, without
        the messages and their awaits; False when send() must take them (as for write_answer). With
        `more` False, `first` is the whole stream: head, bytes and end go in one write."""
        if self.flow.write_paused or self.disconnected or self.response_started:
            return False
        lines = self._plain_start(status, headers)
        if lines is None:
            self._start(status, headers)
            self._body(first, more)
            return True
        # What _start and _body would write (the head, then the first piece), in one write.
        self.chunked_encoding = True
        end = b"\r\n" if more else b"\r\n0\r\n\r\n"
        request_id: bytes | None = self.scope.get(LINE_KEY)  # type: ignore[assignment]  # the middleware's line
        self.transport.write(b"".join((STATUS_LINE[status], _default_lines(self.default_headers), *lines,
                                       request_id or b"", b"transfer-encoding: chunked\r\n\r\n",
                                       _chunk(first, end) if first else end[2:])))
        if more:
            self._pieces = True
        else:
            self._completed()
        return True

    def write_stream_end(self, last: bytes = b"") -> bool:
        """Send `{"type": "http.response.body", "body": last}`, the last piece (if any) and the end of a
        chunked answer in one write, without the message and the await; False when send() must take it
        (as for write_piece)."""
        if not self._pieces or self.flow.write_paused or self.disconnected:
            return False
        self._body(last, False)
        return True

    def write_piece(self, body: bytes) -> bool:
        """Send `{"type": "http.response.body", "body": body, "more_body": True}` of a chunked answer now,
        without the message and the await: True once done as send() would do it. False when send()
        must take it instead: the client reads slower than the gateway writes (send waits for it), the
        connection is gone, or no chunked answer is in progress (send says what is wrong)."""
        if not self._pieces or self.flow.write_paused or self.disconnected:
            return False
        size = len(body)
        if size:  # _chunk(body, b"\r\n"), without its frame: a paced stream's every piece comes here
            self.transport.write(b"".join((_SIZE_LINES[size] if size < 4096 else b"%x\r\n" % size, body, b"\r\n")))
        return True


def _chunk(body: bytes, end: bytes) -> bytes:
    """A piece of a chunked body on the wire: its size line, the bytes, and `end`."""
    size = len(body)
    return b"".join((_SIZE_LINES[size] if size < 4096 else b"%x\r\n" % size, body, end))


def _own_cycle(send: Any) -> LeanCycle | None:
    """The LeanCycle whose own send `send` is, or None when something wraps it: a wrapped send may
    look at the messages, so then everything goes through it."""
    cycle = getattr(send, "__self__", None)
    return cycle if type(cycle) is LeanCycle else None


def whole_body(receive: Any) -> bytes | None:
    """The request's body when `receive` is a LeanCycle's own and the cycle holds all of it already: what
    `await receive()` would give as one `http.request` message with `more_body` False, without uvicorn's
    receive (an event waited on, a message dict) and its await. None when receive() must be asked: the
    body is still arriving, an `Expect: 100-continue` is to be answered, the client is gone, an answer
    is complete, or the body was taken already."""
    cycle = getattr(receive, "__self__", None)
    if (type(cycle) is not LeanCycle or cycle.more_body or cycle.waiting_for_100_continue or cycle.disconnected
            or cycle.response_complete or not cycle.message_event.is_set()):
        return None
    cycle.flow.resume_reading()  # as receive() does
    cycle.message_event.clear()
    body = bytes(cycle.body)
    cycle.body = bytearray()
    return body


def write_answer(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
    """The cycle's write_answer (a whole answer, its content-length added) when `send` is a LeanCycle's own
    send; False when send() must take the answer instead (another server, or the cycle refused)."""
    cycle = getattr(send, "__self__", None)
    return type(cycle) is LeanCycle and cycle.write_answer(status, headers, body)


def write_stream_start(send: Any, status: int, headers: list[tuple[bytes, bytes]], first: bytes,
                       more: bool = True) -> bool:
    """The cycle's write_stream_start when `send` is a LeanCycle's own send; False: send() must take it."""
    cycle = getattr(send, "__self__", None)
    return type(cycle) is LeanCycle and cycle.write_stream_start(status, headers, first, more)


def write_stream_end(send: Any, last: bytes = b"") -> bool:
    """The cycle's write_stream_end when `send` is a LeanCycle's own send; False: send() must take it."""
    cycle = getattr(send, "__self__", None)
    return type(cycle) is LeanCycle and cycle.write_stream_end(last)


def piece_writer(send: Any) -> Callable[[bytes], bool] | None:
    """The cycle's write_piece when `send` is a LeanCycle's own send, else None."""
    cycle = _own_cycle(send)
    return cycle.write_piece if cycle is not None else None
