"""The only module that imports prometheus_client: values recorded against the metrics declared in
gateway/metric_specs.py, with bounded labels.

Call sites pass plain values (model id, provider id, numbers). In one process (the default) the hot
path only adds to plain dicts, and a collector turns them into Prometheus families at scrape time:
prometheus-client's own per-call checks and locks cost about a fifth of the gateway's own work per
request. With several workers, prometheus-client's multiprocess mode does the counting instead,
since only its files add up across processes: the server sets PROMETHEUS_MULTIPROC_DIR
(setup_multiprocess) *before* any worker imports this module, each worker calls worker_exit() when
it stops, and render() aggregates every worker's files.
"""

from __future__ import annotations

import os
import platform
import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from gateway.metric_specs import (
    ALIAS_OPEN,
    ALIAS_TARGETS,
    ATTEMPTS,
    BUILD,
    CHUNKS,
    CIRCUIT,
    COST,
    DROPPED,
    DURATION,
    FALLBACKS,
    IN_FLIGHT,
    KEY_BUDGET_SOFT,
    KEY_BUDGET_USED,
    KEY_REFUSED,
    KEY_SPEND,
    LEDGER_DROPPED,
    LEDGER_QUEUED,
    OVERHEAD,
    REFUSED,
    RELOAD_OK,
    RELOAD_TIME,
    RELOADS,
    REQUESTS,
    RETRIES,
    SPECS,
    STATE_UP,
    TOKENS,
    TTFT,
    Spec,
)

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Labels come only from ids the gateway knows, so this is a second line of defence: past this many
# series in one metric, new label sets are counted under OTHER instead of growing the scrape.
MAX_SERIES = 5000
OTHER = "other"


def _capped(series: int, labels: tuple[str, ...]) -> tuple[str, ...]:
    return labels if series < MAX_SERIES else (OTHER,) * len(labels)


class _Backend:
    """Where values go: the per-request calls below in their general form (each series added to by
    name), for the multiprocess backend; one process adds to series it holds (`_Local`)."""

    def inc(self, spec: Spec, labels: tuple[str, ...], amount: float = 1.0) -> None:
        raise NotImplementedError

    def observe(self, spec: Spec, labels: tuple[str, ...], value: float) -> None:
        raise NotImplementedError

    def request_finished(self, model: str, provider: str, status: int, duration: float, overhead: float | None,
                         ttft: float | None, in_flight: bool) -> None:
        """`in_flight`: the request was counted in flight (it got that far), and leaves now."""
        if in_flight:
            self.inc(IN_FLIGHT, (model,), -1)
        self.inc(REQUESTS, (model, provider, str(status)))
        self.observe(DURATION, (model, provider), duration)
        if overhead is not None:
            self.observe(OVERHEAD, (provider,), overhead)
        if ttft is not None:
            self.observe(TTFT, (model, provider), ttft)

    def usage(self, model: str, provider: str, upstream_model: str, key: str, input: int, output: int, cached: int,
              reasoning: int, cost_usd: float | None) -> None:
        """An answered request's tokens and cost, and the cost to the key's spend."""
        # Straight-line rather than a loop over the four kinds: this runs for every answered request.
        if input:
            self.inc(TOKENS, (model, provider, upstream_model, "input"), input)
        if output:
            self.inc(TOKENS, (model, provider, upstream_model, "output"), output)
        if cached:
            self.inc(TOKENS, (model, provider, upstream_model, "cached"), cached)
        if reasoning:
            self.inc(TOKENS, (model, provider, upstream_model, "reasoning"), reasoning)
        if cost_usd:
            self.inc(COST, (model, provider, upstream_model), cost_usd)
            self.inc(KEY_SPEND, (key,), cost_usd)

    def in_flight(self, model: str, delta: int) -> None:
        self.inc(IN_FLIGHT, (model,), delta)

    def attempt(self, provider: str, upstream_model: str, outcome: str) -> None:
        self.inc(ATTEMPTS, (provider, upstream_model, outcome))


