"""The official `openai` Python SDK against a real gateway: chat, stream, a tool round trip, errors."""

from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import GatewayFactory

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


async def client_for(start_gateway: GatewayFactory) -> openai.AsyncOpenAI:
    gw = await start_gateway({"auth": {"keys": [{"name": "sdk", "key": "${SDK_KEY}"}]}},
                             environ={"SDK_KEY": "sdk-test-key"})
    return openai.AsyncOpenAI(base_url=f"{gw.base_url}/v1", api_key="sdk-test-key", max_retries=0)


async def test_chat_and_stream(start_gateway: GatewayFactory) -> None:
    client = await client_for(start_gateway)
    completion = await client.chat.completions.create(
        model="echo/echo", messages=[{"role": "user", "content": "ping pong"}])
    assert completion.choices[0].message.content == "You said: ping pong"
    assert completion.usage is not None and completion.usage.completion_tokens == 4

    pieces = []
    usage = None
    stream = await client.chat.completions.create(
        model="echo/echo", messages=[{"role": "user", "content": "ping pong"}], stream=True,
        stream_options={"include_usage": True})
    async for event in stream:
        if event.choices and event.choices[0].delta.content:
            pieces.append(event.choices[0].delta.content)
        if event.usage:
            usage = event.usage
    assert "".join(pieces) == "You said: ping pong" and len(pieces) == 4
    assert usage is not None and usage.completion_tokens == 4
    models = await client.models.list()
    assert any(m.id == "echo/echo" for m in models.data)


async def test_tool_call_round_trip(start_gateway: GatewayFactory) -> None:
    client = await client_for(start_gateway)
    messages: list[dict[str, object]] = [{"role": "user", "content": "Lisbon"}]
    first = await client.chat.completions.create(model="echo/echo", messages=messages, tools=TOOLS)
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Lisbon"}
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "21C and sunny"})
    final = await client.chat.completions.create(model="echo/echo", messages=messages, tools=TOOLS)
    assert final.choices[0].message.content == "Tool result: 21C and sunny"


async def test_errors_raise_the_matching_sdk_exceptions(start_gateway: GatewayFactory) -> None:
    client = await client_for(start_gateway)
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(model="nope/nothing", messages=[{"role": "user", "content": "x"}])
    assert missing.value.code == "model_not_found"
    bad_key = client.with_options(api_key="wrong")
    with pytest.raises(openai.AuthenticationError):
        await bad_key.chat.completions.create(model="echo/echo", messages=[{"role": "user", "content": "x"}])
