"""The only module that imports prometheus_client: every metric defined once, with bounded labels.

Call sites pass plain values (model id, provider id, numbers); label children are cached per label
tuple so the hot path does a dict lookup and an increment, no label parsing.

Several worker processes: prometheus-client's multiprocess mode. The server sets
PROMETHEUS_MULTIPROC_DIR (setup_multiprocess) *before* any worker imports this module, because the
client picks its value store at import time; each worker calls worker_exit() when it stops, and
/metrics aggregates every worker's files (render). Gauges declare how workers combine.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Hashable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# The closed set of `error_type` / attempt `outcome` values (besides "success").
ERROR_TYPES = ("rate_limited", "timeout", "upstream_5xx", "connect", "stream_cut", "auth", "bad_request",
               "context_length", "content_policy", "not_found", "malformed", "circuit_open", "no_credentials",
               "cancelled")

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
_TTFT_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 60)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)

REQUESTS = Counter("gateway_requests_total", "Client requests by model asked, provider that served, HTTP status.",
                   ["model", "provider", "status"])
DURATION = Histogram("gateway_request_duration_seconds", "Whole request duration, retries and fallbacks included.",
                     ["model", "provider"], buckets=_LATENCY_BUCKETS)
TTFT = Histogram("gateway_time_to_first_token_seconds", "Streams: request start to first content sent to the client.",
                 ["model", "provider"], buckets=_TTFT_BUCKETS)
OVERHEAD = Histogram("gateway_overhead_seconds", "Time the gateway itself adds: the request minus upstream time.",
                     ["provider"], buckets=_OVERHEAD_BUCKETS)
ATTEMPTS = Counter("gateway_upstream_attempts_total", "Upstream attempts by outcome (success or an error type).",
                   ["provider", "upstream_model", "outcome"])
RETRIES = Counter("gateway_retries_total", "Retries of the same target after a retryable failure.",
                  ["provider", "upstream_model"])
FALLBACKS = Counter("gateway_fallbacks_total", "Moves from one target to the next within a request.",
                    ["model", "from_target", "to_target"])
TOKENS = Counter("gateway_tokens_total", "Tokens reported by the upstream that served, by type.",
                 ["model", "provider", "upstream_model", "type"])
COST = Counter("gateway_cost_usd_total", "Cost in USD at catalog prices, for the attempt that served.",
               ["model", "provider", "upstream_model"])
IN_FLIGHT = Gauge("gateway_in_flight_requests", "Requests being served now.", ["model"],
                  multiprocess_mode="livesum")
CHUNKS = Counter("gateway_stream_chunks_total", "SSE chunks relayed to clients.", ["provider"])
CIRCUIT = Gauge("gateway_circuit_state", "Circuit per target: 0 closed, 1 half-open, 2 open.",
                ["provider", "upstream_model"], multiprocess_mode="livemostrecent")
ALIAS_TARGETS = Gauge("gateway_alias_targets", "Targets (and fallbacks) of each alias.", ["model"],
                      multiprocess_mode="livemax")
ALIAS_OPEN = Gauge("gateway_alias_targets_open", "Targets of each alias whose circuit is open.", ["model"],
                   multiprocess_mode="livemax")
RELOADS = Counter("gateway_config_reloads_total", "Config reloads by result.", ["result"])
RELOAD_OK = Gauge("gateway_config_last_reload_success", "1 if the last config load succeeded.",
                  multiprocess_mode="livemin")
RELOAD_TIME = Gauge("gateway_config_last_reload_timestamp_seconds", "When the config was last loaded.",
                    multiprocess_mode="livemax")
BUILD = Gauge("gateway_build_info", "Gateway version and Python; always 1.", ["version", "python"],
              multiprocess_mode="livemax")

# (metric name, type, labels, unit and meaning, OpenTelemetry GenAI equivalent) for the README.
METRICS_DOC: list[tuple[str, str, str, str, str]] = [
    ("gateway_requests_total", "counter", "model, provider, status", "requests",
     "gen_ai.client.operation.duration (its count)"),
    ("gateway_request_duration_seconds", "histogram", "model, provider", "seconds",
     "gen_ai.server.request.duration / gen_ai.client.operation.duration"),
    ("gateway_time_to_first_token_seconds", "histogram", "model, provider", "seconds",
     "gen_ai.server.time_to_first_token"),
    ("gateway_overhead_seconds", "histogram", "provider", "seconds", ""),
    ("gateway_upstream_attempts_total", "counter", "provider, upstream_model, outcome", "attempts", ""),
    ("gateway_retries_total", "counter", "provider, upstream_model", "retries", ""),
    ("gateway_fallbacks_total", "counter", "model, from_target, to_target", "fallbacks", ""),
    ("gateway_tokens_total", "counter", "model, provider, upstream_model, type", "tokens",
     "gen_ai.client.token.usage (gen_ai.token.type = input / output)"),
    ("gateway_cost_usd_total", "counter", "model, provider, upstream_model", "US dollars", ""),
    ("gateway_in_flight_requests", "gauge", "model", "requests", ""),
    ("gateway_stream_chunks_total", "counter", "provider", "chunks", ""),
    ("gateway_circuit_state", "gauge", "provider, upstream_model", "0 closed, 1 half-open, 2 open", ""),
    ("gateway_alias_targets", "gauge", "model", "targets", ""),
    ("gateway_alias_targets_open", "gauge", "model", "targets", ""),
    ("gateway_config_reloads_total", "counter", "result", "reloads", ""),
    ("gateway_config_last_reload_success", "gauge", "", "1 or 0", ""),
    ("gateway_config_last_reload_timestamp_seconds", "gauge", "", "Unix seconds", ""),
    ("gateway_build_info", "gauge", "version, python", "always 1", ""),
]

_children: dict[Hashable, Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    key = (id(metric), *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def in_flight(model: str, delta: int) -> None:
    _child(IN_FLIGHT, model).inc(delta)


def request_finished(model: str, provider: str, status: int, duration: float, overhead: float | None,
                     ttft: float | None) -> None:
    _child(REQUESTS, model, provider, str(status)).inc()
    _child(DURATION, model, provider).observe(duration)
    if overhead is not None:
        _child(OVERHEAD, provider).observe(overhead)
    if ttft is not None:
        _child(TTFT, model, provider).observe(ttft)


def attempt(provider: str, upstream_model: str, outcome: str) -> None:
    _child(ATTEMPTS, provider, upstream_model, outcome).inc()


def retry(provider: str, upstream_model: str) -> None:
    _child(RETRIES, provider, upstream_model).inc()


def fallback(model: str, from_target: str, to_target: str) -> None:
    _child(FALLBACKS, model, from_target, to_target).inc()


def usage(model: str, provider: str, upstream_model: str, input: int, output: int, cached: int, reasoning: int,
          cost_usd: float | None) -> None:
    for kind, count in (("input", input), ("output", output), ("cached", cached), ("reasoning", reasoning)):
        if count:
            _child(TOKENS, model, provider, upstream_model, kind).inc(count)
    if cost_usd:
        _child(COST, model, provider, upstream_model).inc(cost_usd)


def stream_chunks(provider: str, count: int) -> None:
    if count:
        _child(CHUNKS, provider).inc(count)


def circuit_state(provider: str, upstream_model: str, state: int) -> None:
    _child(CIRCUIT, provider, upstream_model).set(state)


def alias_targets(model: str, total: int, open_: int) -> None:
    _child(ALIAS_TARGETS, model).set(total)
    _child(ALIAS_OPEN, model).set(open_)


def config_loaded(success: bool, *, reload: bool) -> None:
    if reload:
        _child(RELOADS, "success" if success else "failure").inc()
    RELOAD_OK.set(1 if success else 0)
    if success:
        RELOAD_TIME.set(time.time())


def set_build_info(version: str) -> None:
    _child(BUILD, version, platform.python_version()).set(1)


def setup_multiprocess(directory: str) -> None:
    """Before workers start: where every process writes its values (must be empty)."""
    os.environ[_MULTIPROC_ENV] = directory


def worker_exit() -> None:
    """A worker stops: its live gauges (in-flight, circuit) no longer count."""
    if os.environ.get(_MULTIPROC_ENV):
        multiprocess.mark_process_dead(os.getpid())


def render(accept: str | None) -> tuple[bytes, str]:
    if os.environ.get(_MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
