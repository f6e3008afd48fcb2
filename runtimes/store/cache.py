"""A short-lived, bounded cache in front of the store's authenticate_* methods.

The gateway asks it on every request. A result, positive or negative, is reused for at most
``ttl`` seconds (1 s by default), so a revocation made by another process (the CLI) is seen
within that time, and a flood of bad keys costs one database read per distinct key per second.
Entries are keyed by the SHA-256 of the presented credential, never the credential itself, and
at most ``max_entries`` are kept (least recently used evicted first).

Call :meth:`AuthCache.get_key_grant` / :meth:`AuthCache.get_connector_grant` /
:meth:`AuthCache.get_admin_grant` from any thread
(they block on the store on a miss: from asyncio, call them via ``asyncio.to_thread`` or accept
the short read); then :meth:`AuthCache.deployments_for` gives the deployments a key grant may use
now (for routing and ``/v1/models``), :meth:`AuthCache.tenant_deployments` their settings;
:meth:`AuthCache.clear` drops everything.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from runtimes.store.base import (
    AdminGrant,
    ConnectorGrant,
    Deployment,
    KeyGrant,
    NotFound,
    Store,
)

DEFAULT_TTL = 1.0
DEFAULT_MAX_ENTRIES = 10_000

_Grant = TypeVar("_Grant", KeyGrant, ConnectorGrant, AdminGrant)


@dataclass(frozen=True, slots=True)
class TenantDeployments:
    """A tenant's deployments: their names, and each one's record by name."""

    names: frozenset[str]
    by_name: Mapping[str, Deployment]


class AuthCache:
    """Positive and negative authentication results, each for at most ``ttl`` seconds."""

    def __init__(self, store: Store, ttl: float = DEFAULT_TTL, *,
                 clock: Callable[[], float] = time.monotonic,
                 max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if not ttl >= 0:
            raise ValueError("ttl must be >= 0")
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self._store = store
        self._ttl = ttl
        self._clock = clock
        self._max_entries = max_entries
        self._lock = threading.Lock()
        # (kind, sha256(presented)) -> (expires_at, grant or None)
        self._entries: OrderedDict[tuple[str, bytes], tuple[float, object]] = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def get_key_grant(self, presented: str) -> KeyGrant | None:
        """The key's grant, or None (unknown, malformed, revoked), at most ttl seconds old."""
        return self._get("key", presented, self._store.authenticate_key, KeyGrant)

    def get_connector_grant(self, presented: str) -> ConnectorGrant | None:
        """The connector token's grant, or None, at most ttl seconds old."""
        return self._get("connector", presented, self._store.authenticate_connector_token,
                         ConnectorGrant)

    def get_admin_grant(self, presented: str) -> AdminGrant | None:
        """The admin key's grant, or None, at most ttl seconds old (a revocation is seen
        within ttl)."""
        return self._get("admin", presented, self._store.authenticate_admin_key, AdminGrant)

    def deployments_for(self, grant: KeyGrant) -> frozenset[str]:
        """The deployment names ``grant`` may use now: its own list, or for an all-deployments
        key the tenant's current deployments (cached for at most ttl seconds, like grants)."""
        if grant.deployments is not None:
            return grant.deployments
        return self.tenant_deployments(grant.tenant_name).names

    def tenant_deployments(self, tenant_name: str) -> TenantDeployments:
        """The tenant's deployments with their settings (cap, queue), at most ttl seconds old;
        empty for an unknown tenant."""
        cache_key = ("tenant-deployments", tenant_name.encode())
        with self._lock:
            entry = self._entries.get(cache_key)
            if entry is not None:
                expires_at, found = entry
                if self._clock() < expires_at and isinstance(found, TenantDeployments):
                    self._entries.move_to_end(cache_key)
                    return found
                del self._entries[cache_key]
        try:
            records = {d.name: d for d in self._store.list_deployments(tenant_name)}
        except NotFound:
            records = {}
        found = TenantDeployments(frozenset(records), records)
        self._remember(cache_key, found)
        return found

    def _remember(self, cache_key: tuple[str, bytes], value: object) -> None:
        if self._ttl <= 0:
            return
        with self._lock:
            self._entries[cache_key] = (self._clock() + self._ttl, value)
            self._entries.move_to_end(cache_key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def _get(self, kind: str, presented: str, authenticate: Callable[[str], _Grant | None],
             grant_type: type[_Grant]) -> _Grant | None:
        if not isinstance(presented, str):
            return None
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        cache_key = (kind, digest)
        with self._lock:
            entry = self._entries.get(cache_key)
            if entry is not None:
                expires_at, grant = entry
                if self._clock() < expires_at:
                    self._entries.move_to_end(cache_key)
                    return grant if isinstance(grant, grant_type) else None
                del self._entries[cache_key]
        # The store call happens outside the lock so that one slow read does not stall others.
        grant_found = authenticate(presented)
        self._remember(cache_key, grant_found)
        return grant_found
