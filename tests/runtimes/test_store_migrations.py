"""Schema migrations of both stores: a database made by schema 1 is migrated on open and keeps
its data; a newer schema is refused; on PostgreSQL two processes never migrate at once (the one
that cannot get the lock in time refuses clearly), a racing start migrates once, and a role
without DDL rights can serve a current schema but not migrate an old one."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from runtimes.store import NotFound, PostgresStore, StoreError
from runtimes.store.base import secret_hash
from runtimes.store.postgres import MIGRATION_LOCK, VERSION_TABLE
from runtimes.store.schema import POSTGRESQL, SCHEMA_VERSION, SQLITE, statements
from runtimes.store.sqlite import DB_FILENAME
from tests.store_backends import StoreBackend

REPO = Path(__file__).resolve().parents[2]
OLD_KEY = "sk-tokios-aaaaaaaaaaaa_" + "A" * 43


def _schema_1_rows(execute: object, placeholder: str) -> None:
    """A tenant, a deployment and a key as schema 1 stored them."""
    assert callable(execute)
    execute("INSERT INTO tenants VALUES ('ten_aaaaaaaaaaaa', 'acme', 1.0)")
    execute("INSERT INTO deployments VALUES ('dep_aaaaaaaaaaaa', 'ten_aaaaaaaaaaaa', "
            "'coder', 1.0)")
    execute("INSERT INTO api_keys (id, tenant_id, name, secret_sha256, all_deployments, "
            f"created_at) VALUES ('key_aaaaaaaaaaaa', 'ten_aaaaaaaaaaaa', 'old', {placeholder}, "
            "1, 1.0)", (secret_hash(OLD_KEY),))


def build_schema_1(backend: StoreBackend) -> None:
    if backend.kind == "sqlite":
        data = Path(backend.location)
        data.mkdir(mode=0o700)
        raw = sqlite3.connect(data / DB_FILENAME)
        for statement in statements(0, SQLITE):
            raw.execute(statement)
        _schema_1_rows(raw.execute, "?")
        raw.execute("PRAGMA user_version = 1")
        raw.commit()
        raw.close()
        return
    with psycopg.connect(backend.location) as conn:
        conn.execute(f"CREATE TABLE {VERSION_TABLE} (version INTEGER PRIMARY KEY, "
                     "applied_at DOUBLE PRECISION NOT NULL)")
        for statement in statements(0, POSTGRESQL):
            conn.execute(statement)
        conn.execute(f"INSERT INTO {VERSION_TABLE} VALUES (1, 1.0)")
        _schema_1_rows(conn.execute, "%s")


def _version(backend: StoreBackend) -> int:
    if backend.kind == "sqlite":
        raw = sqlite3.connect(Path(backend.location) / DB_FILENAME)
        try:
            return int(raw.execute("PRAGMA user_version").fetchone()[0])
        finally:
            raw.close()
    with psycopg.connect(backend.location) as conn:
        return int(conn.execute(f"SELECT max(version) FROM {VERSION_TABLE}").fetchone()[0])


def test_a_store_from_schema_1_is_migrated_on_open(store_backend: StoreBackend) -> None:
    build_schema_1(store_backend)
    with store_backend.open() as store:
        assert (store.migration.from_version, store.migration.to_version) == (1, SCHEMA_VERSION)
        assert store.migration.migrated
        grant = store.authenticate_key(OLD_KEY)
        assert grant is not None and grant.key_id == "key_aaaaaaaaaaaa"
        assert (grant.valid_until, grant.rpm, grant.tenant_tpm) == (None, None, None)
        old = store.list_keys("acme")[0]
        assert (old.name, old.expires_at, old.rotated_at) == ("old", None, None)
        assert store.list_deployments("acme")[0].queue_size is None
        rotated, new = store.rotate_key(old.id, 60)
        assert store.authenticate_key(new) is not None and rotated.rotated_at is not None
    assert _version(store_backend) == SCHEMA_VERSION
    with store_backend.open() as again:  # current: nothing to do
        assert not again.migration.migrated and again.migration.from_version == SCHEMA_VERSION


def make_newer(backend: StoreBackend, version: int) -> None:
    """Mark the (current) store as if a later tokios had migrated it to ``version``."""
    if backend.kind == "sqlite":
        raw = sqlite3.connect(Path(backend.location) / DB_FILENAME)
        raw.execute(f"PRAGMA user_version = {version}")
        raw.close()
    else:
        with psycopg.connect(backend.location) as conn:
            conn.execute(f"INSERT INTO {VERSION_TABLE} VALUES (%s, 1.0)", (version,))


def test_a_newer_schema_is_refused(store_backend: StoreBackend) -> None:
    store_backend.open().close()
    make_newer(store_backend, SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer than "
                                         f"this tokios supports \\({SCHEMA_VERSION}\\)"):
        store_backend.open()


@pytest.fixture
def postgres(store_backend: StoreBackend) -> StoreBackend:
    if store_backend.kind != "postgresql":
        pytest.skip("PostgreSQL only")
    return store_backend


@pytest.mark.parametrize("store_backend", ["postgresql"], indirect=True)
def test_a_start_during_another_migration_refuses_clearly(postgres: StoreBackend) -> None:
    build_schema_1(postgres)
    with psycopg.connect(postgres.location, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))  # "another process"
        started = time.monotonic()
        with pytest.raises(StoreError) as refused:
            PostgresStore.open(postgres.location, migration_lock_timeout=0.5)
        assert 0.4 < time.monotonic() - started < 5
        message = str(refused.value)
        assert "another process is migrating the schema" in message
        assert postgres.location.rsplit("/", 1)[1] in message  # names the database
        assert _version(postgres) == 1  # nothing half-done
        # a start that waits long enough migrates once the other is done
        release = threading.Timer(0.3, holder.execute, ("SELECT pg_advisory_unlock_all()",))
        release.start()
        with PostgresStore.open(postgres.location, migration_lock_timeout=10) as store:
            assert store.migration.from_version == 1
        release.join()
    assert _version(postgres) == SCHEMA_VERSION


RACER = textwrap.dedent("""
    import sys, time
    from runtimes.store import open_store
    url, start_at = sys.argv[1], float(sys.argv[2])
    time.sleep(max(0.0, start_at - time.time()))
    with open_store(url) as store:
        print(store.migration.from_version, store.migration.to_version)
