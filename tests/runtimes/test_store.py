"""The tenant store, on SQLite and on PostgreSQL (``store_backend``): records, secrets at rest,
authentication, revocation, files and schema versions."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import sqlite3
import stat
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtimes.store import (
    AlreadyExists,
    ConnectorGrant,
    InvalidName,
    KeyGrant,
    NotFound,
    SqlStore,
    Store,
    StoreError,
    open_store,
)
from runtimes.store.base import (
    ACTIVE_CHECK_BATCH,
    API_KEY_PATTERN,
    CONNECTOR_TOKEN_PATTERN,
    TENANT_NAME_PATTERN,
    validate_tenant_name,
)
from runtimes.store.schema import SCHEMA_VERSION
from runtimes.store.sql import LAST_USED_INTERVAL
from runtimes.store.sqlite import DB_FILENAME
from tests.store_backends import StoreBackend


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _seeded(backend: StoreBackend) -> SqlStore:
    store = backend.open()
    store.add_tenant("acme")
    store.add_deployment("acme", "gemma")
    store.add_deployment("acme", "qwen2.5-coder:7b")
    store.add_tenant("globex")
    store.add_deployment("globex", "gemma")
    return store


def test_it_implements_the_store_protocol(store_backend: StoreBackend) -> None:
    with open_store(store_backend.location) as store:
        assert isinstance(store, Store)
        assert type(store).__name__ == {"sqlite": "SqliteStore",
                                        "postgresql": "PostgresStore"}[store_backend.kind]


def test_tenants_and_deployments(store_backend: StoreBackend) -> None:
    with _seeded(store_backend) as store:
        assert [t.name for t in store.list_tenants()] == ["acme", "globex"]
        store.add_tenant("Zeta")  # listings sort byte-wise on both databases
        store.add_tenant("0day")
        assert [t.name for t in store.list_tenants()] == ["0day", "Zeta", "acme", "globex"]
        acme = store.get_tenant("acme")
        assert acme.id.startswith("ten_") and acme.name == "acme"
        deployments = store.list_deployments("acme")
        assert [d.name for d in deployments] == ["gemma", "qwen2.5-coder:7b"]
        assert {d.tenant_id for d in deployments} == {acme.id}
        # The same deployment name in two tenants is two deployments.
        assert store.list_deployments("globex")[0].id != deployments[0].id
        with pytest.raises(AlreadyExists, match="acme"):
            store.add_tenant("acme")
        with pytest.raises(AlreadyExists, match="gemma"):
            store.add_deployment("acme", "gemma")
        with pytest.raises(NotFound, match="no tenant named 'initech'"):
            store.add_deployment("initech", "gemma")
        with pytest.raises(NotFound):
            store.get_tenant("initech")
        with pytest.raises(NotFound):
            store.list_keys("initech")


@pytest.mark.parametrize("name", ["", "-acme", "a b", "a" * 65, "é", "acme/x", "acme\n", ".x"])
def test_invalid_tenant_names_are_refused(store_backend: StoreBackend, name: str) -> None:
    with store_backend.open() as store, pytest.raises(InvalidName, match="tenant name"):
        store.add_tenant(name)


@pytest.mark.parametrize("name", ["", "/x", "a b", "a" * 129, "x\x00"])
def test_invalid_deployment_names_are_refused(store_backend: StoreBackend, name: str) -> None:
    with _seeded(store_backend) as store, pytest.raises(InvalidName, match="deployment name"):
        store.add_deployment("acme", name)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=70))
def test_tenant_name_validation_matches_the_documented_rule(name: str) -> None:
    valid = (1 <= len(name) <= 64 and name[0].isascii() and name[0].isalnum()
             and all(c.isascii() and (c.isalnum() or c in "._:-") for c in name))
    if valid:
        assert validate_tenant_name(name) == name
    else:
        with pytest.raises(InvalidName):
            validate_tenant_name(name)
    assert (TENANT_NAME_PATTERN.fullmatch(name) is not None) == valid


def test_key_format_and_grants(store_backend: StoreBackend) -> None:
    with _seeded(store_backend) as store:
        info, key = store.add_key("acme", None, name="laptop")
        match = API_KEY_PATTERN.fullmatch(key)
        assert match is not None
        assert info.id == "key_" + match["public_id"]
        assert info.prefix == "sk-tokios-" + match["public_id"]
        assert key.startswith(info.prefix + "_")
        assert info.deployments is None and info.name == "laptop" and info.active
        assert info.last_used_at is None and info.revoked_at is None

        grant = store.authenticate_key(key)
        acme = store.get_tenant("acme")
        assert grant == KeyGrant(key_id=info.id, tenant_id=acme.id, tenant_name="acme",
                                 deployments=None)

        scoped, scoped_key = store.add_key("acme", ["gemma", "gemma"])
        assert scoped.deployments == ("gemma",)
        scoped_grant = store.authenticate_key(scoped_key)
        assert scoped_grant is not None and scoped_grant.deployments == frozenset({"gemma"})
        assert [k.id for k in store.list_keys("acme")] == [info.id, scoped.id]
        assert store.list_keys("globex") == []


def test_authentication_refuses_everything_but_an_exact_active_key(
        store_backend: StoreBackend) -> None:
    with _seeded(store_backend) as store:
        _, key = store.add_key("acme")
        _, token = store.add_connector_token("acme", ["gemma"])
        public_part, secret = key.rsplit("_", 1)[0], key[len("sk-tokios-") + 13:]
        flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
        for presented in [
            public_part + "_" + flipped,          # right id, wrong secret
            key[:-1],                             # truncated
            key + "x",                            # extended
            key.upper(),                          # case matters
            " " + key,                            # whitespace
            "sk-tokios-aaaaaaaaaaaa_" + secret,   # unknown id
            "Bearer " + key,
            "",
            "x" * 10_000,                         # oversized: not even hashed
            token,                                # a connector token is not an API key
            "sk-tokios-" + "é" * 12 + "_" + secret,
        ]:
            assert store.authenticate_key(presented) is None, presented[:30]
        assert store.authenticate_connector_token(key) is None
        assert store.authenticate_key(key) is not None


def test_connector_tokens(store_backend: StoreBackend) -> None:
    with _seeded(store_backend) as store:
        info, token = store.add_connector_token("acme", ["qwen2.5-coder:7b", "gemma"],
                                                name="rig-1")
        match = CONNECTOR_TOKEN_PATTERN.fullmatch(token)
        assert match is not None and info.id == "tct_" + match["public_id"]
        assert info.prefix == "tkct-" + match["public_id"]
        assert info.deployments == ("gemma", "qwen2.5-coder:7b")
        grant = store.authenticate_connector_token(token)
        assert grant == ConnectorGrant(token_id=info.id, tenant_id=store.get_tenant("acme").id,
                                       tenant_name="acme",
                                       deployments=frozenset({"gemma", "qwen2.5-coder:7b"}))
        assert store.is_connector_token_active(info.id)
        [listed] = store.list_connector_tokens("acme")
        assert listed.last_used_at is not None
        assert listed == dataclasses.replace(info, last_used_at=listed.last_used_at)

        revoked = store.revoke_connector_token(info.id)
        assert revoked.revoked_at is not None and not revoked.active
        assert not store.is_connector_token_active(info.id)
        assert store.authenticate_connector_token(token) is None
        assert not store.is_connector_token_active("tct_aaaaaaaaaaaa")
        assert not store.is_connector_token_active("x" * 1000)

        with pytest.raises(InvalidName, match="at least one deployment"):
            store.add_connector_token("acme", [])
        with pytest.raises(NotFound, match="'nope'"):
            store.add_connector_token("acme", ["gemma", "nope"])
        # Another tenant's deployment of the same name is not reachable by id confusion.
        with pytest.raises(NotFound):
            store.add_connector_token("globex", ["qwen2.5-coder:7b"])



def test_active_connector_tokens_answers_for_many_ids_in_batches(
        store_backend: StoreBackend) -> None:
    """The gateway's once-a-second check of every token its tunnels use: one call, the
    active ones back; revoked, unknown and malformed ids are not active; more ids than one
    query's batch are all answered."""
    with _seeded(store_backend) as store:
        made = [store.add_connector_token("acme", ["gemma"], name=f"rig-{i}")[0].id
                for i in range(3)]
        store.revoke_connector_token(made[1])
        unknown = [f"tct_{i:012d}" for i in range(ACTIVE_CHECK_BATCH + 7)]
        asked = [*unknown, *made, "x" * 1000, made[0]]
        assert store.active_connector_tokens(asked) == {made[0], made[2]}
        assert store.active_connector_tokens([]) == frozenset()
        # the last of many batches is read too
        assert store.active_connector_tokens([*unknown, made[2]]) == {made[2]}

