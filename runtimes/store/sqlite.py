"""The embedded tenant store: one SQLite file, ``DIR/tokios.db``, in WAL mode.

Several processes may use it at once (the gateway serves while the CLI revokes): WAL lets readers
run beside one writer, ``busy_timeout`` makes a writer wait for another instead of failing, and
every write is one ``BEGIN IMMEDIATE`` transaction, so a revocation is visible to the next read in
any process. One connection per store, shared by threads under a lock.

Call :meth:`SqliteStore.open` (or :func:`runtimes.store.open_store`), then the methods of
:class:`runtimes.store.base.Store`, then :meth:`SqliteStore.close`.
"""

from __future__ import annotations

import hmac
import os
import secrets
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from runtimes.store.base import (
    API_KEY_PATTERN,
    API_KEY_PREFIX,
    CONNECTOR_TOKEN_ID_PREFIX,
    CONNECTOR_TOKEN_PATTERN,
    CONNECTOR_TOKEN_PREFIX,
    KEY_ID_PREFIX,
    MAX_DEPLOYMENTS_PER_CREDENTIAL,
    MAX_DEPLOYMENTS_PER_TENANT,
    MAX_PRESENTED_LENGTH,
    MAX_TENANTS,
    PUBLIC_ID_ALPHABET,
    PUBLIC_ID_LENGTH,
    SECRET_BYTES,
    AlreadyExists,
    ApiKeyInfo,
    ConnectorGrant,
    ConnectorTokenInfo,
    Deployment,
    InvalidName,
    KeyGrant,
    LimitExceeded,
    NotFound,
    StoreError,
    Tenant,
    secret_hash,
    validate_deployment_name,
    validate_label,
    validate_tenant_name,
)

DB_FILENAME = "tokios.db"
#: last_used_at is written at most once per this many seconds per credential.
LAST_USED_INTERVAL = 60.0
DEFAULT_BUSY_TIMEOUT_MS = 5000

