"""Relay a client's stream from its upstream(s), bytes as they arrive.

The events read before the stream was committed are replayed first. Each event is passed through
as the exact bytes the upstream sent, except the usage-only chunk, which is kept for accounting and
dropped when the client did not ask for usage. A segment of a continued stream passes its chunks
through an `edit` function instead (same id and model as the client has seen, prefix checks).

The relay does not decide what a break means: when the upstream stream breaks, stalls, turns
malformed or reports an error after content, everything before it is yielded and the error is
handed to the caller's `Segments`, which either continues the stream from elsewhere (the next
`Part`, relayed by the same generator) or ends it. A stream that
ends cleanly without `[DONE]` after its finish is completed at once. The Transcript records what
the client has been sent, which is what a continuation needs. Every byte from the upstream passes
the provider's Secrets on its way out.

Plain deltas (no finish, usage or error in them) are not parsed on the way: a few byte scans per
read find the events that are (chunk.read_runs on the read as it came, chunk.plain_runs on events),
and the transcript reads the rest only if a continuation asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.cutoff import Cutoff
from gateway.errors import StreamCut, UpstreamError, UpstreamProtocolError, UpstreamTimeout
from gateway.relay.chunk import Chunk, MalformedChunk, PlainFrame, Run, interpret, plain_runs
from gateway.relay.sse import DONE_EVENT, EventSplitter, event_data
from gateway.relay.transcript import Transcript
from gateway.upstream.response import UpstreamResponse
from gateway.upstream.secrets import Secrets

_DONE = DONE_EVENT[:-2]  # `data: [DONE]` without its blank line

# Given a chunk (and its event bytes), what to send instead: (bytes, text it adds) or None to drop it.
Edit = Callable[[Chunk, bytes], "tuple[bytes, str] | None"]


@dataclass(slots=True)
class RelayResult:
    usage: dict[str, Any] | None = None
    chunks: int = 0
    finished: bool = False
    completed: bool = False  # the upstream's stream is complete: set before the relay yields its last bytes
    error_type: str | None = None
    first_write_at: float | None = None
    # The client's connection's own writer of a piece, once its stream has started, when the relay's bytes
    # are the client's as they are (chat completions): reads of plain deltas are then relayed as they
    # arrive (_taker). It returns False, having written nothing, when the piece must wait for the relay.
    write: Callable[[bytes], bool] | None = None


class MalformedEvent(UpstreamProtocolError):
    """An event after content that could not be read: what it carried is unknown."""


class EventProcessor(Protocol):
    def __call__(self, events: list[bytes], out: list[bytes], result: RelayResult, wants_usage: bool,
                 secrets: Secrets) -> bool:
        """Append what the client should get to `out`; True once the upstream's stream is complete.
        Raise UpstreamError for an event that breaks the stream."""


@dataclass(slots=True)
class Part:
    """One opened upstream stream to relay: the first attempt's, or a continuation's after a break."""

    source: UpstreamResponse
    splitter: EventSplitter
    held: list[bytes] | tuple[Run, ...]  # read before the stream was committed, replayed first
    idle: float  # seconds without a byte that count as a stall
    secrets: Secrets  # of the provider that serves this part
    edit: Edit | None = None  # a continuation's rewrite of each chunk


class Segments(Protocol):
    """What follows each part of a client's stream: the caller's decisions (failover/continuation.py)."""

    async def ended(self, error: UpstreamError | None) -> Part | bytes:
        """The current part ended (cleanly if `error` is None): the next part to relay, or the last bytes
        of the stream (b"": none)."""

    def cut(self) -> bytes | None:
        """The stream was cancelled: its last bytes if it was the drain deadline, else None (re-raised)."""

    def close(self) -> None:
        """The stream is over, however it ended (a client that left closes it mid-part)."""


async def relay(
    part: Part, *, wants_usage: bool, expires: float, result: RelayResult, transcript: Transcript,
    segments: Segments, process: EventProcessor | None = None,
) -> AsyncGenerator[bytes, None]:
    """The client's stream: yield its bytes part after part, until `segments` says it is over.

    One async generator, in one frame, for the whole stream: a generator or coroutine layer around
    the per-read loop is paid again on every read (~3k instructions per paced chunk for a layer).
    A part that breaks ends with the UpstreamError handed to `segments.ended`, after what came
    before it was yielded. `process` reads events of another shape than chat chunks (a passed-through
    Responses stream); such a stream has no transcript and is never continued. A read of nothing but
    whole plain deltas (a paced stream's every read) goes out as read; other reads are split and
    processed event by event."""
    try:
        while True:
            source, splitter, edit, secrets, idle = part.source, part.splitter, part.edit, part.secrets, part.idle
            fast = edit is None and process is None
            take: Callable[[bytes], bool] | None = None
            clean = False
            error: UpstreamError | None = None
            try:
                pending: bytes | list[bytes] | tuple[Run, ...] = part.held  # a plain read, events, or a read's runs
                while True:
                    if isinstance(pending, bytes):  # a read of plain deltas
                        yield _sent(pending, result, secrets)
                    else:
                        sent, done, broken = _client_bytes(pending, result, transcript, wants_usage, edit, process,
                                                           secrets)
                        if done:  # set before the last bytes go: the pipeline then ends the answer with them
                            result.completed = True
                        if sent:
                            yield sent
                        if broken is not None:
                            raise broken
                        if done:
                            clean = True
                            break
                    if take is None and fast and result.write is not None:
                        take = _taker(part, result, transcript, result.write)
                    try:
                        data = await _next_read(source, expires, idle, take)
                    except UpstreamError:
                        if not result.finished:
                            raise
                        data = None  # complete apart from the closing marker: finished below, for the client
                    if not data:
                        clean = _ended(data, splitter, result)
                        yield DONE_EVENT
                        break
                    pending = _plain_or_split(data, splitter, result, transcript) if fast else splitter.feed(data)
            except UpstreamError as exc:
                error = exc
            finally:
                # Reused only when the body was read to its end; otherwise (client gone, upstream broken)
                # the connection is dropped at once, which is what cancels the upstream's work.
                if clean:
                    source.release()
                else:
                    source.close()
            after = await segments.ended(error)
            if not isinstance(after, Part):
                if after:
                    yield after
                return
            part = after
    except asyncio.CancelledError:
        last = segments.cut()
        if last is None:
            raise
        yield last
    finally:
        segments.close()


def _client_bytes(events: list[bytes] | tuple[Run, ...], result: RelayResult, transcript: Transcript,
                  wants_usage: bool, edit: Edit | None, process: EventProcessor | None,
                  secrets: Secrets) -> tuple[bytes, bool, UpstreamError | None]:
    """What the client gets of `events` (masked once for the read: one scan), whether the upstream's
    stream is complete, and the UpstreamError of an event that broke it (what came before it is the
    client's: it is in the bytes)."""
    out: list[bytes] = []
    try:
        done = _events(events, out, result, transcript, wants_usage, edit, process, secrets)
    except UpstreamError as exc:
        return (secrets.mask_bytes(b"".join(out)) if out else b""), False, exc
    return (_sent(b"".join(out), result, secrets) if out else b""), done, None


def _plain_or_split(data: bytes, splitter: EventSplitter, result: RelayResult,
                    transcript: Transcript) -> bytes | list[bytes] | tuple[Run, ...]:
    """A read of whole plain events as it came, counted and noted unread; else the read's runs
    (chunk.read_runs), or its events when it is of another shape or continues an event."""
    if splitter.empty and len(data) <= splitter.max_event:
        frame = splitter.frame
        if frame is None:
            frame = splitter.frame = PlainFrame()
        runs = frame.judge(data)  # chunk.read_runs, with what this stream's plain deltas have in common
    else:
        runs = None
    if runs is None:
        return splitter.feed(data)
    if isinstance(runs, int):
        result.chunks += runs
        transcript.add_unread(data)
        return data
    return runs


def _taker(part: Part, result: RelayResult, transcript: Transcript,
           write: Callable[[bytes], bool]) -> Callable[[bytes], bool]:
    """What takes a read of whole plain deltas as it arrives (a plain call from the upstream connection's
    callback, UpstreamResponse.read_chunk): written to the client at once, counted and noted unread as
    the relay does with it, without waking the request's task, the relay and the pipeline for it. A
    paced stream's every read but the first and last is one. Any other read, or one the client's
    connection will not take now (it reads slower than the gateway writes, or is gone), is the relay's."""
    splitter, mask = part.splitter, part.secrets.mask_bytes

    def take(data: bytes) -> bool:
        if not splitter.empty or len(data) > splitter.max_event:
            return False
        frame = splitter.frame
        if frame is None:
            frame = splitter.frame = PlainFrame()
        runs = frame.judge(data)
        if type(runs) is not int or not write(mask(data)):
            return False
        result.chunks += runs
        transcript.add_unread(data)
        return True

    return take


def _events(events: list[bytes] | tuple[Run, ...], out: list[bytes], result: RelayResult, transcript: Transcript,
            wants_usage: bool, edit: Edit | None, process: EventProcessor | None, secrets: Secrets) -> bool:
    """Append what the client should get of `events` (or a read's runs) to `out`; True once the
    upstream's stream is complete."""
    if isinstance(events, tuple):
        if edit is None and process is None:
            return _runs(events, out, result, transcript, wants_usage)
        events = [event for run, plain in events for event in (run.split(b"\n\n") if plain else (run,))]
    if process is None:
        return _process(events, out, result, transcript, wants_usage, edit)
    return process(events, out, result, wants_usage, secrets)


def _sent(data: bytes, result: RelayResult, secrets: Secrets) -> bytes:
    """`data` as the client gets it (secrets masked), noting when the first bytes went out."""
    if result.first_write_at is None:
        result.first_write_at = time.monotonic()
    return secrets.mask_bytes(data)


def _ended(data: bytes | None, splitter: EventSplitter, result: RelayResult) -> bool:
    """The upstream's stream ended (b"") or broke (None) after its finish: the relay ends it with [DONE]
    and returns whether the connection may be reused. Ending before the finish is a StreamCut."""
    if data is not None:
        splitter.end()  # raises if it ended inside an event over the size limit
        if not result.finished:
            raise StreamCut("the upstream stream ended before the answer was complete")
    result.completed = True
    return data is not None


def _process(events: list[bytes], out: list[bytes], result: RelayResult, transcript: Transcript,
             wants_usage: bool, edit: Edit | None) -> bool:
    """Append what the client should get to `out`; True once the upstream's [DONE] arrived.

    Runs of plain deltas go out as sent, unread (chunk.plain_runs says why that is safe); the
    events that may end the stream or carry usage or an error, and every event of a continuation
    segment (`edit` rewrites them), are read one by one."""
    if edit is None:
        return _runs(plain_runs(events), out, result, transcript, wants_usage)
    # any() stops at the [DONE]: nothing after it is the client's.
    return any(_process_one(event, out, result, transcript, wants_usage, edit) for event in events)


def _runs(runs: list[Run] | tuple[Run, ...], out: list[bytes], result: RelayResult, transcript: Transcript,
          wants_usage: bool) -> bool:
    """Plain runs go out unread, the other events are read one by one; True at the upstream's [DONE]."""
    for run, plain in runs:
        if plain:
            out += (run, b"\n\n")
            transcript.add_unread(run)
            result.chunks += plain
        elif _process_one(run, out, result, transcript, wants_usage, None):
            return True
    return False


def _process_one(event: bytes, out: list[bytes], result: RelayResult, transcript: Transcript,
                 wants_usage: bool, edit: Edit | None) -> bool:
    """One event, read: append what the client should get to `out`; True if it is the [DONE]."""
    if event == _DONE:  # the usual last event, known by its bytes
        out.append(DONE_EVENT)
        return True
    data = event_data(event)
    if data is None:
        out.append(event + b"\n\n")  # comments and keep-alives pass through
        return False
    try:
        chunk = interpret(data)
    except MalformedChunk as exc:
        raise MalformedEvent(f"the upstream sent {exc} after the answer had started") from None
    if chunk.done:
        out.append(DONE_EVENT)
        return True
    if chunk.error is not None:
        message = chunk.error.get("message")
        raise UpstreamProtocolError(f"the upstream reported an error mid-stream: {message}")
    if chunk.usage is not None:
        result.usage = chunk.usage
    if chunk.finish_reason is not None:
        result.finished = True
    if edit is not None:
        edited = edit(chunk, event)
        if edited is None:
            return False
        event, text = edited
    elif not wants_usage and chunk.usage_only:
        return False  # the usage-only chunk the gateway asked for on its own account
    else:
        text = chunk.text
    transcript.add(chunk, text)
    result.chunks += 1
    out.append(event + b"\n\n")
    return False


def _next_read(source: UpstreamResponse, expires: float, idle: float,
               take: Callable[[bytes], bool] | None) -> Awaitable[bytes]:
    """The relay's next read. Far from the deadline the transport's idle timeout fires first; near it,
    or when the wait may span many reads (plain ones taken on the way), the deadline bounds it. (A
    plain function returning the read: no coroutine layer of its own to resume on every read.)"""
    if take is None and expires - time.monotonic() > idle:
        return source.read_chunk()
    return _read_by_deadline(source, expires, take)


async def _read_by_deadline(source: UpstreamResponse, expires: float,
                            take: Callable[[bytes], bool] | None = None) -> bytes:
    """A read bounded by the deadline: near it (further off, the transport's idle timeout fires first),
    or one whose wait may span many reads (`take` takes plain ones on the way)."""
    try:
        with Cutoff(max(0.0, expires - time.monotonic())):
            return await source.read_chunk(take)
    except TimeoutError:
        raise UpstreamTimeout("the request deadline ran out mid-stream", phase="deadline") from None


async def translate_events(
    pieces: AsyncGenerator[bytes, None], feed: Callable[[bytes], list[bytes]]
) -> AsyncGenerator[bytes, None]:
    """The relay's chat events in another protocol's events (`feed` translates one event without its
    blank line), each read's worth sent as soon as it arrives. Closing this closes the relay.
    The relay writes whole events, so each piece takes the splitter's cheap path (nothing kept)."""
    splitter = EventSplitter()
    async with contextlib.aclosing(pieces):
        async for piece in pieces:
            out: list[bytes] = []
            for event in splitter.feed(piece):
                out.extend(feed(event))
            if out:
                yield b"".join(out)
