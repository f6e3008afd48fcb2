"""The store's logic, once, in SQL that SQLite and PostgreSQL both run.

:class:`SqlStore` implements every method of :class:`runtimes.store.base.Store` on top of one
abstract operation, ``_transaction(write=...)``: a context manager that yields an :class:`Sql`
connection inside one transaction and turns the driver's errors into :class:`StoreError`. The
two stores differ only there and in how they open and migrate:

- :class:`runtimes.store.sqlite.SqliteStore`: one file, ``BEGIN IMMEDIATE`` for writes;
- :class:`runtimes.store.postgres.PostgresStore`: a connection pool, writes serialised by a
  transaction-level advisory lock, reads in one snapshot.

Either way a write transaction runs alone (so "check, then insert" cannot race between
processes), a read sees one consistent state, and the statements use ``?`` placeholders (the
PostgreSQL store rewrites them for its driver). Secrets are stored only as SHA-256 hashes and
compared with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, Protocol

from runtimes.store import sql_usage
from runtimes.store.base import (
    ACTIVE_CHECK_BATCH,
    API_KEY_PATTERN,
    API_KEY_PREFIX,
    CONNECTOR_TOKEN_ID_PREFIX,
    CONNECTOR_TOKEN_PATTERN,
    CONNECTOR_TOKEN_PREFIX,
    KEEP,
    KEY_ID_PREFIX,
    LAST_USED_INTERVAL,
    MAX_ACTIVE_CREDENTIALS_PER_TENANT,
    MAX_DEPLOYMENTS_PER_CREDENTIAL,
    MAX_DEPLOYMENTS_PER_TENANT,
    MAX_IN_FLIGHT,
    MAX_PRESENTED_LENGTH,
    MAX_QUEUE_SIZE,
    MAX_QUEUE_TIMEOUT,
    MAX_RATE,
    MAX_ROTATION_OVERLAP,
    MAX_TENANTS,
    AlreadyExists,
    ApiKeyInfo,
    ConnectorGrant,
    ConnectorTokenInfo,
    Deployment,
    InvalidName,
    Keep,
    KeyGrant,
    LimitExceeded,
    NotFound,
    StoreError,
    Tenant,
    UsageGrouping,
    UsageRow,
    UsageTotal,
    new_public_id,
    new_secret,
    record_id_shown,
    secret_hash,
    validate_count,
    validate_deployment_name,
    validate_label,
    validate_seconds,
    validate_tenant_name,
)
from runtimes.store.schema import Migration
from runtimes.store.sql_admin import SqlAdminKeys

# The two credential kinds differ only in names; this table keeps one code path for both.
_KEY = {"table": "api_keys", "link": "api_key_deployments", "fk": "key_id"}
_TOKEN = {"table": "connector_tokens", "link": "connector_token_deployments", "fk": "token_id"}


class Cursor(Protocol):
    """What ``Sql.execute`` returns: rows as tuples."""

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Sql(Protocol):
    """A connection inside a transaction (sqlite3's, or the PostgreSQL store's adapter)."""

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...


class SqlStore(SqlAdminKeys):
    """:class:`runtimes.store.base.Store` in SQL; a subclass provides the connection (the admin
    key methods are :class:`runtimes.store.sql_admin.SqlAdminKeys`')."""

    #: How opening the store changed its schema (set by the subclass's ``open``).
    migration: Migration
    #: Where the data is, for messages (a file, or a URL without its password).
    location: str

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    def _transaction(self, *, write: bool) -> AbstractContextManager[Sql]:
        """One transaction: a write runs alone, a read sees one snapshot; the driver's errors
        come out as StoreError (a unique constraint as AlreadyExists)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @staticmethod
    def _tenant_row(db: Sql, name: str) -> tuple[str, str, float]:
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
            tenant = Tenant(id="ten_" + new_public_id(), name=name, created_at=self._clock())
            db.execute("INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)",
                       (tenant.id, tenant.name, tenant.created_at))
        return tenant

    def get_tenant(self, name: str) -> Tenant:
        with self._transaction(write=False) as db:
            tenant_id = self._tenant_row(db, name)[0]
            return self._tenants(db, "id = ?", (tenant_id,))[0]

    def list_tenants(self) -> list[Tenant]:
        with self._transaction(write=False) as db:
            return self._tenants(db, "1 = 1", ())

    @staticmethod
    def _tenants(db: Sql, where: str, args: tuple[object, ...]) -> list[Tenant]:
        rows = db.execute(f"SELECT id, name, created_at, rpm, tpm FROM tenants "  # noqa: S608
                          f"WHERE {where} ORDER BY name", args).fetchall()
        return [Tenant(id=i, name=n, created_at=c, rpm=r, tpm=t) for i, n, c, r, t in rows]

    def set_tenant_limits(self, name: str, *, rpm: int | Keep | None = KEEP,
                          tpm: int | Keep | None = KEEP) -> Tenant:
        changes = _changes(rpm=_rate(rpm, "rpm"), tpm=_rate(tpm, "tpm"))
        with self._transaction(write=True) as db:
            tenant_id = self._tenant_row(db, name)[0]
            _update(db, "tenants", tenant_id, changes)
            return self._tenants(db, "id = ?", (tenant_id,))[0]

    def add_deployment(self, tenant: str, name: str, *, max_in_flight: int | None = None,
                       queue_size: int | None = None,
                       queue_timeout: float | None = None) -> Deployment:
        validate_deployment_name(name)
        settings = _deployment_settings(max_in_flight, queue_size, queue_timeout)
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
            deployment_id = "dep_" + new_public_id()
            db.execute("INSERT INTO deployments (id, tenant_id, name, created_at) "
                       "VALUES (?, ?, ?, ?)", (deployment_id, tenant_id, name, self._clock()))
            _update(db, "deployments", deployment_id, settings)
            return self._deployments(db, "id = ?", deployment_id)[0]

    def set_deployment(self, tenant: str, name: str, *,
                       max_in_flight: int | Keep | None = KEEP,
                       queue_size: int | Keep | None = KEEP,
                       queue_timeout: float | Keep | None = KEEP) -> Deployment:
        validate_deployment_name(name)
        settings = _deployment_settings(max_in_flight, queue_size, queue_timeout)
        with self._transaction(write=True) as db:
            tenant_id = self._tenant_row(db, tenant)[0]
            row = db.execute("SELECT id FROM deployments WHERE tenant_id = ? AND name = ?",
                             (tenant_id, name)).fetchone()
            if row is None:
                raise NotFound(f"tenant {tenant!r} has no deployment named {name!r}")
            _update(db, "deployments", row[0], settings)
            return self._deployments(db, "id = ?", row[0])[0]

    def list_deployments(self, tenant: str) -> list[Deployment]:
        with self._transaction(write=False) as db:
            tenant_id = self._tenant_row(db, tenant)[0]
            return self._deployments(db, "tenant_id = ?", tenant_id)

    @staticmethod
    def _deployments(db: Sql, where: str, argument: str) -> list[Deployment]:
        rows = db.execute(
            "SELECT id, tenant_id, name, created_at, max_in_flight, queue_size, "  # noqa: S608
            f"queue_timeout FROM deployments WHERE {where} ORDER BY name", (argument,))
        return [Deployment(id=i, tenant_id=t, name=n, created_at=c, max_in_flight=m,
                           queue_size=q, queue_timeout=w) for i, t, n, c, m, q, w in rows]

    @staticmethod
    def _deployment_ids(db: Sql, tenant: str, tenant_id: str,
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
                        deployments: Iterable[str] | None, name: str | None,
                        settings: dict[str, object] | None = None,
                        ) -> tuple[str, str, str, float, tuple[str, ...] | None]:
        """Insert a key or token with its ``settings`` (columns of a key: limits, expiry), in
        one transaction; return (id, secret, tenant_id, created_at, deployments)."""
        validate_label(name)
        is_key = kind is _KEY
        prefix, id_prefix = ((API_KEY_PREFIX, KEY_ID_PREFIX) if is_key
                             else (CONNECTOR_TOKEN_PREFIX, CONNECTOR_TOKEN_ID_PREFIX))
        with self._transaction(write=True) as db:
            tenant_id = self._tenant_row(db, tenant)[0]
            active = db.execute(f"SELECT count(*) FROM {kind['table']} "  # noqa: S608
                                "WHERE tenant_id = ? AND revoked_at IS NULL",
                                (tenant_id,)).fetchone()[0]
            if active >= MAX_ACTIVE_CREDENTIALS_PER_TENANT:
                what = "API keys" if is_key else "connector tokens"
                raise LimitExceeded(f"at most {MAX_ACTIVE_CREDENTIALS_PER_TENANT} {what} not "
                                    "revoked per tenant: revoke one first")
            names = None if deployments is None else sorted(set(deployments))
            deployment_ids = (None if names is None
                              else self._deployment_ids(db, tenant, tenant_id, names))
            created_at = self._clock()
            for _ in range(8):  # a collision of 60 random bits is all but impossible; retry it
                public_id = new_public_id()
                record_id = id_prefix + public_id
                if not db.execute(f"SELECT 1 FROM {kind['table']} WHERE id = ?",  # noqa: S608
                                  (record_id,)).fetchone():
                    break
            else:  # pragma: no cover
                raise StoreError("could not allocate a unique id; try again")
            secret = new_secret(prefix, public_id)
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
            _update(db, kind["table"], record_id, settings or {})
        return record_id, secret, tenant_id, created_at, None if names is None else tuple(names)

    def _credential_rows(self, db: Sql, kind: dict[str, str], where: str,
                         argument: str) -> list[tuple[object, ...]]:
        """Rows (id, tenant_id, name, created_at, last_used_at, revoked_at, all, expires_at,
        rpm, tpm, rotated_at, previous_valid_until, names); a token's key-only fields are
        None."""
        key_columns = ("k.all_deployments, k.expires_at, k.rpm, k.tpm, k.rotated_at, "
                       "k.previous_valid_until") if kind is _KEY else "0, NULL, NULL, NULL, " \
                                                                       "NULL, NULL"
        rows = db.execute(
            f"SELECT k.id, k.tenant_id, k.name, k.created_at, k.last_used_at, "  # noqa: S608
            f"k.revoked_at, {key_columns} FROM {kind['table']} k WHERE {where} "
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
        (record_id, tenant_id, name, created, used, revoked, all_deployments, expires_at, rpm,
         tpm, rotated_at, previous_valid_until, names) = row
        assert isinstance(record_id, str) and isinstance(names, tuple)
        return ApiKeyInfo(
            id=record_id, tenant_id=str(tenant_id), name=name,  # type: ignore[arg-type]
            prefix=API_KEY_PREFIX + record_id[len(KEY_ID_PREFIX):],
            deployments=None if all_deployments else names,
            created_at=created, last_used_at=used, revoked_at=revoked,  # type: ignore[arg-type]
            expires_at=expires_at, rpm=rpm, tpm=tpm, rotated_at=rotated_at,  # type: ignore[arg-type]
            previous_valid_until=previous_valid_until,  # type: ignore[arg-type]
        )

    @staticmethod
    def _token_info(row: tuple[object, ...]) -> ConnectorTokenInfo:
        record_id, tenant_id, name, created, used, revoked, *_key_only, names = row
        assert isinstance(record_id, str) and isinstance(names, tuple)
        return ConnectorTokenInfo(
            id=record_id, tenant_id=str(tenant_id), name=name,  # type: ignore[arg-type]
            prefix=CONNECTOR_TOKEN_PREFIX + record_id[len(CONNECTOR_TOKEN_ID_PREFIX):],
            deployments=names,
            created_at=created, last_used_at=used, revoked_at=revoked,  # type: ignore[arg-type]
        )

    def _one(self, db: Sql, kind: dict[str, str],
             record_id: str) -> tuple[object, ...]:
        """The credential row of ``record_id``, or NotFound (never echoing a pasted secret)."""
        rows = self._credential_rows(db, kind, "k.id = ?", record_id) \
            if isinstance(record_id, str) and len(record_id) <= 64 else []
        if not rows:
            id_prefix, what = ((KEY_ID_PREFIX, "API key") if kind is _KEY
                               else (CONNECTOR_TOKEN_ID_PREFIX, "connector token"))
            raise NotFound(f"no {what} with id {record_id_shown(record_id, id_prefix)}")
        return rows[0]

    def _revoke(self, kind: dict[str, str], record_id: str) -> tuple[object, ...]:
        with self._transaction(write=True) as db:
            self._one(db, kind, record_id)
            db.execute(f"UPDATE {kind['table']} SET revoked_at = "  # noqa: S608
                       "coalesce(revoked_at, ?) WHERE id = ?", (self._clock(), record_id))
            return self._one(db, kind, record_id)

    def _authenticate(self, kind: dict[str, str], presented: str) -> _Found | None:
        """What an active credential grants (None: unknown, malformed, revoked or expired)."""
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
        key_columns = ("k.all_deployments, k.expires_at, k.previous_secret_sha256, "
                       "k.previous_valid_until, k.rpm, k.tpm, t.rpm, t.tpm") if is_key \
            else "0, NULL, NULL, NULL, NULL, NULL, NULL, NULL"
        with self._transaction(write=False) as db:
            row = db.execute(
                f"SELECT k.secret_sha256, k.revoked_at, k.last_used_at, t.id, t.name, "  # noqa: S608
                f"{key_columns} FROM {kind['table']} k "
                "JOIN tenants t ON t.id = k.tenant_id WHERE k.id = ?", (record_id,)).fetchone()
            if row is None:
                return None
            (stored_hash, revoked_at, last_used_at, tenant_id, tenant_name, all_deployments,
             expires_at, previous_hash, previous_until, *limits) = row
            # Constant time: the comparison must not reveal how much of a guess was right.
            valid_until = expires_at
            if not hmac.compare_digest(stored_hash, presented_hash):
                if previous_hash is None or previous_until is None or previous_until <= now \
                        or not hmac.compare_digest(previous_hash, presented_hash):
                    return None
                valid_until = previous_until if expires_at is None \
                    else min(expires_at, previous_until)
            if revoked_at is not None or (valid_until is not None and valid_until <= now):
                return None
            deployments = None if all_deployments else tuple(name for (name,) in db.execute(
                f"SELECT d.name FROM {kind['link']} l JOIN deployments d "  # noqa: S608
                f"ON d.id = l.deployment_id WHERE l.{kind['fk']} = ?", (record_id,)))
        if last_used_at is None or now - last_used_at >= LAST_USED_INTERVAL:
            self._touch(kind, record_id, now)
        return _Found(record_id, tenant_id, tenant_name, deployments, valid_until,
                      tuple(limits))

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
                name: str | None = None, *, rpm: int | None = None, tpm: int | None = None,
                expires_at: float | None = None) -> tuple[ApiKeyInfo, str]:
        """Create a key for ``tenant`` (None: all its deployments); return (info, secret)."""
        changes = _changes(rpm=_rate(rpm, "rpm"), tpm=_rate(tpm, "tpm"),
                           expires_at=_expiry(expires_at))
        record_id, secret, _tenant_id, _created_at, _names = self._add_credential(
            _KEY, tenant, deployments, name, changes)
        return self.get_key(record_id), secret

    def get_key(self, key_id: str) -> ApiKeyInfo:
        with self._transaction(write=False) as db:
            return self._key_info(self._one(db, _KEY, key_id))

    def set_key(self, key_id: str, *,
                deployments: tuple[str, ...] | list[str] | Keep | None = KEEP,
                rpm: int | Keep | None = KEEP, tpm: int | Keep | None = KEEP,
                expires_at: float | Keep | None = KEEP) -> ApiKeyInfo:
        changes = _changes(rpm=_rate(rpm, "rpm"), tpm=_rate(tpm, "tpm"),
                           expires_at=_expiry(expires_at))
        with self._transaction(write=True) as db:
            row = self._one(db, _KEY, key_id)
            if deployments is not KEEP:
                tenant_id = str(row[1])
                tenant = db.execute("SELECT name FROM tenants WHERE id = ?",
                                    (tenant_id,)).fetchone()[0]
                ids = None if deployments is None \
                    else self._deployment_ids(db, tenant, tenant_id, deployments)
                db.execute("DELETE FROM api_key_deployments WHERE key_id = ?", (key_id,))
                db.executemany("INSERT INTO api_key_deployments (key_id, deployment_id) "
                               "VALUES (?, ?)", [(key_id, d) for d in ids or ()])
                changes["all_deployments"] = int(ids is None)
            _update(db, "api_keys", key_id, changes)
            return self._key_info(self._one(db, _KEY, key_id))

    def rotate_key(self, key_id: str, overlap: float) -> tuple[ApiKeyInfo, str]:
        validate_seconds(overlap, "the overlap", 0, MAX_ROTATION_OVERLAP)
        with self._transaction(write=True) as db:
            row = self._one(db, _KEY, key_id)
            if row[5] is not None:
                raise InvalidName(f"API key {key_id!r} is revoked: add a new key instead")
            now = self._clock()
            secret = new_secret(API_KEY_PREFIX, key_id[len(KEY_ID_PREFIX):])
            db.execute("UPDATE api_keys SET previous_secret_sha256 = "
                       "CASE WHEN ? > 0 THEN secret_sha256 END, previous_valid_until = "
                       "CASE WHEN ? > 0 THEN ? END, secret_sha256 = ?, rotated_at = ? "
                       "WHERE id = ?", (overlap, overlap, now + overlap, secret_hash(secret),
                                        now, key_id))
            return self._key_info(self._one(db, _KEY, key_id)), secret

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
        rpm, tpm, tenant_rpm, tenant_tpm = found.limits
        return KeyGrant(key_id=found.record_id, tenant_id=found.tenant_id,
                        tenant_name=found.tenant_name,
                        deployments=None if found.deployments is None
                        else frozenset(found.deployments),
                        valid_until=found.valid_until, rpm=rpm, tpm=tpm,
                        tenant_rpm=tenant_rpm, tenant_tpm=tenant_tpm)

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

    def get_connector_token(self, token_id: str) -> ConnectorTokenInfo:
        with self._transaction(write=False) as db:
            return self._token_info(self._one(db, _TOKEN, token_id))

    def revoke_connector_token(self, token_id: str) -> ConnectorTokenInfo:
        return self._token_info(self._revoke(_TOKEN, token_id))

    def authenticate_connector_token(self, presented: str) -> ConnectorGrant | None:
        found = self._authenticate(_TOKEN, presented)
        if found is None:
            return None
        return ConnectorGrant(token_id=found.record_id, tenant_id=found.tenant_id,
                              tenant_name=found.tenant_name,
                              deployments=frozenset(found.deployments or ()))

    def is_connector_token_active(self, token_id: str) -> bool:
        if not isinstance(token_id, str) or len(token_id) > 64:
            return False
        with self._transaction(write=False) as db:
            row = db.execute("SELECT revoked_at FROM connector_tokens WHERE id = ?",
                             (token_id,)).fetchone()
        return row is not None and row[0] is None

    def active_connector_tokens(self, token_ids: Collection[str]) -> frozenset[str]:
        wanted = sorted({t for t in token_ids if isinstance(t, str) and len(t) <= 64})
        active: set[str] = set()
        with self._transaction(write=False) as db:
            for start in range(0, len(wanted), ACTIVE_CHECK_BATCH):
                batch = wanted[start:start + ACTIVE_CHECK_BATCH]
                marks = ", ".join("?" * len(batch))
                active.update(row[0] for row in db.execute(
                    f"SELECT id FROM connector_tokens WHERE revoked_at IS NULL "  # noqa: S608
                    f"AND id IN ({marks})", batch))
        return frozenset(active)

    # --- usage ---------------------------------------------------------------------------------

    def record_usage(self, rows: Sequence[UsageRow]) -> None:
        if rows:
            with self._transaction(write=True) as db:
                sql_usage.add(db, rows)

    def usage(self, tenant: str | None = None, *, key_id: str | None = None,
              since: float | None = None, by: UsageGrouping = "key") -> list[UsageTotal]:
        with self._transaction(write=False) as db:
            tenant_id = None if tenant is None else self._tenant_row(db, tenant)[0]
            return sql_usage.totals(db, tenant_id=tenant_id, key_id=key_id, since=since,
                                       by=by)


class _Found(NamedTuple):
    """An authenticated credential: ids, deployments (None: all) and, for keys, until when
    the presented secret works and the limits (key rpm, key tpm, tenant rpm, tenant tpm)."""

    record_id: str
    tenant_id: str
    tenant_name: str
    deployments: tuple[str, ...] | None
    valid_until: float | None
    limits: tuple[int | None, ...]


def _changes(**settings: object) -> dict[str, object]:
    """The settings to write: those not KEEP."""
    return {column: value for column, value in settings.items() if value is not KEEP}


def _update(db: Sql, table: str, record_id: str,
            changes: dict[str, object]) -> None:
    """Set ``changes`` (column -> value; columns come from this module, never from input)."""
    if changes:
        assignments = ", ".join(f"{column} = ?" for column in changes)
        db.execute(f"UPDATE {table} SET {assignments} WHERE id = ?",  # noqa: S608
                   (*changes.values(), record_id))


def _rate(value: int | Keep | None, what: str) -> int | Keep | None:
    return value if value is KEEP else validate_count(value, what, 1, MAX_RATE)


def _expiry(value: float | Keep | None) -> float | Keep | None:
    if value is KEEP or value is None:
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not 0 <= value < 1e11:
        raise InvalidName("the expiry must be a time between 1970 and the year 5000")
    return float(value)


def _deployment_settings(max_in_flight: int | Keep | None, queue_size: int | Keep | None,
                         queue_timeout: float | Keep | None) -> dict[str, object]:
    return _changes(
        max_in_flight=max_in_flight if max_in_flight is KEEP
        else validate_count(max_in_flight, "max-in-flight", 1, MAX_IN_FLIGHT),
        queue_size=queue_size if queue_size is KEEP
        else validate_count(queue_size, "the queue size", 0, MAX_QUEUE_SIZE),
        queue_timeout=queue_timeout if queue_timeout is KEEP
        else validate_seconds(queue_timeout, "the queue timeout", 0.001, MAX_QUEUE_TIMEOUT))
