"""The HTTP surface against the built-in echo provider: answers, errors, auth, /v1/models, health."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import orjson

from tests.conftest import GatewayFactory, sse_events

HELLO = {"model": "echo/echo", "messages": [{"role": "user", "content": "hello there"}]}


async def test_non_stream_answer_from_echo(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway({})
    response = await gw.chat(HELLO, headers={"x-request-id": "req-123"})
    assert response.status_code == 200
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "You said: hello there"
    assert body["usage"]["completion_tokens"] == 4
    assert response.headers["x-request-id"] == "req-123"
    assert response.headers["x-gateway-provider"] == "echo"
    assert response.headers["x-gateway-model"] == "echo/echo"
    assert response.headers["x-gateway-attempts"] == "1"
    assert response.headers["x-gateway-fallbacks"] == "0"


async def test_stream_word_by_word_without_usage_unless_asked(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway({})
    response = await gw.chat({**HELLO, "stream": True})
    events = sse_events(response.text)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "You said: hello there"
    assert all(c["choices"] for c in chunks), "the usage-only chunk must be dropped when not asked for"

    asked = await gw.chat({**HELLO, "stream": True, "stream_options": {"include_usage": True}})
    last = orjson.loads(sse_events(asked.text)[-2])
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 4


async def test_alias_resolves_to_its_target(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway({"models": {"default": {"targets": ["echo/echo"]}}})
    response = await gw.chat({**HELLO, "model": "default"})
    assert response.status_code == 200
    assert response.headers["x-gateway-model"] == "echo/echo"


async def test_bad_requests_are_openai_errors(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway({})
    cases = [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (b'{"messages": []}', 400, "model"),
        (b'{"model": 5, "messages": []}', 400, "model"),
        (b'{"model": "echo/echo"}', 400, "messages"),
    ]
    for raw, status, param in cases:
        response = await gw.client.post("/v1/chat/completions", content=raw)
        assert response.status_code == status, raw
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"], raw
        assert error["param"] == param, raw


async def test_unknown_model_is_404_with_a_way_to_list_ids(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway({})
    response = await gw.chat({**HELLO, "model": "echo/ehco"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert "GET /v1/models" in error["message"] and "`echo/echo`" in error["message"]


async def test_body_over_limit_is_413(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway({"server": {"max_body_bytes": 2048}})
    big = {**HELLO, "messages": [{"role": "user", "content": "x" * 5000}]}
    response = await gw.chat(big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_unknown_route_and_wrong_method(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway({})
    missing = await gw.client.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = await gw.client.get("/v1/chat/completions")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    wrong_models = await gw.client.post("/v1/models")
    assert wrong_models.status_code == 405 and "error" in wrong_models.json()


async def test_gateway_keys_accept_and_reject(start_gateway: GatewayFactory) -> None:
    digest = hashlib.sha256(b"hashed-key").hexdigest()
    gw = await start_gateway(
        {"auth": {"keys": [{"name": "a", "key": "${TEAM_A_KEY}"},
                           {"name": "b", "sha256": digest, "models": ["echo/*"]},
                           {"name": "c", "sha256": hashlib.sha256(b"limited").hexdigest(), "models": ["other/*"]}]}},
        environ={"TEAM_A_KEY": "plain-key-a"},
    )
    assert (await gw.chat(HELLO)).status_code == 401
    assert (await gw.chat(HELLO, headers={"authorization": "Bearer wrong"})).status_code == 401
    assert (await gw.chat(HELLO, headers={"authorization": "Basic plain-key-a"})).status_code == 401
    ok_bearer = await gw.chat(HELLO, headers={"authorization": "Bearer plain-key-a"})
    assert ok_bearer.status_code == 200
    ok_x_api_key = await gw.chat(HELLO, headers={"x-api-key": "hashed-key"})
    assert ok_x_api_key.status_code == 200
    forbidden = await gw.chat(HELLO, headers={"authorization": "Bearer limited"})
    assert forbidden.status_code == 403 and forbidden.json()["error"]["type"] == "permission_error"
    rejected = await gw.chat(HELLO)
    assert rejected.json()["error"]["type"] == "authentication_error"


async def test_models_list_carries_catalog_metadata(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway({"models": {"fast": {"targets": ["echo/echo"]}}})
    response = await gw.client.get("/v1/models")
    assert response.status_code == 200
    listing = response.json()
    assert listing["object"] == "list"
    by_id = {m["id"]: m for m in listing["data"]}
    echo = by_id["echo/echo"]
    assert echo["object"] == "model" and echo["owned_by"] == "echo" and echo["available"] is True
    assert echo["limit"]["context"] == 131072 and echo["tool_call"] is True
    assert by_id["fast"]["targets"] == ["echo/echo"]


async def test_health_endpoints(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway({})
    assert (await gw.client.get("/livez")).json() == {"status": "ok"}
    assert (await gw.client.get("/readyz")).status_code == 200


async def test_not_ready_when_no_provider_is_callable(start_gateway: GatewayFactory) -> None:
    from tests.conftest import provider_json

    gw = await start_gateway({}, catalogs=[provider_json("acme", "http://127.0.0.1:9/v1")], echo=False)
    assert (await gw.client.get("/readyz")).status_code == 503
    response = await gw.chat({**HELLO, "model": "acme/m1"})
    assert response.status_code == 503
    assert "ACME_API_KEY" in response.json()["error"]["message"]


async def test_client_models_must_be_a_list_and_request_ids_are_bounded(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway({})
    bad = await gw.chat({**HELLO, "models": "echo/echo"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "models"
    huge = await gw.chat(HELLO, headers={"x-request-id": "x" * 500})
    assert huge.status_code == 200 and len(huge.headers["x-request-id"]) < 64


async def test_a_body_sent_in_pieces_is_read_whole(start_gateway: GatewayFactory) -> None:
    # Chunked transfer in several pieces: the pipeline reads every piece (the one-piece body is the fast path).
    gw = await start_gateway({})
    raw = orjson.dumps(HELLO)

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(raw), 7):
            yield raw[start:start + 7]

    response = await gw.client.post("/v1/chat/completions", content=pieces(),
                                    headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "You said: hello there"
