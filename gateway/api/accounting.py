"""Counting one chat request when it ends: metrics always, one access-log line when it is on.

The access log carries names and numbers only: the gateway key's *name*, never the key, and no
prompt or answer text.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from gateway import metrics
from gateway.failover.run import Served
from gateway.relay.stream import RelayResult
from gateway.relay.usage import Usage
from gateway.runtime import Runtime

log = logging.getLogger("gateway.access")


class RequestRecord:
    """What is known about one request so far, for metrics and the access log."""

    __slots__ = ("attempts", "caller", "done_at", "in_flight", "label", "model", "relay", "request_id",
                 "responding", "served", "started", "status", "usage")

    def __init__(self, request_id: str, started: float) -> None:
        self.request_id = request_id
        self.started = started
        self.caller = "-"
        self.model = ""
        self.label = "unknown"  # the model id as a metrics label: only ids the gateway knows
        self.status = 0
        self.attempts = 0
        self.in_flight = False
        self.responding = False
        self.served: Served | None = None
        self.relay: RelayResult | None = None
        self.usage: dict[str, Any] | None = None
        self.done_at: float | None = None



def finish(runtime: Runtime, context: RequestRecord) -> None:
    """Count the request: metrics always, the access log when it is on."""
    now = time.monotonic()
    served = context.served
    provider = served.target.provider_id if served else "none"
    duration = now - context.started
    ttft = None
    overhead = None
    if served is not None:
        relay = context.relay
        if relay is not None and relay.first_write_at is not None:
            ttft = relay.first_write_at - context.started
            overhead = max(0.0, ttft - served.upstream_seconds)
        elif context.done_at is not None:
            overhead = max(0.0, context.done_at - context.started - served.upstream_seconds)
    if context.in_flight:
        metrics.in_flight(context.label, -1)
    metrics.request_finished(context.label, provider, context.status, duration, overhead, ttft)
    usage = Usage.from_openai(context.usage) if isinstance(context.usage, dict) else None
    cost = None
    if served is not None and usage is not None:
        target = served.target
        cost = usage.cost(target.model.cost)
        metrics.usage(context.label, provider, target.upstream_model, usage.input, usage.output, usage.cached,
                      usage.reasoning, cost)
    if context.relay is not None and served is not None:
        metrics.stream_chunks(provider, context.relay.chunks)
    if runtime.settings.server.access_log:
        _access_log(context, provider, duration, ttft, usage, cost)


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
