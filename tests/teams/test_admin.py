"""/admin/keys and /admin/usage on a running gateway: admin keys only, strict input, keys live at once."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from tests.conftest import LOG_LINES, GatewayFactory, RunningGateway, secret
from tests.fakes.upstream import FakeUpstream

ADMIN = "admin-key-0123456789abcdef"
ORDINARY = "ordinary-key-0123456789abcdef"
PROMPT = "PROMPT-MARKER-never-stored-7f3a"


async def admin_gateway(start_gateway: GatewayFactory) -> RunningGateway:
    environ = {"ADMIN_KEY": secret(ADMIN), "USER_KEY": secret(ORDINARY)}
    auth = {"keys": [{"name": "user", "key": "${USER_KEY}"}], "admin_keys": [{"name": "ops", "key": "${ADMIN_KEY}"}]}
    return await start_gateway({"auth": auth}, environ=environ)


def as_admin(key: str = ADMIN) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_a_created_key_works_at_once_and_a_revoked_one_stops(start_gateway: GatewayFactory) -> None:
    gw = await admin_gateway(start_gateway)
    created = await gw.client.post("/admin/keys", headers=as_admin(),
                                   json={"name": "app", "models": ["echo/*"], "rpm": 5, "budget_usd": 2,
                                         "period": "week", "metadata": {"owner": "data-team"}})
    assert created.status_code == 201, created.text
    value = secret(created.json()["key"])
    assert value.startswith("gwk-") and len(value) >= 4 + 43  # 32 random bytes, base64url
    assert created.json()["prefix"] == value[:10] + "…"
    body = {"model": "echo/echo", "messages": [{"role": "user", "content": "hi"}]}
    answer = await gw.chat(body, headers={"authorization": f"Bearer {value}"})
    assert answer.status_code == 200 and answer.headers["x-ratelimit-limit-requests"] == "5"
    shown = (await gw.client.get("/admin/keys/app", headers=as_admin())).json()
    assert shown["rpm"] == 5 and shown["spend"]["period"].startswith("week:") and "key" not in shown
    listed = (await gw.client.get("/admin/keys", headers=as_admin())).json()["data"]
    assert [k["name"] for k in listed] == ["app"] and all("key" not in k for k in listed)
    changed = await gw.client.patch("/admin/keys/app", headers=as_admin(), json={"rpm": None, "tpm": 10})
    assert changed.status_code == 200 and changed.json()["rpm"] is None and changed.json()["tpm"] == 10
    revoked = await gw.client.delete("/admin/keys/app", headers=as_admin())
    assert revoked.json()["state"] == "revoked"
    refused = await gw.chat(body, headers={"authorization": f"Bearer {value}"})
    assert refused.status_code == 401
    with sqlite3.connect(gw.app.runtime.settings.state.path or "") as db:
        stored = db.execute("SELECT digest, prefix FROM keys").fetchall()
    assert stored and value.encode() not in stored[0][0] and len(stored[0][0]) == 32


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "fragment"),
    [
        ("POST", "/admin/keys", {"name": "a", "rpmm": 5}, 400, "Unknown field `rpmm`"),
        ("POST", "/admin/keys", {"name": "a", "rpm": -5}, 400, "`rpm`: Input should be greater than or equal to 1"),
        ("POST", "/admin/keys", {"name": "a", "budget_usd": 0}, 400, "`budget_usd`"),
        ("POST", "/admin/keys", {"name": "a", "period": "year"}, 400, "`period`"),
        ("POST", "/admin/keys", {"name": "a b"}, 400, "`name`"),
        ("POST", "/admin/keys", {"name": "a", "expires": "next tuesday"}, 400, "not an ISO date"),
        ("POST", "/admin/keys", {"name": "user"}, 409, "is a key name in the config"),
        ("POST", "/admin/keys", [1, 2], 400, "must be a JSON object"),
        ("PATCH", "/admin/keys/ghost", {"rpm": 1}, 404, "No managed key named `ghost`"),
        ("PATCH", "/admin/keys/dup", {"name": "x"}, 400, "Unknown field `name`"),
        ("GET", "/admin/usage?by=colour", None, 400, "`by` must be one of"),
        ("GET", "/admin/usage?since=yesterday", None, 400, "neither a span"),
        ("GET", "/admin/usage?limit=5", None, 400, "Unknown query parameter `limit`"),
        ("PUT", "/admin/keys", {}, 405, "not allowed"),
    ],
)
async def test_bad_admin_input_gets_a_clear_4xx(start_gateway: GatewayFactory, method: str, path: str, body: Any,
                                               status: int, fragment: str) -> None:
    gw = await admin_gateway(start_gateway)
    assert (await gw.client.post("/admin/keys", headers=as_admin(), json={"name": "dup"})).status_code == 201
    answer = await gw.client.request(method, path, headers=as_admin(), json=body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert fragment in error["message"] and error["type"]


async def test_duplicates_and_oversized_bodies_are_refused(start_gateway: GatewayFactory) -> None:
    gw = await admin_gateway(start_gateway)
    assert (await gw.client.post("/admin/keys", headers=as_admin(), json={"name": "one"})).status_code == 201
    again = await gw.client.post("/admin/keys", headers=as_admin(), json={"name": "one"})
    assert again.status_code == 409 and "already exists" in again.json()["error"]["message"]
    huge = await gw.client.post("/admin/keys", headers=as_admin(), content=b"{" + b" " * 70_000 + b"}")
    assert huge.status_code == 413
    bad = await gw.client.post("/admin/keys", headers=as_admin(), content=b"{nope")
    assert bad.status_code == 400


async def test_only_admin_keys_reach_admin(start_gateway: GatewayFactory) -> None:
    gw = await admin_gateway(start_gateway)
    ordinary = await gw.client.get("/admin/keys", headers=as_admin(ORDINARY))
    assert ordinary.status_code == 403 and ordinary.json()["error"]["type"] == "permission_error"
    assert (await gw.client.get("/admin/usage")).status_code == 401
    assert (await gw.client.get("/admin/usage", headers=as_admin("nope"))).status_code == 401
    # An admin key is not a gateway key for the API itself.
    body = {"model": "echo/echo", "messages": [{"role": "user", "content": "hi"}]}
    assert (await gw.chat(body, headers=as_admin())).status_code == 401


async def test_usage_totals_and_no_key_or_prompt_in_ledger_logs_or_metrics(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream():
        gw = await admin_gateway(start_gateway)
        created = await gw.client.post("/admin/keys", headers=as_admin(), json={"name": "app", "rpm": 100})
        value = secret(created.json()["key"])
        body = {"model": "echo/echo", "messages": [{"role": "user", "content": PROMPT}]}
        for key, stream in ((value, False), (value, True), (ORDINARY, False)):
            answer = await gw.chat({**body, "stream": stream}, headers={"authorization": f"Bearer {key}"})
            assert answer.status_code == 200
        await gw.chat({**body, "model": "nope/x"}, headers={"authorization": f"Bearer {value}"})
        await gw.app.teams.flush()
        usage = await gw.client.get("/admin/usage", headers=as_admin(), params={"since": "1h", "by": "key"})
        rows = {r["key"]: r for r in usage.json()["data"]}
        assert rows["app"]["requests"] == 3 and rows["app"]["errors"] == 1 and rows["user"]["requests"] == 1
        assert rows["app"]["output_tokens"] > 0
        by_model = (await gw.client.get("/admin/usage", headers=as_admin(), params={"by": "model"})).json()["data"]
        assert {r["model"] for r in by_model} == {"echo/echo", "nope/x"}
        with sqlite3.connect(gw.app.runtime.settings.state.path or "") as db:
            dump = "\n".join(db.iterdump())
        metrics = (await gw.client.get("/metrics")).text
        for secret_text in (value, ORDINARY, ADMIN, PROMPT):
            assert secret_text not in dump
            assert secret_text not in metrics
        assert not [line for line in LOG_LINES if PROMPT in line or value in line]
