"""Admission and accounting for one request, the same for every inbound endpoint.

An endpoint calls `admit()` once it knows the caller and the plan (it raises the 429 of a limit or
budget, and leaves the granted ticket on the record), and `finish()` when the request ends, however
it ends: metrics, the settlement of what was reserved, one usage-ledger row, and the access-log
line when that is on. Ledger, log and metrics carry names and numbers only: the key's *name*,
never the key, and no prompt or answer text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson

from gateway import metrics
from gateway.auth import Caller
from gateway.errors import GatewayError, LimitExceeded, QuotaExceeded
from gateway.failover.run import Gate, Served
from gateway.relay.stream import RelayResult
from gateway.relay.usage import Usage
from gateway.routing import Plan, Target
from gateway.runtime import Runtime
from gateway.state.store import LedgerRow
from gateway.teams.service import Teams, Ticket

log = logging.getLogger("gateway.access")

_HOLD_MARGIN = 60.0  # a crashed worker's concurrency and spend holds lapse this long after its deadline


class RequestRecord:
    """What is known about one request so far, for metrics, the ledger and the access log."""

    __slots__ = ("attempts", "body_size", "caller", "done_at", "endpoint", "error_type", "in_flight", "label",
                 "model", "provider_tickets", "relay", "request_id", "responding", "served", "started", "status",
                 "ticket", "usage")

    def __init__(self, request_id: str, started: float, endpoint: str = "chat") -> None:
        self.request_id = request_id
        self.started = started
        self.endpoint = endpoint
        self.caller = "-"
        self.model = ""
        self.label = "unknown"  # the model id as a metrics label: only ids the gateway knows
        self.status = 0
        self.error_type: str | None = None
        self.attempts = 0
        self.body_size = 0
        self.in_flight = False
        self.responding = False
        self.served: Served | None = None
        self.relay: RelayResult | None = None
        self.usage: dict[str, Any] | None = None
        self.done_at: float | None = None
        self.ticket: Ticket | None = None  # the key's and model's limits
        self.provider_tickets: list[Ticket] = []  # the provider limits of each attempt, in order

    def limit_headers(self) -> list[tuple[bytes, bytes]]:
        """The x-ratelimit-* headers for the answer, when a limit applies to this request."""
        if self.ticket is not None:
            return self.ticket.raw_headers
        return self.provider_tickets[-1].raw_headers if self.provider_tickets else []


async def admit(runtime: Runtime, record: RequestRecord, caller: Caller, body: Mapping[str, Any],
                plan: Plan) -> Gate | None:
    """Hold the request to its key's and model's limits (raises LimitExceeded / QuotaExceeded); returns
    the gate that holds each attempt to its provider's limits, when the config has any."""
    teams = runtime.teams
    if teams is None:
        return None
    limits = runtime.limits
    if caller.limits is None and not limits.models and not limits.providers:
        return None  # the usual case: no limit applies to this key, its model or any provider
    scoped = limits.scoped(caller.name, caller.limits, plan.model)
    if scoped:
        tokens, worst_cost = limits.reservation(body, record.body_size, plan.targets)
        record.ticket = await teams.admit(caller.name, scoped, tokens, worst_cost, plan.total + _HOLD_MARGIN)
    if not limits.providers:
        return None  # the usual case: nothing to check per attempt

    async def gate(target: Target) -> GatewayError | None:
        """Reserve against the provider this attempt goes to; its refusal skips the target."""
        provider = limits.provider(target.provider_id)
        if provider is None:
            return None
        assert teams is not None
        tokens, worst_cost = limits.reservation(body, record.body_size, (target,))
        try:
            ticket = await teams.admit(caller.name, (provider,), tokens, worst_cost, plan.total + _HOLD_MARGIN)
        except (LimitExceeded, QuotaExceeded) as refusal:
            return refusal
        record.provider_tickets.append(ticket)
        return None

    return gate


