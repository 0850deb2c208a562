"""Model listings with gateway keys: a key is required, each key sees what it may call, reasons are for admins.

And the listings are documents of the loaded config: built once per runtime, never served from a
previous config after a reload.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ECHO_CATALOG, GatewayFactory, RunningGateway, model_json, provider_json

FULL, LIMITED, ADMIN = "gw-full-key-123456", "gw-echo-only-key-123456", "gw-admin-key-123456"
LISTINGS = ("/v1/models", "/v1/models?available=true", "/openwork/provider.json",
            "/openwork/provider.json?format=opencode")


async def keyed_gateway(start_gateway: GatewayFactory) -> RunningGateway:
    auth = {"keys": [{"name": "full", "key": "${FULL}"},
                     {"name": "limited", "sha256": hashlib.sha256(LIMITED.encode()).hexdigest(),
                      "models": ["echo/*"]}],
            "admin_keys": [{"name": "ops", "key": "${ADMIN}"}]}
    # `acme` has no credentials in this environment, so its models are unavailable.
    catalog = provider_json("acme", "http://127.0.0.1:9/v1", [model_json("m1")])
    return await start_gateway({"auth": auth, "models": {"smart": {"targets": ["echo/echo"]}},
                                "publish": {"include": "all"}},
                               catalogs=[catalog], environ={"FULL": FULL, "ADMIN": ADMIN})


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def ids(document: dict[str, Any]) -> set[str]:
    if "data" in document:
        return {m["id"] for m in document["data"]}
    if "models" in document and isinstance(document["models"], list):
        return {m["id"] for m in document["models"]}
    return set(next(iter(document["provider"].values()))["models"])


async def test_listings_need_a_key_when_keys_exist(start_gateway: GatewayFactory) -> None:
    gw = await keyed_gateway(start_gateway)
    for path in (*LISTINGS, "/v1/models/echo/echo"):
        for headers in ({}, bearer("not-a-key")):
            response = await gw.client.get(path, headers=headers)
            assert response.status_code == 401, path
            assert response.json()["error"]["type"] == "authentication_error"
            assert "echo/echo" not in response.text and "acme" not in response.text


async def test_a_key_sees_only_the_ids_it_may_call(start_gateway: GatewayFactory) -> None:
    gw = await keyed_gateway(start_gateway)
    for path in LISTINGS:
        limited = ids((await gw.client.get(path, headers=bearer(LIMITED))).json())
        assert "echo/echo" in limited and all(i.startswith("echo/") for i in limited), path
        full = (await gw.client.get(path, headers={"x-api-key": FULL})).json()
        assert {"echo/echo", "smart"} <= ids(full), path
    assert (await gw.client.get("/v1/models/echo/echo", headers=bearer(LIMITED))).status_code == 200
    assert (await gw.client.get("/v1/models/smart", headers=bearer(LIMITED))).status_code == 403
    assert (await gw.client.get("/v1/models/smart", headers=bearer(FULL))).status_code == 200


async def test_why_a_model_is_unavailable_is_for_admins_only(start_gateway: GatewayFactory) -> None:
    gw = await keyed_gateway(start_gateway)
    full = await gw.client.get("/v1/models", headers=bearer(FULL))
    entry = next(m for m in full.json()["data"] if m["id"] == "acme/m1")
    assert entry["available"] is False and "unavailable_reason" not in entry
    assert "ACME_API_KEY" not in full.text and "credentials" not in full.text
    one = await gw.client.get("/v1/models/acme/m1", headers=bearer(FULL))
    assert "ACME_API_KEY" not in one.text
    admin = await gw.client.get("/v1/models", headers=bearer(ADMIN))
    entry = next(m for m in admin.json()["data"] if m["id"] == "acme/m1")
    assert "ACME_API_KEY" in entry["unavailable_reason"]


async def test_without_keys_the_loopback_listing_stays_open(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway({})
    for path in LISTINGS:
        response = await gw.client.get(path)
        assert response.status_code == 200 and "echo/echo" in ids(response.json()), path


@pytest.mark.parametrize("path", ["/v1/models", "/openwork/provider.json"])
async def test_listings_follow_every_reload(start_gateway: GatewayFactory, tmp_path: Path, path: str) -> None:
    gw = await start_gateway({"models": {"alias-0": {"targets": ["echo/echo"]}}, "publish": {"include": "all"}})
    config = tmp_path / "gateway.yaml"
    for round_ in range(1, 21):
        config.write_text(f"catalog: [{ECHO_CATALOG}]\npublish: {{include: all}}\n"
                          f"models:\n  alias-{round_}:\n    targets: [echo/echo]\n")
        assert gw.app.reload()
        listed = ids((await gw.client.get(path)).json())
        assert f"alias-{round_}" in listed and f"alias-{round_ - 1}" not in listed, round_
