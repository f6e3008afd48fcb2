"""The tenant store: records, grants, errors, secret formats and the interface.

The gateway and the admin CLI talk to a :class:`Store`. ``runtimes.store.sqlite.SqliteStore`` is
the embedded implementation, ``runtimes.store.postgres.PostgresStore`` the one for a multi-node
gateway (both run :class:`runtimes.store.sql.SqlStore`'s statements); nothing outside this
package depends on more than what is declared here.

Secrets, shown once and stored only as a SHA-256 hash (see docs/operations.md):

- API key:         ``sk-tokios-<public id>_<secret>``
- connector token: ``tkct-<public id>_<secret>``
- admin key:       ``tkadm-<public id>_<secret>`` (the admin HTTP API; operator or one tenant)

``<public id>`` is 12 characters of lowercase base32 (``a-z2-7``, 60 random bits) and is not
secret: it finds the row, and ``sk-tokios-<public id>`` / ``tkct-<public id>`` is the prefix that
listings show. ``<secret>`` is ``secrets.token_urlsafe(32)`` (256 random bits, 43 characters of
``A-Za-z0-9_-``). The record ids are ``key_<public id>``, ``tct_<public id>`` and
``adm_<public id>``. :func:`new_public_id`, :func:`new_secret` and :func:`secret_hash` make and
hash them, the same for every store implementation.

All methods are synchronous and thread-safe; the asyncio gateway calls them from a worker thread
or through :class:`runtimes.store.cache.AuthCache`. Timestamps are Unix seconds (float, UTC).
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

# --- secret formats ----------------------------------------------------------------------------

API_KEY_PREFIX = "sk-tokios-"
CONNECTOR_TOKEN_PREFIX = "tkct-"  # noqa: S105 (a format prefix, not a secret)
ADMIN_KEY_PREFIX = "tkadm-"
KEY_ID_PREFIX = "key_"
CONNECTOR_TOKEN_ID_PREFIX = "tct_"  # noqa: S105
ADMIN_KEY_ID_PREFIX = "adm_"
PUBLIC_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
PUBLIC_ID_LENGTH = 12
SECRET_BYTES = 32
#: The longest presented credential we even look at (a real one is 66 or 61 characters).
MAX_PRESENTED_LENGTH = 256

_PUBLIC_ID = f"[a-z2-7]{{{PUBLIC_ID_LENGTH}}}"
_SECRET = "[A-Za-z0-9_-]{43}"  # noqa: S105 (a pattern)
API_KEY_PATTERN = re.compile(rf"sk-tokios-(?P<public_id>{_PUBLIC_ID})_(?P<secret>{_SECRET})")
CONNECTOR_TOKEN_PATTERN = re.compile(rf"tkct-(?P<public_id>{_PUBLIC_ID})_(?P<secret>{_SECRET})")
ADMIN_KEY_PATTERN = re.compile(rf"tkadm-(?P<public_id>{_PUBLIC_ID})_(?P<secret>{_SECRET})")


def secret_hash(presented: str) -> bytes:
    """Return the SHA-256 digest stored for a whole presented credential (prefix and id too)."""
    return hashlib.sha256(presented.encode("ascii")).digest()


def new_public_id() -> str:
    """A fresh ``<public id>``: 12 characters of ``a-z2-7`` (60 random bits)."""
    return "".join(secrets.choice(PUBLIC_ID_ALPHABET) for _ in range(PUBLIC_ID_LENGTH))


def new_secret(prefix: str, public_id: str) -> str:
    """A whole new credential: ``prefix + public_id + "_" + 43 random characters``."""
    return f"{prefix}{public_id}_{secrets.token_urlsafe(SECRET_BYTES)}"


def record_id_shown(record_id: object, prefix: str) -> str:
    """Echo an id in an error only if it looks like one: a pasted secret is never repeated."""
    if isinstance(record_id, str) and len(record_id) == len(prefix) + PUBLIC_ID_LENGTH \
            and record_id.startswith(prefix) and record_id[len(prefix):].isalnum():
        return repr(record_id)
    return f"(expected {prefix} followed by {PUBLIC_ID_LENGTH} characters)"


# --- names -------------------------------------------------------------------------------------

TENANT_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
#: Deployment names are what clients send as ``model``: ``/`` is allowed too (``org/model``).
DEPLOYMENT_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
LABEL_MAX_LENGTH = 100
#: Limits on what one tenant may hold, so that no listing or grant grows without bound.
MAX_DEPLOYMENTS_PER_TENANT = 1000
MAX_DEPLOYMENTS_PER_CREDENTIAL = 1000
MAX_TENANTS = 100_000
#: Token ids per query of :meth:`Store.active_connector_tokens` (under SQLite's 999 variables).
ACTIVE_CHECK_BATCH = 500
#: A credential's last_used_at is written at most once per this many seconds.
LAST_USED_INTERVAL = 60.0
#: Admin keys not revoked, per scope (the operator's, or one tenant's).
MAX_ADMIN_KEYS_PER_SCOPE = 100
#: API keys not revoked per tenant, and connector tokens not revoked per tenant (a tenant
#: admin may create them through the admin API: no tenant can grow the store without bound).
MAX_ACTIVE_CREDENTIALS_PER_TENANT = 10_000


def validate_tenant_name(name: str) -> str:
    """Return ``name`` if it is a valid tenant name, else raise :class:`InvalidName`."""
    if not isinstance(name, str) or TENANT_NAME_PATTERN.fullmatch(name) is None:
        raise InvalidName(
            f"invalid tenant name {_shown(name)}: use 1-64 characters of A-Z a-z 0-9 . _ : -, "
            "starting with a letter or digit"
        )
    return name


def validate_deployment_name(name: str) -> str:
    """Return ``name`` if it is a valid deployment name, else raise :class:`InvalidName`."""
    if not isinstance(name, str) or DEPLOYMENT_NAME_PATTERN.fullmatch(name) is None:
        raise InvalidName(
            f"invalid deployment name {_shown(name)}: use 1-128 characters of "
            "A-Z a-z 0-9 . _ : / -, starting with a letter or digit"
        )
    return name


def validate_label(label: str | None) -> str | None:
    """Return a key/token label if printable and at most 100 characters, else raise."""
    if label is None:
        return None
    if not isinstance(label, str) or not 1 <= len(label) <= LABEL_MAX_LENGTH \
            or not label.isprintable():
        raise InvalidName(f"invalid label: use 1-{LABEL_MAX_LENGTH} printable characters")
    return label


# --- limits ------------------------------------------------------------------------------------

#: Largest requests-per-minute or tokens-per-minute limit.
MAX_RATE = 1_000_000_000
#: Largest per-deployment cap on requests in flight, and largest queue.
MAX_IN_FLIGHT = 100_000
MAX_QUEUE_SIZE = 100_000
#: Longest a request may wait in a deployment's queue, in seconds.
MAX_QUEUE_TIMEOUT = 3600.0
#: Longest rotation overlap (the old secret keeps working for at most this), in seconds.
MAX_ROTATION_OVERLAP = 366 * 86400.0


class Keep(enum.Enum):
    """``KEEP``: leave this setting as it is (``None`` means "no limit" / "never")."""

    KEEP = "keep"


KEEP = Keep.KEEP


def validate_count(value: int | None, what: str, low: int, high: int) -> int | None:
    """``value`` if None or an int in [low, high], else raise :class:`InvalidName`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidName(f"{what} must be a whole number from {low} to {high}")
    return value


