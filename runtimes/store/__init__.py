"""The tenant store: tenants, deployments, API keys and connector tokens.

``open_store(data_dir)`` returns the embedded SQLite store; everything else should depend only
on :class:`Store` and the records in :mod:`runtimes.store.base`.
"""

from __future__ import annotations

import os

from runtimes.store.base import (
    KEEP,
    USAGE_BUCKET_SECONDS,
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
from runtimes.store.sqlite import SqliteStore


def open_store(data_dir: str | os.PathLike[str], *, create: bool = True) -> SqliteStore:
    """Open the store in ``data_dir`` (created 0700 if missing, unless ``create=False``, which
    raises NotFound instead); close it when done."""
    return SqliteStore.open(data_dir, create=create)


__all__ = [
    "KEEP",
    "USAGE_BUCKET_SECONDS",
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
    "NotFound",
    "SqliteStore",
    "Store",
    "StoreError",
    "Tenant",
    "TenantDeployments",
    "UsageGrouping",
    "UsageRow",
    "UsageTotal",
    "open_store",
]
