"""The official `anthropic` Python SDK against a real gateway, to a native Anthropic-wire fake (the
request passes through) and to an OpenAI-wire fake (translated both ways); plus the
`openai` SDK and the Vercel AI SDK to the Anthropic-wire fake (chat translated to Messages)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.clients.test_aisdk import AISDK, node_or_skip
from tests.conftest import GatewayFactory, RunningGateway, model_json, provider_json
from tests.fakes.anthropic import ChatApi, MessagesApi
from tests.fakes.upstream import FakeUpstream

KEY = "sdk-gateway-key-24680"
TOOLS: list[Any] = [{"name": "get_weather", "description": "Weather for a city",
                     "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                      "required": ["city"]}}]
NATIVE, TRANSLATED = "anth/claude-x", "oai/gpt-x"


@pytest.fixture
async def gateway(start_gateway: GatewayFactory) -> AsyncIterator[RunningGateway]:
    async with FakeUpstream() as anth, FakeUpstream() as oai:
        anth.default = MessagesApi()
        oai.default = ChatApi()
        native = {**provider_json("anth", anth.base_url, [model_json("claude-x")], env=["ANTH_API_KEY"]),
                  "npm": "@ai-sdk/anthropic"}
        chat = provider_json("oai", oai.base_url, [model_json("gpt-x")], env=["OAI_API_KEY"])
        yield await start_gateway({"auth": {"keys": [{"name": "sdk", "key": "${SDK_KEY}"}]}}, catalogs=[native, chat],
                                  environ={"SDK_KEY": KEY, "ANTH_API_KEY": "sk-ant-fake-upstream-key-1234",
                                           "OAI_API_KEY": "sk-oai-fake-upstream-key-1234"})


def client_for(gw: RunningGateway, key: str = KEY) -> anthropic.AsyncAnthropic:
    # The SDK sends the key as x-api-key (Claude Code's ANTHROPIC_API_KEY); auth_token sends a Bearer.
    return anthropic.AsyncAnthropic(base_url=gw.base_url, api_key=key, max_retries=0)


@pytest.mark.parametrize("model", [NATIVE, TRANSLATED])
async def test_create_and_stream(gateway: RunningGateway, model: str) -> None:
    client = client_for(gateway)
    message = await client.messages.create(model=model, max_tokens=100,
                                           messages=[{"role": "user", "content": "ping pong"}])
    assert message.content[0].type == "text" and message.content[0].text == "You said: ping pong"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0

    async with client.messages.stream(model=model, max_tokens=100,
                                      messages=[{"role": "user", "content": "stream these words"}]) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(pieces) == "You said: stream these words" and len(pieces) > 1
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    assert final.usage.input_tokens > 0, "usage reaches the SDK's final message"


@pytest.mark.parametrize("model", [NATIVE, TRANSLATED])
async def test_tool_round_trip_streamed(gateway: RunningGateway, model: str) -> None:
    client = client_for(gateway)
    messages: list[Any] = [{"role": "user", "content": "Lisbon"}]
    async with client.messages.stream(model=model, max_tokens=100, messages=messages, tools=TOOLS) as stream:
        first = await stream.get_final_message()
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "get_weather" and call.input == {"city": "Lisbon"}
    messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                               "content": "21C and sunny"}]}]
    final = await client.messages.create(model=model, max_tokens=100, messages=messages, tools=TOOLS)
    assert final.content[0].type == "text" and final.content[0].text == "Tool result: 21C and sunny"


async def test_count_tokens_models_and_errors(gateway: RunningGateway) -> None:
    client = client_for(gateway)
    asked: list[Any] = [{"role": "user", "content": "count these words for me please"}]
    native = await client.messages.count_tokens(model=NATIVE, messages=asked)
    assert native.input_tokens == 42  # the fake upstream's own count
    estimated = await client.messages.count_tokens(model=TRANSLATED, messages=asked)
    assert estimated.input_tokens == len("count these words for me please") // 4
    page = await client.models.list(limit=1)
    assert len(page.data) == 1 and page.has_more and page.data[0].type == "model"
    with pytest.raises(anthropic.AuthenticationError):
        await client_for(gateway, "wrong-key").messages.create(
            model=NATIVE, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.create(model="nope/nope", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.BadRequestError) as refused:
        await client.messages.create(model=TRANSLATED, max_tokens=5, extra_body={"top_k": 3},
                                     messages=[{"role": "user", "content": "hi"}])
    assert "top_k" in str(refused.value)


async def test_openai_sdk_streams_tool_calls_and_usage_from_native_anthropic(gateway: RunningGateway) -> None:
    client = openai.AsyncOpenAI(base_url=f"{gateway.base_url}/v1", api_key=KEY, max_retries=0)
    tools: list[Any] = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                                          "parameters": t["input_schema"]}} for t in TOOLS]
    stream = await client.chat.completions.create(
        model=NATIVE, messages=[{"role": "user", "content": "Lisbon"}], tools=tools, stream=True,
        stream_options={"include_usage": True})
    arguments, names, finish, usage = "", [], None, None
    async for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or ():
                if call.function and call.function.name:
                    names.append(call.function.name)
                arguments += (call.function.arguments or "") if call.function else ""
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
    assert names == ["get_weather"] and json.loads(arguments) == {"city": "Lisbon"}
    assert finish == "tool_calls"
    assert usage is not None and usage.prompt_tokens == 10 and usage.completion_tokens == 7


async def test_ai_sdk_to_native_anthropic(gateway: RunningGateway, tmp_path: Path) -> None:
    node = node_or_skip()
    published = {"id": "gw", "env": ["GW_KEY"], "api": f"{gateway.base_url}/v1", "models": []}
    path = tmp_path / "provider.json"
    path.write_text(json.dumps(published))
    env = {**os.environ, "GW_KEY": KEY, "AISDK_MODEL": NATIVE}
    process = await asyncio.create_subprocess_exec(node, str(AISDK / "run.mjs"), str(path), cwd=AISDK, env=env,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, out.decode() + err.decode()
    cases = {c["case"]: c for c in (json.loads(line) for line in out.decode().splitlines() if line.strip())}
    assert cases["generate"]["text"] == "You said: hello from the ai sdk"
    assert cases["stream"]["text"] == "You said: stream these words please" and cases["stream"]["chunks"] > 1
    assert cases["stream"]["usage"]["outputTokens"] == 7 and cases["stream"]["usage"]["inputTokens"] == 10
    streamed = cases["stream_tool"]
    assert streamed["toolCalls"] == [{"toolName": "get_weather", "input": {"city": "Lisbon"}}]
    assert streamed["text"] == "Tool result: 21C and sunny in Lisbon" and streamed["steps"] == 2
    assert streamed["usage"]["outputTokens"] == 14, "usage of both steps, each streamed"
