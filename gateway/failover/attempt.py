"""One attempt at one target: send the request, check the answer, and for a stream read up to its
first content. Returns what was opened, or raises the typed UpstreamError the plan loop classifies.

The timeouts that bound an attempt are its target's, cut short by the request's deadline; when the
deadline is what cut one short, the error says so (phase "deadline"), because running out of the
client's time says nothing about the upstream's health.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.config.schema import UpstreamLimits
from gateway.cutoff import Cutoff
from gateway.errors import StreamCut, UpstreamProtocolError, UpstreamTimeout
from gateway.failover.deadline import Deadline
from gateway.relay.chunk import Run, read_runs
from gateway.relay.sse import EventSplitter, is_event_stream
from gateway.routing import Target
from gateway.upstream import echo
from gateway.upstream.formats import Dialect, Leg
from gateway.upstream.formats.openai_chat import CHAT, completion_events
from gateway.upstream.response import UpstreamResponse
from gateway.upstream.transport import Transport


class Opened:
    """An attempt that answered: a whole answer, or a stream read up to its first content."""

    # A plain class: every request makes one, and the dataclass's default factories made a list and
    # an EventSplitter even for a whole answer, which never reads events.
    __slots__ = ("body", "first_token_at", "held", "parsed", "response", "splitter", "target")

    def __init__(self, target: Target, response: UpstreamResponse, *, body: bytes | None = None,
                 parsed: dict[str, Any] | None = None, held: list[bytes] | tuple[Run, ...] = (),
                 splitter: EventSplitter | None = None, first_token_at: float | None = None) -> None:
        self.target = target
        self.response = response
        self.body = body
        self.parsed = parsed
        # Events read up to the first content, replayed: as events, or as the runs of the one read they
        # came in (chunk.read_runs), kept whole rather than split here and joined again by the relay.
        self.held = held
        self.splitter = splitter  # a stream's (None: a whole answer, never read as events)
        self.first_token_at = first_token_at


async def attempt(
    transport: Transport, target: Target, leg: Leg, payload: dict[str, Any], *, stream: bool,
    deadline: Deadline, first_token: float, limits: UpstreamLimits,
) -> Opened:
    """Send `payload` to `target` in the leg's dialect; for a stream, wait at most `first_token` seconds
    for its first content."""
    timeouts = target.timeouts
    dialect = leg.dialect
    remaining = deadline.remaining()
    if remaining <= 0:
        raise UpstreamTimeout("the request deadline ran out before this attempt", phase="deadline")
    # One aiohttp timer bounds a whole answer: the response timeout or the deadline.
    total = min(timeouts.response, remaining)
    if target.endpoint.wire == "echo":
        response: UpstreamResponse = echo.answer(payload, dialect.name)
    elif stream:
        # Until the first content arrives, only first_token bounds the wait: never the shorter idle.
        wait = min(timeouts.first_byte, remaining)
        try:
            response = await transport.send(target.endpoint, payload, connect=timeouts.connect, path=dialect.path,
                                            headers=leg.headers, read=min(first_token, remaining), first_byte=wait)
        except UpstreamTimeout as error:
            raise _deadline_says(error, capped=wait < timeouts.first_byte) from None
    else:
        try:
            response = await transport.send(target.endpoint, payload, connect=timeouts.connect, path=dialect.path,
                                            headers=leg.headers, read=total, total=total)
        except UpstreamTimeout as error:
            raise _deadline_says(error, capped=total < timeouts.response) from None
    try:
        if response.status >= 400:
            raw = await _read_whole(response, limits.max_error_bytes, stream, target, deadline)
            raise dialect.parse_error(response.status, response.headers, raw, target.provider_id)
        response = dialect.view(response)
        if stream and is_event_stream(response.headers.get("content-type", "")):
            return await _first_content(target, dialect, response, deadline, first_token,
                                        EventSplitter(limits.max_event_bytes))
        try:
            if stream:
                raw = await _read_whole(response, limits.max_answer_bytes, stream, target, deadline)
            else:  # bounded by aiohttp's timer already: read without a coroutine layer of our own
                raw = await response.read_all(limits.max_answer_bytes)
        except UpstreamTimeout as error:
            raise _deadline_says(error, capped=total < timeouts.response) from None
        return _whole_answer(target, dialect, response, raw, stream)
    except BaseException:
        response.close()
        raise


async def _read_whole(response: UpstreamResponse, limit: int, stream: bool, target: Target,
                      deadline: Deadline) -> bytes:
    """A whole body. A stream request's connection has only a read timeout, so bound this read by the
    response timeout and the deadline here (a non-stream request's aiohttp timer already does)."""
    if not stream:
        return await response.read_all(limit)
    seconds = deadline.cap(target.timeouts.response)
    try:
        with Cutoff(seconds):
            return await response.read_all(limit)
    except TimeoutError:
        raise UpstreamTimeout(f"{target.provider_id} did not finish its answer within {seconds:g}s",
                              phase="response") from None


async def _first_content(target: Target, dialect: Dialect, response: UpstreamResponse, deadline: Deadline,
                         first_token: float, splitter: EventSplitter) -> Opened:
    """Read until the first content chunk; everything read so far is held for the relay to replay."""
    opened = Opened(target, response, splitter=splitter)
    held: list[bytes] = []
    limit = deadline.cap(first_token)
    try:
        with Cutoff(limit):  # it bounds several reads together, which aiohttp's per-read timer does not
            while True:
                data = await response.read_chunk()
                if not data:
                    splitter.end()  # an event over the size limit is malformed, not a cut
                    raise StreamCut(f"{target.provider_id} ended the stream before any content")
                runs = None if held else _whole_read(dialect, data, splitter, target.provider_id)
                if runs is not None:
                    opened.held = runs
                    break
                events = splitter.feed(data)
                held += events  # events after the first content one belong to the relay, malformed or not
                if any(dialect.opens_answer(event, target.provider_id) for event in events):
                    opened.held = held
                    break
            opened.first_token_at = time.monotonic()
            response.set_read_timeout(target.timeouts.idle)
            return opened
    except TimeoutError:
        if limit < first_token:
            raise UpstreamTimeout(f"the request deadline ran out while waiting for {target.provider_id}'s "
                                  "first token", phase="deadline") from None
        raise UpstreamTimeout(f"{target.provider_id} sent no content within {limit:g}s",
                              phase="first_token") from None


def _whole_read(dialect: Dialect, data: bytes, splitter: EventSplitter, provider_id: str) -> tuple[Run, ...] | None:
    """The first read as the runs the relay forwards (chunk.read_runs), when it holds several whole
    events and one of them is the first content: an unpaced stream, all of it in one read, judged once
    on the read's bytes instead of split into events here and joined again by the relay. None for a
    read of one event (a paced stream's: split as cheaply), of another shape, or without content yet."""
    if not splitter.empty or len(data) > splitter.max_event or data.find(b"\n") == len(data) - 2:
        return None
    runs = read_runs(data)
    if runs is None:
        return None
    start = 0
    while start < len(data):  # whole one-line events, each ended by a blank line (read_runs saw to it)
        end = data.find(b"\n\n", start)
        if dialect.opens_answer(data[start:end], provider_id):
            return ((data[:-2], runs),) if isinstance(runs, int) else runs
        start = end + 2
    return None


def _deadline_says(error: UpstreamTimeout, *, capped: bool) -> UpstreamTimeout:
    """A timeout that fired only because the deadline shortened it is the deadline's.

    (Called in an `except` around each await rather than wrapping the await in a coroutine of its
    own: a coroutine layer is paid again on every resume of the request.)"""
    if capped:
        return UpstreamTimeout(f"the request deadline ran out ({error.message})", phase="deadline")
    return error


def _whole_answer(target: Target, dialect: Dialect, response: UpstreamResponse, raw: bytes,
                  stream: bool) -> Opened:
    raw = target.endpoint.secrets.mask_bytes(raw)
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError(f"{target.provider_id} answered with a body that is not JSON") from None
    dialect.check_answer(parsed, response.headers, raw, target.provider_id)
    if stream and dialect.name != CHAT.name:
        raise UpstreamProtocolError(f"{target.provider_id} answered a stream request with a whole answer")
    response.release()
    if stream:
        # A whole answer to a stream request is still the answer: the client gets it as one stream.
        return Opened(target, response, held=completion_events(parsed), splitter=EventSplitter(),
                      first_token_at=time.monotonic())
    return Opened(target, response, body=raw, parsed=parsed)
