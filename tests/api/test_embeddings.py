"""POST /v1/embeddings: routing, pass-through, retries, and fallback only between comparable vectors."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.conftest import FAST_POLICY, GatewayFactory, RunningGateway, model_json, provider_json
from tests.fakes.upstream import FakeUpstream, embeddings, server_error


def emb(model_id: str) -> dict[str, Any]:
    return model_json(model_id, cost={"input": 0.02, "output": 0.0})


async def two_providers(start_gateway: GatewayFactory, a: FakeUpstream, b: FakeUpstream,
                        **config: Any) -> RunningGateway:
    catalogs = [provider_json("acme", a.base_url, [emb("text-embedding-3-small"), emb("other-embed")]),
                provider_json("router", b.base_url, [emb("openai/text-embedding-3-small"), emb("other-embed")])]
    return await start_gateway({**FAST_POLICY, **config}, catalogs=catalogs,
                               environ={"ACME_API_KEY": "sk-acme-emb-0001", "ROUTER_API_KEY": "sk-router-emb-0002"})


async def test_passed_through_with_only_model_rewritten_and_usage_counted(
    start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeUpstream() as a, FakeUpstream() as b:
        a.default = embeddings()
        gw = await two_providers(start_gateway, a, b, models={"vectors": {"targets": ["acme/text-embedding-3-small"]}})
        body = {"model": "vectors", "input": ["one", "two"], "encoding_format": "float", "dimensions": 2,
                "user": "u-7", "x_unknown": {"kept": True}}
        with caplog.at_level("INFO", logger="gateway.access"):
            response = await gw.client.post("/v1/embeddings", json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert [d["embedding"] for d in answer["data"]] == [[1.0, 1.0], [2.0, 2.0]]
        assert answer["usage"] == {"prompt_tokens": 14, "total_tokens": 14}
        assert response.headers["x-gateway-model"] == "acme/text-embedding-3-small"
        seen = a.received[0]
        assert seen.path == "/v1/embeddings"
        assert seen.json == {**body, "model": "text-embedding-3-small"}
        assert seen.headers["authorization"] == "Bearer sk-acme-emb-0001"
    record = json.loads([r.getMessage() for r in caplog.records if r.name == "gateway.access"][-1])
    assert record["input_tokens"] == 14 and record["output_tokens"] == 0
    assert record["cost_usd"] == pytest.approx(14 * 0.02 / 1e6)


async def test_retries_then_falls_back_to_the_same_model_elsewhere(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as a, FakeUpstream() as b:
        a.default = server_error(503)
        b.default = embeddings()
        gw = await two_providers(start_gateway, a, b, models={"vectors": {
            "targets": ["acme/text-embedding-3-small"], "fallbacks": ["router/openai/text-embedding-3-small"]}})
        response = await gw.client.post("/v1/embeddings", json={"model": "vectors", "input": "x"})
        assert response.status_code == 200, response.text
        assert len(a.received) == FAST_POLICY["retry"]["attempts"]
        assert b.received[0].json["model"] == "openai/text-embedding-3-small"
        assert response.headers["x-gateway-fallbacks"] == "1"


async def test_fallback_refuses_a_different_embedding_model(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as a, FakeUpstream() as b:
        a.default = server_error(503)
        b.default = embeddings()
        gw = await two_providers(start_gateway, a, b, models={"vectors": {
            "targets": ["acme/text-embedding-3-small"], "fallbacks": ["router/other-embed"]}})
        response = await gw.client.post("/v1/embeddings", json={"model": "vectors", "input": "x"})
        assert response.status_code == 502
        message = response.json()["error"]["message"]
        assert "router/other-embed: skipped: a different embedding model than acme/text-embedding-3-small" in message
        assert "compatible_embeddings" in message
        assert b.received == [], "an incompatible target must never be asked"
        # The client's own `models` list is held to the same rule.
        listed = await gw.client.post("/v1/embeddings", json={
            "model": "acme/text-embedding-3-small", "models": ["acme/text-embedding-3-small", "router/other-embed"],
            "input": "x"})
        assert listed.status_code == 502 and b.received == []


async def test_an_alias_may_declare_its_models_compatible(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as a, FakeUpstream() as b:
        a.default = server_error(503)
        b.default = embeddings()
        gw = await two_providers(start_gateway, a, b, models={"vectors": {
            "targets": ["acme/text-embedding-3-small"], "fallbacks": ["router/other-embed"],
            "compatible_embeddings": True}})
        response = await gw.client.post("/v1/embeddings", json={"model": "vectors", "input": "x"})
        assert response.status_code == 200 and response.headers["x-gateway-model"] == "router/other-embed"


async def test_bad_embedding_requests_are_400s(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway({})
    cases = [({"model": "echo/echo-embed"}, "input"), ({"model": "echo/echo-embed", "input": []}, "input"),
             ({"model": "echo/echo-embed", "input": "x", "encoding_format": "hex"}, "encoding_format"),
             ({"model": "echo/echo-embed", "input": "x", "dimensions": 0}, "dimensions"),
             ({"input": "x"}, "model")]
    for body, param in cases:
        response = await gw.client.post("/v1/embeddings", json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["param"] == param
    assert (await gw.client.get("/v1/embeddings")).status_code == 405
    missing = await gw.client.post("/v1/embeddings", json={"model": "nope/nothing", "input": "x"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


async def test_openai_sdk_embeddings_float_and_base64(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway({})
    client = openai.AsyncOpenAI(base_url=f"{gw.base_url}/v1", api_key="unused", max_retries=0)
    # The SDK asks for base64 unless told otherwise, and decodes it back into floats.
    packed = await client.embeddings.create(model="echo/echo-embed", input=["alpha", "beta"], dimensions=4)
    plain = await client.embeddings.create(model="echo/echo-embed", input=["alpha", "beta"], dimensions=4,
                                           encoding_format="float")
    assert [len(d.embedding) for d in packed.data] == [4, 4]
    assert packed.data[0].embedding == pytest.approx(plain.data[0].embedding, abs=1e-6)
    assert packed.data[0].embedding != packed.data[1].embedding
    assert plain.usage.prompt_tokens > 0
