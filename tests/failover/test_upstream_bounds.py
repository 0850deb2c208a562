"""What an upstream may send back is bounded: whole answers, error bodies, single SSE events, and the
time a stream request's non-SSE answer may take. Over a limit, the attempt fails as a malformed
answer and the plan moves on to its next target.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.conftest import FAST_POLICY, GatewayFactory, RunningGateway, model_json, provider_json, sse_events
from tests.fakes.upstream import FakeUpstream, body, chunk, ok, pause, stream

ASK = {"messages": [{"role": "user", "content": "hi"}]}
LIMITS = {"max_answer_bytes": 4096, "max_error_bytes": 2048, "max_event_bytes": 4096}
BIG = "x" * 10_000


async def gateway(start_gateway: GatewayFactory, up: FakeUpstream, **config: Any) -> RunningGateway:
    models = [model_json("m1"), model_json("m2")]
    policy = {**FAST_POLICY, "upstream": LIMITS, **config}
    policy.setdefault("models", {"pair": {"targets": ["acme/m1"], "fallbacks": ["acme/m2"]}})
    return await start_gateway(policy, catalogs=[provider_json("acme", up.base_url, models)],
                               environ={"ACME_API_KEY": "sk-bounds-secret-0123456789"})


def completion(text: str) -> bytes:
    return orjson.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "m1",
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


def stream_text(raw: str) -> str:
    events = sse_events(raw)
    assert events[-1] == "[DONE]", events
    return "".join((orjson.loads(e)["choices"] or [{}])[0].get("delta", {}).get("content") or "" for e in events[:-1])


def models_seen(up: FakeUpstream) -> list[str]:
    return [r.json["model"] for r in up.received if r.json]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_whole_answer_over_the_limit_moves_on(start_gateway: GatewayFactory, chunked: bool) -> None:
    async with FakeUpstream() as up:
        up.script(body(200, "application/json", [completion(BIG)], chunked=chunked), ok("small"))
        gw = await gateway(start_gateway, up)
        response = await gw.chat({"model": "pair", **ASK})
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "small"
        assert models_seen(up) == ["m1", "m2"]


async def test_a_whole_answer_over_the_limit_everywhere_is_a_502_that_says_so(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.default = body(200, "application/json", [completion(BIG)])
        gw = await gateway(start_gateway, up)
        response = await gw.chat({"model": "acme/m1", **ASK})
        assert response.status_code == 502
        assert "4096-byte limit" in response.json()["error"]["message"]


async def test_an_error_body_over_the_limit_moves_on(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        huge_error = orjson.dumps({"error": {"message": BIG, "type": "invalid_request_error"}})
        up.script(body(400, "application/json", [huge_error]), ok("small"))
        gw = await gateway(start_gateway, up)
        response = await gw.chat({"model": "pair", **ASK})
        assert response.status_code == 200, response.text
        assert models_seen(up) == ["m1", "m2"]


async def test_an_sse_event_over_the_limit_before_content_moves_on(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        endless = [b"data: {\"x\": \"", *[b"y" * 1000] * 8]  # no blank line: one event that keeps growing
        up.script(stream([chunk(role="assistant", content=""), *endless], done=False), ok("small"))
        gw = await gateway(start_gateway, up)
        response = await gw.chat({"model": "pair", "stream": True, **ASK})
        assert stream_text(response.text) == "small"
        assert models_seen(up) == ["m1", "m2"]


async def test_an_sse_event_over_the_limit_after_content_ends_with_an_error_event(
    start_gateway: GatewayFactory,
) -> None:
    async with FakeUpstream() as up:
        endless = [b"data: {\"x\": \"", *[b"y" * 1000] * 8]
        up.script(stream([chunk(role="assistant", content=""), chunk(content="so far"), *endless], done=False))
        gw = await gateway(start_gateway, up, stream_recovery="off")  # with it on, the break is continued
        response = await gw.chat({"model": "acme/m1", "stream": True, **ASK})
        events = sse_events(response.text)
        assert "[DONE]" not in events and events[-2] == "event:error"
        assert orjson.loads(events[-1])["error"]["code"] == "upstream_malformed"


async def test_a_stream_request_answered_with_trickled_json_is_bounded_by_the_deadline(
    start_gateway: GatewayFactory,
) -> None:
    async with FakeUpstream() as up:
        # One byte at a time, each well inside the idle timeout: only the deadline can end it.
        trickle = [part for byte in completion("late") for part in (bytes([byte]), pause(0.05))]
        up.script(body(200, "application/json", trickle))
        gw = await gateway(start_gateway, up)
        response = await gw.chat({"model": "acme/m1", "stream": True, **ASK}, headers={"x-gateway-timeout": "1"})
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "upstream_timeout"


async def test_a_stream_request_answered_with_a_whole_answer_gets_it_as_a_stream(
    start_gateway: GatewayFactory,
) -> None:
    async with FakeUpstream() as up:
        up.script(body(200, "application/json", [completion("whole answer")]))
        gw = await gateway(start_gateway, up)
        response = await gw.chat({"model": "acme/m1", "stream": True, "stream_options": {"include_usage": True},
                                  **ASK})
        assert response.status_code == 200 and response.headers["content-type"] == "text/event-stream"
        events = sse_events(response.text)
        assert events[-1] == "[DONE]"
        first = orjson.loads(events[0])
        assert first["object"] == "chat.completion.chunk"
        assert first["choices"][0]["delta"]["content"] == "whole answer"
        assert first["choices"][0]["finish_reason"] == "stop"
        assert orjson.loads(events[-2])["usage"]["total_tokens"] == 2


async def test_a_stream_request_answered_with_a_json_error_is_that_error(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        error = orjson.dumps({"error": {"message": "overloaded", "type": "server_error"}})
        up.script(body(200, "application/json", [error]), ok("after the error"))
        gw = await gateway(start_gateway, up)
        response = await gw.chat({"model": "acme/m1", "stream": True, **ASK})
        assert stream_text(response.text) == "after the error"
        assert models_seen(up) == ["m1", "m1"]  # retried like the upstream error it is


async def test_media_types_compare_case_insensitively(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        events = [b"data: " + orjson.dumps(chunk(content="loud")) + b"\n\n",
                  b"data: " + orjson.dumps(chunk(finish_reason="stop")) + b"\n\n", b"data: [DONE]\n\n"]
        up.script(body(200, "TEXT/Event-Stream; Charset=UTF-8", events))
        gw = await gateway(start_gateway, up)
        response = await gw.chat({"model": "acme/m1", "stream": True, **ASK})
        assert response.status_code == 200, response.text
        assert stream_text(response.text) == "loud"
