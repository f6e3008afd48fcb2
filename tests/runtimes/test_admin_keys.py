"""Admin keys, the credentials of the admin HTTP API: in the store on SQLite and on PostgreSQL
(``store_backend``: format, scopes, hashing at rest, constant-time check, revocation, limits,
migration) and through the admin-key commands run as real subprocesses (the JSON contract,
errors and exit codes)."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtimes.store import (
    AdminGrant,
    AuthCache,
    InvalidName,
    LimitExceeded,
    NotFound,
    SqlStore,
)
from runtimes.store import sql as sql_module
from runtimes.store.base import (
    ADMIN_KEY_PATTERN,
    API_KEY_PATTERN,
    CONNECTOR_TOKEN_PATTERN,
    LAST_USED_INTERVAL,
    MAX_ADMIN_KEYS_PER_SCOPE,
)
from runtimes.store.schema import SCHEMA_VERSION
from tests.runtimes.test_admin_cli import ISO, run, run_json
from tests.runtimes.test_store_migrations import build_schema_1
from tests.store_backends import StoreBackend

ADMIN_KEY = re.compile(r"tkadm-[a-z2-7]{12}_[A-Za-z0-9_-]{43}")


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(store_backend: StoreBackend) -> Iterator[SqlStore]:
    with store_backend.open(clock=Clock()) as opened:
        opened.add_tenant("acme")
        opened.add_deployment("acme", "coder")
        opened.add_tenant("globex")
        yield opened


def clock_of(store: SqlStore) -> Clock:
    clock = store._clock
    assert isinstance(clock, Clock)
    return clock


def test_operator_and_tenant_admin_keys(store: SqlStore) -> None:
    operator, operator_key = store.add_admin_key(None, "ops")
    tenant, tenant_key = store.add_admin_key("acme")
    assert ADMIN_KEY.fullmatch(operator_key) and ADMIN_KEY.fullmatch(tenant_key)
    assert operator.id.startswith("adm_") and operator_key.startswith(operator.prefix + "_")
    assert (operator.scope, operator.tenant_id, operator.name) == ("operator", None, "ops")
    assert (tenant.scope, tenant.tenant_name) == ("tenant", "acme")
    assert store.authenticate_admin_key(operator_key) == AdminGrant(
        admin_key_id=operator.id, tenant_id=None, tenant_name=None)
    granted = store.authenticate_admin_key(tenant_key)
    assert granted is not None and not granted.operator
    assert granted.tenant_id == store.get_tenant("acme").id and granted.tenant_name == "acme"
    assert [k.id for k in store.list_admin_keys()] == [operator.id, tenant.id]  # operator first
    assert [k.id for k in store.list_admin_keys("acme")] == [tenant.id]
    assert store.list_admin_keys("globex") == []
    with pytest.raises(NotFound):
        store.add_admin_key("nobody")
    with pytest.raises(InvalidName):
        store.add_admin_key("acme", "x" * 101)


def test_admin_keys_api_keys_and_tokens_never_stand_in_for_each_other(
        store: SqlStore) -> None:
    _, admin_key = store.add_admin_key(None)
    _, api_key = store.add_key("acme")
    _, token = store.add_connector_token("acme", ["coder"])
    assert store.authenticate_admin_key(api_key) is None
    assert store.authenticate_admin_key(token) is None
    assert store.authenticate_key(admin_key) is None
    assert store.authenticate_connector_token(admin_key) is None
    # the same public id and secret under another prefix is not the admin key either
    body = admin_key.removeprefix("tkadm-")
    assert store.authenticate_key("sk-tokios-" + body) is None
    assert store.authenticate_admin_key(admin_key[:-1] + ("A" if admin_key[-1] != "A"
                                                          else "B")) is None
    assert store.authenticate_admin_key(admin_key + "x") is None
    assert store.authenticate_admin_key("tkadm-" + "a" * 300) is None
    cache = AuthCache(store)
    assert cache.get_admin_grant(admin_key) is not None
    assert cache.get_key_grant(admin_key) is None  # a cached admin grant is not a key grant
    assert cache.get_admin_grant(api_key) is None


def test_revocation_is_idempotent_and_seen_at_once(store: SqlStore,
                                                   store_backend: StoreBackend) -> None:
    info, key = store.add_admin_key("acme")
    with store_backend.open() as other_process:
        assert other_process.authenticate_admin_key(key) is not None
        first = other_process.revoke_admin_key(info.id).revoked_at
        assert store.authenticate_admin_key(key) is None
        clock_of(store).now += 10
        assert store.revoke_admin_key(info.id).revoked_at == first
    assert not store.list_admin_keys("acme")[0].active
    with pytest.raises(NotFound) as missing:
        store.revoke_admin_key(key)  # a pasted secret is never echoed
    assert key not in str(missing.value) and "adm_" in str(missing.value)


def test_only_hashes_are_stored_and_compared_in_constant_time(
        store: SqlStore, store_backend: StoreBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    _, key = store.add_admin_key(None)
    match = ADMIN_KEY_PATTERN.fullmatch(key)
    assert match is not None
    with store._transaction(write=False) as db:  # every column of the row, as stored
        row = db.execute("SELECT * FROM admin_keys").fetchone()
    raw = b"|".join(bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode()
                    for v in row)
    assert match["public_id"].encode() in raw  # positive control
    assert hashlib.sha256(key.encode()).digest() in raw
    for start in range(len(match["secret"]) - 11):
        assert match["secret"][start:start + 12].encode() not in raw
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest",
                        lambda a, b: calls.append((a, b)) or real(a, b))
    assert store.authenticate_admin_key(key) is not None
    assert calls == [(hashlib.sha256(key.encode()).digest(),) * 2]


def test_active_keys_are_limited_per_scope_and_last_use_is_recorded(
        store: SqlStore) -> None:
    made = [store.add_admin_key("globex")[0] for _ in range(MAX_ADMIN_KEYS_PER_SCOPE)]
    with pytest.raises(LimitExceeded):
        store.add_admin_key("globex")
    store.add_admin_key(None)  # another scope
    store.revoke_admin_key(made[0].id)
    info, key = store.add_admin_key("globex")  # room again
    clock = clock_of(store)
    store.authenticate_admin_key(key)
    used = next(k for k in store.list_admin_keys("globex") if k.id == info.id).last_used_at
    assert used == clock.now
    clock.now += LAST_USED_INTERVAL - 1
    store.authenticate_admin_key(key)
    assert next(k for k in store.list_admin_keys("globex") if k.id == info.id).last_used_at \
        == used


def test_keys_and_tokens_not_revoked_are_limited_per_tenant(
        store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sql_module, "MAX_ACTIVE_CREDENTIALS_PER_TENANT", 2)
    first = store.add_key("acme")[0]
    store.add_key("acme", ["coder"])
    with pytest.raises(LimitExceeded, match="API keys"):
        store.add_key("acme")
    store.add_key("globex")  # per tenant
    store.add_connector_token("acme", ["coder"])  # per kind
    store.revoke_key(first.id)
    store.add_key("acme")  # room again


def test_an_older_store_gains_admin_keys_on_open(store_backend: StoreBackend) -> None:
    build_schema_1(store_backend)
    with store_backend.open() as store:
        assert store.migration.to_version == SCHEMA_VERSION == 3
        _, key = store.add_admin_key("acme")
        assert store.authenticate_admin_key(key) is not None
        assert store.list_admin_keys("acme")[0].tenant_name == "acme"


def test_connector_tokens_can_be_read_by_id(store: SqlStore) -> None:
    info, token = store.add_connector_token("acme", ["coder"], "edge")
    assert store.get_connector_token(info.id) == info
    with pytest.raises(NotFound) as missing:
        store.get_connector_token(token)
    assert token not in str(missing.value)
    assert API_KEY_PATTERN.fullmatch(token) is None and CONNECTOR_TOKEN_PATTERN.fullmatch(token)


# ---- the admin-key commands -------------------------------------------------------------------


def test_admin_key_commands_in_json(store_backend: StoreBackend) -> None:
    data = store_backend
    operator = run_json("admin-key", "add", "--operator", "--name", "ops", data=data)
    assert set(operator) == {"id", "key", "scope", "tenant", "tenant_id", "name", "prefix",
                             "created_at", "last_used_at", "revoked_at", "active"}
    assert ADMIN_KEY.fullmatch(str(operator["key"])) and ISO.fullmatch(
        str(operator["created_at"]))
    assert (operator["scope"], operator["tenant"], operator["active"]) == ("operator", None,
                                                                          True)
    run_json("tenant", "add", "acme", data=data)
    tenant = run_json("admin-key", "add", "acme", data=data)
    assert (tenant["scope"], tenant["tenant"]) == ("tenant", "acme")
    listed = run_json("admin-key", "list", data=data)["admin_keys"]
    assert [k["id"] for k in listed] == [operator["id"], tenant["id"]]  # type: ignore[index]
    assert all("key" not in k for k in listed)  # type: ignore[union-attr]
    only_operator = run_json("admin-key", "list", "--operator", data=data)["admin_keys"]
    assert [k["id"] for k in only_operator] == [operator["id"]]  # type: ignore[index]
    revoked = run_json("admin-key", "revoke", str(tenant["id"]), data=data)
    assert revoked["revoked"] is True and revoked["active"] is False
    assert run_json("admin-key", "list", "acme", data=data)["admin_keys"][0][  # type: ignore[index]
        "revoked_at"] == revoked["revoked_at"]
    with store_backend.open() as store:
        assert store.authenticate_admin_key(str(operator["key"])) is not None
        assert store.authenticate_admin_key(str(tenant["key"])) is None


def test_admin_key_command_errors(tmp_path: Path) -> None:
    data = tmp_path / "data"
    both = run_json("admin-key", "add", "acme", "--operator", data=data, code=2)
    assert both["error"]["code"] == "invalid"  # type: ignore[index]
    neither = run_json("admin-key", "add", data=data, code=2)
    assert neither["error"]["code"] == "invalid"  # type: ignore[index]
    missing = run_json("admin-key", "add", "nobody", data=data, code=3)
    assert missing["error"]["code"] == "not_found"  # type: ignore[index]
    pasted = "tkadm-aaaaaaaaaaaa_" + "B" * 43
    unknown = run("admin-key", "revoke", pasted, "--json", data=data)
    assert unknown.returncode == 3 and pasted not in unknown.stdout + unknown.stderr
    text = run("admin-key", "add", "--operator", data=data)
    assert text.returncode == 0 and ADMIN_KEY.search(text.stdout)
    assert "Shown only once" in text.stdout
    for command in (("admin-key", "add"), ("admin-key", "list"), ("tunnels",)):
        helped = run(*command, "--help")
        assert helped.returncode == 0 and "example" in helped.stdout


def test_tunnels_command_refuses_bad_arguments_before_dialing() -> None:
    no_url = run_json("tunnels", code=2)
    assert "--url" in no_url["error"]["message"]  # type: ignore[index]
    no_key = run_json("tunnels", "--url", "https://127.0.0.1:1", code=2)
    assert "TOKIOS_ADMIN_KEY" in no_key["error"]["message"]  # type: ignore[index]
    clear = run_json("tunnels", "--url", "http://192.0.2.1:80", "--admin-key", "tkadm-x",
                     code=2)
    assert "TLS" in clear["error"]["message"]  # type: ignore[index]
    down = run_json("tunnels", "--url", "https://127.0.0.1:1", "--admin-key", "tkadm-x",
                    code=1)
    assert down["error"]["code"] == "unreachable"  # type: ignore[index]
