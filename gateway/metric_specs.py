"""Every metric the gateway exports, declared once: name, type, help, labels, buckets, and the
OpenTelemetry GenAI name it corresponds to. gateway/metrics.py records values against these;
the README's metrics table and the deploy checks read METRICS_DOC.
"""

from __future__ import annotations

from dataclasses import dataclass

# The closed set of `error_type` / attempt `outcome` values (besides "success").
ERROR_TYPES = ("rate_limited", "timeout", "upstream_5xx", "connect", "stream_cut", "auth", "bad_request",
               "context_length", "content_policy", "not_found", "malformed", "circuit_open", "no_credentials",
               "cancelled", "quota")


@dataclass(frozen=True, eq=False)
class Spec:
    name: str
    kind: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    multiprocess_mode: str = "all"  # how worker processes combine (gauges)
    unit: str = ""
    otel: str = ""  # the OpenTelemetry GenAI semantic convention it corresponds to, if any


_LATENCY = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
_TTFT = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 60)
_OVERHEAD = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)

REQUESTS = Spec("gateway_requests_total", "counter",
                 "Client requests by model asked, provider that served, HTTP status.", ("model", "provider", "status"),
                 unit="requests", otel="gen_ai.client.operation.duration (its count)")
DURATION = Spec("gateway_request_duration_seconds", "histogram",
                 "Whole request duration, retries and fallbacks included.", ("model", "provider"), _LATENCY,
                 unit="seconds", otel="gen_ai.server.request.duration / gen_ai.client.operation.duration")
TTFT = Spec("gateway_time_to_first_token_seconds", "histogram",
             "Streams: request start to first content sent to the client.", ("model", "provider"), _TTFT,
             unit="seconds", otel="gen_ai.server.time_to_first_token")
OVERHEAD = Spec("gateway_overhead_seconds", "histogram",
                 "Time the gateway itself adds: the request minus upstream and back-off time.", ("provider",),
                 _OVERHEAD, unit="seconds")
ATTEMPTS = Spec("gateway_upstream_attempts_total", "counter",
                 "Upstream attempts by outcome (success or an error type).", ("provider", "upstream_model", "outcome"),
                 unit="attempts")
RETRIES = Spec("gateway_retries_total", "counter", "Retries of the same target after a retryable failure.",
                ("provider", "upstream_model"), unit="retries")
FALLBACKS = Spec("gateway_fallbacks_total", "counter", "Moves from one target to the next within a request.",
                  ("model", "from_target", "to_target"), unit="fallbacks")
TOKENS = Spec("gateway_tokens_total", "counter", "Tokens reported by the upstream that served, by type.",
               ("model", "provider", "upstream_model", "type"), unit="tokens",
               otel="gen_ai.client.token.usage (gen_ai.token.type = input / output)")
COST = Spec("gateway_cost_usd_total", "counter", "Cost in USD at catalog prices, for the attempt that served.",
             ("model", "provider", "upstream_model"), unit="US dollars")
IN_FLIGHT = Spec("gateway_in_flight_requests", "gauge", "Requests being served now.", ("model",),
                  multiprocess_mode="livesum", unit="requests")
CHUNKS = Spec("gateway_stream_chunks_total", "counter", "SSE chunks relayed to clients.", ("provider",), unit="chunks")
DROPPED = Spec("gateway_stream_events_dropped_total", "counter",
                "Unreadable upstream stream events after content (the stream was broken off there).", ("provider",),
                unit="events")
CIRCUIT = Spec("gateway_circuit_state", "gauge", "Circuit per target: 0 closed, 1 half-open, 2 open.",
                ("provider", "upstream_model"), multiprocess_mode="livemostrecent",
                unit="0 closed, 1 half-open, 2 open")
ALIAS_TARGETS = Spec("gateway_alias_targets", "gauge", "Targets (and fallbacks) of each alias.", ("model",),
                      multiprocess_mode="livemax", unit="targets")
ALIAS_OPEN = Spec("gateway_alias_targets_open", "gauge", "Targets of each alias whose circuit is open.", ("model",),
                   multiprocess_mode="livemax", unit="targets")
RELOADS = Spec("gateway_config_reloads_total", "counter", "Config reloads by result.", ("result",), unit="reloads")
RELOAD_OK = Spec("gateway_config_last_reload_success", "gauge", "1 if the last config load succeeded.",
                  multiprocess_mode="livemin", unit="1 or 0")
RELOAD_TIME = Spec("gateway_config_last_reload_timestamp_seconds", "gauge", "When the config was last loaded.",
                    multiprocess_mode="livemax", unit="Unix seconds")
REFUSED = Spec("gateway_connections_refused_total", "counter",
                "Client connections the gateway closed for breaking a bound: header_too_large, header_timeout, "
                "body_timeout, too_many_connections.", ("reason",), unit="connections")
BUILD = Spec("gateway_build_info", "gauge", "Gateway version and Python; always 1.", ("version", "python"),
              multiprocess_mode="livemax", unit="always 1")
KEY_SPEND = Spec("gateway_key_spend_usd_total", "counter", "Spend in USD at catalog prices, per gateway key name.",
                  ("key",), unit="US dollars")
KEY_REFUSED = Spec("gateway_key_refused_total", "counter",
                    "Requests refused by a rate limit or budget, per key name, whose limit (key, model, provider) "
                    "and which kind (requests, tokens, concurrency, budget).", ("key", "scope", "limit"),
                    unit="requests")
KEY_BUDGET_USED = Spec("gateway_key_budget_used_ratio", "gauge",
                        "Share of a key's budget spent in its current period (settled requests).", ("key",),
                        multiprocess_mode="livemostrecent", unit="ratio")
KEY_BUDGET_SOFT = Spec("gateway_key_budget_soft_ratio", "gauge",
                        "A key's soft budget threshold (limits.soft_ratio, default 0.8), for alerting.", ("key",),
                        multiprocess_mode="livemax", unit="ratio")
STATE_UP = Spec("gateway_state_backend_up", "gauge",
                 "1 while the shared state backend answers, 0 while it is down and the gateway runs degraded "
                 "(limits on per-replica shares, or refused with `state.on_failure: closed`).", ("backend",),
                 multiprocess_mode="livemin", unit="1 or 0")
LEDGER_QUEUED = Spec("gateway_ledger_rows_queued", "gauge",
                      "Usage ledger rows in memory waiting to be written to PostgreSQL (state.ledger).",
                      multiprocess_mode="livesum", unit="rows")
LEDGER_DROPPED = Spec("gateway_ledger_rows_dropped_total", "counter",
                       "Usage ledger rows dropped because the queue was full (state.ledger_queue_rows) while "
                       "PostgreSQL was unreachable.", unit="rows")
SPECS = (REQUESTS, DURATION, TTFT, OVERHEAD, ATTEMPTS, RETRIES, FALLBACKS, TOKENS, COST, IN_FLIGHT, CHUNKS, DROPPED,
         CIRCUIT, ALIAS_TARGETS, ALIAS_OPEN, RELOADS, RELOAD_OK, RELOAD_TIME, REFUSED, BUILD, KEY_SPEND, KEY_REFUSED,
         KEY_BUDGET_USED, KEY_BUDGET_SOFT, STATE_UP, LEDGER_QUEUED, LEDGER_DROPPED)

# (metric name, type, labels, unit, OpenTelemetry GenAI equivalent): the README's metrics table.
METRICS_DOC: list[tuple[str, str, str, str, str]] = [
    (s.name, s.kind, ", ".join(s.labels), s.unit, s.otel) for s in SPECS
]
