"""Two gateways sharing one real PostgreSQL (`state.ledger`): one ledger row per request from both,
keys changed through one replica live on the other within 1 s, the CLI on the same database, and
the server killed mid-load and restarted without a ledger row lost or a request failed.

Each test asks for `postgres_url` before `start_gateway`: fixtures end in reverse order, so the
database outlives the gateways and their last ledger rows are written at their drain."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import yaml

from gateway.config.load import parse_settings
from gateway.errors import ConfigError
from tests.conftest import LOG_LINES, ROOT, GatewayFactory, RunningGateway, model_json, provider_json, secret
from tests.fakes.servers import PostgresServer
from tests.fakes.upstream import FakeUpstream

TEAM_KEY = "team-key-for-postgres-0123456789"
ADMIN_KEY = "admin-key-for-postgres-0123456789"
PASSWORD = "pg-password-never-logged-5e1d"  # the test server trusts loopback; the gateway must still hide it
PROPAGATION = 1.0  # a key change reaches every replica within 1 s (the generation is polled every 0.25 s)
BODY = {"model": "acme/m1", "messages": [{"role": "user", "content": "hi"}]}
TEAM = {"authorization": f"Bearer {TEAM_KEY}"}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def config(up: FakeUpstream, tmp_path: Path, database: str, replica: str) -> dict[str, Any]:
    catalog = tmp_path / "acme.json"
    catalog.write_bytes(orjson.dumps(provider_json("acme", up.base_url, [model_json("m1")])))
    user_host = database.removeprefix("postgresql://")
    return {
        "catalog": [str(catalog)],
        "auth": {"keys": [{"name": "team", "key": "${TEAM_KEY}"}],
                 "admin_keys": [{"name": "ops", "key": "${ADMIN_KEY}"}]},
        "retry": {"attempts": 1},
        # Each replica has its own counters (SQLite here); keys and the ledger are the shared database's.
        "state": {"path": str(tmp_path / f"{replica}.db"),
                  "ledger": "postgresql://" + user_host.replace("@", ":${PGPASSWORD}@", 1)},
    }


def environ() -> dict[str, str]:
    return {"ACME_API_KEY": "sk-acme-pg", "TEAM_KEY": secret(TEAM_KEY), "ADMIN_KEY": secret(ADMIN_KEY),
            "PGPASSWORD": secret(PASSWORD)}


async def two_replicas(start_gateway: GatewayFactory, up: FakeUpstream, tmp_path: Path,
                       database: str) -> tuple[RunningGateway, RunningGateway]:
    a = await start_gateway(config(up, tmp_path, database, "a"), environ=environ(), echo=False)
    b = await start_gateway(config(up, tmp_path, database, "b"), environ=environ(), echo=False)
    return a, b


async def until(predicate: Callable[[], Awaitable[bool]], what: str, bound: float) -> None:
    deadline = time.monotonic() + bound
    while not await predicate():
        assert time.monotonic() < deadline, f"not within {bound} s: {what}"
        await asyncio.sleep(0.02)


async def ledger_ids(database: str) -> list[str]:
    connection = await asyncpg.connect(database)
    try:
        return [r[0] for r in await connection.fetch("SELECT request_id FROM gateway_ledger")]
    finally:
        await connection.close()


async def test_both_replicas_write_exactly_one_ledger_row_per_request(
        postgres_url: str, start_gateway: GatewayFactory, tmp_path: Path) -> None:
    database = postgres_url
    async with FakeUpstream() as up:
        a, b = await two_replicas(start_gateway, up, tmp_path, database)
        answers = await asyncio.gather(*((a if i % 2 else b).chat(BODY, headers=TEAM) for i in range(40)))
        assert [r.status_code for r in answers] == [200] * 40
        sent = sorted(r.headers["x-request-id"] for r in answers)
        await a.stop()  # a stopping replica writes its queued rows before it exits (the drain)
        await b.stop()
        assert len(up.received) == 40
        assert sorted(await ledger_ids(database)) == sent


async def test_a_key_revoked_through_one_replica_is_refused_by_the_other_within_a_second(
        postgres_url: str, start_gateway: GatewayFactory, tmp_path: Path) -> None:
    async with FakeUpstream() as up:
        a, b = await two_replicas(start_gateway, up, tmp_path, postgres_url)
        created = await a.client.post("/admin/keys", headers=ADMIN, json={"name": "app", "models": ["acme/*"]})
        assert created.status_code == 201, created.text
        app = {"authorization": f"Bearer {secret(created.json()['key'])}"}

        def answers(expected: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return (await b.chat(BODY, headers=app)).status_code == expected
            return check

        await until(answers(200), "a key made through A works on B", PROPAGATION)
        listed = (await b.client.get("/admin/keys", headers=ADMIN)).json()["data"]
        assert [k["name"] for k in listed] == ["app"]
        assert (await a.client.delete("/admin/keys/app", headers=ADMIN)).status_code == 200
        await until(answers(401), "a key revoked through A is refused by B", PROPAGATION)


def cli(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args, "--config", str(config_path)], cwd=ROOT,
                          env={**os.environ, **environ()}, capture_output=True, text=True, timeout=60)


async def test_the_cli_manages_keys_and_reads_usage_in_postgresql(
        postgres_url: str, start_gateway: GatewayFactory, tmp_path: Path) -> None:
    database = postgres_url
    async with FakeUpstream() as up:
        settings = config(up, tmp_path, database, "cli")
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(settings))
        gateway = await start_gateway(config(up, tmp_path, database, "a"), environ=environ(), echo=False)
        made = cli(path, "keys", "create", "cli-app", "--rpm", "100")
        assert made.returncode == 0, made.stderr
        key = {"authorization": f"Bearer {secret(made.stdout.strip())}"}

        async def works() -> bool:
            return (await gateway.chat(BODY, headers=key)).status_code == 200

        await until(works, "a key made by the CLI works on a running replica", PROPAGATION)
        await gateway.stop()  # its ledger rows are written before it exits
        usage = cli(path, "usage", "--key", "cli-app", "--format", "json")
        assert usage.returncode == 0, usage.stderr
        assert [(r["key"], r["requests"]) for r in orjson.loads(usage.stdout)] == [("cli-app", 1)]
        listed = cli(path, "keys", "list", "--format", "csv")
        assert [line.split(",")[:3] for line in listed.stdout.splitlines()[1:]] == [["cli-app", made.stdout[:10] + "…",
                                                                                     "active"]]


async def test_postgresql_killed_mid_load_loses_no_ledger_row_and_fails_no_request(
        postgres_url: str, postgres_server: PostgresServer, start_gateway: GatewayFactory, tmp_path: Path) -> None:
    database = postgres_url
    async with FakeUpstream() as up:
        a, b = await two_replicas(start_gateway, up, tmp_path, database)
        sent: list[httpx.Response] = []  # every answer from either replica: each must be one ledger row

        async def chat(replica: RunningGateway, headers: dict[str, str]) -> int:
            answer = await replica.chat(BODY, headers=headers)
            sent.append(answer)
            return answer.status_code

        created = await a.client.post("/admin/keys", headers=ADMIN, json={"name": "app"})
        app = {"authorization": f"Bearer {secret(created.json()['key'])}"}

        async def key_live() -> bool:
            return await chat(b, app) == 200

        await until(key_live, "the managed key is live on B", PROPAGATION)
        load: list[int] = []

        async def worker(index: int) -> None:
            while len(load) < 300:
                load.append(await chat(a if len(load) % 2 else b, app if index % 2 else TEAM))

        running = asyncio.gather(*(worker(i) for i in range(8)))
        await until(_count(up, 80), "load under way", 30)
        await postgres_server.akill()
        await until(_count(up, len(up.received) + 80), "requests served while PostgreSQL is down", 30)
        # While it is down: still ready, the managed key still works, and the metric says what is wrong
        # once the replica has tried the database (its key poll, every 0.25 s, or a ledger write): 80
        # answers can come back before either has, so the metric is waited for, not read once.
        assert (await a.client.get("/readyz")).status_code == 200
        assert await chat(b, app) == 200

        async def shown_down() -> bool:
            return 'gateway_state_backend_up{backend="postgresql"} 0.0' in (await a.client.get("/metrics")).text

        await until(shown_down, "replica A's metric shows PostgreSQL down", PROPAGATION)
        refused = await a.client.get("/admin/usage", headers=ADMIN)  # a report cannot be read now: 503, no secret
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "state_unavailable"
        assert PASSWORD not in refused.text and "postgresql://postgres@127.0.0.1:" in refused.text
        await postgres_server.astart()
        await running
        assert set(load) == {200}
        served = len(up.received)

        async def all_written() -> bool:
            try:
                return len(await ledger_ids(database)) >= len(sent)
            except (OSError, asyncpg.PostgresError):
                return False

        await until(all_written, "every queued row is written once PostgreSQL is back", 30)
        await a.stop()
        await b.stop()
        ids = await ledger_ids(database)
        assert sorted(ids) == sorted(r.headers["x-request-id"] for r in sent)
        assert sum(r.status_code == 200 for r in sent) == served  # and the upstream served each 200 once
    assert not [line for line in LOG_LINES if PASSWORD in line]


async def test_a_replica_starts_and_serves_while_postgresql_is_down_and_catches_up_when_it_returns(
        postgres_url: str, postgres_server: PostgresServer, start_gateway: GatewayFactory, tmp_path: Path) -> None:
    async with FakeUpstream() as up:
        await postgres_server.akill()
        gateway = await start_gateway(config(up, tmp_path, postgres_url, "a"), environ=environ(), echo=False)
        assert (await gateway.client.get("/readyz")).status_code == 200
        served = [await gateway.chat(BODY, headers=TEAM) for _ in range(5)]  # config keys need no database
        assert [r.status_code for r in served] == [200] * 5
        await postgres_server.astart()

        async def created() -> bool:  # /admin answers 503 until the replica's back-off lets it retry
            answer = await gateway.client.post("/admin/keys", headers=ADMIN, json={"name": "late"})
            return answer.status_code == 201

        await until(created, "the replica reaches PostgreSQL again without a restart", 10)

        async def written() -> bool:
            return len(await ledger_ids(postgres_url)) >= 5

        await until(written, "the rows queued while it was down are written", 10)
        assert set(await ledger_ids(postgres_url)) == {r.headers["x-request-id"] for r in served}


def _count(up: FakeUpstream, at_least: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(up.received) >= at_least
    return check


@pytest.mark.parametrize(("ledger", "fragment"), [
    ("mysql://db.internal/gateway", "state.ledger: the URL has `mysql://`; only PostgreSQL is supported"),
    ("postgresql://db.internal", "state.ledger: the URL names no database"),
    ("postgresql://db.internal:99999/gateway", "state.ledger: the URL cannot be read"),
    ("postgresql://gw:hunter2-literal@db.internal/gateway", "state.ledger: a literal password is refused"),
])
def test_a_bad_ledger_url_is_refused_naming_file_key_and_fix(ledger: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_settings({"catalog": ["c.json"], "state": {"ledger": ledger}}, "/etc/gateway.yaml", {})
    message = str(refused.value)
    assert message.startswith("/etc/gateway.yaml: ") and fragment in message
    assert "postgresql://gateway:${PGPASSWORD}@" in message  # the fix: how to write it
    assert "hunter2" not in message


def test_a_password_from_the_environment_never_shows_in_a_refusal() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_settings({"catalog": ["c.json"], "state": {"ledger": "postgresql://gw:${PGPASSWORD}@db/"}},
                       "/etc/gateway.yaml", {"PGPASSWORD": "s3cret-from-env"})
    assert "names no database" in str(refused.value) and "s3cret-from-env" not in str(refused.value)
