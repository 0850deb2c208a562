"""The OpenAI Agents SDK (Responses API by default) running a tool-using agent through the gateway to an
OpenAI-wire chat fake: the gateway translates both ways and the agent completes its tool loop."""

from __future__ import annotations

import json

import openai
import pytest
from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

from tests.conftest import FAST_POLICY, GatewayFactory, model_json, provider_json
from tests.fakes.upstream import FakeUpstream, chunk, ok, stream

set_tracing_disabled(True)  # the SDK would otherwise send traces to OpenAI


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"21C and sunny in {city}"


def agent_for(base_url: str) -> Agent:
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="agents-key", max_retries=0)
    return Agent(name="forecaster", instructions="Use the tool, then answer in one sentence.", tools=[get_weather],
                 model=OpenAIResponsesModel(model="fast", openai_client=client),
                 model_settings=ModelSettings(temperature=0.1))


CALL = {"id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Lisbon"}'}}


async def start(start_gateway: GatewayFactory, up: FakeUpstream) -> str:
    gw = await start_gateway({**FAST_POLICY, "models": {"fast": {"targets": ["acme/m1"]}}},
                             catalogs=[provider_json("acme", up.base_url, [model_json("m1")])],
                             environ={"ACME_API_KEY": "sk-acme-agents-0001"})
    return gw.base_url


async def test_agent_runs_a_tool_loop_through_the_gateway(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.script(ok(tool_calls=[CALL]), ok("Lisbon: 21C and sunny."))
        result = await Runner.run(agent_for(await start(start_gateway, up)), "Weather in Lisbon?")
        assert result.final_output == "Lisbon: 21C and sunny."
        first, second = (r.json for r in up.received)
    assert first["messages"][0] == {"role": "system", "content": "Use the tool, then answer in one sentence."}
    assert first["tools"][0]["function"]["name"] == "get_weather" and first["temperature"] == 0.1
    tool_turn = second["messages"][-2:]
    assert tool_turn[0]["tool_calls"][0]["id"] == "call_w1"
    assert tool_turn[1] == {"role": "tool", "tool_call_id": "call_w1", "content": "21C and sunny in Lisbon"}


async def test_streamed_agent_run(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.script(
            stream([chunk(role="assistant", content=None),
                    chunk(tool_calls=[{"index": 0, **CALL, "function": {"name": "get_weather", "arguments": ""}}]),
                    chunk(tool_calls=[{"index": 0, "function": {"arguments": '{"city":'}}]),
                    chunk(tool_calls=[{"index": 0, "function": {"arguments": '"Porto"}'}}]),
                    chunk(finish_reason="tool_calls")]),
            stream([chunk(role="assistant", content=""), chunk(content="Porto: "), chunk(content="21C."),
                    chunk(finish_reason="stop")]))
        run = Runner.run_streamed(agent_for(await start(start_gateway, up)), "Weather in Porto?")
        kinds = [event.type async for event in run.stream_events()]
        assert run.final_output == "Porto: 21C."
        assert "raw_response_event" in kinds
        assert json.loads(up.received[1].body)["messages"][-1]["content"] == "21C and sunny in Porto"


@pytest.fixture(autouse=True)
def _no_openai_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
