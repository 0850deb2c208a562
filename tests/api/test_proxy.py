"""The proxy path end to end: gateway on loopback in front of a real fake upstream on loopback."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import FAST_POLICY, GatewayFactory, RunningGateway, model_json, provider_json, sse_events
from tests.fakes.upstream import FakeUpstream, chunk, hang, ok, stall, stream

SECRET = "sk-acme-upstream-secret-0123456789"
BODY: dict[str, Any] = {
    "model": "acme/m1",
    "messages": [{"role": "user", "content": "hi"}],
    "temperature": 0.3,
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "response_format": {"type": "json_object"},
    "user": "u-1",
}


async def gateway_for(start_gateway: GatewayFactory, up: FakeUpstream, *,
                      uvicorn_options: dict[str, Any] | None = None, **config: Any) -> RunningGateway:
    catalog = provider_json("acme", up.base_url, [model_json("m1"), model_json("m2")])
    environ = {"ACME_API_KEY": SECRET, "GW_KEY": "gw-client-key"}
    return await start_gateway({**FAST_POLICY, **config}, catalogs=[catalog], environ=environ,
                               uvicorn_options=uvicorn_options)


async def test_non_stream_body_forwarded_unchanged_except_model(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.script(ok("Hello from upstream"))
        gw = await gateway_for(start_gateway, up, models={"best": {"targets": ["acme/m1"]}})
        response = await gw.chat({**BODY, "model": "best"})
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"] == "Hello from upstream"
        seen = up.received[0]
        assert seen.path == "/v1/chat/completions"
        assert seen.json == {**BODY, "model": "m1"}, "only `model` may change on the way up"


async def test_stream_forces_usage_upstream_and_drops_it_for_the_client(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        gw = await gateway_for(start_gateway, up)
        response = await gw.chat({**BODY, "stream": True, "stream_options": {"foo": 1}})
        assert up.received[0].json["stream_options"] == {"foo": 1, "include_usage": True}
        events = sse_events(response.text)
        assert events[-1] == "[DONE]"
        chunks = [orjson.loads(e) for e in events[:-1]]
        assert all(c["choices"] for c in chunks), "usage-only chunk must not reach a client that did not ask"
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "Hello from upstream"

        asked = await gw.chat({**BODY, "stream": True, "stream_options": {"include_usage": True}})
        usage_chunk = orjson.loads(sse_events(asked.text)[-2])
        assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] > 0


async def test_credentials_come_from_env_and_client_headers_stay_behind(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        gw = await gateway_for(start_gateway, up, providers={"acme": {"headers": {"X-Org": "org-7"}}},
                               auth={"keys": [{"name": "t", "key": "${GW_KEY}"}]})
        headers = {"authorization": "Bearer gw-client-key", "x-api-key": "gw-client-key", "cookie": "session=1",
                   "proxy-authorization": "Basic abc", "connection": "keep-alive, x-hop", "x-hop": "1",
                   "te": "trailers", "x-custom": "client-value"}
        response = await gw.chat(BODY, headers=headers)
        assert response.status_code == 200
        seen = up.received[0].headers
        assert seen["authorization"] == f"Bearer {SECRET}"
        assert seen["x-org"] == "org-7"
        for name in ("x-api-key", "cookie", "proxy-authorization", "x-hop", "te", "x-custom"):
            assert name not in seen, name
        assert "gw-client-key" not in repr(seen)


async def test_the_upstream_gets_only_the_gateways_own_headers(start_gateway: GatewayFactory) -> None:
    """No User-Agent (nothing said of the client library) and `Accept-Encoding: identity` (answers are
    relayed byte for byte, so asked for uncompressed): of aiohttp's automatic headers only Accept."""
    async with FakeUpstream() as up:
        gw = await gateway_for(start_gateway, up)
        assert (await gw.chat(BODY)).status_code == 200
        assert (await gw.chat({**BODY, "stream": True})).status_code == 200
        for seen in up.received:
            assert sorted(seen.headers) == ["accept", "accept-encoding", "authorization", "content-length",
                                            "content-type", "host"]
            assert seen.headers["accept"] == "*/*"
            assert seen.headers["accept-encoding"] == "identity"
            assert seen.headers["content-type"] == "application/json"


