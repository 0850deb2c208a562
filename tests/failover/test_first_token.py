"""The first-token limit: a fixed number, or `auto`, learned per target within floor and ceilings."""

from __future__ import annotations

import random
import time

from gateway.config.schema import Timeouts
from gateway.failover.first_token import first_token_limit
from gateway.routing import TTFT_SAMPLES, LatencyStats
from tests.conftest import FAST_POLICY, GatewayFactory, RunningGateway, model_json, provider_json
from tests.failover.test_scenarios import complete_text, models_seen
from tests.fakes.upstream import FakeUpstream, chunk, ok, pause, slow_first_token, stream

AUTO = Timeouts(first_token="auto", first_token_floor=0.5, first_token_ceiling=20, first_token_ceiling_reasoning=200)


def test_a_fixed_number_still_works() -> None:
    assert first_token_limit(Timeouts(first_token=7), reasoning=True, samples=[0.1] * 50, prompt_tokens=0) == 7


def test_auto_defaults_by_kind_until_enough_observations() -> None:
    assert first_token_limit(AUTO, reasoning=False, samples=[0.1] * 9, prompt_tokens=0) == 15
    assert first_token_limit(AUTO, reasoning=True, samples=[], prompt_tokens=0) == 120


def test_auto_learns_from_the_targets_own_first_tokens_within_bounds() -> None:
    samples = [0.4] * 19 + [2.0]  # the 95th percentile is 2.0 s
    assert first_token_limit(AUTO, reasoning=False, samples=samples, prompt_tokens=0) == 6.0
    assert first_token_limit(AUTO, reasoning=False, samples=samples, prompt_tokens=50_000) == 11.0, \
        "a long prompt gets more time"
    assert first_token_limit(AUTO, reasoning=False, samples=[0.01] * 20, prompt_tokens=0) == 0.5, "the floor"
    assert first_token_limit(AUTO, reasoning=False, samples=[30.0] * 20, prompt_tokens=0) == 20, "the ceiling"
    assert first_token_limit(AUTO, reasoning=True, samples=[30.0] * 20, prompt_tokens=0) == 90, \
        "reasoning models have a generous ceiling"


async def auto_gateway(start_gateway: GatewayFactory, up: FakeUpstream, **timeouts: float) -> RunningGateway:
    models = [model_json("m1"), model_json("m2"), model_json("think", reasoning=True)]
    policy = {**FAST_POLICY, "timeouts": {"first_token": "auto", "first_token_floor": 0.2, "idle": 0.3,
                                          "first_byte": 2, "total": 8, **timeouts},
              "models": {"pair": {"targets": ["acme/m1"], "fallbacks": ["acme/m2"]},
                         "thinker": {"targets": ["acme/think"], "fallbacks": ["acme/m2"]}}}
    return await start_gateway(policy, catalogs=[provider_json("acme", up.base_url, models)],
                               environ={"ACME_API_KEY": "sk-acme-first-token-0123"})


async def test_a_slow_first_token_on_a_fast_target_fails_over_well_before_the_ceiling(
    start_gateway: GatewayFactory,
) -> None:
    async with FakeUpstream() as up:
        gw = await auto_gateway(start_gateway, up, first_token_ceiling=6)
        for _ in range(10):
            gw.app.health.latency.observe_first_token("acme/m1", 0.05)  # m1 usually answers at once
        up.script(slow_first_token(4, text="too late"), ok("m2 in time"))
        started = time.monotonic()
        assert (await complete_text(gw, "pair", True))[:2] == (200, "m2 in time")
        assert time.monotonic() - started < 2, "limit learnt from m1's record (~0.2 s), not the 6 s ceiling"
        assert models_seen(up) == ["m1", "m2"]


async def test_a_reasoning_model_is_given_its_ceiling(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        gw = await auto_gateway(start_gateway, up, first_token_ceiling=0.4, first_token_ceiling_reasoning=3)
        up.script(slow_first_token(1, text="thought it through"), slow_first_token(1, text="plain"), ok("m2"))
        assert (await complete_text(gw, "thinker", True))[:2] == (200, "thought it through")
        assert (await complete_text(gw, "pair", True))[:2] == (200, "m2"), "a plain model gets the tight ceiling"
        assert models_seen(up) == ["think", "m1", "m2"]
        assert len(gw.app.health.latency.first_tokens("acme/think")) == 1, "each served stream is observed"


async def test_idle_never_preempts_the_first_token(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        # A role chunk, then a think longer than `idle` but within `first_token`.
        up.script(stream([chunk(role="assistant", content=""), pause(0.8), chunk(content="after thinking"),
                          chunk(finish_reason="stop")]))
        gw = await auto_gateway(start_gateway, up, first_token=3, idle=0.3)
        assert (await complete_text(gw, "acme/m1", True))[:2] == (200, "after thinking")
        assert models_seen(up) == ["m1"]


def test_a_targets_recent_first_tokens_are_the_last_fifty_in_ascending_order() -> None:
    latency = LatencyStats()
    rng = random.Random(7)
    seen: list[float] = []
    for _ in range(180):
        seconds = rng.choice([rng.uniform(0.05, 3.0), 0.5])  # repeats too: the oldest of equal values leaves
        seen.append(seconds)
        latency.observe_first_token("acme/m1", seconds)
        assert list(latency.first_tokens("acme/m1")) == sorted(seen[-TTFT_SAMPLES:])
    assert latency.first_tokens("acme/other") == ()