""")


@pytest.mark.parametrize("store_backend", ["postgresql"], indirect=True)
def test_processes_starting_together_on_an_empty_database_migrate_it_once(
        postgres: StoreBackend) -> None:
    start_at = str(time.time() + 1.5)
    racers = [subprocess.Popen([sys.executable, "-c", RACER, postgres.location, start_at],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for _ in range(4)]
    results = [racer.communicate(timeout=60) for racer in racers]
    assert all(racer.returncode == 0 for racer in racers), [err for _, err in results]
    outcomes = sorted(out.strip() for out, _ in results)
    assert outcomes.count(f"0 {SCHEMA_VERSION}") == 1, outcomes
    assert outcomes.count(f"{SCHEMA_VERSION} {SCHEMA_VERSION}") == 3, outcomes
    with psycopg.connect(postgres.location) as conn:
        assert [v for (v,) in conn.execute(
            f"SELECT version FROM {VERSION_TABLE} ORDER BY version")] == \
            list(range(1, SCHEMA_VERSION + 1))


@pytest.mark.parametrize("store_backend", ["postgresql"], indirect=True)
def test_a_role_without_ddl_rights_serves_a_current_schema_but_cannot_migrate(
        postgres: StoreBackend) -> None:
    role = f"tokios_app_{uuid.uuid4().hex[:8]}"  # roles are cluster-wide: one per test
    with psycopg.connect(postgres.location, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")  # as PostgreSQL 15+ does
    app_url = postgres.location.replace("//tokios@", f"//{role}@")
    with pytest.raises(StoreError, match=r"cannot migrate .* as a role that may create "
                                         "tables"):
        PostgresStore.open(app_url)
    with pytest.raises(NotFound, match="no tokios schema"):
        PostgresStore.open(app_url, create=False)
    with postgres.open() as owner:  # the owner migrates; then grant row access only
        owner.add_tenant("acme")
    with psycopg.connect(postgres.location, autocommit=True) as conn:
        conn.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public "
                     f"TO {role}")
    with PostgresStore.open(app_url) as app:
        assert not app.migration.migrated
        app.add_deployment("acme", "coder")
        _, key = app.add_key("acme")
        assert app.authenticate_key(key) is not None


@pytest.mark.parametrize("store_backend", ["postgresql"], indirect=True)
def test_the_location_never_shows_a_password(postgres: StoreBackend) -> None:
    with_password = postgres.location.replace("//tokios@", "//tokios:s3cr%40t-pw@")
    with PostgresStore.open(with_password) as store:  # trust auth ignores the password
        assert "s3cr" not in store.location and store.location.endswith(
            postgres.location.rsplit("/", 1)[1])
    for bad in (with_password + "?sslmode=bogus", "postgresql://u:pa%zzss@127.0.0.1:1/db",
                "postgresql://u:hunter2@127.0.0.1:1/db?connect_timeout=2"):
        with pytest.raises(StoreError) as failed:
            PostgresStore.open(bad)
        assert "s3cr" not in str(failed.value) and "zzss" not in str(failed.value)
        assert "hunter2" not in str(failed.value)
