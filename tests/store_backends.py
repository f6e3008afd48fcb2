"""The tenant store on SQLite and on a real PostgreSQL, for tests that check both
implementations of the store contract with one body (the ``store_backend`` fixture of
tests/runtimes/conftest.py gives a :class:`StoreBackend`; the e2e tests use
:func:`postgres_database`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from runtimes.store import PostgresStore, SqliteStore, SqlStore
from tests.services import PostgresServer

BACKENDS = ["sqlite", "postgresql"]


@dataclass
class StoreBackend:
    """Where one test's store lives: ``location`` is the data directory or the database URL
    (what ``--data`` / ``--store`` take). :meth:`open` gives a new connection each call, as
    another process would have."""

    kind: str
    location: str
    server: PostgresServer | None = None

    @property
    def cli_args(self) -> list[str]:
        """The admin CLI's option naming this store."""
        return ["--store", self.location] if self.kind == "postgresql" \
            else ["--data", self.location]

    def open(self, *, clock: Callable[[], float] | None = None, create: bool = True) -> SqlStore:
        options = {} if clock is None else {"clock": clock}
        if self.kind == "postgresql":
            return PostgresStore.open(self.location, create=create, **options)
        return SqliteStore.open(self.location, create=create, **options)


@contextmanager
def postgres_database(server: PostgresServer) -> Iterator[str]:
    """A fresh database on ``server`` for one test (dropped afterwards); its URL."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    url = server.create_database(name)
    try:
        yield url
    finally:
        import psycopg

        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
