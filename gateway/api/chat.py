"""The inbound request pipeline (authenticate, parse, resolve, run the plan, answer or relay), and
POST /v1/chat/completions, its first protocol. A raw ASGI app.

Raw ASGI rather than a Starlette endpoint: the hot path reads the body once, builds no Request
object, and watches for the client going away so that a disconnect cancels the upstream at once.

One pipeline serves every inbound protocol: an `Inbound` says how its body is parsed, which dialect
and body each target is sent (pass-through or a translation), what the client gets back (answer and
stream), and the shape of its errors. Chat completions is the identity case.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, Protocol

import orjson
from starlette.types import Message, Receive, Scope, Send

from gateway import metrics
from gateway.api.accounting import RequestRecord, admit, finish
from gateway.api.client_watch import ClientGone, Watched
from gateway.api.middleware import request_headers
from gateway.api.middleware import request_id as request_id_of
from gateway.api.request_body import received_body, too_large
from gateway.api.send import JSON, send_error
from gateway.api.validate import check_chat_body, check_common
from gateway.auth import Caller
from gateway.drain import Drain, ShuttingDown, consume_cut
from gateway.errors import BadRequest, GatewayError, MethodNotAllowed, UpstreamError
from gateway.failover.deadline import Deadline
from gateway.failover.run import AllTargetsFailed, Served
from gateway.http_cycle import piece_writer, whole_body, write_answer, write_stream_end, write_stream_start
from gateway.relay.stream import RelayResult
from gateway.routing import Plan
from gateway.runtime import Runtime
from gateway.upstream.formats import LegChooser

errors_log = logging.getLogger("gateway")

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_WANTED = frozenset({b"authorization", b"x-api-key", b"content-length", b"x-gateway-timeout"})


class Inbound(Protocol):
    """What an inbound protocol (chat completions, embeddings, Responses, Messages) supplies."""

    path: str
    headers: frozenset[bytes]  # request headers (lower case) it reads besides the pipeline's own
    relays_as_is: bool  # its stream is the relay's bytes as they are (no translation): see RelayResult.write

    def parse(self, raw: bytes) -> dict[str, Any]:
        """The body as a dict with a string `model`; raise BadRequest (naming the field) otherwise."""

    def plan(self, runtime: Runtime, body: dict[str, Any]) -> Plan: ...

    def legs(
        self, runtime: Runtime, plan: Plan, body: dict[str, Any], headers: Mapping[str, str]
    ) -> LegChooser | None:
        """Each target's dialect and body; None sends the body as chat completions to every target.
        A request no target of the plan can take raises its BadRequest here, before anything is sent."""

    def streams(self, body: dict[str, Any]) -> bool: ...

    def answer(self, served: Served, body: dict[str, Any]) -> tuple[bytes, dict[str, Any] | None]:
        """The whole answer for the client, and the OpenAI-shaped usage to count."""

    def relay(
        self, served: Served, body: dict[str, Any], expires: float, result: RelayResult
    ) -> AsyncGenerator[bytes, None]:
        """The client's stream; sets result.usage, result.completed and result.error_type as it goes.

        `served.stream()` is the chat-shaped stream (continued after a break where it can be, its
        target judged at its end); a protocol translates it, or passes it through."""

    async def send_error(self, send: Send, error: GatewayError, request_id: str) -> None: ...


class ChatProtocol:
    path = "/v1/chat/completions"
    headers: frozenset[bytes] = frozenset()
    relays_as_is = True

    def parse(self, raw: bytes) -> dict[str, Any]:
        body = parse_object(raw)
        if not isinstance(body.get("messages"), list):
            raise BadRequest("`messages` is required and must be a list.", param="messages")
        check_chat_body(body)
        return body

    def plan(self, runtime: Runtime, body: dict[str, Any]) -> Plan:
        return runtime.router.resolve(body["model"], body.get("models"))

    def legs(
        self, runtime: Runtime, plan: Plan, body: dict[str, Any], headers: Mapping[str, str]
    ) -> LegChooser | None:
        return None

    def streams(self, body: dict[str, Any]) -> bool:
        return body.get("stream") is True

    def answer(self, served: Served, body: dict[str, Any]) -> tuple[bytes, dict[str, Any] | None]:
        return served.body or b"", (served.parsed or {}).get("usage")

    def relay(
        self, served: Served, body: dict[str, Any], expires: float, result: RelayResult
    ) -> AsyncGenerator[bytes, None]:
        options = body.get("stream_options")
        wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        return served.stream(wants_usage=wants_usage, result=result)

    async def send_error(self, send: Send, error: GatewayError, request_id: str) -> None:
        await send_error(send, error, request_id)


class Pipeline:
    """One inbound endpoint: the same authentication, failover, accounting and disconnect handling for all."""

    def __init__(self, runtime: Callable[[], Runtime], protocol: Inbound, drain: Drain) -> None:
        self._runtime = runtime
        self._protocol = protocol
        self._drain = drain
        self._wanted = tuple((name, name.decode()) for name in sorted(_WANTED | protocol.headers))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.monotonic()
        protocol = self._protocol
        headers = self._headers(scope)
        request_id = request_id_of(scope)
        runtime = self._runtime()
        context = RequestRecord(request_id, started, self._protocol.path)
        task: asyncio.Task[Any] = asyncio.current_task()  # type: ignore[assignment]
        drain = self._drain
        drain.track(task)  # so that the drain deadline can end it
        try:
            limit = runtime.settings.server.max_body_bytes
            caller = self._authenticate(scope["method"], runtime, headers, context, limit)
            # The body usually comes whole: under the gateway's server taken from the cycle by a plain call
            # (http_cycle.whole_body: no receive(), no await), else in the first message; not in a coroutine.
            raw = whole_body(receive)
            if raw is None:
                raw = await received_body(receive, limit)
            elif len(raw) > limit:
                raise too_large(limit)
            body = self._parse(raw, caller, context)
            watched = Watched(scope, receive, task)
            try:  # no coroutine layer for the watch: each would be paid again on every resume
                await self._complete(runtime, caller, body, len(raw), headers, context, send, watched)
            except asyncio.CancelledError:
                watched.cancelled()  # raises what the cancellation meant, if it was the client or the drain
                raise
            finally:
                watched.disarm()
        except GatewayError as error:
            _note_error(context, error)
            if not context.responding:
                await protocol.send_error(send, error, request_id)
        except ClientGone:
            context.status = 499
            context.error_type = "client_disconnected"
        except asyncio.CancelledError:
            if not consume_cut():
                raise
            context.status = ShuttingDown.status  # cut by the drain deadline while reading the body
            context.error_type = ShuttingDown.code
            if not context.responding:
                await protocol.send_error(send, ShuttingDown(), request_id)
        except Exception:
            errors_log.exception("request %s failed inside the gateway", request_id)
            if not context.responding:  # once headers are out, the stream itself must carry the end
                context.status = 500
                await protocol.send_error(send, GatewayError("The gateway failed on this request; see its log."),
                                          request_id)
        finally:
            drain.untrack(task)
            finish(runtime, context)

    def _write_answer(self, served: Served, body: dict[str, Any], out_headers: list[tuple[bytes, bytes]],
                      context: RequestRecord, send: Send, watched: Watched) -> tuple[Message, ...]:
        """A whole answer, written under the gateway's server by a plain call (no messages, no awaits)
        that adds the length; else the two messages send() must take."""
        context.status = 200
        answer, context.usage = self._protocol.answer(served, body)
        watched.finishing = True
        context.responding = True
        head = [JSON, *out_headers]
        if write_answer(send, 200, head, answer):
            return ()
        head.append((b"content-length", str(len(answer)).encode()))
        return ({"type": "http.response.start", "status": 200, "headers": head},
                {"type": "http.response.body", "body": answer})

    def _headers(self, scope: Scope) -> dict[str, str]:
        """The request headers the gateway reads or forwards, by their lower-case names."""
        given = request_headers(scope)
        headers: dict[str, str] = {}
        for name, text in self._wanted:  # a loop, not a comprehension: no function frame of its own
            if name in given:
                headers[text] = given[name].decode("latin-1")
        return headers

    def _authenticate(self, method: str, runtime: Runtime, headers: dict[str, str], context: RequestRecord,
                      limit: int) -> Caller:
        """Whether this request may start at all: not while draining, only POST, only with a valid key,
        only with a body it may send (a declared length over `limit` is refused before it is read)."""
        if self._drain.refusing:
            raise ShuttingDown
        if method != "POST":
            raise MethodNotAllowed(f"Use POST for {self._protocol.path}.", headers={"Allow": "POST"})
        caller = runtime.auth.authenticate(headers)
        context.caller = caller.name
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise too_large(limit)
        return caller

    def _parse(self, raw: bytes, caller: Caller, context: RequestRecord) -> dict[str, Any]:
        """The protocol's body, once the key may use its model and every fallback model it lists."""
        context.body_size = len(raw)
        body = self._protocol.parse(raw)
        context.model = body["model"]
        caller.check_model(context.model)
        others = body.get("models")
        for other in others if isinstance(others, list) else ():
            if isinstance(other, str):
                caller.check_model(other)
        return body

    async def _complete(
        self, runtime: Runtime, caller: Caller, body: dict[str, Any], size: int, headers: dict[str, str],
        context: RequestRecord, send: Send, watched: Watched,
    ) -> None:
        protocol = self._protocol
        plan = protocol.plan(runtime, body)
        context.label = plan.model  # a resolved, known id: safe as a metrics label
        # The limits; provider limits per attempt. Without teams there are none: no coroutine to run.
        gate = await admit(runtime, context, caller, body, plan) if runtime.teams is not None else None
        deadline = Deadline(_deadline_seconds(plan.total, headers.get("x-gateway-timeout")))
        stream = protocol.streams(body)
        metrics.in_flight(context.label, 1)
        context.in_flight = True
        served = await runtime.executor.run(plan, body, stream=stream, deadline=deadline, body_size=size,
                                            legs=protocol.legs(runtime, plan, body, headers), gate=gate)
        context.served = served
        out_headers = _served_headers(served) + context.limit_headers()  # a new list: the first may be shared
        if not stream:
            for message in self._write_answer(served, body, out_headers, context, send, watched):
                await send(message)
            context.done_at = time.monotonic()
            return
        result = RelayResult()
        context.relay = result
        context.status = 200
        pieces = protocol.relay(served, body, deadline.expires, result)
        # aclosing: if the client goes away mid-send, the stream (and with it the upstream) closes now. Under
        # the gateway's own server the head and pieces are written by plain calls (http_cycle) unless the
        # client is slow to read: then send() waits for it. A piece that comes with result.completed set is
        # the upstream's last: what follows needs no I/O, so it is taken at once and goes with the end.
        write = piece_writer(send)
        async with contextlib.aclosing(pieces):
            whole = await _stream_start(pieces, result, _SSE_HEADERS + out_headers, send, watched, context)
            if protocol.relays_as_is:
                result.write = write
            last = b""
            async for piece in pieces:  # none left when whole
                if result.completed:
                    last = await _with_rest(piece, pieces)
                    break
                if write is None or not write(piece):
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
        if not whole:
            watched.finishing = True
            if not write_stream_end(send, last):
                await send({"type": "http.response.body", "body": last})
        context.usage = result.usage