# Each entry moves the schema from version i to i + 1 (PRAGMA user_version). Append, never edit.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE tenants (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL)""",
        """CREATE TABLE deployments (
            id TEXT PRIMARY KEY,
            tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            created_at REAL NOT NULL,
            UNIQUE (tenant_id, name))""",
        """CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
            name TEXT,
            secret_sha256 BLOB NOT NULL,
            all_deployments INTEGER NOT NULL,
            created_at REAL NOT NULL,
            last_used_at REAL,
            revoked_at REAL)""",
        "CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id)",
        """CREATE TABLE api_key_deployments (
            key_id TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
            deployment_id TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
            PRIMARY KEY (key_id, deployment_id)) WITHOUT ROWID""",
        """CREATE TABLE connector_tokens (
            id TEXT PRIMARY KEY,
            tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
            name TEXT,
            secret_sha256 BLOB NOT NULL,
            created_at REAL NOT NULL,
            last_used_at REAL,
            revoked_at REAL)""",
        "CREATE INDEX connector_tokens_by_tenant ON connector_tokens (tenant_id)",
        """CREATE TABLE connector_token_deployments (
            token_id TEXT NOT NULL REFERENCES connector_tokens(id) ON DELETE CASCADE,
            deployment_id TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
            PRIMARY KEY (token_id, deployment_id)) WITHOUT ROWID""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

# The two credential kinds differ only in names; this table keeps one code path for both.
_KEY = {"table": "api_keys", "link": "api_key_deployments", "fk": "key_id"}
_TOKEN = {"table": "connector_tokens", "link": "connector_token_deployments", "fk": "token_id"}


def _public_id() -> str:
    return "".join(secrets.choice(PUBLIC_ID_ALPHABET) for _ in range(PUBLIC_ID_LENGTH))


def _record_id_shown(record_id: object, prefix: str) -> str:
    """Echo an id in an error only if it looks like one: a pasted secret is never repeated."""
    if isinstance(record_id, str) and len(record_id) == len(prefix) + PUBLIC_ID_LENGTH \
            and record_id.startswith(prefix) and record_id[len(prefix):].isalnum():
        return repr(record_id)
    return f"(expected {prefix} followed by {PUBLIC_ID_LENGTH} characters)"


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


class SqliteStore:
    """The SQLite implementation of :class:`runtimes.store.base.Store`."""

    def __init__(self, connection: sqlite3.Connection, path: Path,
                 clock: Callable[[], float]) -> None:
        """Use :meth:`open`; this takes an already configured connection."""
        self._db: sqlite3.Connection | None = connection
        self._lock = threading.RLock()
        self._clock = clock
        self.path = path

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
            _migrate(db)
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
        return cls(db, path, clock)

    # --- plumbing ------------------------------------------------------------------------------

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

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @staticmethod
    def _tenant_row(db: sqlite3.Connection, name: str) -> tuple[str, str, float]:
        validate_tenant_name(name)
        row = db.execute("SELECT id, name, created_at FROM tenants WHERE name = ?",
                         (name,)).fetchone()
        if row is None:
            raise NotFound(f"no tenant named {name!r}")
        return row  # type: ignore[no-any-return]

    # --- tenants and deployments ---------------------------------------------------------------

    def add_tenant(self, name: str) -> Tenant:
        validate_tenant_name(name)
        with self._transaction(write=True) as db:
            if db.execute("SELECT 1 FROM tenants WHERE name = ?", (name,)).fetchone():
                raise AlreadyExists(f"a tenant named {name!r} already exists")
            if db.execute("SELECT count(*) FROM tenants").fetchone()[0] >= MAX_TENANTS:
                raise LimitExceeded(f"at most {MAX_TENANTS} tenants")
            tenant = Tenant(id="ten_" + _public_id(), name=name, created_at=self._clock())
            db.execute("INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)",
                       (tenant.id, tenant.name, tenant.created_at))
        return tenant

    def get_tenant(self, name: str) -> Tenant:
        with self._transaction(write=False) as db:
            tenant_id, tenant_name, created_at = self._tenant_row(db, name)
        return Tenant(id=tenant_id, name=tenant_name, created_at=created_at)

    def list_tenants(self) -> list[Tenant]:
        with self._transaction(write=False) as db:
            rows = db.execute("SELECT id, name, created_at FROM tenants "
                              "ORDER BY name").fetchall()
        return [Tenant(id=i, name=n, created_at=c) for i, n, c in rows]

    def add_deployment(self, tenant: str, name: str) -> Deployment:
        validate_deployment_name(name)
        with self._transaction(write=True) as db:
            tenant_id = self._tenant_row(db, tenant)[0]
            if db.execute("SELECT 1 FROM deployments WHERE tenant_id = ? AND name = ?",
                          (tenant_id, name)).fetchone():
                raise AlreadyExists(f"tenant {tenant!r} already has a deployment named {name!r}")
            count = db.execute("SELECT count(*) FROM deployments WHERE tenant_id = ?",
                               (tenant_id,)).fetchone()[0]
            if count >= MAX_DEPLOYMENTS_PER_TENANT:
                raise LimitExceeded(f"at most {MAX_DEPLOYMENTS_PER_TENANT} deployments "
                                    "per tenant")
            deployment = Deployment(id="dep_" + _public_id(), tenant_id=tenant_id, name=name,
                                    created_at=self._clock())
            db.execute("INSERT INTO deployments (id, tenant_id, name, created_at) "
                       "VALUES (?, ?, ?, ?)",
                       (deployment.id, tenant_id, name, deployment.created_at))
        return deployment

    def list_deployments(self, tenant: str) -> list[Deployment]:
        with self._transaction(write=False) as db:
            tenant_id = self._tenant_row(db, tenant)[0]
            rows = db.execute("SELECT id, name, created_at FROM deployments WHERE tenant_id = ? "
                              "ORDER BY name", (tenant_id,)).fetchall()
        return [Deployment(id=i, tenant_id=tenant_id, name=n, created_at=c)
                for i, n, c in rows]

    @staticmethod
    def _deployment_ids(db: sqlite3.Connection, tenant: str, tenant_id: str,
                        names: Iterable[str]) -> list[str]:
        """Ids of the named deployments of one tenant; NotFound names every missing one."""
        unique = sorted(set(names))
        if not unique:
            raise InvalidName("name at least one deployment")
        if len(unique) > MAX_DEPLOYMENTS_PER_CREDENTIAL:
            raise LimitExceeded(f"at most {MAX_DEPLOYMENTS_PER_CREDENTIAL} deployments "
                                "per key or token")
        for name in unique:
            validate_deployment_name(name)
        ids, missing = [], []
        for name in unique:
            row = db.execute("SELECT id FROM deployments WHERE tenant_id = ? AND name = ?",
                             (tenant_id, name)).fetchone()
            if row is None:
                missing.append(name)
            else:
                ids.append(row[0])
        if missing:
            listed = ", ".join(repr(n) for n in missing)
            raise NotFound(f"tenant {tenant!r} has no deployment named {listed}")
        return ids

    # --- credentials (shared by keys and tokens) -----------------------------------------------

    def _add_credential(self, kind: dict[str, str], tenant: str,
                        deployments: Iterable[str] | None,
                        name: str | None) -> tuple[str, str, str, float, tuple[str, ...] | None]:
        """Insert a key or token; return (id, secret, tenant_id, created_at, deployments)."""
        validate_label(name)
        is_key = kind is _KEY
        prefix, id_prefix = ((API_KEY_PREFIX, KEY_ID_PREFIX) if is_key
                             else (CONNECTOR_TOKEN_PREFIX, CONNECTOR_TOKEN_ID_PREFIX))
        with self._transaction(write=True) as db:
            tenant_id = self._tenant_row(db, tenant)[0]
            names = None if deployments is None else sorted(set(deployments))
            deployment_ids = (None if names is None
                              else self._deployment_ids(db, tenant, tenant_id, names))
            created_at = self._clock()
            for _ in range(8):  # a collision of 60 random bits is all but impossible; retry it
                public_id = _public_id()
                record_id = id_prefix + public_id
                if not db.execute(f"SELECT 1 FROM {kind['table']} WHERE id = ?",  # noqa: S608
                                  (record_id,)).fetchone():
                    break
            else:  # pragma: no cover
                raise StoreError("could not allocate a unique id; try again")
            secret = f"{prefix}{public_id}_{secrets.token_urlsafe(SECRET_BYTES)}"
            if is_key:
                db.execute("INSERT INTO api_keys (id, tenant_id, name, secret_sha256, "
                           "all_deployments, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                           (record_id, tenant_id, name, secret_hash(secret),
                            int(deployment_ids is None), created_at))
            else:
                db.execute("INSERT INTO connector_tokens (id, tenant_id, name, secret_sha256, "
                           "created_at) VALUES (?, ?, ?, ?, ?)",
                           (record_id, tenant_id, name, secret_hash(secret), created_at))
            db.executemany(
                f"INSERT INTO {kind['link']} ({kind['fk']}, deployment_id) "  # noqa: S608
                "VALUES (?, ?)", [(record_id, d) for d in deployment_ids or ()])
        return record_id, secret, tenant_id, created_at, None if names is None else tuple(names)

    def _credential_rows(self, db: sqlite3.Connection, kind: dict[str, str], where: str,
                         argument: str) -> list[tuple[object, ...]]:
        """Rows (id, tenant_id, name, created_at, last_used_at, revoked_at, all, names)."""
        all_column = "k.all_deployments" if kind is _KEY else "0"
        rows = db.execute(
            f"SELECT k.id, k.tenant_id, k.name, k.created_at, k.last_used_at, "  # noqa: S608
            f"k.revoked_at, {all_column} FROM {kind['table']} k WHERE {where} "
            "ORDER BY k.created_at, k.id", (argument,)).fetchall()
        names: dict[str, list[str]] = {}
        for record_id, deployment in db.execute(
                f"SELECT l.{kind['fk']}, d.name FROM {kind['link']} l "  # noqa: S608
                f"JOIN deployments d ON d.id = l.deployment_id "
                f"JOIN {kind['table']} k ON k.id = l.{kind['fk']} WHERE {where} "
                "ORDER BY d.name", (argument,)):
            names.setdefault(record_id, []).append(deployment)
        return [(*row, tuple(names.get(row[0], ()))) for row in rows]

    @staticmethod
    def _key_info(row: tuple[object, ...]) -> ApiKeyInfo:
        record_id, tenant_id, name, created, used, revoked, all_deployments, names = row
        assert isinstance(record_id, str) and isinstance(names, tuple)
        return ApiKeyInfo(
            id=record_id, tenant_id=str(tenant_id), name=name,  # type: ignore[arg-type]
            prefix=API_KEY_PREFIX + record_id[len(KEY_ID_PREFIX):],
            deployments=None if all_deployments else names,
            created_at=created, last_used_at=used, revoked_at=revoked,  # type: ignore[arg-type]
        )

    @staticmethod
    def _token_info(row: tuple[object, ...]) -> ConnectorTokenInfo:
        record_id, tenant_id, name, created, used, revoked, _all, names = row
        assert isinstance(record_id, str) and isinstance(names, tuple)
        return ConnectorTokenInfo(
            id=record_id, tenant_id=str(tenant_id), name=name,  # type: ignore[arg-type]
            prefix=CONNECTOR_TOKEN_PREFIX + record_id[len(CONNECTOR_TOKEN_ID_PREFIX):],
            deployments=names,
            created_at=created, last_used_at=used, revoked_at=revoked,  # type: ignore[arg-type]
        )

    def _revoke(self, kind: dict[str, str], record_id: str) -> tuple[object, ...]:
        id_prefix = KEY_ID_PREFIX if kind is _KEY else CONNECTOR_TOKEN_ID_PREFIX
        what = "API key" if kind is _KEY else "connector token"
        if not isinstance(record_id, str) or len(record_id) > 64:
            raise NotFound(f"no {what} with id {_record_id_shown(record_id, id_prefix)}")
        with self._transaction(write=True) as db:
            db.execute(f"UPDATE {kind['table']} SET revoked_at = "  # noqa: S608
                       "coalesce(revoked_at, ?) WHERE id = ?", (self._clock(), record_id))
            rows = self._credential_rows(db, kind, "k.id = ?", record_id)
        if not rows:
            raise NotFound(f"no {what} with id {_record_id_shown(record_id, id_prefix)}")
        return rows[0]

    def _authenticate(self, kind: dict[str, str], presented: str
                      ) -> tuple[str, str, str, tuple[str, ...] | None] | None:
        """(record id, tenant id, tenant name, deployments or None=all) of an active credential."""
        if not isinstance(presented, str) or len(presented) > MAX_PRESENTED_LENGTH:
            return None
        is_key = kind is _KEY
        match = (API_KEY_PATTERN if is_key else CONNECTOR_TOKEN_PATTERN).fullmatch(presented)
        if match is None:
            return None
        record_id = (KEY_ID_PREFIX if is_key else CONNECTOR_TOKEN_ID_PREFIX) \
            + match["public_id"]
        presented_hash = secret_hash(presented)
        now = self._clock()
        with self._transaction(write=False) as db:
            row = db.execute(
                f"SELECT k.secret_sha256, k.revoked_at, k.last_used_at, t.id, t.name, "  # noqa: S608
                f"{'k.all_deployments' if is_key else '0'} FROM {kind['table']} k "
                "JOIN tenants t ON t.id = k.tenant_id WHERE k.id = ?", (record_id,)).fetchone()
            if row is None:
                return None
            stored_hash, revoked_at, last_used_at, tenant_id, tenant_name, all_deployments = row
            # Constant time: the comparison must not reveal how much of a guess was right.
            if not hmac.compare_digest(stored_hash, presented_hash) or revoked_at is not None:
                return None
            deployments = None if all_deployments else tuple(name for (name,) in db.execute(
                f"SELECT d.name FROM {kind['link']} l JOIN deployments d "  # noqa: S608
                f"ON d.id = l.deployment_id WHERE l.{kind['fk']} = ?", (record_id,)))
        if last_used_at is None or now - last_used_at >= LAST_USED_INTERVAL:
            self._touch(kind, record_id, now)
        return record_id, tenant_id, tenant_name, deployments

    def _touch(self, kind: dict[str, str], record_id: str, now: float) -> None:
        """Record last use; a busy database must not fail the request, so errors pass."""
        try:
            with self._transaction(write=True) as db:
                db.execute(f"UPDATE {kind['table']} SET last_used_at = ? "  # noqa: S608
                           "WHERE id = ? AND (last_used_at IS NULL OR last_used_at <= ?)",
                           (now, record_id, now - LAST_USED_INTERVAL))
        except StoreError:
            pass

    # --- API keys ------------------------------------------------------------------------------

    def add_key(self, tenant: str, deployments: tuple[str, ...] | list[str] | None = None,
                name: str | None = None) -> tuple[ApiKeyInfo, str]:
        """Create a key for ``tenant`` (None: all its deployments); return (info, secret)."""
        record_id, secret, tenant_id, created_at, names = self._add_credential(
            _KEY, tenant, deployments, name)
        info = ApiKeyInfo(id=record_id, tenant_id=tenant_id, name=name,
                          prefix=API_KEY_PREFIX + record_id[len(KEY_ID_PREFIX):],
                          deployments=names, created_at=created_at, last_used_at=None,
                          revoked_at=None)
        return info, secret

    def list_keys(self, tenant: str) -> list[ApiKeyInfo]:
        with self._transaction(write=False) as db:
            tenant_id = self._tenant_row(db, tenant)[0]
            rows = self._credential_rows(db, _KEY, "k.tenant_id = ?", tenant_id)
        return [self._key_info(row) for row in rows]

    def revoke_key(self, key_id: str) -> ApiKeyInfo:
        return self._key_info(self._revoke(_KEY, key_id))

    def authenticate_key(self, presented: str) -> KeyGrant | None:
        found = self._authenticate(_KEY, presented)
        if found is None:
            return None
        key_id, tenant_id, tenant_name, deployments = found
        return KeyGrant(key_id=key_id, tenant_id=tenant_id, tenant_name=tenant_name,
                        deployments=None if deployments is None else frozenset(deployments))

    # --- connector tokens ----------------------------------------------------------------------

    def add_connector_token(self, tenant: str, deployments: tuple[str, ...] | list[str],
                            name: str | None = None) -> tuple[ConnectorTokenInfo, str]:
        """Create a token serving ``deployments`` (at least one); return (info, secret)."""
        if deployments is None:
            raise InvalidName("a connector token needs at least one deployment")
        record_id, secret, tenant_id, created_at, names = self._add_credential(
            _TOKEN, tenant, deployments, name)
        assert names is not None
        info = ConnectorTokenInfo(
            id=record_id, tenant_id=tenant_id, name=name,
            prefix=CONNECTOR_TOKEN_PREFIX + record_id[len(CONNECTOR_TOKEN_ID_PREFIX):],
            deployments=names, created_at=created_at, last_used_at=None, revoked_at=None)
        return info, secret

    def list_connector_tokens(self, tenant: str) -> list[ConnectorTokenInfo]:
        with self._transaction(write=False) as db:
            tenant_id = self._tenant_row(db, tenant)[0]
            rows = self._credential_rows(db, _TOKEN, "k.tenant_id = ?", tenant_id)
        return [self._token_info(row) for row in rows]

    def revoke_connector_token(self, token_id: str) -> ConnectorTokenInfo:
        return self._token_info(self._revoke(_TOKEN, token_id))

    def authenticate_connector_token(self, presented: str) -> ConnectorGrant | None:
        found = self._authenticate(_TOKEN, presented)
        if found is None:
            return None
        token_id, tenant_id, tenant_name, deployments = found
        return ConnectorGrant(token_id=token_id, tenant_id=tenant_id, tenant_name=tenant_name,
                              deployments=frozenset(deployments or ()))

    def is_connector_token_active(self, token_id: str) -> bool:
        if not isinstance(token_id, str) or len(token_id) > 64:
            return False
        with self._transaction(write=False) as db:
            row = db.execute("SELECT revoked_at FROM connector_tokens WHERE id = ?",
                             (token_id,)).fetchone()
        return row is not None and row[0] is None


def _migrate(db: sqlite3.Connection) -> None:
    """Bring the schema to SCHEMA_VERSION in one write transaction (safe if two race)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"the database has schema version {version}, newer than this "
                             f"tokios supports ({SCHEMA_VERSION}); upgrade tokios")
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                db.execute(statement)
        if version != SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