# The gateway's own server tells the app at once that a connection was lost (gateway/connections.py);
# under plain uvicorn a listener task finds it out on receive(). Both must cancel the upstream.
SERVERS = pytest.mark.parametrize("uvicorn_options", [None, {"http": "httptools"}], ids=["gateway", "uvicorn"])


@SERVERS
async def test_first_chunk_reaches_client_before_upstream_finishes_and_disconnect_cancels(
    start_gateway: GatewayFactory, uvicorn_options: dict[str, Any] | None,
) -> None:
    async with FakeUpstream() as up:
        up.script(stream([chunk(role="assistant", content=""), chunk(content="Hel"), stall()], done=False))
        gw = await gateway_for(start_gateway, up, uvicorn_options=uvicorn_options,
                               timeouts={"idle": 30, "total": 60})
        async with (
            httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client,
            client.stream("POST", "/v1/chat/completions", json={**BODY, "stream": True}) as response,
        ):
            assert response.status_code == 200
            received = b""
            async for piece in response.aiter_bytes():
                received += piece
                if b"Hel" in received:
                    break
            assert b'"content":"Hel"' in received.replace(b" ", b"")
        # The client left while the upstream was still streaming: the gateway must drop the upstream.
        await up.wait_disconnect(timeout=5)
        assert up.disconnects == 1


@SERVERS
async def test_client_disconnect_cancels_a_non_stream_upstream_request(
    start_gateway: GatewayFactory, uvicorn_options: dict[str, Any] | None,
) -> None:
    async with FakeUpstream() as up:
        up.script(hang())
        gw = await gateway_for(start_gateway, up, uvicorn_options=uvicorn_options,
                               timeouts={"response": 30, "total": 60})
        client = httpx.AsyncClient(base_url=gw.base_url, timeout=30)
        request = asyncio.create_task(client.post("/v1/chat/completions", json=BODY))
        await up.wait_for_requests(1, timeout=5)
        request.cancel()
        await client.aclose()
        await up.wait_disconnect(timeout=5)
        assert up.disconnects == 1


async def test_upstream_bad_request_passes_through_as_the_upstream_said(start_gateway: GatewayFactory) -> None:
    from tests.fakes.upstream import status

    async with FakeUpstream() as up:
        up.script(status(400, {"error": {"message": "temperature too high", "type": "invalid_request_error",
                                         "code": "invalid_value", "param": "temperature"}}))
        gw = await gateway_for(start_gateway, up)
        response = await gw.chat(BODY)
        assert response.status_code == 400
        error = response.json()["error"]
        assert "temperature too high" in error["message"] and error["param"] == "temperature"
        assert error["code"] == "invalid_value"
        assert len(up.received) == 1, "a client error is neither retried nor failed over"


async def test_a_stream_read_by_the_fast_path_keeps_every_edge(start_gateway: GatewayFactory) -> None:
    # The relay forwards plain deltas unread: text that mentions a finish or usage must not end the
    # stream, and a last chunk with content, a finish AND usage must still reach the client and count.
    sly = 'quote: "finish_reason":"stop", "usage":{"total_tokens":1}, [DONE]'
    usage = {"prompt_tokens": 4, "completion_tokens": 7, "total_tokens": 11}
    last = chunk(content=" end.")
    last["choices"][0]["finish_reason"] = "stop"
    last["usage"] = usage
    split = b"data: " + orjson.dumps(chunk(content=" split across reads")) + b"\n\n"
    events = [chunk(role="assistant", content=""), chunk(content=sly), split[:20], split[20:], last]
    async with FakeUpstream() as up:
        up.script(stream(events), stream(events))
        gw = await gateway_for(start_gateway, up)
        for asked in (False, True):
            response = await gw.chat({**BODY, "stream": True, "stream_options": {"include_usage": asked}})
            sent = sse_events(response.text)
            assert sent[-1] == "[DONE]"
            chunks = [orjson.loads(e) for e in sent[:-1]]
            text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
            assert text == sly + " split across reads end."
            assert chunks[-1]["usage"] == usage and chunks[-1]["choices"][0]["finish_reason"] == "stop"
