"""Feature rows: what each gateway feature costs, measured in the same run as the plain gateway.

Each feature is a small entry below: the config laid over the plain gateway's config (see
`configs.write_gateway_config`: catalog providers `bench` and `bench-cut`, alias `bench` routed to
`bench/fast`, one key), the endpoint and wire format clients use, and what to measure:

- `plain`: whole answers, closed loop at 32 connections: req/s and CPU per request (and, with
  `latency_at`, p50/p99 latency at that fixed rate against the plain gateway's);
- `stream`: unpaced 50-chunk streams: streams/s, content chunks/s and CPU per stream;
- `resume`: paced streams whose first target is cut mid-stream (`bench-cut/...`, after `CUT_AFTER`
  content chunks): the wait for the next content chunk, against the plain gateway's wait for the
  same chunk of an uncut stream (the difference is the time to resume), and whether every stream
  still completed.

The runner starts one more gateway per feature (pinned like the plain one), checks it answers one
request on the endpoint, and then measures it interleaved with the plain gateway. A feature that is
not on this branch yet (the gateway refuses its config, or the endpoint does not answer 200) is
reported as "not measured" with the gateway's own words, so a row never silently disappears.
To add a row: append a `Feature` here (a test in tests/test_benchmark_smoke.py runs them all).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["plain", "stream", "resume"]
CUT_AFTER = 5  # content chunks the `bench-cut` provider sends before it drops the connection (upstream.py)
Wire = Literal["openai", "anthropic", "responses", "embeddings"]


@dataclass(frozen=True)
class Feature:
    name: str  # the row's label
    kind: Kind
    config: dict[str, Any] = field(default_factory=dict)  # laid over the plain gateway's config
    path: str = "/v1/chat/completions"
    wire: Wire = "openai"
    model: str = "bench"
    services: tuple[Literal["redis"], ...] = ()  # started for it; their URLs in ${BENCH_REDIS_URL}, ...
    # `plain` rows only: also the latency an open-loop load at this rate sees (the plan's length for
    # that rate), against the plain gateway's at the same rate: what the feature adds to a request.
    latency_at: int | None = None
    note: str = ""  # printed under the table when the row is measured


FEATURES: tuple[Feature, ...] = (
    Feature(
        "limits + budgets (embedded store)", "plain",
        # A key with a request-rate limit and a spend budget that the load stays far under, so every
        # request pays for the checks and the accounting but none is refused.
        config={"auth": {"keys": [{"name": "bench", "key": "${BENCH_GATEWAY_KEY}",
                                   "limits": {"rpm": 100_000_000, "tpm": 100_000_000_000,
                                              "budget_usd": 1_000_000, "period": "month"}}]}},
        latency_at=200,
        note="One key with RPM, TPM and a monthly budget, one worker: counters in the process (spend written behind "
             "to the SQLite file with the ledger rows, off the hot path; the plain gateway writes ledger rows too).",
    ),
    Feature(
        "limits + budgets (Redis backend)", "plain",
        # The same key and limits as the embedded row, the counters in a redis-server on loopback.
        config={"state": {"backend": "redis", "redis_url": "${BENCH_REDIS_URL}"},
                "auth": {"keys": [{"name": "bench", "key": "${BENCH_GATEWAY_KEY}",
                                   "limits": {"rpm": 100_000_000, "tpm": 100_000_000_000,
                                              "budget_usd": 1_000_000, "period": "month"}}]}},
        services=("redis",),
        latency_at=200,
        note="Counters in Redis: one Lua script per admission (one round trip over loopback), settlements "
             "batched into one script per flush with the heartbeat; redis-server runs on the load core, so its "
             "own CPU is not in the gateway's CPU per request.",
    ),
    Feature("Anthropic translation (/v1/messages stream)", "stream", path="/v1/messages", wire="anthropic"),
    Feature("Responses translation (/v1/responses stream)", "stream", path="/v1/responses", wire="responses"),
    Feature("Responses translation (/v1/responses whole)", "plain", path="/v1/responses", wire="responses"),
    Feature("embeddings (/v1/embeddings)", "plain", path="/v1/embeddings", wire="embeddings", model="bench/embed"),
    Feature(
        "continuation after a cut", "resume",
        # Circuit breaker off: otherwise the cut target's circuit opens after a few cuts and later
        # streams go straight to the second target, never cut, so there would be nothing to time.
        config={"models": {"bench-resume": {"targets": ["bench-cut/fast", "bench/fast"]}},
                "breaker": {"enabled": False}},
        model="bench-resume",
    ),
    Feature(
        "CORS on (server.cors_origins)", "plain",
        # The load sends no Origin header, as server-side clients do: this prices the middleware's check.
        config={"server": {"cors_origins": ["https://app.example.com"]}},
    ),
    Feature(
        "workers: 2 (both on the gateway's one core)", "plain",
        config={"server": {"workers": 2}},
        note="`workers: 2` runs both workers on the one core the plain gateway has: this prices the "
             "multi-process mode (metrics through files, a supervisor); it cannot show scaling, which "
             "needs a free core per worker, and on this 2-core machine the other core runs the load.",
    ),
)