async def _stream_start(pieces: AsyncGenerator[bytes, None], result: RelayResult, head: list[tuple[bytes, bytes]],
                        send: Send, watched: Watched, context: RequestRecord) -> bool:
    """The stream's head and first piece; True when that was all of it (an unpaced stream: head, bytes and
    end in one write). The first piece is replayed from memory, so nothing is awaited for it; it is taken
    before the head goes out, so that from the first send on, closing the stream is what releases the
    upstream and settles its target. (A coroutine awaited once: none of the stream's reads resume it.)"""
    first = await anext(pieces)
    context.responding = True
    whole = result.completed
    if whole:
        first = await _with_rest(first, pieces)
        watched.finishing = True
    if not write_stream_start(send, 200, head, first, not whole):
        await send({"type": "http.response.start", "status": 200, "headers": head})
        await send({"type": "http.response.body", "body": first, "more_body": not whole})
    return whole


async def _with_rest(piece: bytes, pieces: AsyncGenerator[bytes, None]) -> bytes:
    """`piece` and all the stream gives after it, once the upstream's stream is complete (nothing to wait for)."""
    rest = [more async for more in pieces]
    return piece + b"".join(rest) if rest else piece


def _note_error(context: RequestRecord, error: GatewayError) -> None:
    """What the request's record (access log, metrics, ledger) says of an error answer."""
    context.status = error.status
    context.error_type = error.code or error.type
    if context.ticket is not None:  # every answer to a limited key says where its limits stand
        error.headers.update(context.ticket.headers)
    if isinstance(error, AllTargetsFailed):
        context.attempts = sum(1 for a in error.attempts if a.tried)
    elif isinstance(error, UpstreamError):
        context.attempts = 1  # an answer the client must see at once (a 400): it reached one upstream


