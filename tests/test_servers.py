"""The real-server fixtures other tests build on: they start, die by SIGKILL and come back on the same port."""

from __future__ import annotations

import asyncpg
import pytest

from tests.fakes.servers import PostgresServer, RedisServer


def test_redis_url_is_a_running_empty_server(redis_server: RedisServer, redis_url: str) -> None:
    assert redis_url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_server.command("DBSIZE") == b":0"
    assert redis_server.command("SET", "k", "v") == b"+OK"


def test_each_test_gets_a_flushed_redis(redis_server: RedisServer, redis_url: str) -> None:
    # The previous test left a key behind; the fixture emptied the server before this one.
    assert redis_server.command("EXISTS", "k") == b":0"


def test_redis_killed_comes_back_on_the_same_port(redis_server: RedisServer, redis_url: str) -> None:
    port = redis_server.port
    redis_server.command("SET", "k", "v")
    redis_server.kill()
    with pytest.raises(OSError):
        redis_server.command("PING")
    redis_server.start()
    assert redis_server.port == port
    assert redis_server.command("PING") == b"+PONG"
    assert redis_server.command("EXISTS", "k") == b":0"  # no persistence by default: a crash loses it all


def test_a_killed_redis_is_running_again_for_the_next_test(redis_server: RedisServer) -> None:
    redis_server.kill()
    assert not redis_server.running


def test_after_a_test_killed_it(redis_server: RedisServer, redis_url: str) -> None:
    assert redis_server.command("PING") == b"+PONG"


async def test_postgres_url_is_a_fresh_database(postgres_url: str) -> None:
    connection = await asyncpg.connect(postgres_url)
    try:
        tables = await connection.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables == 0
        await connection.execute("CREATE TABLE t (n int)")
    finally:
        await connection.close()


async def test_postgres_killed_restarts_on_the_same_port_with_its_data(
        postgres_server: PostgresServer, postgres_url: str) -> None:
    port = postgres_server.port
    connection = await asyncpg.connect(postgres_url)
    await connection.execute("CREATE TABLE rows (n int); INSERT INTO rows SELECT generate_series(1, 100)")
    await postgres_server.akill()
    # What a dropped connection raises depends on where asyncpg's protocol was when the socket
    # died (PostgresError, OSError, InterfaceError or InternalClientError): any error will do.
    with pytest.raises((asyncpg.PostgresError, OSError, asyncpg.InterfaceError, asyncpg.InternalClientError)):
        await connection.fetchval("SELECT 1")
    connection.terminate()
    with pytest.raises(OSError):
        await asyncpg.connect(postgres_url, timeout=2)
    await postgres_server.astart()  # crash recovery on the same data directory
    assert postgres_server.port == port
    connection = await asyncpg.connect(postgres_url)
    try:
        assert await connection.fetchval("SELECT count(*) FROM rows") == 100  # every committed row survived
    finally:
        await connection.close()