# The most series of one kind of request kept at hand (`_Local._finished`, `_Local._used`); beyond,
# a request adds to its series by name (labels are known ids: this is not reached in practice).
_HELD = 4096
_FinishedKey = tuple[str, str, int, bool, bool, bool]
# Requests count, durations, then overheads, times to first token and the in-flight gauge (or None).
_Finished = tuple[list[float], list[float], list[float] | None, list[float] | None, list[float] | None]


class _Local(_Backend, Collector):
    """One process: values in plain containers, turned into metric families only when scraped.

    A counter's or gauge's value is a one-item list (a cell), so that the series a finished request
    adds to can be held per label set and added to in place: ten series found by name cost a
    fifth of the gateway's own work per request."""

    def __init__(self) -> None:
        self.values: dict[Spec, dict[tuple[str, ...], list[float]]] = {
            s: {} for s in SPECS if s.kind != "histogram"}
        # Per label set: one count per bucket, then the +Inf overflow, then the sum.
        self.histograms: dict[Spec, dict[tuple[str, ...], list[float]]] = {
            s: {} for s in SPECS if s.kind == "histogram"}
        # By (model, provider, status, has overhead, has ttft, was in flight): the series it adds to.
        self._finished: dict[_FinishedKey, _Finished] = {}
        # By (model, provider, upstream model, key): input tokens, output tokens, cost, the key's spend.
        self._used: dict[tuple[str, str, str, str], tuple[list[float], list[float], list[float], list[float]]] = {}
        self._in_flight = self.values[IN_FLIGHT]
        self._attempts = self.values[ATTEMPTS]

    def cell(self, spec: Spec, labels: tuple[str, ...]) -> list[float]:
        values = self.values[spec]
        cell = values.get(labels)
        if cell is None:
            labels = _capped(len(values), labels)
            cell = values.get(labels) or values.setdefault(labels, [0.0])
        return cell

    def series(self, spec: Spec, labels: tuple[str, ...]) -> list[float]:
        series = self.histograms[spec]
        counts = series.get(labels)
        if counts is None:
            labels = _capped(len(series), labels)
            counts = series.get(labels) or series.setdefault(labels, [0.0] * (len(spec.buckets) + 2))
        return counts

    def inc(self, spec: Spec, labels: tuple[str, ...], amount: float = 1.0) -> None:
        try:
            self.values[spec][labels][0] += amount  # a series seen before: the per-request case, kept short
        except KeyError:
            self.cell(spec, labels)[0] += amount

    def set(self, spec: Spec, labels: tuple[str, ...], value: float) -> None:
        self.cell(spec, labels)[0] = value

    def remove(self, spec: Spec, labels: tuple[str, ...]) -> None:
        # Only gauges are removed, and no request holds a gauge's cell (in-flight is never removed).
        self.values[spec].pop(labels, None)

    def observe(self, spec: Spec, labels: tuple[str, ...], value: float) -> None:
        counts = self.series(spec, labels)
        counts[bisect_left(spec.buckets, value)] += 1
        counts[-1] += value

    def request_finished(self, model: str, provider: str, status: int, duration: float, overhead: float | None,
                         ttft: float | None, in_flight: bool) -> None:
        key = (model, provider, status, overhead is not None, ttft is not None, in_flight)
        held = self._finished.get(key)
        if held is None:
            held = self._finished_series(key)
        requests, durations, overheads, ttfts, flying = held
        requests[0] += 1
        durations[bisect_left(DURATION.buckets, duration)] += 1
        durations[-1] += duration
        if overheads is not None and overhead is not None:
            overheads[bisect_left(OVERHEAD.buckets, overhead)] += 1
            overheads[-1] += overhead
        if ttfts is not None and ttft is not None:
            ttfts[bisect_left(TTFT.buckets, ttft)] += 1
            ttfts[-1] += ttft
        if flying is not None:
            flying[0] -= 1

    def _finished_series(self, key: _FinishedKey) -> _Finished:
        """The series a finished request of this kind adds to; only those it adds to are made (a series,
        once made, is exported even at zero)."""
        model, provider, status, has_overhead, has_ttft, in_flight = key
        held = (self.cell(REQUESTS, (model, provider, str(status))), self.series(DURATION, (model, provider)),
                self.series(OVERHEAD, (provider,)) if has_overhead else None,
                self.series(TTFT, (model, provider)) if has_ttft else None,
                self.cell(IN_FLIGHT, (model,)) if in_flight else None)
        if len(self._finished) < _HELD:
            self._finished[key] = held
        return held

    def usage(self, model: str, provider: str, upstream_model: str, key: str, input: int, output: int, cached: int,
              reasoning: int, cost_usd: float | None) -> None:
        if not (input and output and cost_usd) or cached or reasoning:
            super().usage(model, provider, upstream_model, key, input, output, cached, reasoning, cost_usd)
            return
        # The usual answer: input and output tokens and a price, the four series held together.
        used = (model, provider, upstream_model, key)
        held = self._used.get(used)
        if held is None:
            series = (model, provider, upstream_model)
            held = (self.cell(TOKENS, (*series, "input")), self.cell(TOKENS, (*series, "output")),
                    self.cell(COST, series), self.cell(KEY_SPEND, (key,)))
            if len(self._used) < _HELD:
                self._used[used] = held
        held[0][0] += input
        held[1][0] += output
        held[2][0] += cost_usd
        held[3][0] += cost_usd

    def in_flight(self, model: str, delta: int) -> None:
        try:
            self._in_flight[(model,)][0] += delta  # the model's series, after its first request
        except KeyError:
            self.cell(IN_FLIGHT, (model,))[0] += delta

    def attempt(self, provider: str, upstream_model: str, outcome: str) -> None:
        try:
            self._attempts[(provider, upstream_model, outcome)][0] += 1
        except KeyError:
            self.cell(ATTEMPTS, (provider, upstream_model, outcome))[0] += 1

    def collect(self) -> Iterator[Metric]:
        for spec, values in self.values.items():
            family_type = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
            family = family_type(spec.name, spec.help, labels=spec.labels)
            for labels, cell in values.items():
                family.add_metric(labels, cell[0])
            yield family
        for spec, series in self.histograms.items():
            histogram = HistogramMetricFamily(spec.name, spec.help, labels=spec.labels)
            bounds = [*(f"{b:g}" for b in spec.buckets), "+Inf"]
            for labels, counts in series.items():
                cumulative, running = [], 0.0
                for bound, count in zip(bounds, counts[:-1], strict=True):
                    running += count
                    cumulative.append((bound, running))
                histogram.add_metric(labels, cumulative, counts[-1])
            yield histogram


