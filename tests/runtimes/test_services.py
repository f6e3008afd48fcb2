"""The test fixtures' PostgreSQL and Redis are real servers that answer (tests/services.py)."""

from __future__ import annotations

import psycopg
import redis

from tests.services import PostgresServer, RedisServer


def test_postgres_is_a_real_server(postgres_server: PostgresServer) -> None:
    dsn = postgres_server.create_database("services_check")
    with psycopg.connect(dsn) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (41), (1)")
        total = conn.execute("SELECT sum(x) FROM t").fetchone()
    assert version is not None and int(version[0].split(".")[0]) >= 13
    assert total == (42,)


def test_redis_is_a_real_server(redis_server: RedisServer) -> None:
    with redis.Redis.from_url(redis_server.url) as client:
        assert client.ping()
        client.set("k", "v", px=10_000)
        assert client.get("k") == b"v"
        assert client.info("server")["redis_version"]
