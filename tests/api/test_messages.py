"""/v1/messages and native Anthropic upstreams end to end: a gateway on loopback in front of fake
upstreams on loopback, one speaking Anthropic's Messages API and one speaking chat completions."""

from __future__ import annotations

from typing import Any

import orjson

from tests.conftest import FAST_POLICY, GatewayFactory, RunningGateway, model_json, provider_json
from tests.fakes.anthropic import MessagesApi, event, golden, overloaded, transcript
from tests.fakes.anthropic import error as anthropic_error
from tests.fakes.upstream import FakeUpstream, ok, stream

ANTH_SECRET = "sk-ant-upstream-secret-0123456789"
OPENAI_SECRET = "sk-openai-upstream-secret-0123456789"
GATEWAY_KEY = "gw-client-key-0123456789"
HEADERS = {"x-api-key": GATEWAY_KEY, "anthropic-version": "2023-06-01"}


def anthropic_provider(base_url: str) -> dict[str, Any]:
    provider = provider_json("anth", base_url, [model_json("claude-x", output=64000), model_json("claude-y")],
                             env=["ANTH_API_KEY"])
    return {**provider, "npm": "@ai-sdk/anthropic"}


async def gateway_for(start_gateway: GatewayFactory, anth: FakeUpstream, oai: FakeUpstream | None = None,
                      **config: Any) -> RunningGateway:
    catalogs = [anthropic_provider(anth.base_url)]
    if oai is not None:
        catalogs.append(provider_json("oai", oai.base_url, [model_json("gpt-x")], env=["OAI_API_KEY"]))
    environ = {"ANTH_API_KEY": ANTH_SECRET, "OAI_API_KEY": OPENAI_SECRET, "GW_KEY": GATEWAY_KEY}
    settings = {**FAST_POLICY, "auth": {"keys": [{"name": "team", "key": "${GW_KEY}"}]}, **config}
    return await start_gateway(settings, catalogs=catalogs, environ=environ)


def messages_events(raw: bytes) -> list[list[Any]]:
    out = []
    for block in raw.split(b"\n\n"):
        if block:
            head, data = block.split(b"\n", 1)
            out.append([head.removeprefix(b"event: ").decode(), orjson.loads(data.removeprefix(b"data: "))])
    return out


# ---------------------------------------------------------------- pass-through to a native Anthropic target


PASS_BODY: dict[str, Any] = {
    "model": "anth/claude-x",
    "max_tokens": 2000,
    "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
    "messages": [
        {"role": "system", "content": "An inline system turn."},
        {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]},
    ],
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
    "metadata": {"user_id": "u-1"},
    "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2},
              {"name": "f", "input_schema": {"type": "object"}, "defer_loading": True}],
    "a_field_from_next_year": {"nested": [1, 2.5, "x"]},
}