def test_keys_only_name_their_own_tenants_deployments(store_backend: StoreBackend) -> None:
    with _seeded(store_backend) as store:
        with pytest.raises(NotFound, match="tenant 'globex' has no deployment named 'qwen"):
            store.add_key("globex", ["qwen2.5-coder:7b"])
        with pytest.raises(InvalidName):
            store.add_key("acme", [])
        with pytest.raises(InvalidName, match="label"):
            store.add_key("acme", None, name="bad\nlabel")
        assert store.list_keys("acme") == []  # nothing half-written


def test_revocation_is_idempotent_and_errors_never_echo_a_secret(
        store_backend: StoreBackend) -> None:
    clock = FakeClock()
    with store_backend.open(clock=clock) as store:
        store.add_tenant("acme")
        info, key = store.add_key("acme")
        first = store.revoke_key(info.id)
        assert first.revoked_at == clock.now
        clock.now += 100
        assert store.revoke_key(info.id).revoked_at == first.revoked_at
        assert store.authenticate_key(key) is None
        assert [k.active for k in store.list_keys("acme")] == [False]
        with pytest.raises(NotFound) as caught:
            store.revoke_key(key)  # an operator pasting the key instead of its id
        assert key not in str(caught.value) and key[-20:] not in str(caught.value)
        with pytest.raises(NotFound, match="'key_aaaaaaaaaaaa'"):
            store.revoke_key("key_aaaaaaaaaaaa")
        with pytest.raises(NotFound):
            store.revoke_connector_token(info.id)  # a key id is not a token id


