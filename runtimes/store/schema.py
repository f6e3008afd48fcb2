"""The store's schema: one list of versioned migrations, written once for SQLite and PostgreSQL.

Each entry of :data:`MIGRATIONS` moves the schema from version ``i`` to ``i + 1``. The statements
are templates whose column types name a :class:`Dialect` field (``{real}``, ``{blob}``...), so
both databases get the same tables, columns and constraints from the same text:
:func:`statements` renders migration ``i`` for one dialect. Append a migration; never edit one
(a database that has had it will not have it again).

Where the version is kept, and how two processes are kept from migrating at once, belongs to
each store: SQLite's ``PRAGMA user_version`` under its write lock
(:func:`runtimes.store.sqlite.migrate`), PostgreSQL's ``tokios_schema`` table under an advisory
lock (:mod:`runtimes.store.postgres`). Both refuse a database newer than :data:`SCHEMA_VERSION`
with :func:`check_not_newer`, and report what they did as a :class:`Migration`.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtimes.store.base import StoreError

__all__ = ["MIGRATIONS", "POSTGRESQL", "SCHEMA_VERSION", "SQLITE", "Dialect", "Migration",
           "check_not_newer", "statements"]


@dataclass(frozen=True, slots=True)
class Dialect:
    """The column types of one database. ``text`` sorts byte-wise (as SQLite's BINARY
    collation does, so listings come out in the same order on both)."""

    name: str
    text: str
    real: str
    blob: str
    #: Unix seconds and counters that outgrow 32 bits.
    big: str
    #: Appended to a table with a composite primary key and nothing else to index.
    without_rowid: str


SQLITE = Dialect(name="sqlite", text="TEXT", real="REAL", blob="BLOB", big="INTEGER",
                 without_rowid=" WITHOUT ROWID")
POSTGRESQL = Dialect(name="postgresql", text='TEXT COLLATE "C"', real="DOUBLE PRECISION",
                     blob="BYTEA", big="BIGINT", without_rowid="")

#: Each entry moves the schema from version i to i + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: tenants, deployments, API keys, connector tokens.
    (
        """CREATE TABLE tenants (
            id {text} PRIMARY KEY,
            name {text} NOT NULL UNIQUE,
            created_at {real} NOT NULL)""",
        """CREATE TABLE deployments (
            id {text} PRIMARY KEY,
            tenant_id {text} NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
            name {text} NOT NULL,
            created_at {real} NOT NULL,
            UNIQUE (tenant_id, name))""",
        """CREATE TABLE api_keys (
            id {text} PRIMARY KEY,
            tenant_id {text} NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
            name {text},
            secret_sha256 {blob} NOT NULL,
            all_deployments INTEGER NOT NULL,
            created_at {real} NOT NULL,
            last_used_at {real},
            revoked_at {real})""",
        "CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id)",
        """CREATE TABLE api_key_deployments (
            key_id {text} NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
            deployment_id {text} NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
            PRIMARY KEY (key_id, deployment_id)){without_rowid}""",
        """CREATE TABLE connector_tokens (
            id {text} PRIMARY KEY,
            tenant_id {text} NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
            name {text},
            secret_sha256 {blob} NOT NULL,
            created_at {real} NOT NULL,
            last_used_at {real},
            revoked_at {real})""",
        "CREATE INDEX connector_tokens_by_tenant ON connector_tokens (tenant_id)",
        """CREATE TABLE connector_token_deployments (
            token_id {text} NOT NULL REFERENCES connector_tokens(id) ON DELETE CASCADE,
            deployment_id {text} NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
            PRIMARY KEY (token_id, deployment_id)){without_rowid}""",
    ),
    # 2: limits per tenant, key and deployment; key expiry and rotation; usage per hour.
    (
        "ALTER TABLE tenants ADD COLUMN rpm INTEGER",
        "ALTER TABLE tenants ADD COLUMN tpm INTEGER",
        "ALTER TABLE deployments ADD COLUMN max_in_flight INTEGER",
        "ALTER TABLE deployments ADD COLUMN queue_size INTEGER",
        "ALTER TABLE deployments ADD COLUMN queue_timeout {real}",
        "ALTER TABLE api_keys ADD COLUMN rpm INTEGER",
        "ALTER TABLE api_keys ADD COLUMN tpm INTEGER",
        "ALTER TABLE api_keys ADD COLUMN expires_at {real}",
        # rotation: the secret before the current one, accepted until previous_valid_until
        "ALTER TABLE api_keys ADD COLUMN previous_secret_sha256 {blob}",
        "ALTER TABLE api_keys ADD COLUMN previous_valid_until {real}",
        "ALTER TABLE api_keys ADD COLUMN rotated_at {real}",
        # token counts only: never a prompt or a completion
        """CREATE TABLE usage (
            tenant_id {text} NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
            key_id {text} NOT NULL,
            deployment {text} NOT NULL,
            bucket {big} NOT NULL,
            requests {big} NOT NULL,
            input_tokens {big} NOT NULL,
            output_tokens {big} NOT NULL,
            estimated_requests {big} NOT NULL,
            estimated_input_tokens {big} NOT NULL,
            estimated_output_tokens {big} NOT NULL,
            PRIMARY KEY (tenant_id, key_id, deployment, bucket)){without_rowid}""",
        "CREATE INDEX usage_by_bucket ON usage (bucket)",
    ),
    # 3: admin keys of the admin HTTP API (tenant_id NULL: an operator key).
    (
        """CREATE TABLE admin_keys (
            id {text} PRIMARY KEY,
            tenant_id {text} REFERENCES tenants(id) ON DELETE CASCADE,
            name {text},
            secret_sha256 {blob} NOT NULL,
            created_at {real} NOT NULL,
            last_used_at {real},
            revoked_at {real})""",
        "CREATE INDEX admin_keys_by_tenant ON admin_keys (tenant_id)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def statements(index: int, dialect: Dialect) -> list[str]:
    """The statements of migration ``index`` (from version ``index`` to ``index + 1``)."""
    return [template.format(text=dialect.text, real=dialect.real, blob=dialect.blob,
                            big=dialect.big, without_rowid=dialect.without_rowid)
            for template in MIGRATIONS[index]]


@dataclass(frozen=True, slots=True)
class Migration:
    """What opening a store did to its schema: from which version to which (equal: nothing)."""

    from_version: int
    to_version: int

    @property
    def migrated(self) -> bool:
        return self.from_version != self.to_version


def check_not_newer(version: int, where: str) -> None:
    """Refuse a database whose schema is newer than this code knows (an older tokios must not
    write to it)."""
    if version > SCHEMA_VERSION:
        raise StoreError(f"{where} has schema version {version}, newer than this tokios "
                         f"supports ({SCHEMA_VERSION}); upgrade tokios")
