"""Execute a plan: try each target in order, retry what is worth retrying, stop at the deadline.

For streams, a target has served only once its first content chunk has been read: until then any
failure, stall or slow first token moves on, and nothing has reached the client. What was read
before that point is handed to the relay to replay.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from gateway import metrics
from gateway.config.schema import UpstreamLimits
from gateway.errors import (
    BadRequest,
    GatewayError,
    StreamCut,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from gateway.failover.backoff import Backoff
from gateway.failover.breaker import Breakers
from gateway.failover.classify import Action, Attempt, classify, counts_against_health
from gateway.failover.deadline import Deadline
from gateway.relay.sse import EventSplitter, is_event_stream
from gateway.routing import LatencyTracker, Plan, Target
from gateway.upstream import echo
from gateway.upstream.formats import Dialect, Leg, LegChooser, Skip
from gateway.upstream.formats.by_wire import chat_leg
from gateway.upstream.formats.openai_chat import CHAT, completion_events
from gateway.upstream.transport import Transport


class UpstreamResponse(Protocol):
    status: int
    headers: Any

    async def read_all(self, limit: int) -> bytes: ...
    async def read_chunk(self) -> bytes: ...
    def release(self) -> None: ...
    def close(self) -> None: ...


@dataclass(slots=True)
class Served:
    """The attempt that served, and what was read of it before the client saw anything."""

    target: Target
    response: UpstreamResponse
    attempts: list[Attempt]
    targets_tried: int
    upstream_seconds: float
    body: bytes | None = None
    parsed: dict[str, Any] | None = None
    held: list[bytes] = field(default_factory=list)
    splitter: EventSplitter = field(default_factory=EventSplitter)
    first_token_at: float | None = None
    leg: Leg | None = None

    @property
    def fallbacks(self) -> int:
        return max(0, self.targets_tried - 1)


class AllTargetsFailed(GatewayError):
    """No target of the plan could serve: the message says what each one did."""

    def __init__(self, model: str, attempts: list[Attempt], errors: list[UpstreamError], deadline_hit: bool) -> None:
        tried = errors
        if not tried:
            self.status, self.type, self.code = 503, "service_unavailable", "no_target_available"
        elif all(e.error_type == "rate_limited" for e in tried):
            self.status, self.type, self.code = 429, "rate_limit_error", "rate_limited"
        elif deadline_hit or all(e.error_type == "timeout" for e in tried):
            self.status, self.type, self.code = 504, "upstream_error", "upstream_timeout"
        else:
            self.status, self.type, self.code = 502, "upstream_error", "upstream_failed"
        headers = {}
        waits = [e.retry_after for e in tried if isinstance(e, UpstreamStatusError) and e.retry_after is not None]
        if waits:
            headers["Retry-After"] = str(max(1, round(min(waits))))
        super().__init__(f"No target could serve `{model}`{' before the deadline' if deadline_hit else ''}: "
                         f"{_summary(attempts)}", headers=headers)
        self.attempts = attempts


class Executor:
    def __init__(
        self, transport: Transport, breakers: Breakers, latency: LatencyTracker, limits: UpstreamLimits
    ) -> None:
        self._transport = transport
        self._limits = limits
        self._breakers = breakers
        self._latency = latency
        self._backoffs: dict[Any, Backoff] = {}

    async def run(
        self, plan: Plan, body: dict[str, Any], *, stream: bool, deadline: Deadline, body_size: int,
        legs: LegChooser | None = None,
    ) -> Served:
        """Try the plan's targets in turn. `legs` chooses each target's dialect and body (default: chat)."""
        attempts: list[Attempt] = []
        errors: list[UpstreamError] = []
        skipped_open: list[Target] = []
        state = _RunState(prompt=_prompt_tokens(body, plan, body_size), requested=_requested_output(body),
                          legs=legs or (lambda t: chat_leg(t.endpoint.wire, t.model.limit.output, body)))
        legs_by_key: dict[str, Leg] = {}
        for target in plan.targets:
            leg = state.legs(target)
            if isinstance(leg, Skip):
                attempts.append(Attempt(target.key, "incompatible", leg.reason, tried=False))
                continue
            legs_by_key[target.key] = leg
            reason = self._skip_reason(target, state)
            if reason is not None:
                attempts.append(Attempt(target.key, reason[0], reason[1], tried=False))
                if reason[0] == "circuit_open":
                    skipped_open.append(target)
                continue
            if state.last_tried is not None:
                metrics.fallback(plan.model, state.last_tried, target.key)
            served = await self._try_target(target, leg, stream, deadline, attempts, errors, state)
            if served is not None:
                return served
            state.last_tried = target.key
            if deadline.remaining() <= 0:
                break
        if skipped_open and not errors and deadline.remaining() > 0:
            # Every usable target is cooling down: probe the one that recovers first rather than refuse.
            target = min(skipped_open, key=lambda t: self._breakers.get(t.key).opened_until)
            self._breakers.get(target.key).force_probe()
            served = await self._try_target(target, legs_by_key[target.key], stream, deadline, attempts, errors, state)
            if served is not None:
                return served
        if errors and all(e.error_type == "context_length" for e in errors):
            raise errors[-1]  # the prompt is too long for every target that could take it: the client's to fix
        if not errors and attempts and all(a.outcome == "context_length" for a in attempts):
            raise BadRequest(f"The prompt is too long for every target of `{plan.model}`: {_summary(attempts)}",
                             code="context_length_exceeded", param="messages")
        raise AllTargetsFailed(plan.model, attempts, errors, deadline.remaining() <= 0)

    def _skip_reason(self, target: Target, state: _RunState) -> tuple[str, str] | None:
        endpoint = target.endpoint
        if not endpoint.available:
            return "no_credentials", endpoint.unavailable or "unavailable"
        limit = target.context_limit
        # With a separate input limit the output has its own budget; otherwise both share the window.
        needed = state.prompt if target.model.limit.input else state.prompt + state.requested
        if limit is not None and state.prompt and needed > limit:
            return "context_length", f"about {needed} tokens needed, more than its {limit}-token window"
        if state.context_failed_at is not None and (limit is None or limit <= state.context_failed_at):
            return "context_length", "its context window is no larger than one that was already too small"
        if self._breakers.enabled and not self._breakers.get(target.key).allow(time.monotonic()):
            return "circuit_open", "circuit open after repeated failures"
        return None

    async def _try_target(
        self, target: Target, leg: Leg, stream: bool, deadline: Deadline,
        attempts: list[Attempt], errors: list[UpstreamError], state: _RunState,
    ) -> Served | None:
        payload = leg.dialect.build_request(leg.body, target.upstream_model, stream=stream)
        breaker = self._breakers.get(target.key) if self._breakers.enabled else None
        tries = 0
        state.targets_tried += 1
        while True:
            tries += 1
            started = time.monotonic()
            try:
                served = await self._attempt(target, leg, payload, stream, deadline)
            except UpstreamError as error:
                now = time.monotonic()
                state.upstream_seconds += now - started
                error.mask(target.endpoint.secrets.mask)
                attempts.append(Attempt(target.key, error.error_type, error.message, status=getattr(
                    error, "upstream_status", None)))
                errors.append(error)
                metrics.attempt(target.provider_id, target.upstream_model, error.error_type)
                action = classify(error)
                if breaker is not None:
                    if counts_against_health(error):
                        breaker.record_failure(now, getattr(error, "retry_after", None))
                    else:
                        breaker.release_probe()
                if action is Action.FAIL:
                    raise
                if error.error_type == "context_length":
                    limit = target.context_limit or 0
                    state.context_failed_at = max(state.context_failed_at or 0, limit)
                if action is Action.NEXT or tries >= target.retry.attempts:
                    return None
                delay = self._backoff(target).delay(tries, getattr(error, "retry_after", None))
                if delay is None or delay >= deadline.remaining():
                    return None  # waiting would not fit: better spend the deadline elsewhere
                if breaker is not None and not breaker.allow(time.monotonic()):
                    return None
                metrics.retry(target.provider_id, target.upstream_model)
                await asyncio.sleep(delay)
                state.upstream_seconds += delay  # waiting is policy, not gateway overhead
                continue
            except BaseException:
                if breaker is not None:
                    breaker.release_probe()
                raise
            now = time.monotonic()
            state.upstream_seconds += now - started
            if breaker is not None and not stream:
                breaker.record_success(now)  # a stream is judged when it ends (api/chat.py)
            self._latency.observe(target.key, now - started)
            metrics.attempt(target.provider_id, target.upstream_model, "success")
            attempts.append(Attempt(target.key, "success", "served"))
            served.attempts = attempts
            served.leg = leg
            served.targets_tried = state.targets_tried
            served.upstream_seconds = state.upstream_seconds
            return served

    async def _attempt(
        self, target: Target, leg: Leg, payload: dict[str, Any], stream: bool, deadline: Deadline
    ) -> Served:
        timeouts = target.timeouts
        dialect = leg.dialect
        if target.endpoint.wire == "echo":
            response: UpstreamResponse = echo.answer(payload, dialect.name)
        else:
            remaining = deadline.remaining()
            if remaining <= 0:
                raise UpstreamTimeout("the request deadline ran out before this attempt", phase="deadline")
            if stream:
                response = await self._transport.send(target.endpoint, payload, connect=timeouts.connect,
                                                      read=timeouts.idle, path=dialect.path, headers=leg.headers,
                                                      first_byte=min(timeouts.first_byte, remaining))
            else:
                # One aiohttp timer bounds the whole answer: the response timeout or the deadline.
                total = timeouts.response if timeouts.response < remaining else remaining
                response = await self._transport.send(target.endpoint, payload, connect=timeouts.connect,
                                                      read=total, total=total, path=dialect.path,
                                                      headers=leg.headers)
        try:
            if response.status >= 400:
                raw = await self._read_whole(response, self._limits.max_error_bytes, stream, target, deadline)
                raise dialect.parse_error(response.status, response.headers, raw, target.provider_id)
            response = dialect.view(response)  # a translating wire shows its answer as chat from here on
            if stream and is_event_stream(response.headers.get("content-type", "")):
                return await self._open_stream(target, dialect, response, deadline)
            raw = await self._read_whole(response, self._limits.max_answer_bytes, stream, target, deadline)
            return _whole_answer(target, dialect, response, raw, stream)
        except BaseException:
            response.close()
            raise

    async def _read_whole(
        self, response: UpstreamResponse, limit: int, stream: bool, target: Target, deadline: Deadline
    ) -> bytes:
        """A whole body. A stream request's connection has only an idle timeout, so bound this read by the
        response timeout and the deadline here (a non-stream request's aiohttp timer already does)."""
        if not stream:
            return await response.read_all(limit)
        seconds = deadline.cap(target.timeouts.response)
        try:
            async with asyncio.timeout(seconds):
                return await response.read_all(limit)
        except TimeoutError:
            raise UpstreamTimeout(f"{target.provider_id} did not finish its answer within {seconds:g}s",
                                  phase="response") from None

    async def _open_stream(
        self, target: Target, dialect: Dialect, response: UpstreamResponse, deadline: Deadline
    ) -> Served:
        """Read until the first content chunk; everything read so far is held for the relay to replay."""
        served = Served(target, response, [], 0, 0.0, splitter=EventSplitter(self._limits.max_event_bytes))
        first_token = deadline.cap(target.timeouts.first_token)
        try:
            async with asyncio.timeout(first_token):
                while True:
                    data = await response.read_chunk()
                    if not data:
                        served.splitter.end()  # an event over the size limit is malformed, not a cut
                        raise StreamCut(f"{target.provider_id} ended the stream before any content")
                    events = served.splitter.feed(data)
                    committed = False
                    for event in events:
                        # Events after the first content one belong to the relay, malformed or not.
                        if dialect.opens_answer(event, target.provider_id):
                            committed = True
                            break
                    served.held.extend(events)
                    if committed:
                        served.first_token_at = time.monotonic()
                        return served
        except TimeoutError:
            raise UpstreamTimeout(f"{target.provider_id} sent no content within {first_token:g}s",
                                  phase="first_token") from None

    def _backoff(self, target: Target) -> Backoff:
        backoff = self._backoffs.get(target.retry)
        if backoff is None:
            backoff = self._backoffs[target.retry] = Backoff(target.retry)
        return backoff


@dataclass(slots=True)
class _RunState:
    prompt: int = 0
    requested: int = 0
    targets_tried: int = 0
    last_tried: str | None = None
    upstream_seconds: float = 0.0
    context_failed_at: int | None = None
    legs: LegChooser = field(default=lambda _target: Leg(CHAT, {}))


def _whole_answer(target: Target, dialect: Dialect, response: UpstreamResponse, raw: bytes, stream: bool) -> Served:
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
        return Served(target, response, [], 0, 0.0, held=completion_events(parsed),
                      first_token_at=time.monotonic())
    return Served(target, response, [], 0, 0.0, body=raw, parsed=parsed)


def _prompt_tokens(body: dict[str, Any], plan: Plan, body_size: int) -> int:
    """A cheap estimate: about four characters of message text per token (images not counted).

    0 (nothing to check) when even the whole request body could not fill the smallest known window.
    """
    limits = [t.context_limit for t in plan.targets if t.context_limit]
    if not limits or (body_size // 4 + _requested_output(body)) <= min(limits):
        return 0
    messages = body.get("messages") or ()
    chars = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
    return chars // 4


def _requested_output(body: dict[str, Any]) -> int:
    requested = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    return requested if isinstance(requested, int) else 0


def _summary(attempts: list[Attempt]) -> str:
    parts: list[str] = []
    counts: dict[str, int] = {}
    last: dict[str, Attempt] = {}
    for attempt in attempts:
        counts[attempt.target] = counts.get(attempt.target, 0) + (1 if attempt.tried else 0)
        last[attempt.target] = attempt
    for target, attempt in last.items():
        tries = counts[target]
        suffix = f" ({tries} attempts)" if tries > 1 else ""
        verb = "" if attempt.tried else "skipped: "
        parts.append(f"{target}: {verb}{attempt.detail}{suffix}")
    return "; ".join(parts) or "no targets"