def validate_seconds(value: float | None, what: str, low: float, high: float) -> float | None:
    """``value`` if None or a finite number of seconds in [low, high], else raise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not low <= value <= high:
        raise InvalidName(f"{what} must be between {low:g} and {high:g} seconds")
    return float(value)


def _shown(name: object) -> str:
    """A name quoted for an error message, cut short so a huge input cannot flood a log."""
    text = repr(name)
    return text if len(text) <= 80 else text[:77] + "..."


# --- errors ------------------------------------------------------------------------------------


class StoreError(Exception):
    """Base of every store error. The message is fit for a CLI user and holds no secret."""

    code = "store_error"


class NotFound(StoreError):  # noqa: N818 (names from the store contract)
    """A tenant, deployment, key or token that does not exist."""

    code = "not_found"


class AlreadyExists(StoreError):  # noqa: N818 (names from the store contract)
    """A tenant or deployment name already taken."""

    code = "already_exists"


class InvalidName(StoreError):  # noqa: N818 (names from the store contract)
    """A name, label or argument that does not meet the rules."""

    code = "invalid"


class LimitExceeded(StoreError):  # noqa: N818 (names from the store contract)
    """A per-tenant or global limit reached."""

    code = "limit_exceeded"


# --- records and grants ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Tenant:
    """A tenant. ``rpm``/``tpm``: requests and tokens per minute for all its keys together
    (None: no limit)."""

    id: str
    name: str
    created_at: float
    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Deployment:
    """A deployment. ``max_in_flight``: requests forwarded at once (None: only the connectors'
    own limits); ``queue_size``/``queue_timeout``: requests waiting for capacity and how long
    (None: the gateway's defaults)."""

    id: str
    tenant_id: str
    name: str
    created_at: float
    max_in_flight: int | None = None
    queue_size: int | None = None
    queue_timeout: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKeyInfo:
    """An API key as listed: never the secret. ``deployments is None`` means all of the
    tenant's deployments, present and future."""

    id: str
    tenant_id: str
    name: str | None
    prefix: str
    deployments: tuple[str, ...] | None
    created_at: float
    last_used_at: float | None
    revoked_at: float | None
    #: When the key stops working (None: never).
    expires_at: float | None = None
    #: Requests and tokens per minute for this key (None: no limit of its own).
    rpm: int | None = None
    tpm: int | None = None
    #: The last rotation, and until when the secret before it still works (None: not now).
    rotated_at: float | None = None
    previous_valid_until: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def status(self, now: float) -> str:
        """``active``, ``revoked`` or ``expired`` at ``now``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectorTokenInfo:
    """A connector token as listed: never the secret. It serves exactly ``deployments``."""

    id: str
    tenant_id: str
    name: str | None
    prefix: str
    deployments: tuple[str, ...]
    created_at: float
    last_used_at: float | None
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyGrant:
    """What a valid API key allows. ``deployments is None``: every deployment of the tenant
    (ask :meth:`Store.list_deployments` for the current set)."""

    key_id: str
    tenant_id: str
    tenant_name: str
    deployments: frozenset[str] | None
    #: The presented secret stops working at this time (the key's expiry, or the end of a
    #: rotation overlap for the secret before the current one); None: never.
    valid_until: float | None = None
    #: Per-minute limits of the key and of its tenant (None: no limit).
    rpm: int | None = None
    tpm: int | None = None
    tenant_rpm: int | None = None
    tenant_tpm: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectorGrant:
    """What a valid connector token allows: serving exactly ``deployments``."""

    token_id: str
    tenant_id: str
    tenant_name: str
    deployments: frozenset[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminKeyInfo:
    """An admin key as listed: never the secret. ``tenant_id``/``tenant_name`` None: an
    operator key (everything); else a tenant admin key (that tenant only)."""

    id: str
    tenant_id: str | None
    tenant_name: str | None
    name: str | None
    prefix: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def scope(self) -> Literal["operator", "tenant"]:
        return "operator" if self.tenant_id is None else "tenant"


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminGrant:
    """What a valid admin key allows: everything (``tenant_id is None``, an operator key) or
    one tenant's objects (a tenant admin key)."""

    admin_key_id: str
    tenant_id: str | None
    tenant_name: str | None

    @property
    def operator(self) -> bool:
        return self.tenant_id is None


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageRow:
    """Token counts of one key on one deployment in one hour (``bucket``: the hour's start,
    Unix seconds). Counts only: never any content. ``estimated_*``: the part of the totals
    that came from requests whose backend reported no usage (the connector estimated it)."""

    tenant_id: str
    key_id: str
    deployment: str
    bucket: int
    requests: int
    input_tokens: int
    output_tokens: int
    estimated_requests: int = 0
    estimated_input_tokens: int = 0
    estimated_output_tokens: int = 0


#: Seconds in one usage bucket.
USAGE_BUCKET_SECONDS = 3600
UsageGrouping = Literal["key", "deployment", "day"]


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageTotal:
    """Usage summed over a group: ``group`` is the key id, the deployment name or the UTC day
    (``YYYY-MM-DD``) depending on the grouping; ``tenant`` names the tenant."""

    tenant: str
    group: str
    requests: int
    input_tokens: int
    output_tokens: int
    estimated_requests: int
    estimated_input_tokens: int
    estimated_output_tokens: int


# --- the interface -----------------------------------------------------------------------------


@runtime_checkable
class Store(Protocol):
    """The tenant store. Tenants and deployments are addressed by name, keys and tokens by id.

    Every method may raise :class:`StoreError` (NotFound, AlreadyExists, InvalidName,
    LimitExceeded). ``authenticate_*`` never raise for bad input: they return None.
    """

    def add_tenant(self, name: str) -> Tenant: ...

    def get_tenant(self, name: str) -> Tenant: ...

    def list_tenants(self) -> list[Tenant]: ...

    def set_tenant_limits(self, name: str, *, rpm: int | Keep | None = KEEP,
                          tpm: int | Keep | None = KEEP) -> Tenant:
        """Change a tenant's per-minute limits (None: no limit)."""
        ...

    def add_deployment(self, tenant: str, name: str, *, max_in_flight: int | None = None,
                       queue_size: int | None = None,
                       queue_timeout: float | None = None) -> Deployment: ...

    def set_deployment(self, tenant: str, name: str, *,
                       max_in_flight: int | Keep | None = KEEP,
                       queue_size: int | Keep | None = KEEP,
                       queue_timeout: float | Keep | None = KEEP) -> Deployment:
        """Change a deployment's cap and queue (None: back to the default)."""
        ...

    def list_deployments(self, tenant: str) -> list[Deployment]: ...

    def add_key(
        self, tenant: str, deployments: tuple[str, ...] | list[str] | None = None,
        name: str | None = None, *, rpm: int | None = None, tpm: int | None = None,
        expires_at: float | None = None,
    ) -> tuple[ApiKeyInfo, str]:
        """Create a key; return its info and the secret, which is never available again.
        LimitExceeded beyond MAX_ACTIVE_CREDENTIALS_PER_TENANT keys not revoked (the same
        holds for add_connector_token)."""
        ...

    def get_key(self, key_id: str) -> ApiKeyInfo: ...

    def set_key(self, key_id: str, *,
                deployments: tuple[str, ...] | list[str] | Keep | None = KEEP,
                rpm: int | Keep | None = KEEP, tpm: int | Keep | None = KEEP,
                expires_at: float | Keep | None = KEEP) -> ApiKeyInfo:
        """Change a key's deployments (None: all), limits or expiry (None: never)."""
        ...

    def rotate_key(self, key_id: str, overlap: float) -> tuple[ApiKeyInfo, str]:
        """Give the key a new secret (returned once); the current one keeps working for
        ``overlap`` more seconds, and one older than that stops at once."""
        ...

    def list_keys(self, tenant: str) -> list[ApiKeyInfo]: ...

    def revoke_key(self, key_id: str) -> ApiKeyInfo:
        """Revoke (idempotent: a second call keeps the first revoked_at)."""
        ...

    def authenticate_key(self, presented: str) -> KeyGrant | None:
        """The grant of an active key; None for unknown, malformed or revoked."""
        ...

    def add_connector_token(
        self, tenant: str, deployments: tuple[str, ...] | list[str], name: str | None = None,
    ) -> tuple[ConnectorTokenInfo, str]: ...

    def list_connector_tokens(self, tenant: str) -> list[ConnectorTokenInfo]: ...

    def revoke_connector_token(self, token_id: str) -> ConnectorTokenInfo: ...

    def get_connector_token(self, token_id: str) -> ConnectorTokenInfo:
        """The token's record (NotFound if no such id; a pasted secret is not echoed)."""
        ...

    def authenticate_connector_token(self, presented: str) -> ConnectorGrant | None: ...

    def is_connector_token_active(self, token_id: str) -> bool:
        """False once revoked (or unknown): the gateway closes that token's live tunnels."""
        ...

    def active_connector_tokens(self, token_ids: Collection[str]) -> frozenset[str]:
        """Which of ``token_ids`` are still active (not revoked, still known): the gateway's
        once-a-second check of every token its live tunnels use, a few queries of up to
        ACTIVE_CHECK_BATCH ids each rather than one per token."""
        ...

    def record_usage(self, rows: Sequence[UsageRow]) -> None:
        """Add ``rows`` to the stored counts, in one transaction (rows for the same key,
        deployment and hour add up)."""
        ...

    def usage(self, tenant: str | None = None, *, key_id: str | None = None,
              since: float | None = None, by: UsageGrouping = "key") -> list[UsageTotal]:
        """Stored usage from the hour holding ``since`` on (counts are kept per hour), summed
        by key, deployment or UTC day."""
        ...

    # Admin keys (schema 3): the credentials of the admin HTTP API. A kind of their own,
    # ``tkadm-<public id>_<secret>`` with id ``adm_<public id>``, stored as secret_hash() like
    # the others: an API key is never an admin key, nor the reverse.

    def add_admin_key(self, tenant: str | None, name: str | None = None,
                      ) -> tuple[AdminKeyInfo, str]:
        """Create an admin key: an operator key (``tenant`` None) or one for that tenant
        (NotFound if it does not exist). Return its info and the secret, shown once.
        LimitExceeded beyond MAX_ADMIN_KEYS_PER_SCOPE keys not revoked in that scope."""
        ...

    def list_admin_keys(self, tenant: str | None = None) -> list[AdminKeyInfo]:
        """Admin keys, revoked ones included, oldest first: every one (``tenant`` None,
        operator keys first) or that tenant's."""
        ...

    def revoke_admin_key(self, admin_key_id: str) -> AdminKeyInfo:
        """Revoke (idempotent, keeps the first revoked_at); NotFound for an unknown id."""
        ...

    def authenticate_admin_key(self, presented: str) -> AdminGrant | None:
        """The grant of an active admin key; None for unknown, malformed or revoked (an API
        key or a connector token included). Updates last_used_at at most once a minute."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Store: ...

    def __exit__(self, *exc_info: object) -> None: ...
