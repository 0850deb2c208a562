"""/metrics after a known set of requests: counts, tokens and cost as the catalog prices imply."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import FAST_POLICY, GatewayFactory, GatewayProcess, model_json, provider_json
from tests.fakes.upstream import FakeUpstream, ok, server_error, status


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_add_up_after_known_traffic(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        gw = await start_gateway(
            {**FAST_POLICY, "models": {"mpair": {"targets": ["macme/m1"], "fallbacks": ["macme/m2"]}}},
            catalogs=[provider_json("macme", up.base_url, [model_json("m1"), model_json("m2")])],
            environ={"MACME_API_KEY": "sk-metrics-0000000000"})
        ask = {"messages": [{"role": "user", "content": "hi"}]}
        up.script(ok("one two three"))
        assert (await gw.chat({"model": "macme/m1", **ask})).status_code == 200
        up.script(server_error(500), ok("four five"))
        assert (await gw.chat({"model": "macme/m1", **ask})).status_code == 200
        up.script(status(401), ok("six"))
        assert (await gw.chat({"model": "mpair", **ask})).status_code == 200
        up.script(ok("a b c d"))
        assert (await gw.chat({"model": "macme/m1", "stream": True, **ask})).status_code == 200
        assert (await gw.chat({"model": "macme/none", **ask})).status_code == 404
        text = (await gw.client.get("/metrics")).text

    found = samples(text)
    assert value(found, "gateway_requests_total", model="macme/m1", provider="macme", status="200") == 3
    assert value(found, "gateway_requests_total", model="mpair", provider="macme", status="200") == 1
    assert value(found, "gateway_requests_total", model="unknown", provider="none", status="404") >= 1
    assert "macme/none" not in text, "an unknown model id must never become a label"
    assert value(found, "gateway_upstream_attempts_total", provider="macme", upstream_model="m1",
                 outcome="success") == 3
    assert value(found, "gateway_upstream_attempts_total", provider="macme", upstream_model="m1",
                 outcome="upstream_5xx") == 1
    assert value(found, "gateway_upstream_attempts_total", provider="macme", upstream_model="m1", outcome="auth") == 1
    assert value(found, "gateway_retries_total", provider="macme", upstream_model="m1") == 1
    assert value(found, "gateway_fallbacks_total", model="mpair", from_target="macme/m1", to_target="macme/m2") == 1
    # The fake reports 5 prompt tokens and one completion token per word; m1 costs $1 in, $2 out per 1M.
    tokens_in = value(found, "gateway_tokens_total", model="macme/m1", provider="macme", upstream_model="m1",
                      type="input")
    tokens_out = value(found, "gateway_tokens_total", model="macme/m1", provider="macme", upstream_model="m1",
                       type="output")
    assert (tokens_in, tokens_out) == (15, 3 + 2 + 4)
    cost = value(found, "gateway_cost_usd_total", model="macme/m1", provider="macme", upstream_model="m1")
    assert cost == pytest.approx((15 * 1.0 + 9 * 2.0) / 1e6)
    assert value(found, "gateway_time_to_first_token_seconds_count", model="macme/m1", provider="macme") == 1
    assert value(found, "gateway_stream_chunks_total", provider="macme") >= 5
    assert value(found, "gateway_in_flight_requests", model="macme/m1") == 0
    assert value(found, "gateway_overhead_seconds_count", provider="macme") == 4
    assert value(found, "gateway_alias_targets", model="mpair") == 2
    assert value(found, "gateway_config_last_reload_success") == 1


def test_two_workers_report_totals_that_add_up() -> None:
    server = GatewayProcess(["--workers", "2"])
    try:
        async def traffic() -> None:
            body = {"model": "echo/echo", "messages": [{"role": "user", "content": "hi"}]}

            async def one() -> None:
                # A new connection each time, so the kernel spreads them over both workers.
                async with httpx.AsyncClient(base_url=server.url) as client:
                    assert (await client.post("/v1/chat/completions", json=body)).status_code == 200

            await asyncio.gather(*(one() for _ in range(200)))

        asyncio.run(traffic())
        for _ in range(4):  # every scrape, whichever worker answers it, sees the sum of both
            found = samples(httpx.get(f"{server.url}/metrics").text)
            assert value(found, "gateway_requests_total", model="echo/echo", provider="echo", status="200") == 200
    finally:
        server.stop()


async def test_a_client_chosen_model_string_never_becomes_a_label(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway({})
    ask = {"messages": [{"role": "user", "content": "hi"}], "models": ["echo/echo"]}
    before = len(samples((await gw.client.get("/metrics")).text))
    for index in range(200):
        response = await gw.chat({**ask, "model": f"junk-{index}", "stream": index % 2 == 0})
        assert response.status_code == 200
    text = (await gw.client.get("/metrics")).text
    assert "junk" not in text
    found = samples(text)
    assert value(found, "gateway_requests_total", model="echo/echo", provider="echo", status="200") >= 200
    assert len(found) - before < 150, f"200 distinct model strings added {len(found) - before} series"


def test_series_per_metric_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway import metrics

    monkeypatch.setattr(metrics, "MAX_SERIES", 50)
    local = metrics._Local()
    for index in range(200):
        local.inc(metrics.REQUESTS, (f"junk-{index}", "echo", "200"))
        local.set(metrics.IN_FLIGHT, (f"junk-{index}",), 1)
        local.observe(metrics.DURATION, (f"junk-{index}", "echo"), 0.5)
    assert len(local.values[metrics.REQUESTS]) == 51 and len(local.values[metrics.IN_FLIGHT]) == 51
    assert len(local.histograms[metrics.DURATION]) == 51
    assert local.values[metrics.REQUESTS][("other", "other", "other")] == [150], "nothing is lost, only pooled"
    assert local.histograms[metrics.DURATION][("other", "other")][-1] == 150 * 0.5


def test_the_series_a_request_holds_add_up_as_the_series_found_by_name() -> None:
    """One process holds the series a finished request adds to; the sums are those of adding to each
    series by name, as the multiprocess backend does (and first uses create the same series)."""
    from gateway import metrics

    held, by_name = metrics._Local(), metrics._Local()
    # model, provider, upstream model, key, status, duration, overhead, ttft, was in flight, then usage
    requests = [("m", "p", "u", "k", 200, 0.3, 0.002, None, True, 12, 30, 0, 0, 7e-05),
                ("m", "p", "u", "k", 200, 1.5, 0.0004, 0.2, True, 12, 0, 0, 0, 2e-05),  # no output: by name
                ("m", "p", "u", "j", 200, 0.3, 0.002, None, True, 5, 9, 3, 1, 1e-05),  # cached, reasoning: by name
                ("m", "q", "v", "k", 200, 0.3, 0.002, None, True, 5, 9, 0, 0, None),  # no price: by name
                ("m", "none", "-", "k", 502, 2.0, None, None, True, 0, 0, 0, 0, None),  # no overhead
                ("m", "p", "u", "k", 429, 0.01, None, None, False, 0, 0, 0, 0, None),  # refused before in flight
                ("n", "p", "u", "-", 401, 0.01, None, None, False, 0, 0, 0, 0, None),  # no in-flight series made
                ("m", "p", "u", "j", 200, 700.0, 0.5, 30.0, True, 1, 1, 0, 0, 1.0)]
    for _ in range(3):
        for model, provider, upstream, key, code, duration, overhead, ttft, flying, *used in requests:
            if flying:
                held.in_flight(model, 1)
                metrics._Backend.in_flight(by_name, model, 1)
            held.request_finished(model, provider, code, duration, overhead, ttft, flying)
            held.usage(model, provider, upstream, key, *used)
            metrics._Backend.request_finished(by_name, model, provider, code, duration, overhead, ttft, flying)
            metrics._Backend.usage(by_name, model, provider, upstream, key, *used)
    assert held._finished and held._used, "the usual requests were added to held series"

    def sums(local: metrics._Local) -> list[tuple[str, str, tuple[tuple[str, str], ...], float]]:
        return sorted((family.name, sample.name, tuple(sorted(sample.labels.items())), sample.value)
                      for family in local.collect() for sample in family.samples)

    assert sums(held) == sums(by_name)
    assert ("n",) not in held.values[metrics.IN_FLIGHT] and held.values[metrics.IN_FLIGHT][("m",)] == [0]
    assert held.values[metrics.KEY_SPEND][("j",)][0] == pytest.approx(3 * (1e-05 + 1.0))
