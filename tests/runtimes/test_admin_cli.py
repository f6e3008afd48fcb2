"""The tokios-gateway admin commands, run as real subprocesses: the contract scripts rely on,
on the SQLite store (``--data``) and, where the store matters, on PostgreSQL (``--store``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from runtimes.store import AuthCache
from tests.store_backends import StoreBackend

REPO = Path(__file__).resolve().parents[2]
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
KEY = re.compile(r"sk-tokios-[a-z2-7]{12}_[A-Za-z0-9_-]{43}")
TOKEN = re.compile(r"tkct-[a-z2-7]{12}_[A-Za-z0-9_-]{43}")


def run(*args: str, data: Path | StoreBackend | None = None, env_data: Path | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``tokios-gateway ARGS`` on the store ``data`` (a data directory or a backend), without
    any TOKIOS_DATA / TOKIOS_STORE / TOKIOS_CONFIG of the caller's (``env_data``, ``env``:
    what to set instead)."""
    env = {**{k: v for k, v in os.environ.items()
              if k not in ("TOKIOS_DATA", "TOKIOS_STORE", "TOKIOS_CONFIG")}, **(env or {})}
    if env_data is not None:
        env["TOKIOS_DATA"] = str(env_data)
    if isinstance(data, StoreBackend):
        argv = [*args, *data.cli_args]
    else:
        argv = [*args, "--data", str(data)] if data is not None else list(args)
    return subprocess.run([sys.executable, "-m", "runtimes.gateway.cli", *argv], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=60, check=False)


def run_json(*args: str, data: Path | StoreBackend | None = None,
             env_data: Path | None = None, code: int = 0,
             env: dict[str, str] | None = None) -> dict[str, object]:
    done = run(*args, "--json", data=data, env_data=env_data, env=env)
    assert done.returncode == code, done.stderr
    assert done.stdout.endswith("\n") and done.stdout.count("\n") == 1, done.stdout
    value = orjson.loads(done.stdout)
    assert isinstance(value, dict)
    if code:
        assert set(value) == {"error"} and set(value["error"]) == {"code", "message"}
        assert value["error"]["message"] in done.stderr
    else:
        assert done.stderr == ""
    return value


