"""Rate limits and budgets end to end: a gateway on loopback, a fake upstream with usage, a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import FAST_POLICY, GatewayFactory, RunningGateway, model_json, provider_json, secret
from tests.fakes.upstream import FakeUpstream, chunk, ok, stall, status, stream

KEY = "team-key-0123456789abcdef"
BODY: dict[str, Any] = {"model": "acme/m1", "messages": [{"role": "user", "content": "hi"}]}


async def limited_gateway(start_gateway: GatewayFactory, up: FakeUpstream, limits: dict[str, Any],
                          **config: Any) -> RunningGateway:
    catalog = provider_json("acme", up.base_url, [model_json("m1", output=1000)])
    environ = {"ACME_API_KEY": "sk-acme", "TEAM_KEY": secret(KEY)}
    auth = {"keys": [{"name": "team", "key": "${TEAM_KEY}", "limits": limits}]}
    gw = await start_gateway({**FAST_POLICY, "auth": auth, **config}, catalogs=[catalog], environ=environ)
    gw.client.headers["authorization"] = f"Bearer {KEY}"
    return gw


def ledger(gw: RunningGateway) -> list[dict[str, Any]]:
    path = gw.app.runtime.settings.state.path
    assert path is not None
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM ledger ORDER BY id")]


async def test_rpm_refuses_in_openai_shape_with_headers_and_never_reaches_upstream(
        start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        gw = await limited_gateway(start_gateway, up, {"rpm": 3})
        answers = [await gw.chat(BODY) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["2", "1", "0", "0"]
        assert answers[0].headers["x-ratelimit-limit-requests"] == "3"
        refused = answers[3]
        error = refused.json()["error"]
        assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
        assert "3 requests per minute" in error["message"] and "key `team`" in error["message"]
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["x-ratelimit-reset-requests"].endswith("s")
        assert len(up.received) == 3
        await gw.app.teams.flush()
        rows = ledger(gw)
        assert [r["status"] for r in rows] == [200, 200, 200, 429]
        assert rows[3]["error_type"] == "rate_limit_exceeded" and rows[3]["provider"] is None
        assert {r["key"] for r in rows} == {"team"}


async def test_tpm_reserves_the_worst_case_and_settles_to_the_streamed_usage(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.default = ok("three little words", usage={"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10})
        gw = await limited_gateway(start_gateway, up, {"tpm": 1000})
        body = {**BODY, "max_tokens": 600, "stream": True}
        size = len(orjson.dumps(body))
        first = await gw.chat(body)
        reserved = 600 + size // 4 + 1
        assert first.status_code == 200
        assert int(first.headers["x-ratelimit-remaining-tokens"]) == 1000 - reserved
        await gw.app.teams.flush()  # the settlement replaces the reservation with 10 tokens
        second = await gw.chat(body)
        assert second.status_code == 200, second.text
        remaining = int(second.headers["x-ratelimit-remaining-tokens"])
        assert 1000 - reserved - 10 - 1 <= remaining <= 1000 - reserved - 10 + 1  # drained a little meanwhile
        third = await gw.chat(body)  # the second's reservation still stands: no room for another 600
        assert third.status_code == 429
        assert "1000 tokens per minute" in third.json()["error"]["message"]
        assert len(up.received) == 2


async def test_concurrency_limit_under_parallel_streams(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.default = stream([chunk(role="assistant", content=""), chunk(content="held"), stall()])
        gw = await limited_gateway(start_gateway, up, {"concurrency": 2})
        body = {**BODY, "stream": True}
        async with contextlib_aclosing_streams(gw, body, 2) as opened:
            assert [r.status_code for r in opened] == [200, 200]
            third = await gw.chat(body)
            assert third.status_code == 429
            assert "2 concurrent requests" in third.json()["error"]["message"]
        up.default = ok()
        # The streams' slots come free once the gateway has seen them end and written the release.
        for _ in range(200):
            await gw.app.teams.flush()
            if (await gw.chat(body)).status_code == 200:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the concurrency slots of the closed streams never came free")
        assert len(up.received) == 3


class contextlib_aclosing_streams:
    """Open n streams and keep them open inside the block; close them all on the way out."""

    def __init__(self, gw: RunningGateway, body: dict[str, Any], n: int) -> None:
        self.gw, self.body, self.n = gw, body, n
        self.contexts: list[Any] = []

    async def __aenter__(self) -> list[httpx.Response]:
        responses = []
        for _ in range(self.n):
            context = self.gw.client.stream("POST", "/v1/chat/completions", json=self.body)
            responses.append(await context.__aenter__())
            self.contexts.append(context)
        for response in responses:
            async for _ in response.aiter_raw():
                break  # the first bytes are here: the stream is open and counted
        return responses

    async def __aexit__(self, *exc: object) -> None:
        for context in self.contexts:
            await context.__aexit__(None, None, None)


async def test_budget_overshoot_is_bounded_by_in_flight_reservations_and_rolls_with_the_period(
        start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        # m1 costs $1 / $2 per million tokens in and out: each answer costs 1000 in + 1000 out = $0.003.
        up.default = ok("x", usage={"prompt_tokens": 1000, "completion_tokens": 1000, "total_tokens": 2000})
        up.default.delay = 0.05
        gw = await limited_gateway(start_gateway, up, {"budget_usd": 0.01, "period": "day"})
        clock = [1_800_000_000.0]  # 2027-01-15 08:00 UTC
        gw.app.teams.clock = lambda: clock[0]
        body = {**BODY, "max_tokens": 1000}
        size = len(orjson.dumps(body))
        worst = ((size // 4 + 1) * 1.0 + 1000 * 2.0) / 1e6
        statuses: list[int] = []
        for _ in range(4):
            answers = await asyncio.gather(*(gw.chat(body) for _ in range(5)))
            statuses += [a.status_code for a in answers]
            await gw.app.teams.flush()
        served = statuses.count(200)
        spent = served * 0.003
        assert spent >= 0.01, statuses  # the budget was reached
        # Admitted only while spent + reserved < budget: at most one batch of in-flight worst cases beyond it.
        assert spent <= 0.01 + 5 * worst
        refused = await gw.chat(body)
        error = refused.json()["error"]
        assert refused.status_code == 429 and error["code"] == "insufficient_quota"
        assert "day 2027-01-15" in error["message"] and "2027-01-16 00:00 UTC" in error["message"]
        assert int(refused.headers["retry-after"]) == 16 * 3600
        assert len(up.received) == served
        clock[0] += 1  # the budget gauges are published at most once a second
        await gw.app.teams.flush()
        gauges = (await gw.client.get("/metrics")).text
        used = next(float(line.rsplit(" ", 1)[1]) for line in gauges.splitlines()
                    if line.startswith('gateway_key_budget_used_ratio{key="team"}'))
        assert used == pytest.approx(spent / 0.01)
        assert 'gateway_key_budget_soft_ratio{key="team"} 0.8' in gauges
        clock[0] += 16 * 3600 - 1  # midnight UTC: a new day, a new budget
        assert (await gw.chat(body)).status_code == 200
        metrics = (await gw.client.get("/metrics")).text
        assert 'gateway_key_refused_total{key="team",limit="budget",scope="key"}' in metrics
        assert 'gateway_key_spend_usd_total{key="team"}' in metrics


async def test_model_and_provider_limits_apply_to_every_key(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        gw = await limited_gateway(start_gateway, up, {}, models={"fast": {"targets": ["acme/m1"],
                                                                           "limits": {"rpm": 1}}},
                                   providers={"acme": {"limits": {"rpm": 2}}})
        assert (await gw.chat({**BODY, "model": "fast"})).status_code == 200
        refused = await gw.chat({**BODY, "model": "fast"})
        assert refused.status_code == 429 and "model `fast`" in refused.json()["error"]["message"]
        assert (await gw.chat(BODY)).status_code == 200
        refused = await gw.chat(BODY)
        assert refused.status_code == 429 and "provider `acme`" in refused.json()["error"]["message"]
        assert len(up.received) == 2


@pytest.mark.parametrize("limits", [{"rpm": 0}, {"budget_usd": -1}, {"period": "year"}])
async def test_bad_limits_in_config_are_refused(start_gateway: GatewayFactory, limits: dict[str, Any]) -> None:
    from gateway.errors import ConfigError

    async with FakeUpstream() as up:
        with pytest.raises(ConfigError, match=r"auth\.keys\.0\.limits\."):
            await limited_gateway(start_gateway, up, limits)


async def test_provider_limits_count_each_attempt_on_the_provider_it_went_to(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as acme, FakeUpstream() as beta:
        acme.default = status(500, {"error": {"message": "down", "type": "server_error", "code": None}})
        catalogs = [provider_json("acme", acme.base_url, [model_json("m1")]),
                    provider_json("beta", beta.base_url, [model_json("m1")])]
        environ = {"ACME_API_KEY": "sk-acme", "BETA_API_KEY": "sk-beta", "TEAM_KEY": secret(KEY)}
        gw = await start_gateway({**FAST_POLICY, "retry": {"attempts": 1},
                                  "auth": {"keys": [{"name": "team", "key": "${TEAM_KEY}"}]},
                                  "models": {"smart": {"targets": ["acme/m1", "beta/m1"]}},
                                  "providers": {"acme": {"limits": {"rpm": 3}}, "beta": {"limits": {"rpm": 1}}}},
                                 catalogs=catalogs, environ=environ)
        gw.client.headers["authorization"] = f"Bearer {KEY}"
        body = {**BODY, "model": "smart"}
        first = await gw.chat(body)  # acme fails, beta serves: one request on each provider
        assert first.status_code == 200 and first.headers["x-gateway-provider"] == "beta"
        assert first.headers["x-ratelimit-limit-requests"] == "1"  # the serving provider's limit
        second = await gw.chat(body)  # acme fails again; beta has had its one request this minute
        assert second.status_code == 502
        assert "beta/m1: skipped: Rate limit of provider `beta` reached" in second.json()["error"]["message"]
        assert (len(acme.received), len(beta.received)) == (2, 1)

        acme.default = ok("from acme")
        assert (await gw.chat(body)).headers["x-gateway-provider"] == "acme"  # its third request this minute
        refused = await gw.chat(body)  # both providers full: the first refusal, a 429, nothing sent upstream
        assert refused.status_code == 429 and "provider `acme`" in refused.json()["error"]["message"]
        assert int(refused.headers["retry-after"]) >= 1
        assert (len(acme.received), len(beta.received)) == (3, 1)  # a refused attempt never reaches its upstream
