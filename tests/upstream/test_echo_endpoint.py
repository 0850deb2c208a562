"""The echo provider's answers, and how provider endpoints get their URL and credentials."""

from __future__ import annotations

import orjson

from gateway.catalog.schema import Provider
from gateway.config.schema import ProviderSettings
from gateway.upstream import echo
from gateway.upstream.endpoint import build_endpoint

TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"]}}}


async def test_echo_tool_call_and_tool_result() -> None:
    body = {"model": "echo", "messages": [{"role": "user", "content": "Paris"}], "tools": [TOOL]}
    answer = orjson.loads(await echo.answer(body).read_all())
    call = answer["choices"][0]["message"]["tool_calls"][0]
    assert answer["choices"][0]["finish_reason"] == "tool_calls"
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "Paris", "days": 0}
    result = {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}
    body["messages"] += [answer["choices"][0]["message"], result]
    final = orjson.loads(await echo.answer(body).read_all())
    assert final["choices"][0]["message"]["content"] == "Tool result: sunny"


async def test_echo_is_deterministic() -> None:
    body = {"model": "echo", "messages": [{"role": "user", "content": [{"type": "text", "text": "a b"}]}]}
    one = orjson.loads(await echo.answer(body).read_all())
    two = orjson.loads(await echo.answer(body).read_all())
    assert one["id"] == two["id"] and one["choices"] == two["choices"]
    assert one["choices"][0]["message"]["content"] == "You said: a b"


def provider(**fields: object) -> Provider:
    return Provider.model_validate({"id": "p", "name": "P", "npm": "@ai-sdk/openai-compatible", "env": ["P_KEY"],
                                    "doc": "", "models": {}, **fields})


def test_endpoint_credentials_and_url() -> None:
    ok = build_endpoint(provider(api="https://p.example/v1/"), None, {"P_KEY": "sk-secret-value"})
    assert ok.available and ok.chat_url == "https://p.example/v1/chat/completions"
    assert ok.headers["Authorization"] == "Bearer sk-secret-value"
    assert "sk-secret-value" not in repr(ok)
    assert ok.scrub("bad key sk-secret-value") == "bad key ***"

    missing = build_endpoint(provider(api="https://p.example/v1"), None, {})
    assert not missing.available and "P_KEY" in (missing.unavailable or "")

    templated = provider(api="https://${ACCOUNT}.example/v1", env=["ACCOUNT", "TOKEN"])
    assert build_endpoint(templated, None, {"TOKEN": "t"}).missing_env == ("ACCOUNT",)
    filled = build_endpoint(templated, None, {"ACCOUNT": "acme", "TOKEN": "t"})
    assert filled.chat_url == "https://acme.example/v1/chat/completions"

    default_url = build_endpoint(provider(npm="@ai-sdk/groq"), None, {"P_KEY": "k"})
    assert default_url.chat_url == "https://api.groq.com/openai/v1/chat/completions"

    unsupported = build_endpoint(provider(npm="@ai-sdk/amazon-bedrock"), None, {"P_KEY": "k"})
    assert not unsupported.available and "wire format" in (unsupported.unavailable or "")

    override = ProviderSettings(base_url="http://127.0.0.1:1/v1", api_key_env="OTHER", headers={"X-Org": "o"})
    custom = build_endpoint(provider(api="https://p.example/v1"), override, {"OTHER": "k2"})
    assert custom.headers["Authorization"] == "Bearer k2" and custom.headers["X-Org"] == "o"
    assert custom.chat_url.startswith("http://127.0.0.1:1/v1")


def test_anthropic_wire_by_package_and_by_override() -> None:
    native = build_endpoint(provider(npm="@ai-sdk/anthropic"), None, {"P_KEY": "sk-ant-secret-value"})
    assert native.wire == "anthropic" and native.base_url == "https://api.anthropic.com/v1"
    assert native.headers["x-api-key"] == "sk-ant-secret-value" and "Authorization" not in native.headers
    assert native.headers["anthropic-version"] == "2023-06-01"
    # An Anthropic-compatible API declared through the OpenAI-compatible package keeps chat completions...
    compat = build_endpoint(provider(api="https://api.anthropic.com/v1"), None, {"P_KEY": "k"})
    assert compat.wire == "openai" and compat.headers["Authorization"] == "Bearer k"
    # ...unless the config says which wire to speak, either way.
    forced = build_endpoint(provider(api="https://api.anthropic.com/v1"), ProviderSettings(wire="anthropic"),
                            {"P_KEY": "k"})
    assert forced.wire == "anthropic" and forced.headers["x-api-key"] == "k"
    back = build_endpoint(provider(npm="@ai-sdk/anthropic"), ProviderSettings(wire="openai"), {"P_KEY": "k"})
    assert back.wire == "openai" and back.headers["Authorization"] == "Bearer k"
    unset = build_endpoint(provider(npm="@ai-sdk/anthropic"), ProviderSettings(wire="openai"), {})
    assert not unset.available and unset.wire == "openai"
