"""Client input the gateway cannot use is a 400 that says what is wrong, never a 500."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import GatewayFactory


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


CASES: list[tuple[str, bytes, str]] = [
    ("a text part whose text is a number",
     b'{"model": "echo/echo", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}',
     "messages"),
    ("300 levels of nested arrays",
     b'{"model": "echo/echo", "messages": [{"role": "user", "content": ' + b"[" * 300 + b'"x"' + b"]" * 300
     + b"}]}", "messages"),
    ("tool parameters that are not an object",
     b'{"model": "echo/echo", "messages": [{"role": "user", "content": "hi"}], '
     b'"tools": [{"type": "function", "function": {"name": "f", "parameters": 5}}]}', "tools"),
]


@pytest.mark.parametrize(("stream"), [False, True])
@pytest.mark.parametrize(("what", "raw", "param"), CASES, ids=[c[0] for c in CASES])
async def test_unusable_input_is_a_400(start_gateway: GatewayFactory, what: str, raw: bytes, param: str,
                                       stream: bool) -> None:
    gw = await start_gateway({})
    if stream:
        raw = raw[:-1] + b', "stream": true}'
    response = await gw.client.post("/v1/chat/completions", content=raw,
                                    headers={"content-type": "application/json"})
    assert response.status_code == 400, (what, response.text[:300])
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error


async def test_an_overlong_model_id_is_refused_without_echoing_it(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway({})
    ask = {"messages": [{"role": "user", "content": "hi"}]}
    long_id = "echo/" + "e" * 1_000_000
    for body, param in (({**ask, "model": long_id}, "model"),
                        ({**ask, "model": "echo/echo", "models": ["echo/echo", long_id]}, "models")):
        response = await gw.chat(body)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["param"] == param and "at most 256" in error["message"]
        assert len(response.content) < 1000, "the id is not echoed back"
    at_limit = await gw.chat({**ask, "model": "echo/" + "e" * 251})
    assert at_limit.status_code == 404, "256 characters is still an id, just an unknown one"
