"""Routing: provider/model ids, aliases with fallbacks, weighted and latency ordering, client lists."""

from __future__ import annotations

import random

import pytest

from gateway.catalog.load import parse_document
from gateway.catalog.schema import Catalog
from gateway.config.load import parse_settings
from gateway.errors import BadRequest, ConfigError, ModelNotFound
from gateway.routing import Router
from gateway.upstream.endpoint import build_endpoint
from tests.conftest import model_json, provider_json


def router(models: dict[str, object]) -> Router:
    doc = provider_json("acme", "https://acme.example/v1", [model_json("a"), model_json("b"), model_json("x/y")])
    catalog = Catalog({p.id: p for p in parse_document(doc, "t.json")}, ("t.json",))
    settings = parse_settings({"catalog": ["t.json"], "models": models}, "g.yaml", {})
    endpoints = {p: build_endpoint(v, None, {"ACME_API_KEY": "k"}) for p, v in catalog.providers.items()}
    return Router(catalog, settings, endpoints)


def test_catalog_ids_split_at_the_first_slash() -> None:
    r = router({})
    assert r.resolve("acme/x/y").targets[0].upstream_model == "x/y"
    with pytest.raises(ModelNotFound):
        r.resolve("acme/zzz")


def test_alias_targets_then_fallbacks() -> None:
    r = router({"s": {"targets": ["acme/a"], "fallbacks": ["acme/b"]}})
    assert [t.key for t in r.resolve("s").targets] == ["acme/a", "acme/b"]


def test_unknown_alias_target_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"models\.s\.fallbacks\.0: unknown model `other/b`"):
        router({"s": {"targets": ["acme/a"], "fallbacks": ["other/b"]}})


def test_weighted_order_follows_weights() -> None:
    random.seed(7)
    r = router({"w": {"strategy": "weighted", "targets": [{"model": "acme/a", "weight": 3},
                                                          {"model": "acme/b", "weight": 1}]}})
    firsts = [r.resolve("w").targets[0].key for _ in range(4000)]
    share = firsts.count("acme/a") / len(firsts)
    assert 0.68 < share < 0.82, share


def test_latency_order_prefers_the_faster_target() -> None:
    r = router({"l": {"strategy": "latency", "targets": ["acme/a", "acme/b"]}})
    r.latency.observe("acme/a", 0.9)
    r.latency.observe("acme/b", 0.1)
    assert [t.key for t in r.resolve("l").targets] == ["acme/b", "acme/a"]


def test_client_models_list() -> None:
    r = router({"s": {"targets": ["acme/a"], "fallbacks": ["acme/b"]}})
    assert [t.key for t in r.resolve("acme/b", ["acme/b", "s"]).targets] == ["acme/b", "acme/a"]
    with pytest.raises(BadRequest):
        r.resolve("acme/a", [1, 2])
    with pytest.raises(ModelNotFound):
        r.resolve("acme/a", ["acme/a", "nope/x"])


def test_alias_timeouts_override_provider_and_global() -> None:
    r = router({"s": {"targets": ["acme/a"], "timeouts": {"first_token": 7, "total": 30}, "retry": {"attempts": 1}}})
    target = r.resolve("s").targets[0]
    assert target.timeouts.first_token == 7 and target.timeouts.idle == 60
    assert target.retry.attempts == 1 and r.resolve("s").total == 30


def big_router(count: int) -> Router:
    models = [model_json(f"vendor-{i % 40}/model-{i}-instruct") for i in range(count)] + [model_json("gpt-4o-mini")]
    doc = provider_json("big", "https://big.example/v1", models)
    catalog = Catalog({p.id: p for p in parse_document(doc, "t.json")}, ("t.json",))
    settings = parse_settings({"catalog": ["t.json"], "models": {"smart": {"targets": ["big/gpt-4o-mini"]}}},
                              "g.yaml", {})
    endpoints = {p: build_endpoint(v, None, {"BIG_API_KEY": "k"}) for p, v in catalog.providers.items()}
    return Router(catalog, settings, endpoints)


def test_did_you_mean_finds_typos_of_models_providers_and_aliases() -> None:
    r = big_router(50)
    for asked, meant in (("big/gpt-4o-mnii", "big/gpt-4o-mini"), ("big/gtp-4o-mini", "big/gpt-4o-mini"),
                         ("bgi/gpt-4o-mini", "big/gpt-4o-mini"), ("big/GPT_4o_mini", "big/gpt-4o-mini"),
                         ("smrat", "smart"), ("big/vendor-3/model-3-instrut", "big/vendor-3/model-3-instruct")):
        with pytest.raises(ModelNotFound) as caught:
            r.resolve(asked)
        assert f"Did you mean `{meant}`" in caught.value.message, (asked, caught.value.message)


def test_did_you_mean_does_bounded_work_however_big_the_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    r = big_router(3000)
    compared = 0
    import difflib

    original = difflib.SequenceMatcher.set_seq1

    def counting(self: difflib.SequenceMatcher[str], a: str) -> None:
        nonlocal compared
        compared += 1
        original(self, a)

    monkeypatch.setattr(difflib.SequenceMatcher, "set_seq1", counting)
    for asked in ("big/vendor-7/model-7-instrukt", "big/" + "q" * 250, "big/zzz"):
        compared = 0
        with pytest.raises(ModelNotFound):
            r.resolve(asked)
        assert compared <= 25, f"{compared} comparisons for one unknown id"
