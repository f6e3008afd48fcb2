"""The SQLite store's schema: a list of migrations, applied in order on open.

``PRAGMA user_version`` holds how many migrations a database has had. :func:`migrate` (called by
:meth:`runtimes.store.sqlite.SqliteStore.open`) applies the missing ones in one write
transaction, so a data directory made by an older Tokios is upgraded the first time a newer one
opens it, and refuses a database newer than it knows. Append a migration; never edit one.
"""

from __future__ import annotations

import sqlite3

from runtimes.store.base import StoreError

#: Each entry moves the schema from version i to i + 1 (PRAGMA user_version).
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: tenants, deployments, API keys, connector tokens.
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
    # 2: limits per tenant, key and deployment; key expiry and rotation; usage per hour.
    (
        "ALTER TABLE tenants ADD COLUMN rpm INTEGER",
        "ALTER TABLE tenants ADD COLUMN tpm INTEGER",
        "ALTER TABLE deployments ADD COLUMN max_in_flight INTEGER",
        "ALTER TABLE deployments ADD COLUMN queue_size INTEGER",
        "ALTER TABLE deployments ADD COLUMN queue_timeout REAL",
        "ALTER TABLE api_keys ADD COLUMN rpm INTEGER",
        "ALTER TABLE api_keys ADD COLUMN tpm INTEGER",
        "ALTER TABLE api_keys ADD COLUMN expires_at REAL",
        # rotation: the secret before the current one, accepted until previous_valid_until
        "ALTER TABLE api_keys ADD COLUMN previous_secret_sha256 BLOB",
        "ALTER TABLE api_keys ADD COLUMN previous_valid_until REAL",
        "ALTER TABLE api_keys ADD COLUMN rotated_at REAL",
        # token counts only: never a prompt or a completion
        """CREATE TABLE usage (
            tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
            key_id TEXT NOT NULL,
            deployment TEXT NOT NULL,
            bucket INTEGER NOT NULL,
            requests INTEGER NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            estimated_requests INTEGER NOT NULL,
            estimated_input_tokens INTEGER NOT NULL,
            estimated_output_tokens INTEGER NOT NULL,
            PRIMARY KEY (tenant_id, key_id, deployment, bucket)) WITHOUT ROWID""",
        "CREATE INDEX usage_by_bucket ON usage (bucket)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)



def migrate(db: sqlite3.Connection) -> None:
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