async def test_pass_through_stream_is_byte_for_byte(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as anth:
        recorded = golden("thinking")["messages_stream"]
        anth.script(transcript(recorded))
        gw = await gateway_for(start_gateway, anth)
        headers = {**HEADERS, "anthropic-beta": "interleaved-thinking-2025-05-14,context-management-2025-06-27"}
        response = await gw.client.post("/v1/messages?beta=true", json={**PASS_BODY, "stream": True},
                                        headers=headers)
        assert response.status_code == 200, response.text
        assert response.content == b"".join(event(kind, body) for kind, body in recorded)
        seen = anth.received[0]
        assert seen.path == "/v1/messages"
        assert seen.json == {**PASS_BODY, "stream": True, "model": "claude-x"}, "only `model` may change"
        assert seen.headers["anthropic-beta"] == headers["anthropic-beta"]
        assert seen.headers["anthropic-version"] == "2023-06-01"
        assert seen.headers["x-api-key"] == ANTH_SECRET
        assert "authorization" not in seen.headers
        assert response.headers["x-gateway-model"] == "anth/claude-x"


async def test_pass_through_whole_answer_is_byte_for_byte(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as anth:
        anth.default = MessagesApi(headers={"request-id": "req_upstream"})
        gw = await gateway_for(start_gateway, anth)
        response = await gw.client.post("/v1/messages", json=PASS_BODY, headers=HEADERS)
        assert response.status_code == 200, response.text
        # The fake answers with orjson's compact bytes; the client must get exactly those.
        message = response.json()
        assert response.content == orjson.dumps(message)
        assert message["content"][0]["type"] == "tool_use" and message["model"] == "claude-x"
        assert anth.received[0].json == {**PASS_BODY, "model": "claude-x"}


async def test_pass_through_error_after_content_ends_without_message_stop(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as anth:
        recorded = golden("text")["messages_stream"]
        anth.script(transcript(recorded, cut_after=5))
        gw = await gateway_for(start_gateway, anth)
        response = await gw.client.post("/v1/messages", json={**PASS_BODY, "stream": True}, headers=HEADERS)
        events = messages_events(response.content)
        assert [kind for kind, _ in events[:-1]] == [kind for kind, _ in recorded[:5]]
        assert events[-1][0] == "error" and events[-1][1]["type"] == "error"
        assert events[-1][1]["error"]["type"] == "api_error"
        assert "message_stop" not in [kind for kind, _ in events]


async def test_upstream_error_event_after_content_is_passed_on_once(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as anth:
        recorded = [*golden("text")["messages_stream"][:4], golden("errors")["stream_error"]]
        anth.script(transcript(recorded))
        gw = await gateway_for(start_gateway, anth)
        response = await gw.client.post("/v1/messages", json={**PASS_BODY, "stream": True}, headers=HEADERS)
        assert response.content == b"".join(event(kind, body) for kind, body in recorded)


# ---------------------------------------------------------------- translated to an OpenAI-wire target


async def test_translated_stream_to_chat_target_field_by_field(start_gateway: GatewayFactory) -> None:
    transcript_ = golden("tools")
    async with FakeUpstream() as anth, FakeUpstream() as oai:
        oai.script(stream([c for c in transcript_["chat_stream"] if isinstance(c, dict)]))
        gw = await gateway_for(start_gateway, anth, oai)
        body = {**transcript_["inbound_messages_request"], "model": "oai/gpt-x", "stream": True}
        response = await gw.client.post("/v1/messages", json=body, headers=HEADERS)
        assert response.status_code == 200, response.text
        assert messages_events(response.content) == transcript_["inbound_events"]
        expected = {**transcript_["inbound_chat_request"], "model": "gpt-x", "stream": True,
                    "stream_options": {"include_usage": True}}
        assert oai.received[0].json == expected
        assert oai.received[0].headers["authorization"] == f"Bearer {OPENAI_SECRET}"
        assert not anth.received


async def test_translated_whole_answer(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as anth, FakeUpstream() as oai:
        oai.script(ok("Hello there", usage={"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}))
        gw = await gateway_for(start_gateway, anth, oai)
        body = {"model": "oai/gpt-x", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
        response = await gw.client.post("/v1/messages", json=body, headers=HEADERS)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": "gpt-x",
            "content": [{"type": "text", "text": "Hello there"}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 9, "output_tokens": 2, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0}}


async def test_translated_stream_cut_after_content_ends_with_an_error_event(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as anth, FakeUpstream() as oai:
        from tests.fakes.upstream import cut_after
        oai.script(cut_after(2, "one two three four"))
        gw = await gateway_for(start_gateway, anth, oai, stream_recovery="off")  # on, the cut would be continued
        body = {"model": "oai/gpt-x", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "x"}]}
        response = await gw.client.post("/v1/messages", json=body, headers=HEADERS)
        kinds = [kind for kind, _ in messages_events(response.content)]
        assert kinds[0] == "message_start" and "content_block_delta" in kinds
        assert kinds[-1] == "error" and "message_stop" not in kinds and "message_delta" not in kinds


async def test_translated_stream_cut_after_content_is_continued(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as anth, FakeUpstream() as oai:
        from tests.fakes.upstream import cut_after, ok
        oai.script(cut_after(2, "one two three four"), ok("one two three four"))
        gw = await gateway_for(start_gateway, anth, oai)
        body = {"model": "oai/gpt-x", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "x"}]}
        response = await gw.client.post("/v1/messages", json=body, headers=HEADERS)
        events = messages_events(response.content)
        kinds = [kind for kind, _ in events]
        text = "".join(data["delta"]["text"] for kind, data in events
                       if kind == "content_block_delta" and data["delta"].get("type") == "text_delta")
        assert text == "one two three four", "the Messages client gets the whole answer once"
        assert kinds[-1] == "message_stop" and "error" not in kinds
        assert oai.received[1].json["messages"][-1] == {"role": "assistant", "content": "one two"}


async def test_untranslatable_field_is_refused_naming_it(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as anth, FakeUpstream() as oai:
        gw = await gateway_for(start_gateway, anth, oai)
        body = {"model": "oai/gpt-x", "max_tokens": 50, "top_k": 3, "messages": [{"role": "user", "content": "x"}]}
        response = await gw.client.post("/v1/messages", json=body, headers=HEADERS)
        assert response.status_code == 400
        assert response.json()["type"] == "error"
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert "`top_k`" in response.json()["error"]["message"]
        assert not oai.received


# ---------------------------------------------------------------- failover across wire formats


async def test_stream_fails_over_from_overloaded_anthropic_to_openai_wire(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as anth, FakeUpstream() as oai:
        anth.default = overloaded()
        gw = await gateway_for(start_gateway, anth, oai,
                               models={"claude": {"targets": ["anth/claude-x"], "fallbacks": ["oai/gpt-x"]}})
        body = {"model": "claude", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        response = await gw.client.post("/v1/messages", json=body, headers=HEADERS)
        assert response.status_code == 200, response.text
        assert response.headers["x-gateway-model"] == "oai/gpt-x"
        assert response.headers["x-gateway-fallbacks"] == "1"
        assert len(anth.received) == FAST_POLICY["retry"]["attempts"]
        events = messages_events(response.content)
        text = "".join(b["delta"].get("text", "") for kind, b in events if kind == "content_block_delta")
        assert text == "Hello from upstream"
        assert events[-1][0] == "message_stop"
        assert events[-2][1]["usage"]["output_tokens"] == 3


async def test_every_target_overloaded_is_anthropics_529(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as anth:
        anth.default = overloaded()
        gw = await gateway_for(start_gateway, anth)
        body = {"model": "anth/claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        response = await gw.client.post("/v1/messages", json=body, headers=HEADERS)
        assert response.status_code == 529
        assert response.json()["error"]["type"] == "overloaded_error"


async def test_client_errors_are_anthropic_shaped(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as anth:
        anth.default = anthropic_error(400, "invalid_request_error", "messages.0: bad role")
        gw = await gateway_for(start_gateway, anth)
        good = {"model": "anth/claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        cases = [
            ({}, good, 401, "authentication_error"),
            (HEADERS, {**good, "max_tokens": None}, 400, "invalid_request_error"),
            (HEADERS, {**good, "model": "nope/nope"}, 404, "not_found_error"),
            (HEADERS, good, 400, "invalid_request_error"),  # the upstream's own refusal, passed on
        ]
        for headers, body, status, kind in cases:
            response = await gw.client.post("/v1/messages", json=body, headers=headers)
            assert response.status_code == status, (body, response.text)
            assert response.json()["type"] == "error" and response.json()["error"]["type"] == kind
        assert "bad role" in response.json()["error"]["message"]
        bearer = await gw.client.post("/v1/messages", json=good,
                                      headers={"authorization": f"Bearer {GATEWAY_KEY}"})
        assert bearer.status_code == 400 and bearer.json()["error"]["type"] == "invalid_request_error"


# ---------------------------------------------------------------- chat clients to a native Anthropic target


async def test_chat_client_to_native_anthropic_target_field_by_field(start_gateway: GatewayFactory) -> None:
    transcript_ = golden("text")
    async with FakeUpstream() as anth:
        anth.script(transcript(transcript_["messages_stream"]))
        gw = await gateway_for(start_gateway, anth)
        body = {**transcript_["chat_request"], "model": "anth/claude-x"}
        response = await gw.client.post("/v1/chat/completions", json=body,
                                        headers={"authorization": f"Bearer {GATEWAY_KEY}"})
        assert response.status_code == 200, response.text
        seen = anth.received[0]
        assert seen.path == "/v1/messages"
        assert seen.json == {**transcript_["messages_request"], "model": "claude-x"}
        assert seen.headers["x-api-key"] == ANTH_SECRET and seen.headers["anthropic-version"] == "2023-06-01"
        got = []
        for block in response.content.split(b"\n\n"):
            if block.startswith(b"data: "):
                data = block.removeprefix(b"data: ")
                got.append("[DONE]" if data == b"[DONE]" else {**orjson.loads(data), "created": 1700000000})
            elif block:
                got.append(block.decode())
        assert got == transcript_["chat_stream"]


async def test_chat_client_whole_answer_from_native_anthropic(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as anth:
        anth.default = MessagesApi()
        gw = await gateway_for(start_gateway, anth)
        body = {"model": "anth/claude-y", "messages": [{"role": "user", "content": "hi"}]}
        response = await gw.client.post("/v1/chat/completions", json=body,
                                        headers={"authorization": f"Bearer {GATEWAY_KEY}"})
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "You said: hi"
        assert response.json()["usage"]["prompt_tokens"] == 10
        assert anth.received[0].json["max_tokens"] == 8192, "max_tokens defaults to the catalog's output limit"


async def test_chat_field_without_equivalent_is_refused_before_any_upstream(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as anth:
        gw = await gateway_for(start_gateway, anth)
        body = {"model": "anth/claude-x", "n": 3, "messages": [{"role": "user", "content": "hi"}]}
        response = await gw.client.post("/v1/chat/completions", json=body,
                                        headers={"authorization": f"Bearer {GATEWAY_KEY}"})
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "n"
        assert not anth.received


# ---------------------------------------------------------------- count_tokens and the model list


async def test_count_tokens_asks_anthropic_or_estimates(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as anth, FakeUpstream() as oai:
        anth.default = MessagesApi()
        gw = await gateway_for(start_gateway, anth, oai)
        body = {"model": "anth/claude-x", "messages": [{"role": "user", "content": "hello " * 40}]}
        native = await gw.client.post("/v1/messages/count_tokens?beta=true", json=body,
                                      headers={**HEADERS, "anthropic-beta": "token-counting-2024-11-01"})
        assert native.status_code == 200 and native.json() == {"input_tokens": 42}
        assert native.headers["x-gateway-token-count"] == "upstream"
        seen = anth.received[0]
        assert seen.path == "/v1/messages/count_tokens" and seen.json["model"] == "claude-x"
        assert seen.headers["anthropic-beta"] == "token-counting-2024-11-01"
        estimated = await gw.client.post("/v1/messages/count_tokens", json={**body, "model": "oai/gpt-x"},
                                         headers=HEADERS)
        assert estimated.status_code == 200 and estimated.json() == {"input_tokens": 60}
        assert estimated.headers["x-gateway-token-count"] == "estimated"
        assert not oai.received
        refused = await gw.client.post("/v1/messages/count_tokens", json=body)
        assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"


async def test_models_in_anthropic_shape_with_pages(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as anth:
        gw = await gateway_for(start_gateway, anth, models={"claude": {"targets": ["anth/claude-x"]}})
        auth = {"x-api-key": GATEWAY_KEY}
        everything = (await gw.client.get("/v1/models", headers=auth)).json()
        ids = [m["id"] for m in everything["data"]]
        first = await gw.client.get("/v1/models?limit=2", headers=HEADERS)
        page = first.json()
        assert set(page) == {"data", "has_more", "first_id", "last_id"}
        assert [m["id"] for m in page["data"]] == ids[:2] and page["has_more"] is True
        assert page["first_id"] == ids[0] and page["last_id"] == ids[1]
        assert set(page["data"][0]) == {"type", "id", "display_name", "created_at"}
        assert page["data"][0]["type"] == "model" and page["data"][0]["created_at"].endswith("Z")
        rest = (await gw.client.get(f"/v1/models?limit=1000&after_id={ids[1]}", headers=HEADERS)).json()
        assert [m["id"] for m in rest["data"]] == ids[2:] and rest["has_more"] is False
        back = (await gw.client.get(f"/v1/models?limit=1&before_id={ids[1]}", headers=HEADERS)).json()
        assert [m["id"] for m in back["data"]] == ids[:1]
        bad = await gw.client.get("/v1/models?limit=0", headers=HEADERS)
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


# ---------------------------------------------------------------- limits, budgets and the ledger apply here too


async def test_rate_limit_and_ledger_apply_to_messages(start_gateway: GatewayFactory) -> None:
    import sqlite3

    async with FakeUpstream() as anth, FakeUpstream() as oai:
        anth.default = MessagesApi()
        keys = [{"name": "team", "key": "${GW_KEY}", "limits": {"rpm": 2}}]
        gw = await gateway_for(start_gateway, anth, oai, auth={"keys": keys})
        body = {"model": "anth/claude-x", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
        first = await gw.client.post("/v1/messages", json=body, headers=HEADERS)
        second = await gw.client.post("/v1/messages", json={**body, "model": "oai/gpt-x", "stream": True},
                                      headers=HEADERS)
        third = await gw.client.post("/v1/messages", json=body, headers=HEADERS)
        assert [first.status_code, second.status_code, third.status_code] == [200, 200, 429]
        assert third.json()["type"] == "error" and third.json()["error"]["type"] == "rate_limit_error"
        assert int(third.headers["retry-after"]) >= 1
        assert len(anth.received) == 1
        await gw.app.teams.flush()
        path = gw.app.runtime.settings.state.path
        assert path is not None
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT model, status, input_tokens, output_tokens FROM ledger ORDER BY id").fetchall()
        assert rows == [("anth/claude-x", 200, 10, 7), ("oai/gpt-x", 200, 5, 3), ("anth/claude-x", 429, 0, 0)]


# ---------------------------------------------------------------- edges of the stream rules


async def test_client_leaving_a_pass_through_stream_drops_the_upstream(start_gateway: GatewayFactory) -> None:
    import httpx

    from tests.fakes.upstream import _Stream, stall

    async with FakeUpstream() as anth:
        head = golden("text")["messages_stream"][:4]  # message_start .. the first text delta
        anth.script(_Stream([event(kind, body) for kind, body in head] + [stall()], done=False))
        gw = await gateway_for(start_gateway, anth, timeouts={"idle": 30, "total": 60})
        async with (
            httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client,
            client.stream("POST", "/v1/messages", json={**PASS_BODY, "stream": True}, headers=HEADERS) as response,
        ):
            received = b""
            async for piece in response.aiter_bytes():
                received += piece
                if b"text_delta" in received:
                    break
        await anth.wait_disconnect(timeout=5)
        assert anth.disconnects == 1


async def test_error_event_before_content_fails_over(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as anth, FakeUpstream() as oai:
        start = golden("text")["messages_stream"][0]
        anth.default = transcript([start, golden("errors")["stream_error"]])
        gw = await gateway_for(start_gateway, anth, oai,
                               models={"claude": {"targets": ["anth/claude-x"], "fallbacks": ["oai/gpt-x"]}})
        body = {"model": "claude", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        response = await gw.client.post("/v1/messages", json=body, headers=HEADERS)
        assert response.headers["x-gateway-model"] == "oai/gpt-x"
        events = messages_events(response.content)
        assert events[0][0] == "message_start" and events[-1][0] == "message_stop"
        assert "error" not in [kind for kind, _ in events], "nothing of the failed attempt reaches the client"



async def test_thinking_is_asked_only_of_models_that_reason(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as anth, FakeUpstream() as oai:
        catalogs = [anthropic_provider(anth.base_url),
                    provider_json("oai", oai.base_url, [model_json("gpt-x"), model_json("o-x", reasoning=True)],
                                  env=["OAI_API_KEY"])]
        environ = {"ANTH_API_KEY": ANTH_SECRET, "OAI_API_KEY": OPENAI_SECRET, "GW_KEY": GATEWAY_KEY}
        gw = await start_gateway({**FAST_POLICY, "auth": {"keys": [{"name": "team", "key": "${GW_KEY}"}]}},
                                 catalogs=catalogs, environ=environ)
        body = {"max_tokens": 50, "thinking": {"type": "enabled", "budget_tokens": 10000},
                "messages": [{"role": "user", "content": "hi"}]}
        for model in ("oai/o-x", "oai/gpt-x"):
            response = await gw.client.post("/v1/messages", json={**body, "model": model}, headers=HEADERS)
            assert response.status_code == 200, response.text
        assert oai.received[0].json["reasoning_effort"] == "high"
        assert "reasoning_effort" not in oai.received[1].json