_COUNTS = [str(n).encode() for n in range(10)]  # header values of the usual attempt and fallback counts
# By (provider, target): the headers of an answer served at the first attempt (few: from the config).
_FIRST_TRY_HEADERS: dict[tuple[str, str], list[tuple[bytes, bytes]]] = {}


def _served_headers(served: Served) -> list[tuple[bytes, bytes]]:
    """Which target served, after how many attempts (x-request-id is the middleware's). The list may be
    shared: the caller adds to a copy."""
    target = served.target
    key = (target.provider_id, target.key)
    first_try = _FIRST_TRY_HEADERS.get(key)
    if first_try is None:
        first_try = [(b"x-gateway-provider", key[0].encode()), (b"x-gateway-model", key[1].encode()),
                     (b"x-gateway-attempts", b"1"), (b"x-gateway-fallbacks", b"0")]
        if len(_FIRST_TRY_HEADERS) < 4096:  # targets come from the config: bounded, but never grow for ever
            _FIRST_TRY_HEADERS[key] = first_try
    run = served.run
    tried = run.attempts
    if len(tried) == 1 and run.targets_tried == 1:  # one attempt, and it served: the usual answer
        return first_try
    attempts = sum(1 for a in tried if a.tried)
    fallbacks = served.fallbacks
    return [first_try[0], first_try[1],
            (b"x-gateway-attempts", _COUNTS[attempts] if attempts < 10 else str(attempts).encode()),
            (b"x-gateway-fallbacks", _COUNTS[fallbacks] if fallbacks < 10 else str(fallbacks).encode())]


def parse_object(raw: bytes) -> dict[str, Any]:
    """A JSON object with a non-empty string `model`: what every inbound protocol starts from."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("`model` is required and must be a string.", param="model")
    check_common(body, raw)
    return body


def _deadline_seconds(total: float, header: str | None) -> float:
    """A client may ask for a shorter deadline (x-gateway-timeout: seconds), never a longer one."""
    if header:
        try:
            asked = float(header)
        except ValueError:
            raise BadRequest("`x-gateway-timeout` must be a number of seconds.") from None
        if asked > 0:
            return min(total, asked)
    return total

