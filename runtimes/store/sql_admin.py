"""Admin keys in the SQL stores (schema 3): the credentials of the admin HTTP API.

:class:`SqlAdminKeys` is a part of :class:`runtimes.store.sql.SqlStore` (a base class using its
``_transaction``, ``_tenant_row``, ``_touch`` and ``_clock``) and implements the admin key
methods of :class:`runtimes.store.base.Store` in SQL that SQLite and PostgreSQL both run. An
admin key row has a ``tenant_id`` (a tenant admin key) or none (an operator key); like keys and
tokens it stores only the SHA-256 of the whole credential, compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from runtimes.store.base import (
    ADMIN_KEY_ID_PREFIX,
    ADMIN_KEY_PATTERN,
    ADMIN_KEY_PREFIX,
    LAST_USED_INTERVAL,
    MAX_ADMIN_KEYS_PER_SCOPE,
    MAX_PRESENTED_LENGTH,
    AdminGrant,
    AdminKeyInfo,
    LimitExceeded,
    NotFound,
    StoreError,
    new_public_id,
    new_secret,
    record_id_shown,
    secret_hash,
    validate_label,
)

if TYPE_CHECKING:
    from runtimes.store.sql import Sql

_TABLE = {"table": "admin_keys"}
_COLUMNS = ("a.id, a.tenant_id, t.name, a.name, a.created_at, a.last_used_at, a.revoked_at "
            "FROM admin_keys a LEFT JOIN tenants t ON t.id = a.tenant_id")


class SqlAdminKeys:
    """The admin key methods of the SQL stores (see module doc)."""

    _clock: Callable[[], float]
    _transaction: Callable[..., AbstractContextManager[Sql]]
    _tenant_row: Callable[[Sql, str], tuple[str, str, float]]
    _touch: Callable[[dict[str, str], str, float], None]

    def add_admin_key(self, tenant: str | None, name: str | None = None,
                      ) -> tuple[AdminKeyInfo, str]:
        validate_label(name)
        with self._transaction(write=True) as db:
            tenant_id = None if tenant is None else self._tenant_row(db, tenant)[0]
            scope = ("tenant_id IS NULL", ()) if tenant_id is None \
                else ("tenant_id = ?", (tenant_id,))
            active = db.execute(f"SELECT count(*) FROM admin_keys WHERE {scope[0]} "  # noqa: S608
                                "AND revoked_at IS NULL", scope[1]).fetchone()[0]
            if active >= MAX_ADMIN_KEYS_PER_SCOPE:
                which = "operator" if tenant is None else f"tenant {tenant!r}"
                raise LimitExceeded(f"at most {MAX_ADMIN_KEYS_PER_SCOPE} admin keys not revoked "
                                    f"per scope ({which}): revoke one first")
            for _ in range(8):  # a collision of 60 random bits is all but impossible; retry it
                public_id = new_public_id()
                record_id = ADMIN_KEY_ID_PREFIX + public_id
                if not db.execute("SELECT 1 FROM admin_keys WHERE id = ?",
                                  (record_id,)).fetchone():
                    break
            else:  # pragma: no cover
                raise StoreError("could not allocate a unique id; try again")
            secret = new_secret(ADMIN_KEY_PREFIX, public_id)
            db.execute("INSERT INTO admin_keys (id, tenant_id, name, secret_sha256, created_at) "
                       "VALUES (?, ?, ?, ?, ?)",
                       (record_id, tenant_id, name, secret_hash(secret), self._clock()))
            return _one(db, record_id), secret

    def list_admin_keys(self, tenant: str | None = None) -> list[AdminKeyInfo]:
        with self._transaction(write=False) as db:
            if tenant is None:
                rows = db.execute(f"SELECT {_COLUMNS} ORDER BY a.tenant_id IS NOT NULL, "
                                  "t.name, a.created_at, a.id")
            else:
                tenant_id = self._tenant_row(db, tenant)[0]
                rows = db.execute(f"SELECT {_COLUMNS} WHERE a.tenant_id = ? "
                                  "ORDER BY a.created_at, a.id", (tenant_id,))
            return [_info(row) for row in rows]

    def revoke_admin_key(self, admin_key_id: str) -> AdminKeyInfo:
        with self._transaction(write=True) as db:
            _one(db, admin_key_id)
            db.execute("UPDATE admin_keys SET revoked_at = coalesce(revoked_at, ?) "
                       "WHERE id = ?", (self._clock(), admin_key_id))
            return _one(db, admin_key_id)

    def authenticate_admin_key(self, presented: str) -> AdminGrant | None:
        if not isinstance(presented, str) or len(presented) > MAX_PRESENTED_LENGTH:
            return None
        match = ADMIN_KEY_PATTERN.fullmatch(presented)
        if match is None:
            return None
        record_id = ADMIN_KEY_ID_PREFIX + match["public_id"]
        with self._transaction(write=False) as db:
            row = db.execute(
                "SELECT a.secret_sha256, a.revoked_at, a.last_used_at, a.tenant_id, t.name "
                "FROM admin_keys a LEFT JOIN tenants t ON t.id = a.tenant_id WHERE a.id = ?",
                (record_id,)).fetchone()
        if row is None:
            return None
        stored_hash, revoked_at, last_used_at, tenant_id, tenant_name = row
        # Constant time: the comparison must not reveal how much of a guess was right.
        if not hmac.compare_digest(stored_hash, secret_hash(presented)) \
                or revoked_at is not None:
            return None
        now = self._clock()
        if last_used_at is None or now - last_used_at >= LAST_USED_INTERVAL:
            self._touch(_TABLE, record_id, now)
        return AdminGrant(admin_key_id=record_id, tenant_id=tenant_id, tenant_name=tenant_name)


def _info(row: Any) -> AdminKeyInfo:
    record_id, tenant_id, tenant_name, name, created, used, revoked = row
    return AdminKeyInfo(id=record_id, tenant_id=tenant_id, tenant_name=tenant_name, name=name,
                        prefix=ADMIN_KEY_PREFIX + record_id[len(ADMIN_KEY_ID_PREFIX):],
                        created_at=created, last_used_at=used, revoked_at=revoked)


def _one(db: Sql, admin_key_id: str) -> AdminKeyInfo:
    """The admin key ``admin_key_id``, or NotFound (never echoing a pasted secret)."""
    row = None
    if isinstance(admin_key_id, str) and len(admin_key_id) <= 64:
        row = db.execute(f"SELECT {_COLUMNS} WHERE a.id = ?", (admin_key_id,)).fetchone()
    if row is None:
        raise NotFound(f"no admin key with id "
                       f"{record_id_shown(admin_key_id, ADMIN_KEY_ID_PREFIX)}")
    return _info(row)
