"""Two real worker processes sharing one SQLite state file: exact limits, live keys, a ledger that adds up."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from tests.conftest import ROOT, GatewayProcess, model_json, provider_json, secret
from tests.fakes.upstream import FakeUpstream, Received, Reply, chunk, ok, stall, status, stream

TEAM_KEY = "team-key-for-workers-0123456789"
ADMIN_KEY = "admin-key-for-workers-0123456789"
# A key change takes effect on every worker within 1 s: each worker re-reads the keys every
# POLL_SECONDS (tests/teams/test_keys_poll.py holds the poll to that without a clock). Here, with
# two real processes on a shared machine, only that it happens is asserted; how long it took is
# a timing, and belongs in a report, not in an assertion that fails when the machine is busy.
PROPAGATION = 1.0


def write_config(tmp_path: Path, up: FakeUpstream, limits: dict[str, Any] | None = None, timeouts: float = 5) -> Path:
    catalog = tmp_path / "acme.json"
    catalog.write_bytes(orjson.dumps(provider_json("acme", up.base_url, [model_json("m1")])))
    auth: dict[str, Any] = {"keys": [{"name": "team", "key": "${TEAM_KEY}"}],
                            "admin_keys": [{"name": "ops", "key": "${ADMIN_KEY}"}]}
    if limits:
        auth["keys"][0]["limits"] = limits
    config = {"server": {"workers": 2}, "catalog": [str(catalog)], "auth": auth, "retry": {"attempts": 1},
              "timeouts": {"connect": 2, "first_byte": timeouts, "first_token": timeouts, "idle": timeouts,
                           "response": 2 * timeouts, "total": 4 * timeouts}}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def environ() -> dict[str, str]:
    return {**os.environ, "ACME_API_KEY": "sk-acme-workers", "TEAM_KEY": secret(TEAM_KEY),
            "ADMIN_KEY": secret(ADMIN_KEY)}


def start(config: Path, *, session: bool = False) -> GatewayProcess:
    gateway = GatewayProcess(["--config", str(config)], environ(), session=session)
    gateway.wait_for_output("Application startup complete", count=2)  # both workers serve
    return gateway


def ledger(config: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(config.parent / "gateway-state.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM ledger ORDER BY id")]


BODY = {"model": "acme/m1", "messages": [{"role": "user", "content": "hi"}]}


async def test_two_workers_share_an_rpm_limit_exactly(tmp_path: Path) -> None:
    async with FakeUpstream() as up:
        config = write_config(tmp_path, up, {"rpm": 10}, timeouts=60)
        gateway = start(config)
        try:
            # A fresh connection per request, so the kernel spreads them over both workers.
            async def one() -> tuple[httpx.Response, float]:
                async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
                    answer = await client.post("/v1/chat/completions", json=BODY,
                                               headers={"authorization": f"Bearer {TEAM_KEY}"})
                return answer, time.monotonic()

            started = time.monotonic()
            results = await asyncio.gather(*(one() for _ in range(30)))
            span = max(at for _, at in results) - started
        finally:
            gateway.stop()
        answers = [answer for answer, _ in results]
        statuses = sorted(a.status_code for a in answers)
        assert set(statuses) <= {200, 429}, [(a.status_code, a.text[:200]) for a in answers if a.status_code != 429]
        # The bucket refills continuously (10 a minute): exactly 10 unless the 30 took 6 s or more on a
        # loaded machine, in which case one more per 6 s is right, never more.
        admitted = statuses.count(200)
        assert 10 <= admitted <= 10 + int(span * 10 / 60), (admitted, span)
        for answer in answers:
            assert answer.headers["x-ratelimit-limit-requests"] == "10"
            if answer.status_code == 429:
                assert int(answer.headers["retry-after"]) >= 1
                assert answer.json()["error"]["code"] == "rate_limit_exceeded"
                assert answer.headers["x-ratelimit-remaining-requests"] == "0"
        assert len(up.received) == admitted
        rows = ledger(config)
        assert sorted(r["status"] for r in rows) == statuses


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args, "--config", str(config)], cwd=ROOT, env=environ(),
                          capture_output=True, text=True, timeout=60)


async def cli_running(config: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, "--config", str(config), cwd=ROOT,
        env={**environ(), "PYTHONUNBUFFERED": "1"}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)


def changed_at(config: Path, name: str) -> float:
    """When the key's last change was committed: the time the CLI or /admin stamped on it (wall clock)."""
    with sqlite3.connect(config.parent / "gateway-state.db") as db:
        row = db.execute("SELECT created_at, updated_at, revoked_at FROM keys WHERE name = ?", (name,)).fetchone()
    return max(t for t in row if t is not None)