class _Shared(_Backend):
    """Several processes: prometheus-client metrics over its multiprocess files (children cached)."""

    def __init__(self) -> None:
        self._metrics: dict[Spec, Any] = {}
        for spec in SPECS:
            if spec.kind == "counter":
                self._metrics[spec] = Counter(spec.name, spec.help, spec.labels)
            elif spec.kind == "histogram":
                self._metrics[spec] = Histogram(spec.name, spec.help, spec.labels, buckets=spec.buckets)
            else:
                self._metrics[spec] = Gauge(spec.name, spec.help, spec.labels,
                                            multiprocess_mode=spec.multiprocess_mode)  # type: ignore[arg-type]
        self._children: dict[tuple[Spec, tuple[str, ...]], Any] = {}
        self._series: dict[Spec, int] = dict.fromkeys(SPECS, 0)

    def _child(self, spec: Spec, labels: tuple[str, ...]) -> Any:
        child = self._children.get((spec, labels))
        if child is None:
            capped = _capped(self._series[spec], labels)
            child = self._children.get((spec, capped))
            if child is None:
                metric = self._metrics[spec]
                child = self._children[(spec, capped)] = metric.labels(*capped) if capped else metric
                self._series[spec] += 1
        return child

    def inc(self, spec: Spec, labels: tuple[str, ...], amount: float = 1.0) -> None:
        self._child(spec, labels).inc(amount)

    def set(self, spec: Spec, labels: tuple[str, ...], value: float) -> None:
        self._child(spec, labels).set(value)

    def observe(self, spec: Spec, labels: tuple[str, ...], value: float) -> None:
        self._child(spec, labels).observe(value)

    def remove(self, spec: Spec, labels: tuple[str, ...]) -> None:
        # Drops this process's series; a value already written to its multiprocess file stays until it
        # exits (prometheus-client keeps no way to delete one).
        if self._children.pop((spec, labels), None) is not None:
            self._metrics[spec].remove(*labels)


