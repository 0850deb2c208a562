"""Continuing a client's stream after its upstream broke: one small state machine.

    RELAYING --clean end--> DONE
    RELAYING --break--> decline? --yes--> FAILED (the SSE error event, as before)
                          |no
                          v
              OPENING: for each target (the broken one first, then the plan's others):
                PREFILL  the original request + the delivered text as a final assistant message;
                         the answer goes on from there (a 400 to it: remembered, then REPLAY)
                REPLAY   the original request again; its text is held back until it covers what
                         was delivered, and must begin with exactly that, else FAILED
              --an attempt opened--> RELAYING (the new segment, spliced under the client's id/model)
              --nothing opened (budget, deadline, every target refused)--> FAILED

Only text is continued: a break inside a tool call, after a finish, in a stream with several
choices or content that is not text declines. Every continuation attempt is an attempt like any
other (counted, recorded, its circuit judged), bounded by the plan's deadline and by the broken
target's retry budget. Usage is the sum over every attempt (estimated for a broken one that never
reported its own), and the final chunk says so in its `x_gateway` field.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

import orjson

from gateway import metrics
from gateway.drain import ShuttingDown, consume_cut
from gateway.errors import StreamCut, UpstreamError, UpstreamTimeout
from gateway.failover.attempt import Opened
from gateway.failover.breaker import Ticket
from gateway.relay.chunk import Chunk
from gateway.relay.stream import EventProcessor, MalformedEvent, Part, RelayResult, relay
from gateway.relay.transcript import Transcript
from gateway.relay.usage import Usage
from gateway.routing import Target
from gateway.upstream.formats import Leg

if TYPE_CHECKING:
    from gateway.failover.run import Executor, Served

# Dialects whose request is built from a chat body, so a continuation can be added to it.
_CHAT_BODIES = frozenset({"chat", "anthropic"})


class Mode(Enum):
    STREAM = "stream"  # the attempt that served first
    PREFILL = "prefill"
    REPLAY = "replay"


class ReplayDiverged(StreamCut):
    """The replayed answer does not begin with what the client already has: nothing is spliced."""


@dataclass(slots=True)
class Segment:
    """One attempt's part of the client's stream."""

    target: Target
    opened: Opened
    ticket: Ticket
    mode: Mode
    # As the upstream reported it, read (Usage.from_openai) only when a continued stream sums its parts:
    # a stream that is never continued has its usage read once, by the accounting.
    reported: Mapping[str, Any] | None = None
    chunks: int = 0  # chunks it contributed to the client
    settled: bool = False


@dataclass(slots=True)
class _State:
    segments: list[Segment] = field(default_factory=list)
    budget: int = 0  # continuation attempts left


def client_stream(
    executor: Executor, served: Served, *, wants_usage: bool, result: RelayResult, recover: bool,
    process: EventProcessor | None, failure: Callable[[dict[str, Any]], bytes],
) -> AsyncGenerator[bytes, None]:
    """The client's stream: the served attempt relayed; after a break, continued or ended.

    The relay is the stream's one generator (nothing wraps it, so a piece costs no second layer);
    between its parts it asks `_Continuation` what follows."""
    recover = recover and process is None
    # A stream that can never be continued need not keep what it sent.
    transcript = Transcript(kept=recover and served.target.recovery != "off")
    segments = _Continuation(executor, served, transcript, result, wants_usage, recover, failure)
    return relay(segments.first(), wants_usage=wants_usage, expires=served.run.deadline.expires, result=result,
                 transcript=transcript, segments=segments, process=process)


class _Continuation:
    """What follows each part of a client's stream (relay.stream.Segments): the part's target is
    judged when it ends; after a break the stream is continued from elsewhere, or ended with the
    failure event."""

    __slots__ = ("_before", "_executor", "_failure", "_recover", "_result", "_served", "_state", "_transcript",
                 "_wants_usage")

    def __init__(self, executor: Executor, served: Served, transcript: Transcript, result: RelayResult,
                 wants_usage: bool, recover: bool, failure: Callable[[dict[str, Any]], bytes]) -> None:
        self._executor = executor
        self._served = served
        self._transcript = transcript
        self._result = result
        self._wants_usage = wants_usage
        self._recover = recover
        self._failure = failure
        self._state = _State([Segment(served.target, served.opened, served.ticket, Mode.STREAM)],
                             served.target.retry.attempts)
        self._before = result.chunks  # the count of chunks sent when the current part began

    def first(self) -> Part:
        return _part(self._state.segments[0], None)

    async def ended(self, error: UpstreamError | None) -> Part | bytes:
        state, result = self._state, self._result
        segment = state.segments[-1]
        if error is not None:
            error.mask(segment.target.endpoint.secrets.mask)
        _settle(self._executor, segment, result, self._before, error)
        run = self._served.run
        if error is None:
            if len(state.segments) > 1:
                result.usage = _total(state.segments, run.body_size).to_openai()
            return b""
        opened = await _continue(self._executor, self._served, self._transcript, state, result, error, self._recover)
        if opened is None:
            result.error_type = error.error_type
            return self._failure(error.to_body())
        self._before = result.chunks
        result.usage = None
        return _part(opened, Splice(opened.mode, self._transcript, self._wants_usage, state.segments, run.body_size))

    def cut(self) -> bytes | None:
        """The drain deadline (SIGTERM) ends the stream with its error event; any other cancel is re-raised."""
        return _shutting_down(self._result, self._failure) if consume_cut() else None

    def close(self) -> None:
        _abandon(self._executor, self._state)


def _part(segment: Segment, splice: Splice | None) -> Part:
    """What the relay needs of a segment's attempt."""
    opened, target = segment.opened, segment.target
    assert opened.splitter is not None, "a stream's opening has its splitter"
    return Part(opened.response, opened.splitter, opened.held, target.timeouts.idle, target.endpoint.secrets, splice)


