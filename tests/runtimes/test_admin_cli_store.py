"""Choosing the store (``--data`` / ``--store`` / TOKIOS_DATA / TOKIOS_STORE / the config file)
and ``tokios-gateway migrate``, run as real subprocesses against SQLite and PostgreSQL; and the
``serve`` options ``--store`` and ``--redis`` as the server receives them."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from runtimes.gateway import cli
from runtimes.store.schema import SCHEMA_VERSION
from runtimes.store.sqlite import DB_FILENAME
from tests.runtimes.test_admin_cli import run, run_json
from tests.runtimes.test_admin_cli_serve import FakeServer
from tests.runtimes.test_store_migrations import OLD_KEY, build_schema_1, make_newer
from tests.store_backends import StoreBackend


def test_migrate_creates_then_reports_a_current_schema(store_backend: StoreBackend) -> None:
    created = run_json("migrate", data=store_backend)
    kind = store_backend.kind
    assert created == {"store": kind, "location": created["location"], "from_version": 0,
                       "to_version": SCHEMA_VERSION, "migrated": True}
    if kind == "postgresql":
        assert created["location"] == store_backend.location  # no password in it to hide
    else:
        assert created["location"] == str(Path(store_backend.location) / DB_FILENAME)
    again = run_json("migrate", data=store_backend)
    assert (again["from_version"], again["migrated"]) == (SCHEMA_VERSION, False)
    text = run("migrate", data=store_backend)
    assert text.returncode == 0 and text.stderr == ""
    assert f"is current (version {SCHEMA_VERSION})" in text.stdout


def test_migrate_upgrades_schema_1_and_keeps_the_data(store_backend: StoreBackend) -> None:
    build_schema_1(store_backend)
    text = run("migrate", data=store_backend)
    assert text.returncode == 0, text.stderr
    assert f"from version 1 to {SCHEMA_VERSION}" in text.stdout
    with store_backend.open() as store:
        assert not store.migration.migrated
        assert store.authenticate_key(OLD_KEY) is not None


def test_a_newer_schema_fails_every_command_clearly(store_backend: StoreBackend) -> None:
    run_json("migrate", data=store_backend)
    make_newer(store_backend, SCHEMA_VERSION + 5)
    for argv in (["migrate"], ["tenant", "list"]):
        error = run_json(*argv, data=store_backend, code=1)
        assert "newer than this tokios supports" in error["error"]["message"]  # type: ignore[index]


@pytest.mark.parametrize("store_backend", ["postgresql"], indirect=True)
def test_the_store_is_chosen_by_the_most_direct_setting(tmp_path: Path,
                                                        store_backend: StoreBackend) -> None:
    url, data = store_backend.location, tmp_path / "sqlite"

    def tenants(*argv: str, env: dict[str, str] | None = None) -> list[str]:
        listed = run_json("tenant", "list", *argv, env=env)["tenants"]
        assert isinstance(listed, list)
        return [t["name"] for t in listed]

    run_json("tenant", "add", "on-postgres", env={"TOKIOS_STORE": url})
    run_json("tenant", "add", "on-sqlite", data=data)
    assert tenants("--store", url) == ["on-postgres"]
    # a flag beats the environment, whichever store each names
    assert tenants("--data", str(data), env={"TOKIOS_STORE": url}) == ["on-sqlite"]
    assert tenants("--store", url, env={"TOKIOS_DATA": str(data)}) == ["on-postgres"]
    # the same level: the URL wins
    assert tenants(env={"TOKIOS_STORE": url, "TOKIOS_DATA": str(data)}) == ["on-postgres"]
    config = tmp_path / "gateway.toml"
    config.write_text(f'store = "{url}"\n')
    assert tenants("--config", str(config)) == ["on-postgres"]
    assert tenants(env={"TOKIOS_CONFIG": str(config), "TOKIOS_DATA": str(data)}) == [
        "on-sqlite"]  # the environment beats the file


def test_a_store_that_is_not_a_postgresql_url_is_a_usage_error(tmp_path: Path) -> None:
    for value in (str(tmp_path), "mysql://db/x", "sqlite:///tmp/x"):
        error = run_json("tenant", "list", "--store", value, code=2)
        assert "takes a postgresql://USER@HOST:PORT/DATABASE URL" in \
            error["error"]["message"]  # type: ignore[index]
    config = tmp_path / "gateway.toml"
    config.write_text("store = 5\n")
    error = run_json("tenant", "list", "--config", str(config), code=2)
    assert "option `store` must be a string" in error["error"]["message"]  # type: ignore[index]


def test_an_unreachable_database_fails_clearly_without_its_password() -> None:
    url = "postgresql://tokios:hunter2@127.0.0.1:1/tokios?connect_timeout=3"
    done = run("tenant", "list", "--store", url, "--json")
    assert done.returncode == 1
    message = orjson.loads(done.stdout)["error"]["message"]
    assert message.startswith("cannot use the PostgreSQL database "
                              "postgresql://tokios@127.0.0.1:1/tokios: ")
    assert "hunter2" not in done.stdout + done.stderr


def test_help_names_the_store_options_and_migrate() -> None:
    top = run("--help").stdout
    for word in ("--store", "TOKIOS_STORE", "migrate", "postgresql://"):
        assert word in top
    migrate = run("migrate", "--help").stdout
    for word in ("--data", "--store", "--json", "from_version", "database owner", "30 s"):
        assert word in migrate
    serve = run("serve", "--help").stdout
    for word in ("--store", "--redis", "TOKIOS_REDIS", "PGPASSWORD"):
        assert word in serve


def test_serve_gets_the_store_url_and_the_redis_url(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    server = FakeServer(monkeypatch)
    for name in ("TOKIOS_DATA", "TOKIOS_STORE", "TOKIOS_REDIS", "TOKIOS_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    url = "postgresql://tokios@db.internal:5432/tokios"
    base = ["serve", "--listen", "127.0.0.1:0", "--insecure-http"]
    assert cli.main([*base, "--store", url, "--redis", "redis://cache:6379/1"]) == 0
    options = server.calls[-1]
    assert (options.store_url, options.data_dir, options.redis_url) == (
        url, None, "redis://cache:6379/1")
    assert options.store_location == url
    monkeypatch.setenv("TOKIOS_REDIS", "rediss://:pw@cache:6380/0")
    monkeypatch.setenv("TOKIOS_DATA", str(tmp_path))
    assert cli.main(base) == 0
    options = server.calls[-1]
    assert (options.store_url, options.data_dir, options.redis_url) == (
        None, tmp_path, "rediss://:pw@cache:6380/0")
    assert options.store_location == str(tmp_path)
    assert cli.main([*base, "--redis", "cache:6379"]) == 2
    assert "--redis (or TOKIOS_REDIS) must be a redis://" in capsys.readouterr().err
    config = tmp_path / "gateway.toml"
    config.write_text(f'store = "{url}"\nredis = "redis://from-file:6379/0"\n')
    monkeypatch.delenv("TOKIOS_REDIS")
    monkeypatch.delenv("TOKIOS_DATA")
    assert cli.main([*base, "--config", str(config)]) == 0
    options = server.calls[-1]
    assert (options.store_url, options.redis_url) == (url, "redis://from-file:6379/0")