_SHARED = bool(os.environ.get(_MULTIPROC_ENV))
_backend: _Local | _Shared = _Shared() if _SHARED else _Local()
if isinstance(_backend, _Local):
    REGISTRY.register(_backend)
_inc, _set, _observe = _backend.inc, _backend.set, _backend.observe
# A finished request: its count, duration and overhead (and a stream's time to first token), and it
# leaves the in-flight gauge. Bound methods: no module-level function frame per call on the hot path.
request_finished = _backend.request_finished
# An answered request's tokens and cost, from the upstream that served it, and the key's spend.
usage = _backend.usage
in_flight = _backend.in_flight
attempt = _backend.attempt


def retry(provider: str, upstream_model: str) -> None:
    _inc(RETRIES, (provider, upstream_model))


def fallback(model: str, from_target: str, to_target: str) -> None:
    _inc(FALLBACKS, (model, from_target, to_target))


def key_refused(key: str, scope: str, limit: str) -> None:
    _inc(KEY_REFUSED, (key, scope, limit))


def key_budget(key: str, used_ratio: float, soft_ratio: float) -> None:
    _set(KEY_BUDGET_USED, (key,), used_ratio)
    _set(KEY_BUDGET_SOFT, (key,), soft_ratio)


def state_backend_up(backend: str, up: bool) -> None:
    """`backend` is one of a closed set (redis, postgresql): the series stay bounded."""
    _set(STATE_UP, (backend,), 1 if up else 0)


def ledger_queued(rows: int) -> None:
    _set(LEDGER_QUEUED, (), rows)


def ledger_dropped(rows: int) -> None:
    _inc(LEDGER_DROPPED, (), rows)


def stream_event_dropped(provider: str) -> None:
    _inc(DROPPED, (provider,))


def stream_chunks(provider: str, count: int) -> None:
    if count:
        _inc(CHUNKS, (provider,), count)


def circuit_state(provider: str, upstream_model: str, state: int) -> None:
    _set(CIRCUIT, (provider, upstream_model), state)


def alias_targets(model: str, total: int, open_: int) -> None:
    _set(ALIAS_TARGETS, (model,), total)
    _set(ALIAS_OPEN, (model,), open_)


def forget_alias(model: str) -> None:
    """An alias removed by a reload: its gauges go with it."""
    _backend.remove(ALIAS_TARGETS, (model,))
    _backend.remove(ALIAS_OPEN, (model,))


def forget_target(provider: str, upstream_model: str) -> None:
    """A target no route uses any more after a reload: its circuit gauge goes with it."""
    _backend.remove(CIRCUIT, (provider, upstream_model))


def config_loaded(success: bool, *, reload: bool) -> None:
    if reload:
        _inc(RELOADS, ("success" if success else "failure",))
    _set(RELOAD_OK, (), 1 if success else 0)
    if success:
        _set(RELOAD_TIME, (), time.time())


def connection_refused(reason: str) -> None:
    _inc(REFUSED, (reason,))


def set_build_info(version: str) -> None:
    _set(BUILD, (version, platform.python_version()), 1)


def setup_multiprocess(directory: str) -> None:
    """Before workers start: where every process writes its values (must be empty)."""
    os.environ[_MULTIPROC_ENV] = directory


def worker_exit() -> None:
    """A worker stops: its live gauges (in-flight, circuit) no longer count."""
    if _SHARED:
        multiprocess.mark_process_dead(os.getpid())


def process_dead(pid: int) -> None:
    """The supervisor saw worker `pid` die without exiting cleanly (killed): drop its live gauges, or a
    killed worker's last values (a refused reload's 0, say) would count for ever."""
    if os.environ.get(_MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)


def render(accept: str | None) -> tuple[bytes, str]:
    if _SHARED:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
