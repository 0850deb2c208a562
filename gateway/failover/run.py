"""Execute a plan: try each target in order, retry what is worth retrying, stop at the deadline.

For streams, a target has served only once its first content chunk has been read: until then any
failure, stall or slow first token moves on, and nothing has reached the client. What was read
before that point is handed to the relay to replay. Every circuit-breaker verdict is settled here
(and in `stream`, for a stream's end), so no caller needs to know circuits exist.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway import metrics
from gateway.config.schema import UpstreamLimits
from gateway.errors import BadRequest, GatewayError, UpstreamError, UpstreamStatusError
from gateway.failover.attempt import Opened, attempt
from gateway.failover.backoff import Backoff
from gateway.failover.breaker import Ticket
from gateway.failover.classify import Action, Attempt, classify, counts_against_health
from gateway.failover.continuation import client_stream
from gateway.failover.deadline import Deadline
from gateway.failover.first_token import first_token_limit
from gateway.failover.health import Health
from gateway.relay.sse import error_event
from gateway.relay.stream import EventProcessor, RelayResult
from gateway.routing import Plan, Target
from gateway.upstream.formats import Leg, LegChooser, Skip
from gateway.upstream.formats.by_wire import chat_leg
from gateway.upstream.response import UpstreamResponse
from gateway.upstream.transport import Transport


class Run:
    """One request's way through its plan: what was tried, what failed, what is left."""

    # A plain class, not a dataclass: its generated __init__ (17 fields, 3 list factories) cost twice this one.
    __slots__ = ("attempts", "body", "body_size", "context_failed_at", "deadline", "errors", "gate", "last_tried",
                 "legs", "plan", "prompt", "refusals", "requested", "stream", "targets_tried", "upstream_seconds")

    def __init__(self, plan: Plan, body: dict[str, Any], stream: bool, deadline: Deadline, legs: LegChooser,
                 body_size: int = 0, prompt: int = 0, requested: int = 0, gate: Gate | None = None) -> None:
        self.plan = plan
        self.body = body
        self.stream = stream
        self.deadline = deadline
        self.legs = legs
        self.body_size = body_size
        self.prompt = prompt  # estimated prompt tokens (0: too small to matter)
        self.requested = requested  # max output tokens the client asked for
        self.gate = gate
        self.attempts: list[Attempt] = []
        self.errors: list[UpstreamError] = []
        self.targets_tried = 0
        self.last_tried: str | None = None
        self.upstream_seconds = 0.0
        self.context_failed_at: int | None = None
        self.refusals: list[GatewayError] = []  # targets the gate refused (provider limits)


# Asked just before a target is tried: None lets it be tried, an error (a 429) skips it.
Gate = Callable[[Target], Awaitable[GatewayError | None]]


@dataclass(slots=True)
class Served:
    """The attempt that served, and what was read of it before the client saw anything."""

    opened: Opened
    ticket: Ticket
    run: Run
    leg: Leg
    executor: Executor
    target: Target  # opened.target (read several times per request)

    @property
    def response(self) -> UpstreamResponse:
        return self.opened.response

    def stream(
        self, *, wants_usage: bool, result: RelayResult, recover: bool = True, process: EventProcessor | None = None,
        failure: Callable[[dict[str, Any]], bytes] = error_event,
    ) -> AsyncGenerator[bytes, None]:
        """The client's stream: the served attempt relayed, continued after a break where it can be
        (failover/continuation.py), each attempt's target judged when its part ends. `recover=False` never
        continues it after a break; `process` relays events of another shape than chat chunks; `failure`
        writes the event that ends a broken stream, from an OpenAI error body."""
        return client_stream(self.executor, self, wants_usage=wants_usage, result=result, recover=recover,
                             process=process, failure=failure)

    @property
    def attempts(self) -> list[Attempt]:
        return self.run.attempts

    @property
    def fallbacks(self) -> int:
        return max(0, self.run.targets_tried - 1)

    @property
    def upstream_seconds(self) -> float:
        return self.run.upstream_seconds

    @property
    def body(self) -> bytes:
        return self.opened.body or b""

    @property
    def parsed(self) -> dict[str, Any] | None:
        return self.opened.parsed


