"""Fixtures of the runtime tests: ``store_backend``, the tenant store on SQLite and on a real
PostgreSQL, so that one test body checks both implementations of the store contract; and
``make_state``, the cluster state on a real Redis and on the workers' SQLite file."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runtimes.cluster.state import ClusterState, LocalClusterState, RedisClusterState
from tests.services import PostgresServer, RedisServer
from tests.store_backends import BACKENDS, StoreBackend, postgres_database


@pytest.fixture(params=BACKENDS)
def store_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreBackend]:
    """The store on SQLite (a fresh data directory) and on PostgreSQL (a fresh database)."""
    if request.param == "sqlite":
        yield StoreBackend("sqlite", str(tmp_path / "data"))
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    with postgres_database(server) as url:
        yield StoreBackend("postgresql", url, server)


#: Makes a new connection to one shared cluster state (each call: another node).
ClusterStateFactory = Callable[[], ClusterState]


@pytest.fixture(params=["redis", "local"])
def make_state(request: pytest.FixtureRequest, tmp_path: Path) -> ClusterStateFactory:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        return lambda: RedisClusterState(server.url)
    return lambda: LocalClusterState(tmp_path / "cluster.db")