def _shutting_down(result: RelayResult, failure: Callable[[dict[str, Any]], bytes]) -> bytes:
    """The drain deadline (SIGTERM) cut the stream: the client learns the answer is incomplete, in its
    protocol's own error event, never a silent cut; no verdict on the upstream."""
    shutting_down = ShuttingDown()
    result.error_type = shutting_down.code
    return failure(shutting_down.to_body())


def _settle(executor: Executor, segment: Segment, result: RelayResult, before: int,
            error: UpstreamError | None) -> None:
    """A segment ended: what it contributed, and its target's verdict."""
    segment.chunks = result.chunks - before
    segment.reported = result.usage or None
    # A replay that came out different is not the upstream's fault: no verdict on it.
    verdict = None if isinstance(error, ReplayDiverged) else error
    executor.settle(segment.ticket, verdict, completed=result.completed)
    segment.settled = True


async def _continue(executor: Executor, served: Served, transcript: Transcript, state: _State, result: RelayResult,
                    error: UpstreamError, recover: bool) -> Segment | None:
    """After a break: the next segment, or None when this break is not continued (or nothing opened)."""
    segment = state.segments[-1]
    if isinstance(error, MalformedEvent):
        metrics.stream_event_dropped(segment.target.provider_id)
    if _declines(error, transcript, result, segment.target, recover):
        return None
    return await _reopen(executor, served, transcript, state)


def _abandon(executor: Executor, state: _State) -> None:
    """Segments not settled when the stream ends: the client left. No verdict on their upstreams."""
    for segment in state.segments:
        if not segment.settled:
            segment.opened.response.close()
            executor.settle(segment.ticket, None, completed=False)


def _declines(error: UpstreamError, transcript: Transcript, result: RelayResult, target: Target,
              allowed: bool) -> str | None:
    """Why this break is not continued (None: try)."""
    if not allowed or target.recovery == "off":
        return "stream recovery is off"
    if isinstance(error, ReplayDiverged):
        return "a replay came out different: nothing is spliced"
    if isinstance(error, UpstreamTimeout) and error.phase == "deadline":
        return "the deadline ran out"
    if result.finished:
        return "the answer had finished"
    if transcript.tool or transcript.untextual:
        return "only text is continued"
    if not transcript.text:
        return "no text was sent yet"
    return None


async def _reopen(executor: Executor, served: Served, transcript: Transcript, state: _State) -> Segment | None:
    """Open the next segment: the broken target first, then the plan's others; prefill, else replay."""
    run = served.run
    broken = state.segments[-1].target
    candidates = [broken, *(t for t in run.plan.targets if t.key != broken.key)]
    for target in candidates:
        leg = run.legs(target)
        if (not isinstance(leg, Leg) or leg.dialect.name not in _CHAT_BODIES or not target.endpoint.available
                or target.recovery == "off"):
            continue
        ticket = executor.health.admit(target.key)
        if ticket is None:
            continue
        for mode in _modes(executor, target):
            if state.budget <= 0 or run.deadline.remaining() <= 0:
                executor.health.released(ticket)
                return None
            state.budget -= 1
            body = continuation_body(leg.body, transcript.text, mode, target.prefill)
            payload = leg.dialect.build_request(body, target.upstream_model, stream=True)
            outcome = await executor.try_target(run, target, leg, ticket, payload, retry=False, client_errors=False)
            if isinstance(outcome, Opened):
                segment = Segment(target, outcome, ticket, mode)
                state.segments.append(segment)
                return segment
            if mode is Mode.PREFILL and outcome.error_type == "bad_request":
                executor.health.no_prefill.add(target.key)  # it refuses prefill: replay from now on
                continue
            break
        executor.health.released(ticket)
    return None