class AllTargetsFailed(GatewayError):
    """No target of the plan could serve: the message says what each one did."""

    def __init__(self, run: Run, *, circuits_open_for: float | None = None) -> None:
        tried, model, deadline_hit = run.errors, run.plan.model, run.deadline.remaining() <= 0
        headers = {}
        if circuits_open_for is not None:
            # Shedding load: every target is cooling down and its one probe is already out.
            self.status, self.type, self.code = 503, "service_unavailable", "circuit_open"
            headers["Retry-After"] = str(max(1, math.ceil(circuits_open_for)))
        elif not tried:
            self.status, self.type, self.code = 503, "service_unavailable", "no_target_available"
        elif all(e.error_type == "rate_limited" for e in tried):
            self.status, self.type, self.code = 429, "rate_limit_error", "rate_limited"
        elif deadline_hit or all(e.error_type == "timeout" for e in tried):
            self.status, self.type, self.code = 504, "upstream_error", "upstream_timeout"
        else:
            self.status, self.type, self.code = 502, "upstream_error", "upstream_failed"
        waits = [e.retry_after for e in tried if isinstance(e, UpstreamStatusError) and e.retry_after is not None]
        if waits and "Retry-After" not in headers:
            headers["Retry-After"] = str(max(1, round(min(waits))))
        super().__init__(f"No target could serve `{model}`{' before the deadline' if deadline_hit else ''}: "
                         f"{_summary(run.attempts)}", headers=headers)
        self.attempts = run.attempts