async def within_a_second(config: Path, name: str, holds: Any, what: str, since: float | None = None) -> None:
    """Poll `holds` (an async callable) until it does, which must be on every worker (`holds` asks
    both); 30 s past the change it never will. `since`: a time before the change, while the change is
    still being made. The time it took is printed (pytest -s), beside the 1 s the README promises."""
    while not await holds():
        assert time.time() - (since or changed_at(config, name)) < PROPAGATION + 30, f"never: {what}"
        await asyncio.sleep(0.02)  # the polling pace, not a synchronisation
    print(f"{what}: {time.time() - changed_at(config, name):.2f} s after the change (promised: {PROPAGATION:g} s)")


async def every_worker(url: str, key: str, expected: int) -> bool:
    """Six requests at once, each on a fresh connection (both workers, in practice), all answer `expected`."""
    async def one() -> int:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            answer = await client.post("/v1/chat/completions", json=BODY, headers={"authorization": f"Bearer {key}"})
        return answer.status_code

    return all(code == expected for code in await asyncio.gather(*(one() for _ in range(6))))


async def test_keys_from_the_cli_and_admin_take_effect_on_every_worker(tmp_path: Path) -> None:
    async with FakeUpstream() as up:
        config = write_config(tmp_path, up)
        gateway = start(config)
        try:
            # The CLI runs beside the polling: its process exits well after its change is committed.
            made = await cli_running(config, "keys", "create", "cli-app", "--rpm", "1000", "--models", "acme/*")
            assert made.stdout is not None
            value = secret((await made.stdout.readline()).decode().strip())  # printed right after the commit
            await within_a_second(config, "cli-app", lambda: every_worker(gateway.url, value, 200),
                                  "a key made by the CLI works")
            assert await made.wait() == 0
            for args, expected, what in ((("update", "cli-app", "--models", "echo/*"), 403,
                                          "a narrowed key is refused the model"),
                                         (("revoke", "cli-app"), 401, "a revoked key is refused")):
                before = changed_at(config, "cli-app")
                changing = await cli_running(config, "keys", *args)

                async def changed(expected: int = expected, before: float = before) -> bool:
                    return changed_at(config, "cli-app") > before and await every_worker(gateway.url, value, expected)

                await within_a_second(config, "cli-app", changed, what, since=before)
                assert await changing.wait() == 0

            admin = {"authorization": f"Bearer {ADMIN_KEY}"}
            async with httpx.AsyncClient(base_url=gateway.url, timeout=30, headers=admin) as client:
                created = await client.post("/admin/keys", json={"name": "http-app"})
                assert created.status_code == 201
                value = secret(created.json()["key"])
                await within_a_second(config, "http-app", lambda: every_worker(gateway.url, value, 200),
                                      "a key made over HTTP works")
                assert (await client.patch("/admin/keys/http-app", json={"rpm": 1})).status_code == 200

                async def limited() -> bool:
                    return not await every_worker(gateway.url, value, 200)

                await within_a_second(config, "http-app", limited, "a new limit holds")
                assert (await client.delete("/admin/keys/http-app")).status_code == 200
                await within_a_second(config, "http-app", lambda: every_worker(gateway.url, value, 401),
                                      "a key revoked over HTTP is refused")
            listed = cli(config, "keys", "list", "--format", "csv")
            assert listed.stdout.splitlines()[0].startswith("name,prefix,state")
            assert {line.split(",")[0]: line.split(",")[2] for line in listed.stdout.splitlines()[1:]} == {
                "cli-app": "revoked", "http-app": "revoked"}
        finally:
            gateway.stop()


