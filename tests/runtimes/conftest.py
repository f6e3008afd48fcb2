"""Fixtures of the runtime tests: ``store_backend``, the tenant store on SQLite and on a real
PostgreSQL, so that one test body checks both implementations of the store contract."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import PostgresServer
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
