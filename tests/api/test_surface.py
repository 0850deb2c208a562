"""The rest of the OpenAI surface: GET /v1/models/{id}, clean 404s for what is not served, 426 for WebSockets."""

from __future__ import annotations

import logging

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import GatewayFactory, model_json, provider_json


async def test_one_model_by_id_with_slashes_and_metadata(start_gateway: GatewayFactory) -> None:
    catalog = provider_json("router", "http://127.0.0.1:9/v1", [model_json("openai/gpt-5", context=400000)])
    gw = await start_gateway({"models": {"fast": {"targets": ["echo/echo"]}}}, catalogs=[catalog])
    one = await gw.client.get("/v1/models/router/openai/gpt-5")
    assert one.status_code == 200
    model = one.json()
    assert model["id"] == "router/openai/gpt-5" and model["object"] == "model" and model["owned_by"] == "router"
    assert model["limit"]["context"] == 400000 and model["available"] is False
    assert "unavailable_reason" not in model, "why is for admin keys and `gateway check` only"
    alias = (await gw.client.get("/v1/models/fast")).json()
    assert alias["owned_by"] == "gateway" and alias["targets"] == ["echo/echo"] and alias["available"] is True
    listed = {m["id"]: m for m in (await gw.client.get("/v1/models")).json()["data"]}
    assert listed["router/openai/gpt-5"] == model


async def test_unknown_model_id_is_an_openai_404(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway({})
    missing = await gw.client.get("/v1/models/echo/ecoh")
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert error["code"] == "model_not_found" and error["type"] == "invalid_request_error"
    assert "`echo/echo`" in error["message"]


@pytest.mark.parametrize(("method", "path", "name"), [
    ("POST", "/v1/completions", "legacy completions"),
    ("POST", "/v1/images/generations", "Images API"),
    ("POST", "/v1/audio/transcriptions", "Audio API"),
    ("POST", "/v1/audio/speech", "Audio API"),
    ("GET", "/v1/files", "Files API"),
    ("POST", "/v1/batches", "Batch API"),
    ("POST", "/v1/moderations", "Moderations API"),
    ("GET", "/v1/responses/resp_123", "stored responses"),
    ("POST", "/v1/fine_tuning/jobs", "fine-tuning"),
])
async def test_unserved_openai_endpoints_say_so(start_gateway: GatewayFactory, method: str, path: str,
                                                name: str) -> None:
    gw = await start_gateway({})
    response = await gw.client.request(method, path, json={"model": "echo/echo"})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "endpoint_not_served" and error["type"] == "invalid_request_error"
    assert "does not serve" in error["message"] and name in error["message"] and path in error["message"]


async def test_unknown_path_is_still_an_openai_404(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway({})
    response = await gw.client.get("/v1/nothing-here")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def test_responses_websocket_upgrade_is_426(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway({})
    errors = _Errors()
    logging.getLogger("uvicorn.error").addHandler(errors)  # uvicorn's loggers do not reach the root logger
    ws_url = gw.base_url.replace("http://", "ws://") + "/v1/responses"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url, open_timeout=5):
            pass
    assert refused.value.response.status_code == 426
    assert b"POST /v1/responses" in refused.value.response.body
    with pytest.raises(InvalidStatus) as realtime:
        async with connect(gw.base_url.replace("http://", "ws://") + "/v1/realtime", open_timeout=5):
            pass
    assert realtime.value.response.status_code == 404
    # An upgrade request that reaches the HTTP side (here: without `Connection: upgrade`) gets the same answer.
    upgrade = await gw.client.get("/v1/responses", headers={"upgrade": "websocket"})
    assert upgrade.status_code == 426, upgrade.text
    logging.getLogger("uvicorn.error").removeHandler(errors)
    assert errors.lines == [], "a handshake answered with 426/404 is not an error"
    plain = await gw.client.get("/v1/responses")
    assert plain.status_code == 405 and plain.json()["error"]["code"] == "method_not_allowed"
