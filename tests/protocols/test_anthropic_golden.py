"""Golden transcripts (tests/golden/anthropic/*.json) replayed through both translations, field by field.

Upstream direction: a chat request becomes the Messages request Anthropic expects, and Anthropic's
recorded SSE events become the chat chunks a chat client expects. Inbound direction: a `/v1/messages`
request becomes a chat request, and the chat chunks become the Messages events Claude Code expects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.errors import BadRequest, UpstreamStatusError
from gateway.failover.classify import classify
from gateway.protocols import messages
from gateway.upstream.formats import anthropic_messages

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "anthropic"
STREAMS = ["text", "tools", "thinking"]


def load(name: str) -> dict[str, Any]:
    return orjson.loads((GOLDEN / f"{name}.json").read_bytes())


def sse_event(kind: str, body: dict[str, Any]) -> bytes:
    return f"event: {kind}\n".encode() + b"data: " + orjson.dumps(body)


def chat_event(item: Any) -> bytes:
    if item == "[DONE]":
        return b"data: [DONE]"
    if isinstance(item, str):
        return item.encode()
    return b"data: " + orjson.dumps(item)


def parse_chat(event: bytes) -> Any:
    if event.startswith(b":"):
        return event.decode()
    data = event.removeprefix(b"data: ")
    return "[DONE]" if data == b"[DONE]" else orjson.loads(data)


def parse_messages(raw: bytes) -> list[list[Any]]:
    out = []
    for event in raw.split(b"\n\n"):
        if not event:
            continue
        head, data = event.split(b"\n", 1)
        out.append([head.removeprefix(b"event: ").decode(), orjson.loads(data.removeprefix(b"data: "))])
    return out


@pytest.mark.parametrize("name", STREAMS)
def test_chat_request_becomes_the_messages_request(name: str) -> None:
    golden = load(name)
    built = anthropic_messages.build_request(golden["chat_request"], "claude-sonnet-4-5",
                                             stream=golden["chat_request"].get("stream") is True, max_output=64000)
    assert built == golden["messages_request"]


@pytest.mark.parametrize("name", STREAMS)
def test_messages_events_become_chat_chunks_one_by_one(name: str) -> None:
    golden = load(name)
    translator = anthropic_messages.StreamTranslator(created=1700000000)
    got = []
    for kind, body in golden["messages_stream"]:
        # Each event is translated on its own, the moment it arrives: nothing waits for the end.
        got.extend(parse_chat(e) for e in translator.feed(sse_event(kind, body).split(b"data: ", 1)[1]))
    assert got == golden["chat_stream"]


@pytest.mark.parametrize("name", STREAMS)
def test_messages_request_becomes_the_chat_request(name: str) -> None:
    golden = load(name)
    assert messages.to_chat(golden["inbound_messages_request"]) == golden["inbound_chat_request"]


@pytest.mark.parametrize("name", STREAMS)
def test_chat_chunks_become_messages_events(name: str) -> None:
    golden = load(name)
    translator = messages.StreamTranslator("smart")
    raw = b"".join(b"".join(translator.feed(chat_event(item))) for item in golden["chat_stream"])
    assert parse_messages(raw) == golden["inbound_events"]


def test_whole_answer_both_ways() -> None:
    answer = {"id": "msg_01W", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
              "content": [{"type": "thinking", "thinking": "hm", "signature": "s1"},
                          {"type": "text", "text": "Calling.", "citations": []},
                          {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}],
              "stop_reason": "tool_use", "stop_sequence": None,
              "usage": {"input_tokens": 10, "output_tokens": 7, "cache_read_input_tokens": 90,
                        "cache_creation_input_tokens": 5}}
    chat = anthropic_messages.parse_response(answer, created=1)
    assert chat == {
        "id": "msg_01W", "object": "chat.completion", "created": 1, "model": "claude-sonnet-4-5",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Calling.", "reasoning_content": "hm",
            "thinking_blocks": [{"type": "thinking", "thinking": "hm", "signature": "s1"}],
            "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}]}}],
        "usage": {"prompt_tokens": 105, "completion_tokens": 7, "total_tokens": 112,
                  "prompt_tokens_details": {"cached_tokens": 90, "cache_write_tokens": 5}},
    }
    back = messages.to_message(chat)
    assert back == {**answer, "content": [answer["content"][0], {"type": "text", "text": "Calling."},
                                          answer["content"][2]]}


@pytest.mark.parametrize("case", load("errors")["upstream"], ids=lambda c: c["body"]["error"]["type"])
def test_upstream_errors_enter_the_failover_table(case: dict[str, Any]) -> None:
    error = anthropic_messages.parse_error(case["status"], case["headers"], orjson.dumps(case["body"]), "anthropic")
    assert isinstance(error, UpstreamStatusError)
    assert error.error_type == case["error_type"]
    assert classify(error).value == case["action"]
    assert error.retry_after == case.get("retry_after")
    assert case["body"]["error"]["message"] in error.message


def test_stream_error_event_both_ways() -> None:
    golden = load("errors")
    _kind, body = golden["stream_error"]
    chunk = anthropic_messages.StreamTranslator().feed(orjson.dumps(body))
    assert [orjson.loads(c.removeprefix(b"data: ")) for c in chunk] == [golden["stream_error_chat"]]
    back = messages.StreamTranslator("m").feed(b"event: error\ndata: " + orjson.dumps(golden["stream_error_chat"]))
    assert parse_messages(b"".join(back)) == [["error", body]]


@pytest.mark.parametrize(("field", "value"), [
    ("n", 2), ("logprobs", True), ("seed", 7), ("frequency_penalty", 0.5), ("response_format", {"type": "json_object"}),
    ("audio", {"voice": "x"}), ("reasoning_effort", "extreme"), ("mystery", 1),
])
def test_untranslatable_chat_fields_are_refused_by_name(field: str, value: Any) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], field: value}
    with pytest.raises(BadRequest) as caught:
        anthropic_messages.build_request(body, "claude", stream=False, max_output=1000)
    assert caught.value.param == field and f"`{field}`" in caught.value.message


@pytest.mark.parametrize(("field", "value"), [("n", 1), ("seed", None), ("stream_options", {"include_usage": True}),
                                              ("frequency_penalty", 0), ("store", False)])
def test_neutral_chat_fields_are_dropped(field: str, value: Any) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], field: value}
    built = anthropic_messages.build_request(body, "claude", stream=False, max_output=1000)
    assert field not in built and built["max_tokens"] == 1000


@pytest.mark.parametrize(("field", "value", "param"), [
    ("top_k", 5, "top_k"), ("container", "container_1", "container"),
    ("tools", [{"type": "web_search_20250305", "name": "web_search"}], "tools[0]"),
    ("output_config", {"task_budget": 3}, "output_config.task_budget"), ("mystery", 1, "mystery"),
])
def test_untranslatable_messages_fields_are_refused_by_name(field: str, value: Any, param: str) -> None:
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], field: value}
    with pytest.raises(BadRequest) as caught:
        messages.to_chat(body)
    assert caught.value.param == param


def test_reasoning_budget_stays_below_max_tokens() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "high",
            "max_tokens": 5000}
    built = anthropic_messages.build_request(body, "claude", stream=False, max_output=1000)
    assert built["thinking"] == {"type": "enabled", "budget_tokens": 4999}
    assert "thinking" not in anthropic_messages.build_request({**body, "reasoning_effort": "none"}, "c",
                                                              stream=False, max_output=1)


def test_context_management_is_dropped_for_chat_targets() -> None:
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
            "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]}}
    assert "context_management" not in messages.to_chat(body)
