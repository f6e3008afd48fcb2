"""The PostgreSQL tenant store (``--store postgresql://USER@HOST:PORT/DATABASE``).

For a gateway of several processes or machines: every node and every admin CLI opens the same
database. The store's methods are :class:`runtimes.store.sql.SqlStore`'s (the statements SQLite
runs); this module connects, migrates and runs the transactions:

- A pool of connections (psycopg 3, ``psycopg-pool``), shared by the threads of one process.
  When a transaction finds its connection dead as it begins, the pool's idle connections are
  checked (the dead dropped) and the transaction begins once more, so a database restart costs
  no failed call once the database is back.
- A write transaction (READ COMMITTED) first takes a transaction-level advisory lock, so writes
  from every process run one at a time, as SQLite's ``BEGIN IMMEDIATE`` makes them: "check,
  then insert" cannot race, a unique constraint is the last line of defence (AlreadyExists),
  and usage counters are upserts that add in the database (no lost update). A read runs in one
  REPEATABLE READ snapshot.
- The schema (:mod:`runtimes.store.schema`, rendered for PostgreSQL) is versioned in the
  ``tokios_schema`` table and migrated on open under another advisory lock. A process that
  cannot get that lock within ``migration_lock_timeout`` (another is migrating) refuses with a
  clear message; a schema newer than this code is refused. A database already current needs
  no DDL right, so the gateway may run as a role that only reads and writes rows.

Secrets never reach the database (only their SHA-256 hashes), and the password of the URL is
never shown: :func:`redact_url` is the form used in messages.

    store = PostgresStore.open("postgresql://tokios@db:5432/tokios")   # or open_store(url)
    ...                                                                # the Store methods
    store.close()
"""

from __future__ import annotations

import contextlib
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from runtimes.store.base import AlreadyExists, NotFound, StoreError
from runtimes.store.schema import (
    POSTGRESQL,
    SCHEMA_VERSION,
    Migration,
    check_not_newer,
    statements,
)
from runtimes.store.sql import SqlStore

__all__ = ["URL_SCHEMES", "PostgresStore", "is_postgres_url", "redact_url"]

URL_SCHEMES = ("postgresql://", "postgres://")
#: Connections one process keeps at most (the gateway's store calls run in worker threads).
DEFAULT_POOL_SIZE = 8
#: Seconds to wait for a connection (the URL's own connect_timeout wins).
CONNECT_TIMEOUT = 10
#: Seconds a call waits for a free pooled connection before failing.
POOL_TIMEOUT = 15.0
#: Seconds the pool retries a lost connection (its waits double from 1 s) before it gives up
#: and starts again from 1 s at the next call: so a database back after a long outage is used
#: within a few seconds, not after a wait that doubled through the outage.
RECONNECT_TIMEOUT = 4.0
#: Seconds to wait for another process's migration before refusing to start.
DEFAULT_MIGRATION_LOCK_TIMEOUT = 30.0
#: Advisory lock keys (64-bit, per database): every write; a schema migration.
WRITE_LOCK = 0x746F6B696F730001
MIGRATION_LOCK = 0x746F6B696F730002
VERSION_TABLE = "tokios_schema"

_BEGIN_WRITE = "BEGIN ISOLATION LEVEL READ COMMITTED"
_BEGIN_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"


def is_postgres_url(location: object) -> bool:
    """True for a ``postgresql://`` or ``postgres://`` URL (the store's PostgreSQL form)."""
    return isinstance(location, str) and location.startswith(URL_SCHEMES)


def redact_url(url: str) -> str:
    """``url`` for messages: scheme, user, host, port and database; never the password or
    the query (which may hold one)."""
    try:
        parts = urllib.parse.urlsplit(url)
        user = f"{parts.username}@" if parts.username else ""
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "postgresql://(unreadable URL)"
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


def _scrub(message: str, url: str) -> str:
    """``message`` without any form of the URL's password (libpq may echo a bad token)."""
    try:
        raw = urllib.parse.urlsplit(url).netloc.rpartition("@")[0].partition(":")[2]
    except ValueError:
        raw = url
    for secret in {raw, urllib.parse.unquote(raw)} - {""}:
        message = message.replace(secret, "***")
    return " ".join(message.split())


