"""Upstream credentials never reach a client, whatever an upstream repeats and wherever it says it.

The fake upstream here echoes what it was sent (its Authorization header, an extra header's value
and the URL path, which carries an account id from a `${VAR}` in the provider's `api`) into every
field it can: error message, type, code, param, nested values, SSE error events before and after
content, and a successful answer's text and model.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.conftest import FAST_POLICY, GatewayFactory, RunningGateway, model_json, provider_json, secret
from tests.fakes.upstream import FakeUpstream, chunk, leak, pause, stream

KEY = secret("sk-leaky-upstream-key-0123456789")
ACCOUNT = secret("acct-7f3e9a1b2c4d")
TEAM_TOKEN = secret("team-token-5566778899")
SECRETS = (KEY, ACCOUNT, TEAM_TOKEN)
ASK: dict[str, Any] = {"model": "acme/m1", "messages": [{"role": "user", "content": "hi"}]}


async def gateway(start_gateway: GatewayFactory, up: FakeUpstream) -> RunningGateway:
    root = up.base_url.removesuffix("/v1")
    catalog = provider_json("acme", f"{root}/accounts/${{ACME_ACCOUNT}}/v1", [model_json("m1")],
                            env=["ACME_ACCOUNT", "ACME_API_KEY"])
    environ = {"ACME_API_KEY": KEY, "ACME_ACCOUNT": ACCOUNT, "TEAM_TOKEN": TEAM_TOKEN}
    config = {**FAST_POLICY, "providers": {"acme": {"headers": {"X-Team-Token": "${TEAM_TOKEN}"}}}}
    return await start_gateway(config, catalogs=[provider_json("other", "http://127.0.0.1:9/v1"), catalog],
                               environ=environ)


def assert_sent_and_masked(up: FakeUpstream, text: str) -> None:
    seen = up.received[0]
    assert seen.headers["authorization"] == f"Bearer {KEY}" and seen.headers["x-team-token"] == TEAM_TOKEN
    assert ACCOUNT in seen.path, "the upstream did get every secret, so it had them to repeat"
    for value in SECRETS:
        assert value not in text, f"{value[:8]}… reached the client: {text[:400]}"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("nested", [False, True])
async def test_a_passed_through_4xx_masks_every_field(start_gateway: GatewayFactory, stream: bool,
                                                      nested: bool) -> None:
    async with FakeUpstream() as up:
        up.default = leak("status", code=400, nested=nested)
        gw = await gateway(start_gateway, up)
        response = await gw.chat({**ASK, "stream": stream})
        assert response.status_code == 400
        error = response.json()["error"]
        assert "***" in str(error["type"]) and "***" in str(error["code"]) and "***" in str(error["param"])
        assert_sent_and_masked(up, response.text)


@pytest.mark.parametrize("stream", [False, True])
async def test_the_all_targets_failed_summary_is_masked(start_gateway: GatewayFactory, stream: bool) -> None:
    async with FakeUpstream() as up:
        up.default = leak("status", code=500)
        gw = await gateway(start_gateway, up)
        response = await gw.chat({**ASK, "stream": stream})
        assert response.status_code == 502
        assert "***" in response.json()["error"]["message"]
        assert len(up.received) == FAST_POLICY["retry"]["attempts"]
        assert_sent_and_masked(up, response.text)


async def test_a_stream_error_event_before_content_is_masked(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.default = leak("stream_error_first")
        gw = await gateway(start_gateway, up)
        response = await gw.chat({**ASK, "stream": True})
        assert response.status_code == 502
        assert "***" in response.json()["error"]["message"]
        assert_sent_and_masked(up, response.text)


async def test_a_stream_error_event_after_content_is_masked(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.default = leak("stream_error_after")
        gw = await gateway(start_gateway, up)
        response = await gw.chat({**ASK, "stream": True})
        assert response.status_code == 200
        assert "Hello" in response.text and "event: error" in response.text and "***" in response.text
        assert_sent_and_masked(up, response.text)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_var_in_the_configs_base_url_is_masked_too(start_gateway: GatewayFactory, stream: bool) -> None:
    async with FakeUpstream() as up:
        up.default = leak("status", code=400)
        root = up.base_url.removesuffix("/v1")
        config = {**FAST_POLICY, "providers": {"acme": {"base_url": f"{root}/accounts/${{ACME_ACCOUNT}}/v1",
                                                        "headers": {"X-Team-Token": "${TEAM_TOKEN}"}}}}
        gw = await start_gateway(config, catalogs=[provider_json("acme", "http://127.0.0.1:9/v1", [model_json("m1")])],
                                 environ={"ACME_API_KEY": KEY, "ACME_ACCOUNT": ACCOUNT, "TEAM_TOKEN": TEAM_TOKEN})
        response = await gw.chat({**ASK, "stream": stream})
        assert response.status_code == 400 and "***" in response.json()["error"]["param"]
        assert_sent_and_masked(up, response.text)


@pytest.mark.parametrize("stream", [False, True])
async def test_an_answer_quoting_the_credentials_is_masked(start_gateway: GatewayFactory, stream: bool) -> None:
    async with FakeUpstream() as up:
        up.default = leak("answer")
        gw = await gateway(start_gateway, up)
        response = await gw.chat({**ASK, "stream": stream})
        assert response.status_code == 200
        assert "***" in response.text and "/chat/completions" in response.text
        assert_sent_and_masked(up, response.text)


async def test_a_credential_split_across_two_reads_of_a_stream_is_masked(start_gateway: GatewayFactory) -> None:
    # Masking works on whole events: the relay masks what it sends once per read, and an event cut
    # between two reads is sent only once its end has arrived, so the two halves are masked together.
    quoted = b"data: " + orjson.dumps(chunk(content=f"the key is {KEY}, see?")) + b"\n\n"
    cut_at = quoted.index(KEY.encode()) + len(KEY) // 2
    async with FakeUpstream() as up:
        up.script(stream([chunk(role="assistant", content=""), chunk(content="Hello"), quoted[:cut_at], pause(0.05),
                          quoted[cut_at:], chunk(finish_reason="stop")]))
        gw = await gateway(start_gateway, up)
        response = await gw.chat({**ASK, "stream": True})
        assert response.status_code == 200 and "the key is ***, see?" in response.text
        assert_sent_and_masked(up, response.text)