def _stored_bytes(backend: StoreBackend) -> bytes:
    """Everything the store wrote: the SQLite files, or every row of every PostgreSQL table
    (binary COPY, so a stored hash appears as its raw bytes)."""
    if backend.kind == "sqlite":
        return b"".join(p.read_bytes() for p in sorted(Path(backend.location).iterdir()))
    import psycopg

    dump = bytearray()
    with psycopg.connect(backend.location) as conn:
        tables = [name for (name,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
        assert {"tenants", "api_keys", "connector_tokens", "usage"} <= set(tables)
        for table in tables:
            with conn.cursor().copy(f'COPY "{table}" TO STDOUT (FORMAT binary)') as copy:
                for chunk in copy:
                    dump += chunk
    return bytes(dump)


def test_secrets_are_not_stored_in_clear(store_backend: StoreBackend) -> None:
    store = _seeded(store_backend)
    secrets_created = [store.add_key("acme")[1], store.add_key("acme", ["gemma"])[1],
                       store.add_connector_token("acme", ["gemma"])[1]]
    store.rotate_key(store.list_keys("acme")[0].id, 60)  # the previous hash is kept

    for stage in ("open", "closed"):
        raw = _stored_bytes(store_backend)
        for presented in secrets_created:
            match = (API_KEY_PATTERN.fullmatch(presented)
                     or CONNECTOR_TOKEN_PATTERN.fullmatch(presented))
            assert match is not None
            public_id, secret = match["public_id"], match["secret"]
            assert public_id.encode() in raw, "positive control: the public id is stored"
            assert hashlib.sha256(presented.encode()).digest() in raw, "the hash is stored"
            assert presented.encode() not in raw, stage
            for start in range(len(secret) - 11):  # no 12-character piece of the secret
                assert secret[start:start + 12].encode() not in raw, stage
        store.close()


def test_revocation_is_seen_at_once_by_another_connection(store_backend: StoreBackend) -> None:
    with _seeded(store_backend) as gateway_side, store_backend.open() as cli_side:
        info, key = cli_side.add_key("acme")
        token_info, token = cli_side.add_connector_token("acme", ["gemma"])
        assert gateway_side.authenticate_key(key) is not None
        assert gateway_side.authenticate_connector_token(token) is not None
        cli_side.revoke_key(info.id)
        cli_side.revoke_connector_token(token_info.id)
        assert gateway_side.authenticate_key(key) is None
        assert gateway_side.authenticate_connector_token(token) is None
        assert not gateway_side.is_connector_token_active(token_info.id)


def test_authentication_uses_a_constant_time_comparison(
        store_backend: StoreBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    with _seeded(store_backend) as store:
        _, key = store.add_key("acme")
        _, token = store.add_connector_token("acme", ["gemma"])
        monkeypatch.setattr(hmac, "compare_digest", spy)
        assert store.authenticate_key(key) is not None
        assert store.authenticate_key(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
        assert store.authenticate_connector_token(token) is not None
    expected = hashlib.sha256(key.encode()).digest()
    assert calls[0] == (expected, expected)
    assert type(calls[0][0]) is bytes  # what the database returns is compared as bytes
    assert calls[1][0] == expected and calls[1][1] != expected
    assert len(calls) == 3


def test_last_used_at_is_written_at_most_once_a_minute(store_backend: StoreBackend) -> None:
    clock = FakeClock(1000.0)
    with store_backend.open(clock=clock) as store:
        store.add_tenant("acme")
        _, key = store.add_key("acme")
        token_info, token = store.add_connector_token(
            "acme", [store.add_deployment("acme", "m").name])

        def last_used() -> float | None:
            return store.list_keys("acme")[0].last_used_at

        assert last_used() is None
        store.authenticate_key(key)
        assert last_used() == 1000.0
        clock.now = 1000.0 + LAST_USED_INTERVAL - 1
        store.authenticate_key(key)
        assert last_used() == 1000.0
        clock.now = 1000.0 + LAST_USED_INTERVAL + 1
        store.authenticate_key(key)
        assert last_used() == clock.now
        store.authenticate_key("sk-tokios-aaaaaaaaaaaa_" + "A" * 43)  # unknown: no write
        store.authenticate_connector_token(token)
        assert store.list_connector_tokens("acme")[0].last_used_at == clock.now
        assert token_info.last_used_at is None


def test_sqlite_files_are_private_and_schema_is_versioned(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    with open_store(directory) as store:
        store.add_tenant("acme")
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}
        assert files[DB_FILENAME] == 0o600
        assert set(files) >= {DB_FILENAME, DB_FILENAME + "-wal", DB_FILENAME + "-shm"}
        assert set(files.values()) == {0o600}
    raw = sqlite3.connect(directory / DB_FILENAME)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()
    with open_store(directory) as again:  # reopening migrates nothing and keeps the data
        assert [t.name for t in again.list_tenants()] == ["acme"]
    raw = sqlite3.connect(directory / DB_FILENAME)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(StoreError, match="newer than this tokios"):
        open_store(directory)


def test_a_missing_database_is_not_created_when_asked_not_to(
        store_backend: StoreBackend) -> None:
    with pytest.raises(NotFound, match=r"no tokios (database|schema)"):
        store_backend.open(create=False)
    if store_backend.kind == "sqlite":
        assert not Path(store_backend.location).exists()
    else:
        assert _stored_tables(store_backend) == []
    with store_backend.open() as store:
        store.add_tenant("acme")
    with store_backend.open(create=False) as again:
        assert [t.name for t in again.list_tenants()] == ["acme"]


def _stored_tables(backend: StoreBackend) -> list[str]:
    import psycopg

    with psycopg.connect(backend.location) as conn:
        return [name for (name,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]


def test_a_closed_store_refuses_calls(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.list_tenants()
    with pytest.raises(StoreError, match="closed"):
        store.add_tenant("acme")


def test_threads_share_one_store(store_backend: StoreBackend) -> None:
    with _seeded(store_backend) as store:
        _, key = store.add_key("acme")
        errors: list[BaseException] = []

        def work(index: int) -> None:
            try:
                for round_ in range(15):
                    assert store.authenticate_key(key) is not None
                    store.add_deployment("acme", f"t{index}-{round_}")
                    store.add_key("acme", [f"t{index}-{round_}"])
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(store.list_keys("acme")) == 1 + 4 * 15
        assert len(store.list_deployments("acme")) == 2 + 4 * 15


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_only_the_exact_credential_authenticates(store_backend: StoreBackend,
                                                 data: st.DataObject) -> None:
    # one store for every example: each adds its own key and token beside the earlier ones
    with store_backend.open() as store:
        if not store.list_tenants():
            store.add_tenant("acme")
            store.add_deployment("acme", "m")
        _, key = store.add_key("acme")
        _, token = store.add_connector_token("acme", ["m"])
        original = data.draw(st.sampled_from([key, token]))
        position = data.draw(st.integers(0, len(original) - 1))
        replacement = data.draw(st.text(min_size=0, max_size=3))
        presented = original[:position] + replacement + original[position + 1:]
        noise = data.draw(st.text(max_size=100))
        for candidate in (presented, noise):
            expected = candidate == key
            assert (store.authenticate_key(candidate) is not None) == expected
            expected = candidate == token
            assert (store.authenticate_connector_token(candidate) is not None) == expected


@pytest.mark.parametrize("store_backend", ["postgresql"], indirect=True)
def test_a_dead_pooled_connection_is_replaced_without_failing_a_call(
        store_backend: StoreBackend) -> None:
    import psycopg

    with _seeded(store_backend) as store:
        _, key = store.add_key("acme")
        database = store_backend.location.rsplit("/", 1)[1]
        for _ in range(2):  # twice: the replacement connection may die too
            with psycopg.connect(store_backend.location, autocommit=True) as admin:
                ended = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()", (database,)).fetchone()
                assert ended is not None and ended[0] >= 1  # the store's pooled connection
            assert [t.name for t in store.list_tenants()] == ["acme", "globex"]
            assert store.authenticate_key(key) is not None
            store.add_deployment("acme", f"after-{_}")
