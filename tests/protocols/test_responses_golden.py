"""Golden transcripts for the Responses <-> chat translation, asserted both ways and replayed through a gateway.

Each file in tests/golden/responses holds a Responses request and the chat request it must become,
a chat stream and answer, and the Responses events and Response they must become. Every event and
Response is also validated against the `openai` SDK's own types, so a shape the real API would not
send fails here.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from gateway.errors import BadRequest
from gateway.protocols import responses as translate
from tests.conftest import FAST_POLICY, GatewayFactory, RunningGateway, model_json, provider_json
from tests.fakes.upstream import FakeUpstream, chunk, cut, status, stream

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "responses"
CASES = sorted(p.stem for p in GOLDEN.glob("*.json"))
EVENT = TypeAdapter(ResponseStreamEvent)


def golden(name: str) -> dict[str, Any]:
    return json.loads((GOLDEN / f"{name}.json").read_text())


def counter_ids() -> translate.IdFactory:
    counter = itertools.count(1)
    return lambda prefix: f"{prefix}_{next(counter):04d}"


def translated_stream(request: dict[str, Any], chunks: list[dict[str, Any]]) -> list[list[Any]]:
    translator = translate.StreamTranslator(request, ids=counter_ids(), now=lambda: 1764650000)
    raw = b"".join(b for c in chunks for b in translator.feed(b"data: " + orjson.dumps(c)))
    raw += b"".join(translator.feed(b"data: [DONE]"))
    return parse_events(raw.decode())


def parse_events(text: str) -> list[list[Any]]:
    events = []
    for block in text.split("\n\n"):
        lines = block.strip().split("\n")
        if not block.strip() or lines[0].startswith(":"):
            continue
        events.append([lines[0].removeprefix("event: "), json.loads(lines[1].removeprefix("data: "))])
    return events


_ID = re.compile(r'"((?:resp|msg|fc|rs)_[0-9a-zA-Z]+)"')


def normalised(value: Any) -> Any:
    """Ids numbered in order of appearance and times zeroed, so two transcripts compare by shape."""
    text = json.dumps(value)
    seen: dict[str, str] = {}
    text = _ID.sub(lambda m: '"' + seen.setdefault(m.group(1), f"{m.group(1).split('_')[0]}_{len(seen)}") + '"',
                   text)
    return json.loads(re.sub(r'"created_at": \d+', '"created_at": 0', text))


@pytest.mark.parametrize("name", CASES)
def test_request_translation(name: str) -> None:
    case = golden(name)
    assert translate.to_chat(case["responses_request"], reasoning=case["target_reasoning"]) == case["chat_request"]


@pytest.mark.parametrize("name", CASES)
def test_stream_translation_is_the_real_event_sequence(name: str) -> None:
    case = golden(name)
    events = translated_stream(case["responses_request"], case["chat_stream"])
    assert events == case["responses_stream"]
    assert [e[1]["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0][0] == "response.created" and events[1][0] == "response.in_progress"
    assert events[-1][0] in ("response.completed", "response.incomplete")
    for kind, body in events:
        assert kind == body["type"]
        EVENT.validate_python(body)  # the SDK's own model of every event type
    final = Response.model_validate(events[-1][1]["response"])
    assert final.usage is not None and final.usage.total_tokens > 0


@pytest.mark.parametrize("name", CASES)
def test_answer_translation(name: str) -> None:
    case = golden(name)
    request = {k: v for k, v in case["responses_request"].items() if k != "stream"}
    answer = translate.to_response(case["chat_answer"], request, ids=counter_ids(), now=lambda: 1764650000)
    assert answer == case["responses_answer"]
    Response.model_validate(answer)
    # The whole answer and the stream's final Response say the same thing.
    streamed = case["responses_stream"][-1][1]["response"]
    assert normalised(answer["output"]) == normalised(streamed["output"])
    assert answer["usage"] == streamed["usage"] and answer["status"] == streamed["status"]


@pytest.mark.parametrize(("body", "param", "words"), [
    ({"input": "x", "previous_response_id": "resp_1"}, "previous_response_id", "no store"),
    ({"input": "x", "conversation": "conv_1"}, "conversation", "no store"),
    ({"input": "x", "background": True}, "background", "no store"),
    ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0]", "`web_search` tools"),
    ({"input": "x", "tools": [{"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}}]}, "tools[0]",
     "custom (free-form grammar) tools"),
    ({"input": "x", "tools": [{"type": "tool_search"}]}, "tools[0]", "`tool_search` tools"),
    ({"input": [{"type": "custom_tool_call", "call_id": "c", "name": "apply_patch", "input": "x"}]}, "input[0]",
     "custom (free-form grammar) tools"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]", "no store"),
    ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0]", "`web_search_call` items"),
    ({"input": "x", "tool_choice": {"type": "web_search"}}, "tool_choice", "web_search"),
    ({"input": "x", "mystery_field": 1}, "mystery_field", "remove it"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}]}, "input[0].content[0]",
     "inline"),
])
def test_what_chat_cannot_express_is_refused_by_name(body: dict[str, Any], param: str, words: str) -> None:
    with pytest.raises(BadRequest) as refused:
        translate.to_chat({"model": "m", **body})
    assert refused.value.param == param and words in refused.value.message


# ---------------------------------------------------------------- replayed through a running gateway


async def gateway_for(start_gateway: GatewayFactory, up: FakeUpstream, **extra: Any) -> RunningGateway:
    catalog = provider_json("acme", up.base_url, [model_json("m1"), model_json("think", reasoning=True)])
    config = {**FAST_POLICY, "models": {"fast": {"targets": ["acme/m1"]}, "thinker": {"targets": ["acme/think"]}},
              **extra}
    return await start_gateway(config, catalogs=[catalog], environ={"ACME_API_KEY": "sk-acme-golden-0001"})


@pytest.mark.parametrize("name", CASES)
async def test_replayed_stream_through_the_gateway(start_gateway: GatewayFactory, name: str) -> None:
    case = golden(name)
    async with FakeUpstream() as up:
        up.script(stream(case["chat_stream"]))
        gw = await gateway_for(start_gateway, up)
        response = await gw.client.post("/v1/responses", json=case["responses_request"])
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        upstream_model = "think" if case["responses_request"]["model"] == "thinker" else "m1"
        assert up.received[0].path == "/v1/chat/completions"
        assert up.received[0].json == {**case["chat_request"], "model": upstream_model}
    assert normalised(parse_events(response.text)) == normalised(case["responses_stream"])


@pytest.mark.parametrize("name", CASES)
async def test_replayed_answer_through_the_gateway(start_gateway: GatewayFactory, name: str) -> None:
    case = golden(name)
    request = {k: v for k, v in case["responses_request"].items() if k != "stream"}
    async with FakeUpstream() as up:
        up.script(status(200, case["chat_answer"]))
        gw = await gateway_for(start_gateway, up)
        response = await gw.client.post("/v1/responses", json=request)
        assert response.status_code == 200
        assert "stream" not in up.received[0].json
    assert normalised(response.json()) == normalised(case["responses_answer"])


async def test_a_stream_cut_after_content_ends_with_response_failed(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.script(stream([chunk(role="assistant", content=""), chunk(content="Hello"), chunk(content=" wor"), cut()]))
        gw = await gateway_for(start_gateway, up, stream_recovery="off")  # on, the cut would be continued
        response = await gw.client.post("/v1/responses", json={"model": "fast", "input": "hi", "stream": True})
    events = parse_events(response.text)
    kinds = [kind for kind, _ in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-1] == "response.failed" and "response.completed" not in kinds
    assert [body["sequence_number"] for _, body in events] == list(range(len(events)))
    failed = events[-1][1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert "the upstream stream broke" in failed["error"]["message"]
    assert "".join(b["delta"] for k, b in events if k == "response.output_text.delta") == "Hello wor"
    for _, body in events:
        EVENT.validate_python(body)


async def test_nothing_is_sent_before_content_so_failures_before_it_fail_over(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.script(stream([chunk(role="assistant", content=""), cut()]), stream(
            [chunk(role="assistant", content=""), chunk(content="second try"), chunk(finish_reason="stop")]))
        gw = await gateway_for(start_gateway, up)
        response = await gw.client.post("/v1/responses", json={"model": "fast", "input": "hi", "stream": True})
        assert len(up.received) == 2
    events = parse_events(response.text)
    assert [k for k, _ in events].count("response.created") == 1
    assert events[-1][0] == "response.completed"
    assert events[-1][1]["response"]["output"][0]["content"][0]["text"] == "second try"


async def test_upstream_errors_before_content_are_openai_errors(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.default = status(400, {"error": {"message": "bad tool schema", "type": "invalid_request_error",
                                            "code": "invalid_schema", "param": "tools"}})
        gw = await gateway_for(start_gateway, up)
        for streamed in (False, True):
            response = await gw.client.post("/v1/responses",
                                            json={"model": "fast", "input": "hi", "stream": streamed})
            assert response.status_code == 400
            error = response.json()["error"]
            assert error["code"] == "invalid_schema" and "bad tool schema" in error["message"]
    refused = await gw.client.post("/v1/responses", json={"model": "fast", "input": "x",
                                                          "tools": [{"type": "web_search"}]})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "tools[0]"
