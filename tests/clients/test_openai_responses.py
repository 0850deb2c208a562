"""The official `openai` SDK's Responses API against a real gateway translating to a chat target (echo)."""

from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import GatewayFactory

TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather for a city", "strict": False,
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


async def client_for(start_gateway: GatewayFactory) -> openai.AsyncOpenAI:
    gw = await start_gateway({"auth": {"keys": [{"name": "sdk", "key": "${SDK_KEY}"}]}},
                             environ={"SDK_KEY": "sdk-responses-key"})
    return openai.AsyncOpenAI(base_url=f"{gw.base_url}/v1", api_key="sdk-responses-key", max_retries=0)


async def test_create_and_stream(start_gateway: GatewayFactory) -> None:
    client = await client_for(start_gateway)
    response = await client.responses.create(model="echo/echo", input="ping pong", instructions="Be brief.",
                                             store=False)
    assert response.status == "completed" and response.object == "response"
    assert response.output_text == "You said: ping pong"
    assert response.usage is not None and response.usage.output_tokens == 4

    events = []
    stream = await client.responses.create(model="echo/echo", input=[{"role": "user", "content": "ping pong"}],
                                           stream=True)
    async for event in stream:
        events.append(event)
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "You said: ping pong"
    done = events[-1].response
    assert done.output_text == text and done.usage is not None and done.usage.output_tokens == 4


async def test_stream_helper_and_tool_round_trip(start_gateway: GatewayFactory) -> None:
    client = await client_for(start_gateway)
    first = await client.responses.create(model="echo/echo", input="Lisbon", tools=TOOLS)  # type: ignore[arg-type]
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Lisbon"}
    history: list[object] = [{"role": "user", "content": "Lisbon"}, *[c.model_dump(exclude_none=True) for c in calls],
                             {"type": "function_call_output", "call_id": calls[0].call_id, "output": "21C and sunny"}]
    async with client.responses.stream(model="echo/echo", input=history, tools=TOOLS) as stream:  # type: ignore[arg-type]
        async for _event in stream:
            pass
        final = await stream.get_final_response()
    assert final.output_text == "Tool result: 21C and sunny"


async def test_refusals_are_400s_naming_the_field(start_gateway: GatewayFactory) -> None:
    client = await client_for(start_gateway)
    with pytest.raises(openai.BadRequestError) as stored:
        await client.responses.create(model="echo/echo", input="x", previous_response_id="resp_123")
    assert "previous_response_id" in str(stored.value)
    with pytest.raises(openai.BadRequestError) as hosted:
        await client.responses.create(model="echo/echo", input="x", tools=[{"type": "web_search"}])
    assert "web_search" in str(hosted.value)
