"""The tenant store: tenants, deployments, API keys, connector tokens and admin keys.

``open_store(location)`` returns the embedded SQLite store for a data directory, or the
PostgreSQL store for a ``postgresql://`` URL (a gateway of several nodes); both migrate the
schema on open. Everything else should depend only on :class:`Store` and the records in
:mod:`runtimes.store.base`.
"""

from __future__ import annotations

import os

from runtimes.store.base import (
    KEEP,
    USAGE_BUCKET_SECONDS,
    AdminGrant,
    AdminKeyInfo,
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
    Store,
    StoreError,
    Tenant,
    UsageGrouping,
    UsageRow,
    UsageTotal,
)
from runtimes.store.cache import AuthCache, TenantDeployments
from runtimes.store.postgres import PostgresStore, is_postgres_url, redact_url
from runtimes.store.schema import SCHEMA_VERSION, Migration
from runtimes.store.sql import SqlStore
from runtimes.store.sqlite import SqliteStore


def open_store(location: str | os.PathLike[str], *, create: bool = True) -> SqlStore:
    """Open the store at ``location`` and migrate its schema: a ``postgresql://`` URL (see
    :mod:`runtimes.store.postgres`), else a data directory (created 0700 if missing). With
    ``create=False`` a missing database (or one without a tokios schema) raises NotFound
    instead of being created. Close it when done."""
    if is_postgres_url(location):
        assert isinstance(location, str)
        return PostgresStore.open(location, create=create)
    return SqliteStore.open(location, create=create)


__all__ = [
    "KEEP",
    "SCHEMA_VERSION",
    "USAGE_BUCKET_SECONDS",
    "AdminGrant",
    "AdminKeyInfo",
    "AlreadyExists",
    "ApiKeyInfo",
    "AuthCache",
    "ConnectorGrant",
    "ConnectorTokenInfo",
    "Deployment",
    "InvalidName",
    "Keep",
    "KeyGrant",
    "LimitExceeded",
    "Migration",
    "NotFound",
    "PostgresStore",
    "SqlStore",
    "SqliteStore",
    "Store",
    "StoreError",
    "Tenant",
    "TenantDeployments",
    "UsageGrouping",
    "UsageRow",
    "UsageTotal",
    "is_postgres_url",
    "open_store",
    "redact_url",
]