def _conninfo(url: str) -> str:
    """The libpq connection string for ``url``, with a connect timeout and an application
    name unless the URL sets them; InvalidName-like StoreError for a malformed URL."""
    from psycopg import conninfo  # noqa: PLC0415 (optional dependency)

    try:
        params = conninfo.conninfo_to_dict(url)
    except Exception as exc:  # psycopg.ProgrammingError: libpq's parser
        raise StoreError(f"not a usable PostgreSQL URL {redact_url(url)} "
                         f"({_scrub(str(exc), url)}); expected "
                         "postgresql://USER@HOST:PORT/DATABASE") from None
    extra: dict[str, Any] = {}
    if "connect_timeout" not in params:
        extra["connect_timeout"] = CONNECT_TIMEOUT
    if "application_name" not in params:
        extra["application_name"] = "tokios"
    return conninfo.make_conninfo(url, **extra)


@lru_cache(maxsize=1024)
def _placeholders(sql: str) -> str:
    """The store's ``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Adapter:
    """A psycopg connection seen as :class:`runtimes.store.sql.Sql`."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        return self._conn.execute(_placeholders(sql), parameters)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any:
        cursor = self._conn.cursor()
        cursor.executemany(_placeholders(sql), list(parameters))
        return cursor


def _reason(exc: BaseException, url: str) -> str:
    """A psycopg error for a message: the server's primary message (no SQL echoed), else the
    client's text; the URL's password scrubbed."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    return _scrub(primary or str(exc), url)


def _version(conn: Any) -> int:
    """The schema version of the database (0: no tokios schema yet). The catalog is read
    with the statement's own snapshot (``to_regclass`` could answer from a stale cache right
    after another process created the table)."""
    if conn.execute("SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = current_schema() "
                    "AND tablename = %s", (VERSION_TABLE,)).fetchone() is None:
        return 0
    found = conn.execute(f"SELECT max(version) FROM {VERSION_TABLE}").fetchone()[0]  # noqa: S608
    return int(found or 0)


def migrate(conn: Any, where: str, url: str, *, create: bool = True,
            lock_timeout: float = DEFAULT_MIGRATION_LOCK_TIMEOUT) -> Migration:
    """Bring the schema of ``conn``'s database (autocommit) to SCHEMA_VERSION in one
    transaction under the migration lock; see the module doc. ``create=False``: a database
    without a tokios schema is NotFound instead of being given one."""
    import psycopg  # noqa: PLC0415 (optional dependency)

    version = _version(conn)
    check_not_newer(version, where)
    if version == SCHEMA_VERSION:
        return Migration(version, version)
    if version == 0 and not create:
        raise NotFound(f"no tokios schema in {where} (`tokios-gateway migrate --store URL` "
                       "creates it)")
    conn.execute("BEGIN")
    try:
        conn.execute(f"SET LOCAL lock_timeout = {max(1, int(lock_timeout * 1000))}")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        version = _version(conn)  # another process may have migrated while we waited
        check_not_newer(version, where)
        if version == 0:
            conn.execute(f"CREATE TABLE {VERSION_TABLE} (version INTEGER PRIMARY KEY, "
                         "applied_at DOUBLE PRECISION NOT NULL)")
        for index in range(version, SCHEMA_VERSION):
            for statement in statements(index, POSTGRESQL):
                conn.execute(statement)
            conn.execute(f"INSERT INTO {VERSION_TABLE} (version, applied_at) "  # noqa: S608
                         "VALUES (%s, %s)", (index + 1, time.time()))
        conn.execute("COMMIT")
    except BaseException as exc:
        with contextlib.suppress(psycopg.Error):
            conn.execute("ROLLBACK")
        if isinstance(exc, psycopg.errors.LockNotAvailable):
            raise StoreError(f"another process is migrating the schema of {where} (it holds "
                             f"the migration lock for more than {lock_timeout:g} s); try "
                             "again when it is done") from None
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            raise StoreError(f"cannot migrate the schema of {where} from version {version} to "
                             f"{SCHEMA_VERSION}: {_reason(exc, url)}. Run `tokios-gateway "
                             "migrate` as a "
                             "role that may create tables (the database owner)") from None
        raise
    return Migration(version, SCHEMA_VERSION)


class PostgresStore(SqlStore):
    """The PostgreSQL implementation of :class:`runtimes.store.base.Store`."""

    def __init__(self, pool: Any, url: str, clock: Callable[[], float],
                 migration: Migration) -> None:
        """Use :meth:`open`; this takes an opened pool on a migrated database."""
        super().__init__(clock)
        self._pool: Any = pool
        self._url = url
        self.location = redact_url(url)
        self.migration = migration

    @classmethod
    def open(cls, url: str, *, clock: Callable[[], float] = time.time, create: bool = True,
             pool_size: int = DEFAULT_POOL_SIZE,
             migration_lock_timeout: float = DEFAULT_MIGRATION_LOCK_TIMEOUT) -> PostgresStore:
        """Connect to ``url``, migrate its schema (see the module doc) and open the pool.
        ``create=False``: NotFound if the database has no tokios schema yet."""
        try:
            import psycopg  # noqa: PLC0415 (optional dependency)
            from psycopg_pool import ConnectionPool  # noqa: PLC0415
        except ImportError:
            raise StoreError("the PostgreSQL store needs psycopg 3 and psycopg-pool "
                             "(pip install 'tokios[postgresql]')") from None
        conninfo = _conninfo(url)
        where = f"the PostgreSQL database {redact_url(url)}"
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                migration = migrate(conn, where, url, create=create,
                                    lock_timeout=migration_lock_timeout)
        except psycopg.OperationalError as exc:
            raise StoreError(f"cannot use {where}: {_reason(exc, url)}") from None
        except psycopg.Error as exc:
            raise StoreError(f"cannot migrate {where}: {_reason(exc, url)}") from None
        pool = ConnectionPool(conninfo, min_size=1, max_size=max(1, pool_size),
                              kwargs={"autocommit": True}, open=False, timeout=POOL_TIMEOUT,
                              reconnect_timeout=RECONNECT_TIMEOUT, name="tokios-store")
        pool.open(wait=False)
        return cls(pool, url, clock, migration)

    @contextmanager
    def _begun(self, *, write: bool) -> Iterator[Any]:
        """A pooled connection inside BEGIN (and, to write, the write lock); when the first
        one turns out dead, the pool drops its dead connections and a second one is tried."""
        import psycopg  # noqa: PLC0415

        pool = self._pool
        if pool is None:
            raise StoreError("the store is closed")
        for attempt in (1, 2):
            with pool.connection() as conn:
                try:
                    conn.execute(_BEGIN_WRITE if write else _BEGIN_READ)
                    if write:
                        # READ COMMITTED, so each statement after the lock sees every write
                        # committed by the processes that held it before
                        conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                except psycopg.OperationalError:
                    if attempt == 2 or not conn.broken:
                        raise
                else:
                    yield conn
                    return
            # the dead connection went back to the pool, which drops it; its idle siblings
            # died the same way (a database restart): drop those too, then try once more
            pool.check()

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[_Adapter]:
        """One transaction (see the module doc); psycopg errors become StoreError."""
        import psycopg  # noqa: PLC0415
        from psycopg_pool import PoolTimeout  # noqa: PLC0415

        try:
            with self._begun(write=write) as conn:
                try:
                    yield _Adapter(conn)
                except BaseException:
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        except psycopg.errors.IntegrityError as exc:
            raise AlreadyExists(f"conflicting record: {_reason(exc, self._url)}") from exc
        except PoolTimeout as exc:
            raise StoreError(f"no connection to {self.location} within {POOL_TIMEOUT:g} s "
                             "(the database is unreachable or every connection is busy)"
                             ) from exc
        except psycopg.Error as exc:
            raise StoreError(f"database error: {_reason(exc, self._url)}") from exc

    def close(self) -> None:
        """Close the pool; further calls raise StoreError. Idempotent."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=5)

    def __enter__(self) -> PostgresStore:
        return self