def finish(runtime: Runtime, context: RequestRecord) -> None:
    """Count the request: metrics, settlement and ledger row, the access log when it is on."""
    duration = time.monotonic() - context.started
    served = context.served
    if served is None:
        _finish_unserved(runtime, context, duration)
        return
    target = served.target
    provider = target.provider_id
    relay = context.relay
    ttft = overhead = None
    if relay is not None and relay.first_write_at is not None:
        ttft = relay.first_write_at - context.started
        overhead = max(0.0, ttft - served.upstream_seconds)
    elif context.done_at is not None:
        overhead = max(0.0, context.done_at - context.started - served.upstream_seconds)
    metrics.request_finished(context.label, provider, context.status, duration, overhead, ttft, context.in_flight)
    reported = context.usage
    usage = cost = None
    if isinstance(reported, dict):
        usage = Usage.from_openai(reported)
        cost = usage.cost(target.model.cost)
        metrics.usage(context.label, provider, target.upstream_model, context.caller, usage.input, usage.output,
                      usage.cached, usage.reasoning, cost)
    if relay is not None:
        metrics.stream_chunks(provider, relay.chunks)
    teams = runtime.teams
    if teams is not None:
        if usage is None and relay is not None:
            # A stream that ended without the upstream's count (the client left): bill the request's
            # size and the chunks relayed, since the upstream did that work.
            billed = Usage(input=context.body_size // 4, output=relay.chunks)
            _account(teams, context, served, billed, billed.cost(target.model.cost), duration, ttft)
        else:
            _account(teams, context, served, usage or _UNCOUNTED, cost, duration, ttft)
    if runtime.settings.server.access_log:
        _access_log(context, provider, duration, ttft, usage, cost)


_UNCOUNTED = Usage()  # the ledger's zeros for an answer without usage


def _account(teams: Teams, context: RequestRecord, served: Served, usage: Usage, cost: float | None,
             duration: float, ttft: float | None) -> None:
    """Settle what the served request's limits reserved (when it has any) and queue its ledger row."""
    if context.ticket is not None or context.provider_tickets:
        _settle(teams, context, usage, cost)
    target = served.target
    attempts = 0
    for attempt in served.run.attempts:
        if attempt.tried:
            attempts += 1
    relay = context.relay
    error_type = context.error_type or (relay.error_type if relay is not None else None)
    # Positional, in column order (each name is its column's): with keywords the call costs ~5x as much.
    teams.record(LedgerRow(
        teams.clock() - duration, context.request_id, context.caller, context.model, target.provider_id, target.key,
        context.status, error_type, usage.input, usage.output, usage.cached, usage.reasoning, cost,
        _milliseconds(duration), _milliseconds(ttft) if ttft else None, attempts, served.fallbacks, context.endpoint))


def _finish_unserved(runtime: Runtime, context: RequestRecord, duration: float) -> None:
    """A request refused, failed or left before an upstream answered: no provider, no usage."""
    metrics.request_finished(context.label, "none", context.status, duration, None, None, context.in_flight)
    teams = runtime.teams
    if teams is not None:
        if context.ticket is not None or context.provider_tickets:
            _settle(teams, context, None, None)
        teams.record(LedgerRow(
            teams.clock() - duration, context.request_id, context.caller, context.model, None, None, context.status,
            context.error_type, 0, 0, 0, 0, None, _milliseconds(duration), None, context.attempts, 0,
            context.endpoint))
    if runtime.settings.server.access_log:
        _access_log(context, "none", duration, None, None, None)


def _settle(teams: Teams, context: RequestRecord, usage: Usage | None, cost: float | None) -> None:
    tokens, spent = (usage.input + usage.output if usage else 0), cost or 0.0
    if context.ticket is not None:
        teams.settle(context.ticket, tokens, spent)
    if context.provider_tickets:
        # Each attempt was reserved on its own provider; the last one admitted is the one that served
        # (if any did): it gets the usage, the others the request they took and nothing more.
        *failed, last = context.provider_tickets
        for ticket in failed:
            teams.settle(ticket, 0, 0.0)
        teams.settle(last, tokens if context.served is not None else 0, spent if context.served is not None else 0.0)


def _milliseconds(seconds: float) -> float:
    """`round(seconds * 1000, 3)`, as the ledger stores durations, at a tenth of its cost: round() to
    digits converts through a decimal string. The nearest whole microsecond is the same number unless
    the product lies within a hair of a half (never, in practice), where round() itself decides."""
    ms = seconds * 1000
    micros = ms * 1000
    if -_EXACT_MICROS < micros < _EXACT_MICROS:
        whole = round(micros)
        if abs(micros - whole) < 0.49:
            return whole / 1000
    return round(ms, 3)


_EXACT_MICROS = float(1 << 45)  # below this a float's error is far under 0.01 us, so the whole above is exact


def _access_log(context: RequestRecord, provider: str, duration: float, ttft: float | None, usage: Usage | None,
                cost: float | None) -> None:
    served = context.served
    record = {
        "request_id": context.request_id,
        "key": context.caller,
        "model": context.model,
        "provider": provider,
        "served_model": served.target.key if served else None,
        "status": context.status,
        "attempts": sum(1 for a in served.attempts if a.tried) if served else context.attempts,
        "fallbacks": served.fallbacks if served else 0,
        "input_tokens": usage.input if usage else None,
        "output_tokens": usage.output if usage else None,
        "cost_usd": cost,
        "duration_ms": round(duration * 1000, 2),
        "ttft_ms": round(ttft * 1000, 2) if ttft is not None else None,
        "stream_error": context.relay.error_type if context.relay else None,
    }
    log.info(orjson.dumps(record).decode())
