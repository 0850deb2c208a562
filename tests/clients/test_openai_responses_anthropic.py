"""The `openai` SDK's Responses API to a native Anthropic target: Responses -> chat -> Messages and back."""

from __future__ import annotations

import json

import openai

from tests.conftest import FAST_POLICY, GatewayFactory, model_json, provider_json
from tests.fakes.anthropic import MessagesApi
from tests.fakes.upstream import FakeUpstream

TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather for a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


async def test_responses_client_to_native_anthropic_target(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as anth:
        anth.default = MessagesApi()
        catalog = {**provider_json("anth", anth.base_url, [model_json("claude-x")], env=["ANTH_API_KEY"]),
                   "npm": "@ai-sdk/anthropic"}
        gw = await start_gateway(FAST_POLICY, catalogs=[catalog], environ={"ANTH_API_KEY": "sk-ant-resp-0001"})
        client = openai.AsyncOpenAI(base_url=f"{gw.base_url}/v1", api_key="unused", max_retries=0)

        first = await client.responses.create(model="anth/claude-x", input="Lisbon", tools=TOOLS,  # type: ignore[arg-type]
                                              instructions="Be brief.")
        call = next(item for item in first.output if item.type == "function_call")
        assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Lisbon"}
        sent = anth.received[0]
        assert sent.path == "/v1/messages" and "Be brief." in json.dumps(sent.json["system"])
        assert sent.headers["x-api-key"] == "sk-ant-resp-0001"
        assert sent.json["tools"][0]["name"] == "get_weather"

        history = [{"role": "user", "content": "Lisbon"}, call.model_dump(exclude_none=True),
                   {"type": "function_call_output", "call_id": call.call_id, "output": "21C"}]
        async with client.responses.stream(model="anth/claude-x", input=history, tools=TOOLS) as stream:  # type: ignore[arg-type]
            kinds = [event.type async for event in stream]
            final = await stream.get_final_response()
        assert final.output_text == "Tool result: 21C"
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
        assert final.usage is not None and final.usage.output_tokens == 7
