"""/v1/responses to a target that speaks the Responses API: the body goes up untouched but `model`,
the answer and the stream come back byte for byte, and failures keep the Responses stream rules."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from tests.conftest import FAST_POLICY, GatewayFactory, RunningGateway, model_json, provider_json
from tests.fakes.upstream import FakeUpstream, cut, status, stream

OPENAI_KEY = "sk-openai-passthrough-0001"

# A Codex-like request with item types, tool types and fields the gateway knows nothing about.
BODY: dict[str, Any] = {
    "model": "native/gpt-5.1-codex",
    "instructions": "You are Codex.",
    "input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "sandbox: read-only"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix the bug"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAAB-opaque-blob=="},
        {"type": "custom_tool_call", "call_id": "call_1", "name": "apply_patch", "input": "*** Begin Patch\n"},
        {"type": "custom_tool_call_output", "call_id": "call_1",
         "output": [{"type": "input_text", "text": "Done!"}, {"type": "input_image", "image_url": "data:,x"}]},
        {"type": "future_item_kind", "payload": {"deep": [1, 2.5, "é", None]}},
    ],
    "tools": [
        {"type": "custom", "name": "apply_patch", "format": {"type": "grammar", "syntax": "lark", "definition": "s"}},
        {"type": "namespace", "name": "mcp__files", "description": "d", "tools": []},
        {"type": "web_search"}, {"type": "tool_search"},
        {"type": "function", "name": "shell", "parameters": {"type": "object"}, "strict": False},
    ],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "reasoning": {"effort": "high", "summary": "auto"},
    "store": False,
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "0199-session",
    "client_metadata": {"x-codex-turn": "3"},
    "text": {"verbosity": "low"},
    "some_future_field": {"kept": True},
}


def native_catalog(up: FakeUpstream) -> dict[str, Any]:
    catalog = provider_json("native", up.base_url, [model_json("gpt-5.1-codex", reasoning=True)], env=["OAI_KEY"])
    catalog["npm"] = "@ai-sdk/openai"  # OpenAI's own package: the Responses API is spoken natively
    return catalog


async def gateway_for(start_gateway: GatewayFactory, *ups: FakeUpstream, **config: Any) -> RunningGateway:
    catalogs = [native_catalog(ups[0])]
    if len(ups) > 1:
        catalogs.append(provider_json("chatonly", ups[1].base_url, [model_json("m1")]))
    return await start_gateway({**FAST_POLICY, **config}, catalogs=catalogs,
                               environ={"OAI_KEY": OPENAI_KEY, "CHATONLY_API_KEY": "sk-chatonly-0002"})


def events(*bodies: dict[str, Any]) -> list[bytes]:
    return [b"event: " + b["type"].encode() + b"\ndata: " + orjson.dumps(b) + b"\n\n" for b in bodies]


CREATED = {"type": "response.created", "sequence_number": 0,
           "response": {"id": "resp_up1", "object": "response", "created_at": 1764650000, "status": "in_progress",
                        "model": "gpt-5.1-codex", "output": [], "x_vendor": 1}}
UPSTREAM_STREAM = [
    *events(CREATED, {"type": "response.in_progress", "sequence_number": 1, "response": CREATED["response"]}),
    b": keep-alive\n\n",
    *events({"type": "response.output_item.added", "sequence_number": 2, "output_index": 0,
             "item": {"type": "custom_tool_call", "id": "ctc_1", "call_id": "call_2", "name": "apply_patch",
                      "input": ""}},
            {"type": "response.custom_tool_call_input.delta", "sequence_number": 3, "item_id": "ctc_1",
             "output_index": 0, "delta": "*** Begin"},
            {"type": "response.some_future_event", "sequence_number": 4, "blob": [1, 2]},
            {"type": "response.completed", "sequence_number": 5,
             "response": {**CREATED["response"], "status": "completed",
                          "usage": {"input_tokens": 900, "input_tokens_details": {"cached_tokens": 800},
                                    "output_tokens": 40, "output_tokens_details": {"reasoning_tokens": 30},
                                    "total_tokens": 940}}}),
]


async def test_request_passes_through_byte_for_byte_but_model(start_gateway: GatewayFactory) -> None:
    answer = orjson.dumps({"id": "resp_up1", "object": "response", "status": "completed", "model": "gpt-5.1-codex",
                           "output": [{"type": "future_output", "x": 1}], "usage": {"input_tokens": 3}, "x": "é"})
    async with FakeUpstream() as up:
        up.script(status(200, answer))
        gw = await gateway_for(start_gateway, up)
        raw = orjson.dumps(BODY)
        response = await gw.client.post("/v1/responses", content=raw,
                                        headers={"content-type": "application/json", "authorization": "Bearer cli"})
        assert response.status_code == 200, response.text
        assert response.content == answer, "the upstream's answer reaches the client byte for byte"
        seen = up.received[0]
        assert seen.path == "/v1/responses"
        assert seen.body == orjson.dumps({**BODY, "model": "gpt-5.1-codex"}), "only `model` may change"
        assert seen.headers["authorization"] == f"Bearer {OPENAI_KEY}", "the client's own auth never goes up"
        assert response.headers["x-gateway-model"] == "native/gpt-5.1-codex"


async def test_stream_passes_through_byte_for_byte(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.script(stream(UPSTREAM_STREAM, done=False))
        gw = await gateway_for(start_gateway, up)
        response = await gw.client.post("/v1/responses", json={**BODY, "stream": True})
        assert response.status_code == 200
        assert response.content == b"".join(UPSTREAM_STREAM)
        assert up.received[0].json["stream"] is True and "stream_options" not in up.received[0].json


async def test_stream_cut_after_content_ends_with_response_failed(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.script(stream([*UPSTREAM_STREAM[:5], cut()], done=False))
        gw = await gateway_for(start_gateway, up)
        response = await gw.client.post("/v1/responses", json={**BODY, "stream": True})
    sent = b"".join(UPSTREAM_STREAM[:5])
    assert response.content.startswith(sent)
    tail = response.content[len(sent):].decode()
    assert tail.startswith("event: response.failed\n") and "response.completed" not in tail
    failed = orjson.loads(tail.split("data: ", 1)[1])
    assert failed["sequence_number"] == 4, "numbered right after the last event the client saw"
    assert failed["response"]["id"] == "resp_up1" and failed["response"]["status"] == "failed"
    assert failed["response"]["error"]["code"] == "server_error"


async def test_failure_before_content_fails_over_invisibly(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.script(stream([*UPSTREAM_STREAM[:2], cut()], done=False),
                  stream(events({"type": "error", "sequence_number": 0, "code": "server_error", "message": "boom"}),
                         done=False),
                  stream(UPSTREAM_STREAM, done=False))
        gw = await gateway_for(start_gateway, up)
        response = await gw.client.post("/v1/responses", json={**BODY, "stream": True})
        assert len(up.received) == 3
    assert response.content == b"".join(UPSTREAM_STREAM)


async def test_native_failure_falls_back_to_a_translated_chat_target(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as native, FakeUpstream() as chat:
        native.default = status(503)
        gw = await gateway_for(start_gateway, native, chat,
                               models={"codex": {"targets": ["native/gpt-5.1-codex"], "fallbacks": ["chatonly/m1"]}})
        simple = {"model": "codex", "input": "hi", "tools": [{"type": "function", "name": "shell",
                                                              "parameters": {"type": "object"}}]}
        response = await gw.client.post("/v1/responses", json=simple)
        assert response.status_code == 200, response.text
        assert response.json()["object"] == "response" and response.headers["x-gateway-model"] == "chatonly/m1"
        assert chat.received[0].path == "/v1/chat/completions"
        assert chat.received[0].json["messages"] == [{"role": "user", "content": "hi"}]
        # A request only a Responses target can take skips the chat fallback, and says why.
        chat.reset_log()
        known = {k: v for k, v in BODY.items() if k != "some_future_field"}
        refused = await gw.client.post("/v1/responses", json={**known, "model": "codex"})
        assert refused.status_code == 502
        message = refused.json()["error"]["message"]
        assert "chatonly/m1: skipped: it does not speak the Responses API" in message
        assert "custom (free-form grammar) tools" in message
        assert chat.received == []


async def test_usage_from_a_passed_through_stream_is_counted(
    start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeUpstream() as up:
        up.script(stream(UPSTREAM_STREAM, done=False))
        gw = await gateway_for(start_gateway, up)
        with caplog.at_level("INFO", logger="gateway.access"):
            await gw.client.post("/v1/responses", json={**BODY, "stream": True})
    record = json.loads([r.getMessage() for r in caplog.records if r.name == "gateway.access"][-1])
    assert record["input_tokens"] == 900 and record["output_tokens"] == 40 and record["stream_error"] is None
    # 100 uncached at 1.0, 800 cached at 0.5, 40 out at 2.0 (USD per million, the test catalog's prices)
    assert record["cost_usd"] == pytest.approx((100 * 1.0 + 800 * 0.5 + 40 * 2.0) / 1e6)
