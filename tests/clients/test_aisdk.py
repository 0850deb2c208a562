"""The Vercel AI SDK (what OpenWork loads for a custom provider), built from the published JSON.

Runs tests/clients/aisdk/run.mjs with Node against a real gateway: generateText, streamText and a
tool call round trip through the echo model.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT, GatewayFactory

AISDK = ROOT / "tests" / "clients" / "aisdk"
KEY = "aisdk-gateway-key-13579"


def node_or_skip() -> str:
    node = shutil.which("node")
    missing = "node is not installed" if node is None else None
    if node is not None and not (AISDK / "node_modules").is_dir():
        missing = "run `npm ci --prefix tests/clients/aisdk` first"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; CI must run the AI SDK client test")
        pytest.skip(missing)
    assert node is not None
    return node


async def test_ai_sdk_generate_stream_and_tool_call(start_gateway: GatewayFactory, tmp_path: Path) -> None:
    node = node_or_skip()
    gw = await start_gateway(
        {"auth": {"keys": [{"name": "openwork", "key": "${AISDK_GATEWAY_KEY}"}]},
         "publish": {"id": "acme", "name": "Acme Gateway", "env": "ACME_GATEWAY_API_KEY"}},
        environ={"AISDK_GATEWAY_KEY": KEY})
    published = (await gw.client.get("/openwork/provider.json", headers={"authorization": f"Bearer {KEY}"})).json()
    assert published["env"] == ["ACME_GATEWAY_API_KEY"] and published["api"] == f"{gw.base_url}/v1"
    path = tmp_path / "provider.json"
    path.write_text(json.dumps(published))

    env = {**os.environ, "ACME_GATEWAY_API_KEY": KEY, "AISDK_MODEL": "echo/echo"}
    process = await asyncio.create_subprocess_exec(node, str(AISDK / "run.mjs"), str(path), cwd=AISDK, env=env,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, out.decode() + err.decode()
    cases = {c["case"]: c for c in (json.loads(line) for line in out.decode().splitlines() if line.strip())}

    assert cases["generate"]["text"] == "You said: hello from the ai sdk"
    assert cases["generate"]["finishReason"] == "stop" and cases["generate"]["usage"]["outputTokens"] == 7
    assert cases["stream"]["text"] == "You said: stream these words please"
    assert cases["stream"]["chunks"] > 1, "the answer must arrive in pieces"
    assert cases["stream"]["usage"]["outputTokens"] == 6
    tool = cases["tool"]
    assert tool["toolCalls"] == [{"toolName": "get_weather", "input": {"city": "Lisbon"}}]
    assert tool["toolResults"][0]["output"] == "21C and sunny in Lisbon"
    assert tool["text"] == "Tool result: 21C and sunny in Lisbon" and tool["steps"] == 2