def test_the_whole_contract_in_json(store_backend: StoreBackend) -> None:
    data = store_backend
    tenant = run_json("tenant", "add", "acme", data=data)
    assert set(tenant) == {"id", "name", "created_at", "rpm", "tpm"}
    assert tenant["rpm"] is None and tenant["tpm"] is None
    assert tenant["name"] == "acme" and ISO.fullmatch(str(tenant["created_at"]))

    deployment = run_json("deployment", "add", "acme", "gemma-tunnel", data=data)
    assert set(deployment) == {"id", "name", "tenant", "tenant_id", "created_at",
                               "max_in_flight", "queue", "queue_timeout"}
    assert (deployment["name"], deployment["tenant"], deployment["tenant_id"]) == (
        "gemma-tunnel", "acme", tenant["id"])
    run_json("deployment", "add", "acme", "qwen:7b", data=data)
    listed = run_json("deployment", "list", "acme", data=data)
    assert [d["name"] for d in listed["deployments"]] == ["gemma-tunnel", "qwen:7b"]  # type: ignore[index, union-attr]

    token = run_json("connector-token", "add", "acme", "--deployment", "gemma-tunnel",
                     "--deployment", "qwen:7b", data=data)
    assert {"id", "token", "tenant", "deployments", "prefix", "created_at"} <= set(token)
    assert TOKEN.fullmatch(str(token["token"])) and str(token["id"]).startswith("tct_")
    assert token["deployments"] == ["gemma-tunnel", "qwen:7b"]

    key = run_json("key", "add", "acme", data=data)
    assert {"id", "key", "tenant", "deployments", "prefix", "name", "created_at"} <= set(key)
    assert KEY.fullmatch(str(key["key"])) and str(key["id"]).startswith("key_")
    assert key["deployments"] is None  # no --deployment: all of the tenant's
    assert str(key["key"]).startswith(str(key["prefix"]) + "_")
    scoped = run_json("key", "add", "acme", "--deployment", "qwen:7b", "--name", "ci bot",
                      data=data)
    assert scoped["deployments"] == ["qwen:7b"] and scoped["name"] == "ci bot"

    with store_backend.open() as store:  # what the CLI made works against the store
        grant = store.authenticate_key(str(key["key"]))
        assert grant is not None and grant.deployments is None and grant.tenant_name == "acme"
        connector = store.authenticate_connector_token(str(token["token"]))
        assert connector is not None and connector.deployments == {"gemma-tunnel", "qwen:7b"}

    keys = run_json("key", "list", "acme", data=data)
    assert set(keys) == {"tenant", "keys"}
    assert [k["id"] for k in keys["keys"]] == [key["id"], scoped["id"]]  # type: ignore[index, union-attr]
    first = keys["keys"][0]  # type: ignore[index]
    assert {"id", "prefix", "name", "deployments", "created_at", "last_used_at",
            "revoked_at", "active"} <= set(first)
    assert first["active"] is True and first["revoked_at"] is None
    assert ISO.fullmatch(first["last_used_at"])  # authenticated above
    assert str(key["key"]) not in orjson.dumps(keys).decode()
    tokens = run_json("connector-token", "list", "acme", data=data)
    assert [t["id"] for t in tokens["connector_tokens"]] == [token["id"]]  # type: ignore[index, union-attr]
    assert str(token["token"]) not in orjson.dumps(tokens).decode()

    revoked = run_json("key", "revoke", str(key["id"]), data=data)
    assert revoked["id"] == key["id"] and revoked["revoked"] is True
    assert revoked["active"] is False and ISO.fullmatch(str(revoked["revoked_at"]))
    assert run_json("key", "revoke", str(key["id"]), data=data)["revoked_at"] == \
        revoked["revoked_at"]  # idempotent
    revoked_token = run_json("connector-token", "revoke", str(token["id"]), data=data)
    assert revoked_token["id"] == token["id"] and revoked_token["revoked"] is True
    with store_backend.open() as store:
        assert store.authenticate_key(str(key["key"])) is None
        assert store.authenticate_key(str(scoped["key"])) is not None
        assert not store.is_connector_token_active(str(token["id"]))
    assert run_json("tenant", "list", data=data) == {"tenants": [tenant]}