def _modes(executor: Executor, target: Target) -> tuple[Mode, ...]:
    if target.prefill == "none" or target.key in executor.health.no_prefill:
        return (Mode.REPLAY,)
    return (Mode.PREFILL, Mode.REPLAY)


def continuation_body(body: Mapping[str, Any], text: str, mode: Mode, prefill: str) -> dict[str, Any]:
    """The chat body of a continuation attempt: the original, plus the delivered text for a prefill."""
    out = dict(body)
    if mode is Mode.PREFILL:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if prefill == "prefix":
            message["prefix"] = True  # DeepSeek's chat prefix completion
        out["messages"] = [*body.get("messages", ()), message]
    return out


class Splice:
    """The relay's edit for a continuation segment: its chunks under the client's id and model, the
    replayed text held back until it covers what was delivered, usage summed over every attempt."""

    __slots__ = ("_body_size", "_caught_up", "_mode", "_replayed", "_segments", "_transcript", "_wants_usage")

    def __init__(self, mode: Mode, transcript: Transcript, wants_usage: bool, segments: list[Segment],
                 body_size: int) -> None:
        self._body_size = body_size
        self._mode = mode
        self._transcript = transcript
        self._wants_usage = wants_usage
        self._segments = segments
        self._replayed = ""
        self._caught_up = mode is Mode.PREFILL

    def __call__(self, chunk: Chunk, event: bytes) -> tuple[bytes, str] | None:
        data = dict(chunk.data or {})
        first = self._transcript.first or {}
        for key in ("id", "model", "created"):
            if key in first:
                data[key] = first[key]
        if chunk.usage is not None:
            current = self._segments[-1]
            current.reported = chunk.usage
            data["usage"] = _total(self._segments, self._body_size).to_openai()
            data["x_gateway"] = {"attempts": [_contribution(s, self._body_size) for s in self._segments]}
            if not self._wants_usage and not data.get("choices"):
                del data["usage"]
            if chunk.usage_only:
                return _event(data), ""
        if not self._caught_up:
            return self._catch_up(chunk, data)
        if chunk.reasoning and not chunk.text:
            return None  # the client had its reasoning from the first attempt
        if not chunk.content and chunk.finish_reason is None:
            return None  # the new attempt's opening (role) chunk
        return _event(data), chunk.text

    def _catch_up(self, chunk: Chunk, data: dict[str, Any]) -> tuple[bytes, str] | None:
        """Replay: hold the text back until it covers what was delivered; it must begin with exactly that."""
        delivered = self._transcript.text
        if chunk.tool or (chunk.content and not chunk.text and not chunk.reasoning):
            raise ReplayDiverged("the replayed answer differs from what was already sent")
        self._replayed += chunk.text
        if len(self._replayed) < len(delivered):
            if not delivered.startswith(self._replayed):
                raise ReplayDiverged("the replayed answer differs from what was already sent")
            if chunk.finish_reason is not None:
                raise ReplayDiverged("the replayed answer is shorter than what was already sent")
            return None
        if not self._replayed.startswith(delivered):
            raise ReplayDiverged("the replayed answer differs from what was already sent")
        self._caught_up = True
        rest = self._replayed[len(delivered):]
        if not rest and chunk.finish_reason is None:
            return None
        choices = data.get("choices") or [{}]
        choice = dict(choices[0])
        delta = dict(choice.get("delta") or {})
        delta.pop("role", None)
        delta["content"] = rest
        choice["delta"] = delta
        data["choices"] = [choice]
        return _event(data), rest


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data)


def _estimate(segment: Segment, body_size: int) -> Usage:
    """A broken attempt that never reported usage: its prompt and the chunks it sent, as tokens."""
    return Usage(input=body_size // 4, output=segment.chunks)


def _usage(segment: Segment, body_size: int) -> Usage:
    """What an attempt used: as reported, else estimated."""
    return Usage.from_openai(segment.reported) if segment.reported else _estimate(segment, body_size)


def _total(segments: list[Segment], body_size: int) -> Usage:
    total = Usage()
    for segment in segments:
        total = total + _usage(segment, body_size)
    return total


def _contribution(segment: Segment, body_size: int) -> dict[str, Any]:
    """One attempt's part, for the final chunk's `x_gateway.attempts`."""
    return {"target": segment.target.key, "mode": segment.mode.value,
            "usage": _usage(segment, body_size).to_openai(), "estimated": not segment.reported}