class Mixed(Reply):
    """Answers by what the prompt asks for: an answer, a client error, or a stream the client walks out of."""

    delay = 0.0
    headers: dict[str, str] = {}

    async def respond(self, conn: Any, request: Received) -> None:
        prompt = request.json["messages"][0]["content"]
        if prompt == "fail":
            reply = status(400, {"error": {"message": "bad", "type": "invalid_request_error", "code": None}})
        elif prompt == "leave":
            reply = stream([chunk(role="assistant", content=""), chunk(content="partial"), stall()])
        else:
            reply = ok("fine thanks")
        await reply.respond(conn, request)


def mixed_prompts(n: int) -> Iterator[str]:
    for index in range(n):
        yield "fail" if index % 10 == 3 else "leave" if index % 10 == 7 else "ok"


async def load(url: str, prompts: list[str], concurrency: int = 16) -> list[int]:
    queue = list(reversed(prompts))
    statuses: list[int] = []

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30,
                                     headers={"authorization": f"Bearer {TEAM_KEY}"}) as client:
            while queue:
                prompt = queue.pop()
                body = {**BODY, "messages": [{"role": "user", "content": prompt}], "stream": prompt == "leave"}
                try:
                    if prompt == "leave":
                        async with client.stream("POST", "/v1/chat/completions", json=body) as answer:
                            async for _ in answer.aiter_raw():
                                break  # the first bytes, then walk away
                        statuses.append(499)
                    else:
                        statuses.append((await client.post("/v1/chat/completions", json=body)).status_code)
                except httpx.TransportError:
                    statuses.append(0)  # the gateway was killed under us

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


async def test_the_ledger_matches_the_upstream_after_1000_mixed_requests(tmp_path: Path) -> None:
    async with FakeUpstream() as up:
        up.default = Mixed()
        config = write_config(tmp_path, up)
        gateway = start(config)
        try:
            statuses = await load(gateway.url, list(mixed_prompts(1000)))
        finally:
            gateway.stop()  # a clean stop writes the last batch
        rows = ledger(config)
        seen = (Counter(statuses), Counter((r["status"], r["error_type"], r["attempts"]) for r in rows),
                len(up.received))
        assert statuses.count(200) == 800 and statuses.count(400) == 100 and statuses.count(499) == 100, seen
        assert len(rows) == 1000, seen
        assert sum(r["attempts"] for r in rows) == len(up.received) == 1000, seen
        assert sum(1 for r in rows if r["status"] == 200 and r["error_type"] is None) == 800
        assert {r["key"] for r in rows} == {"team"}
        assert sum(r["output_tokens"] for r in rows if r["status"] == 200) == 800 * 2


async def test_a_kill_9_mid_load_loses_at_most_the_last_batch_and_never_corrupts(tmp_path: Path) -> None:
    async with FakeUpstream() as up:
        up.default = Mixed()
        config = write_config(tmp_path, up)
        gateway = start(config, session=True)
        running = asyncio.create_task(load(gateway.url, list(mixed_prompts(3000)), concurrency=8))
        await up.wait_for_requests(300, timeout=60)
        gateway.kill()
        await running
        served = len(up.received)
        with sqlite3.connect(config.parent / "gateway-state.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            kept = db.execute("SELECT count(*), total(attempts) FROM ledger").fetchone()
        assert 0 < kept[1] <= served  # rows up to the last written batch; none invented
        again = start(config)
        try:
            assert await every_worker(again.url, TEAM_KEY, 200)
        finally:
            again.stop()
        assert len(ledger(config)) == kept[0] + 6
