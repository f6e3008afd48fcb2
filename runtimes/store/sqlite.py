"""The embedded tenant store: one SQLite file, ``DIR/tokios.db``, in WAL mode.

Several processes may use it at once (the gateway serves while the CLI revokes): WAL lets readers
run beside one writer, ``busy_timeout`` makes a writer wait for another instead of failing, and
every write is one ``BEGIN IMMEDIATE`` transaction, so a revocation is visible to the next read in
any process. One connection per store, shared by threads under a lock. The store's methods are
:class:`runtimes.store.sql.SqlStore`'s; this module opens the file, migrates it and runs the
transactions.

Call :meth:`SqliteStore.open` (or :func:`runtimes.store.open_store`), then the methods of
:class:`runtimes.store.base.Store`, then :meth:`SqliteStore.close`.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from runtimes.store.base import LAST_USED_INTERVAL, AlreadyExists, NotFound, StoreError
from runtimes.store.schema import SCHEMA_VERSION, SQLITE, Migration, check_not_newer, statements
from runtimes.store.sql import SqlStore

__all__ = ["DB_FILENAME", "LAST_USED_INTERVAL", "SqliteStore", "migrate"]

DB_FILENAME = "tokios.db"
DEFAULT_BUSY_TIMEOUT_MS = 5000


def _private_dir(path: Path) -> None:
    """Create ``path`` as 0700, or tighten it to 0700 if others could read it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        path.chmod(mode & 0o700 | 0o700)


def _private_file(path: Path) -> None:
    """Create ``path`` as 0600 (before SQLite does, with the process umask), or tighten it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o600)


def migrate(db: sqlite3.Connection, where: str = "the database") -> Migration:
    """Bring the schema (``PRAGMA user_version``) to SCHEMA_VERSION in one write transaction:
    two processes opening an old database together migrate it once."""
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc):
            raise
        raise StoreError(f"{where} is locked by another process (a migration, or a long "
                         "write); try again when it is done") from exc
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        check_not_newer(version, where)
        for index in range(version, SCHEMA_VERSION):
            for statement in statements(index, SQLITE):
                db.execute(statement)
        if version != SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return Migration(version, SCHEMA_VERSION)


class SqliteStore(SqlStore):
    """The SQLite implementation of :class:`runtimes.store.base.Store`."""

    def __init__(self, connection: sqlite3.Connection, path: Path,
                 clock: Callable[[], float], migration: Migration) -> None:
        """Use :meth:`open`; this takes an already configured and migrated connection."""
        super().__init__(clock)
        self._db: sqlite3.Connection | None = connection
        self._lock = threading.RLock()
        self.path = path
        self.location = str(path)
        self.migration = migration

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str], *, clock: Callable[[], float] = time.time,
             busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS, create: bool = True) -> SqliteStore:
        """Open (migrating if needed) ``data_dir/tokios.db``; with ``create=False`` a missing
        database is NotFound instead of being created (with its directory, 0700)."""
        directory = Path(data_dir)
        path = directory / DB_FILENAME
        if not create and not path.is_file():
            raise NotFound(f"no tokios database in {str(directory)!r} (expected {DB_FILENAME}; "
                           "`tokios-gateway tenant add NAME --data DIR` creates one)")
        try:
            _private_dir(directory)
            _private_file(path)
        except OSError as exc:
            raise StoreError(f"cannot use data directory {str(directory)!r}: "
                             f"{exc.strerror or exc}") from exc
        try:
            db = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None,
                                 check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {str(path)!r}: {exc}") from exc
        try:
            db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            db.execute("PRAGMA foreign_keys = ON")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"cannot switch {str(path)!r} to WAL mode (got {mode!r})")
            db.execute("PRAGMA synchronous = FULL")
            migration = migrate(db, f"the database {str(path)!r}")
        except sqlite3.Error as exc:
            db.close()
            raise StoreError(f"cannot open database {str(path)!r}: {exc}") from exc
        except BaseException:
            db.close()
            raise
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists() and stat.S_IMODE(side.stat().st_mode) & 0o077:
                side.chmod(0o600)
        return cls(db, path, clock, migration)

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock; sqlite3 errors become StoreError."""
        with self._lock:
            db = self._db
            if db is None:
                raise StoreError("the store is closed")
            try:
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.IntegrityError as exc:
                raise AlreadyExists(f"conflicting record: {exc}") from exc
            except sqlite3.Error as exc:
                raise StoreError(f"database error: {exc}") from exc

    def close(self) -> None:
        """Close the connection; further calls raise StoreError. Idempotent."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> SqliteStore:
        return self