class Executor:
    def __init__(self, transport: Transport, health: Health, limits: UpstreamLimits) -> None:
        self._transport = transport
        self.health = health
        self._limits = limits
        self._backoffs: dict[Any, Backoff] = {}
        # Per target of this config: the record of an attempt that served (immutable, so shared by all).
        self._served: dict[str, Attempt] = {}

    async def run(
        self, plan: Plan, body: dict[str, Any], *, stream: bool, deadline: Deadline, body_size: int,
        legs: LegChooser | None = None, gate: Gate | None = None,
    ) -> Served:
        """Try the plan's targets in turn. `legs` chooses each target's dialect and body (default: chat);
        `gate`, when given, may refuse a target just before it is tried (its provider's limits)."""
        requested = _requested_output(body)
        run = Run(plan, body, stream, deadline,
                  legs or (lambda t: chat_leg(t.endpoint.wire, t.model.limit.output, body)), body_size,
                  _prompt_tokens(body, plan, body_size, requested), requested, gate)
        open_targets: list[tuple[Target, Leg]] = []
        for target in plan.targets:
            leg = run.legs(target)
            if isinstance(leg, Skip):
                run.attempts.append(Attempt(target.key, "incompatible", leg.reason, tried=False))
                continue
            reason = self._skip_reason(target, run)
            ticket = self.health.admit(target.key) if reason is None else None
            if reason is None and ticket is None:
                open_targets.append((target, leg))
                reason = ("circuit_open", "circuit open after repeated failures")
            if reason is not None or ticket is None:
                run.attempts.append(Attempt(target.key, *(reason or ("circuit_open", "")), tried=False))
                continue
            if gate is not None and await self._refused(gate, run, target, ticket):
                continue
            opened = await self.try_target(run, target, leg, ticket, self._begin(run, target, leg))
            if isinstance(opened, Opened):
                return Served(opened, ticket, run, leg, self, opened.target)
            if deadline.remaining() <= 0:
                break
        if open_targets and not run.errors and deadline.remaining() > 0:
            served = await self._probe_early(run, open_targets)
            if served is not None:
                return served
        if run.refusals and not run.errors:
            raise run.refusals[0]  # nothing was tried: every target that could serve is over its provider's limit
        if run.errors and all(e.error_type == "context_length" for e in run.errors):
            raise run.errors[-1]  # the prompt is too long for every target that could take it: the client's to fix
        if not run.errors and run.attempts and all(a.outcome == "context_length" for a in run.attempts):
            raise BadRequest(f"The prompt is too long for every target of `{plan.model}`: {_summary(run.attempts)}",
                             code="context_length_exceeded", param="messages")
        raise AllTargetsFailed(run)

    async def _probe_early(self, run: Run, open_targets: list[tuple[Target, Leg]]) -> Served | None:
        """Every usable target is cooling down: one request per cooldown probes the one that recovers
        first; everyone else is answered at once with the time left."""
        keys = [t.key for t, _ in open_targets]
        ticket = self.health.admit_early(keys)
        if ticket is None:
            raise AllTargetsFailed(run, circuits_open_for=self.health.remaining(keys))
        target, leg = next((t, leg) for t, leg in open_targets if t.key == ticket.key)
        if run.gate is not None and await self._refused(run.gate, run, target, ticket):
            return None
        opened = await self.try_target(run, target, leg, ticket, self._begin(run, target, leg))
        return Served(opened, ticket, run, leg, self, opened.target) if isinstance(opened, Opened) else None

    async def _refused(self, gate: Gate, run: Run, target: Target, ticket: Ticket) -> bool:
        """Ask the gate before trying a target; a refused target is skipped like one whose circuit is open."""
        refusal = await gate(target)
        if refusal is None:
            return False
        self.health.released(ticket)
        run.refusals.append(refusal)
        run.attempts.append(Attempt(target.key, "provider_limit", refusal.message, tried=False))
        return True

    def _skip_reason(self, target: Target, run: Run) -> tuple[str, str] | None:
        endpoint = target.endpoint
        if not endpoint.available:
            return "no_credentials", endpoint.unavailable or "unavailable"
        limit = target.context_limit
        # With a separate input limit the output has its own budget; otherwise both share the window.
        needed = run.prompt if target.model.limit.input else run.prompt + run.requested
        if limit is not None and run.prompt and needed > limit:
            return "context_length", f"about {needed} tokens needed, more than its {limit}-token window"
        if run.context_failed_at is not None and (limit is None or limit <= run.context_failed_at):
            return "context_length", "its context window is no larger than one that was already too small"
        return None

    def _begin(self, run: Run, target: Target, leg: Leg) -> dict[str, Any]:
        """A target's turn begins (a fallback when another came before): its payload, built once."""
        if run.last_tried is not None:
            metrics.fallback(run.plan.model, run.last_tried, target.key)
        run.last_tried = target.key
        run.targets_tried += 1
        return leg.dialect.build_request(leg.body, target.upstream_model, stream=run.stream)

    async def try_target(self, run: Run, target: Target, leg: Leg, ticket: Ticket, payload: dict[str, Any], *,
                         retry: bool = True, client_errors: bool = True) -> Opened | UpstreamError:
        """Attempts at one target, each recorded and settled: again after a back-off while a failure is
        worth retrying (when `retry`), until one opens or the target is done for this request (its last
        failure returned). The client's own errors (FAIL) are raised unless `client_errors` is False (a
        continuation's refusal is one more failed attempt).

        One coroutine for the retries and the bookkeeping: each coroutine layer is paid again on every
        resume of the request (two layers here cost ~3k instructions per whole answer)."""
        tries = 0
        while True:
            tries += 1
            # Only a stream waits for a first token; a whole answer is bounded by its response timeout.
            first_token = first_token_limit(target.timeouts, reasoning=bool(target.model.reasoning),
                                            samples=self.health.latency.first_tokens(target.key),
                                            prompt_tokens=run.body_size // 4) if run.stream else 0.0
            started = time.monotonic()
            try:
                opened = await attempt(self._transport, target, leg, payload, stream=run.stream,
                                       deadline=run.deadline, first_token=first_token, limits=self._limits)
            except UpstreamError as error:
                failure = error
            except BaseException:
                self.health.released(ticket)
                raise
            else:
                self._opened(run, target, ticket, opened, started)
                return opened
            run.upstream_seconds += time.monotonic() - started
            self._failed(run, target, ticket, failure)
            action = classify(failure)
            if client_errors and action is Action.FAIL:
                raise failure
            if not retry or action is not Action.RETRY or tries >= target.retry.attempts:
                return failure
            delay = self._backoff(target).delay(tries, getattr(failure, "retry_after", None))
            if delay is None or delay >= run.deadline.remaining():
                return failure  # waiting would not fit: better spend the deadline elsewhere
            if not self.health.still_admitted(ticket):
                return failure  # that failure opened the circuit
            metrics.retry(target.provider_id, target.upstream_model)
            await asyncio.sleep(delay)
            run.upstream_seconds += delay  # waiting is policy, not gateway overhead

    def _opened(self, run: Run, target: Target, ticket: Ticket, opened: Opened, started: float) -> None:
        now = time.monotonic()
        run.upstream_seconds += now - started
        if not run.stream:
            self.health.succeeded(ticket)  # a stream is judged when it ends (see `stream`)
        self.health.latency.observe(target.key, now - started)
        if opened.first_token_at is not None:
            self.health.latency.observe_first_token(target.key, opened.first_token_at - started)
        metrics.attempt(target.provider_id, target.upstream_model, "success")
        served = self._served.get(target.key)
        if served is None:
            served = self._served[target.key] = Attempt(target.key, "success", "served")
        run.attempts.append(served)

    def _failed(self, run: Run, target: Target, ticket: Ticket, error: UpstreamError) -> None:
        error.mask(target.endpoint.secrets.mask)
        run.attempts.append(Attempt(target.key, error.error_type, error.message,
                                    status=getattr(error, "upstream_status", None)))
        run.errors.append(error)
        metrics.attempt(target.provider_id, target.upstream_model, error.error_type)
        if counts_against_health(error):
            self.health.failed(ticket, getattr(error, "retry_after", None))
        else:
            self.health.released(ticket)
        if error.error_type == "context_length":
            run.context_failed_at = max(run.context_failed_at or 0, target.context_limit or 0)

    def settle(self, ticket: Ticket, error: UpstreamError | None, *, completed: bool) -> None:
        """A stream attempt's verdict: one that breaks streams is unhealthy; a client that left, no verdict."""
        if error is not None and counts_against_health(error):
            self.health.failed(ticket)
        elif error is None and completed:
            self.health.succeeded(ticket)
        else:
            self.health.released(ticket)

    def _backoff(self, target: Target) -> Backoff:
        backoff = self._backoffs.get(target.retry)
        if backoff is None:
            backoff = self._backoffs[target.retry] = Backoff(target.retry)
        return backoff


def _prompt_tokens(body: dict[str, Any], plan: Plan, body_size: int, requested: int) -> int:
    """A cheap estimate: about four characters of message text per token (images not counted).

    0 (nothing to check) when even the whole request body could not fill the smallest known window.
    """
    smallest = 0  # the smallest known window (a loop, not min() over a generator: this runs per request)
    for target in plan.targets:
        limit = target.context_limit
        if limit and (not smallest or limit < smallest):
            smallest = limit
    if not smallest or body_size // 4 + requested <= smallest:
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
            chars += sum(len(p.get("text") or "") for p in content if isinstance(p, dict)
                         and isinstance(p.get("text"), str))
    return chars // 4


def _requested_output(body: dict[str, Any]) -> int:
    requested = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    return requested if isinstance(requested, int) else 0


def _summary(attempts: list[Attempt]) -> str:
    parts: list[str] = []
    counts: dict[str, int] = {}
    last: dict[str, Attempt] = {}
    for attempt_ in attempts:
        counts[attempt_.target] = counts.get(attempt_.target, 0) + (1 if attempt_.tried else 0)
        last[attempt_.target] = attempt_
    for target, attempt_ in last.items():
        tries = counts[target]
        suffix = f" ({tries} attempts)" if tries > 1 else ""
        verb = "" if attempt_.tried else "skipped: "
        parts.append(f"{target}: {verb}{attempt_.detail}{suffix}")
    return "; ".join(parts) or "no targets"