def test_options_go_before_or_after_and_data_defaults_to_the_environment(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert run_json("tenant", "add", "acme", env_data=data)["name"] == "acme"
    for argv in (["key", "add", "acme", "--json", "--data", str(data)],
                 ["--json", "--data", str(data), "key", "add", "acme"],
                 ["key", "--data", str(data), "add", "--json", "acme"]):
        done = run(*argv)
        assert done.returncode == 0, done.stderr
        assert KEY.fullmatch(orjson.loads(done.stdout)["key"])
    # --data wins over $TOKIOS_DATA.
    other = tmp_path / "other"
    run_json("tenant", "add", "globex", data=other, env_data=data)
    assert [t["name"] for t in run_json("tenant", "list", env_data=other)["tenants"]] == [  # type: ignore[union-attr]
        "globex"]


def test_no_data_directory_is_a_clear_usage_error(tmp_path: Path) -> None:
    done = run("tenant", "list")
    assert done.returncode == 2 and done.stdout == ""
    assert "--data DIR (SQLite) or --store postgresql://" in done.stderr
    assert "TOKIOS_DATA / TOKIOS_STORE" in done.stderr
    error = run_json("tenant", "list", code=2)
    assert error["error"]["code"] == "usage"  # type: ignore[index]


@pytest.mark.parametrize(("argv", "code", "error_code", "message"), [
    (["tenant", "add", "acme"], 4, "already_exists", "already exists"),
    (["deployment", "add", "acme", "m"], 4, "already_exists", "already has a deployment"),
    (["deployment", "add", "initech", "m"], 3, "not_found", "no tenant named 'initech'"),
    (["key", "list", "initech"], 3, "not_found", "no tenant named"),
    (["key", "add", "acme", "--deployment", "nope"], 3, "not_found", "no deployment named"),
    (["key", "revoke", "key_aaaaaaaaaaaa"], 3, "not_found", "no API key"),
    (["connector-token", "revoke", "tct_aaaaaaaaaaaa"], 3, "not_found", "no connector token"),
    (["tenant", "add", "bad name"], 2, "invalid", "invalid tenant name"),
    (["key", "add", "acme", "--name", ""], 2, "invalid", "invalid label"),
    (["connector-token", "add", "acme"], 2, "usage", "--deployment"),
    (["key", "frobnicate"], 2, "usage", "invalid choice"),
    (["key"], 2, "usage", "required"),
])
def test_errors_have_exit_codes_and_one_json_object(
        store_backend: StoreBackend, argv: list[str], code: int, error_code: str,
        message: str) -> None:
    data = store_backend
    with store_backend.open() as store:
        store.add_tenant("acme")
        store.add_deployment("acme", "m")
    error = run_json(*argv, data=data, code=code)
    assert error["error"]["code"] == error_code  # type: ignore[index]
    assert message in error["error"]["message"]  # type: ignore[index]
    human = run(*argv, data=data)
    assert human.returncode == code and human.stdout == ""
    assert message in human.stderr


def test_read_commands_do_not_create_a_database(tmp_path: Path) -> None:
    error = run_json("key", "list", "acme", data=tmp_path / "typo", code=3)
    assert "no tokios database" in error["error"]["message"]  # type: ignore[index]
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize("store_backend", ["postgresql"], indirect=True)
def test_read_commands_do_not_create_a_schema(store_backend: StoreBackend) -> None:
    error = run_json("key", "list", "acme", data=store_backend, code=3)
    assert "no tokios schema" in error["error"]["message"]  # type: ignore[index]
    assert "tokios-gateway migrate" in error["error"]["message"]  # type: ignore[index]
    assert run_json("tenant", "add", "acme", data=store_backend)["name"] == "acme"


def test_human_output_shows_a_secret_once_with_a_warning(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert "Created tenant acme" in run("tenant", "add", "acme", data=data).stdout
    assert run("deployment", "add", "acme", "m", data=data).returncode == 0
    added = run("key", "add", "acme", "--name", "laptop", data=data)
    assert added.returncode == 0
    [key] = KEY.findall(added.stdout)
    assert "only once" in added.stdout
    token = run("connector-token", "add", "acme", "--deployment", "m", data=data)
    assert TOKEN.search(token.stdout) and "only once" in token.stdout
    listing = run("key", "list", "acme", data=data).stdout
    assert "laptop" in listing and key.split("_")[0] in listing and key not in listing
    assert "active" in listing
    assert "m" in run("deployment", "list", "acme", data=data).stdout
    assert "acme" in run("tenant", "list", data=data).stdout


def test_help_explains_each_command() -> None:
    done = run("--help")
    assert done.returncode == 0
    for word in ("serve", "tenant", "deployment", "connector-token", "key", "TOKIOS_DATA",
                 "examples"):
        assert word in done.stdout
    key_add = run("key", "add", "--help")
    assert key_add.returncode == 0 and "shown once" in key_add.stdout
    assert "--deployment" in key_add.stdout and "example" in key_add.stdout


def test_a_key_revoked_from_the_cli_is_refused_within_a_second(
        store_backend: StoreBackend) -> None:
    """The gateway's view (store + AuthCache with the default 1 s TTL, in this process)."""
    data = store_backend
    with store_backend.open() as store:
        store.add_tenant("acme")
        info, key = store.add_key("acme")
        cache = AuthCache(store)
        assert cache.get_key_grant(key) is not None  # now cached
        assert run("key", "revoke", info.id, data=data).returncode == 0
        revoked_at = time.monotonic()
        while cache.get_key_grant(key) is not None:
            assert time.monotonic() - revoked_at < 1.5, "revocation not seen within the TTL"
            time.sleep(0.02)
        assert store.authenticate_key(key) is None
