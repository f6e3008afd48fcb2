"""The admin commands for limits, deployment queues, key expiry and rotation and usage, run as
real subprocesses: their JSON contract, their errors and exit codes, and their --help."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from runtimes.store import UsageRow
from tests.runtimes.test_admin_cli import KEY, run, run_json
from tests.store_backends import StoreBackend


@pytest.fixture
def data(store_backend: StoreBackend) -> StoreBackend:
    """A store with tenant acme and its deployments coder and embed, on SQLite and on
    PostgreSQL."""
    run_json("tenant", "add", "acme", data=store_backend)
    run_json("deployment", "add", "acme", "coder", data=store_backend)
    run_json("deployment", "add", "acme", "embed", data=store_backend)
    return store_backend


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_tenant_limits(data: StoreBackend) -> None:
    tenant = run_json("tenant", "set", "acme", "--rpm", "600", "--tpm", "100000", data=data)
    assert (tenant["rpm"], tenant["tpm"]) == (600, 100000)
    tenant = run_json("tenant", "set", "acme", "--rpm", "none", data=data)  # tpm stays
    assert (tenant["rpm"], tenant["tpm"]) == (None, 100000)
    listed = run_json("tenant", "list", data=data)["tenants"]
    assert listed[0]["tpm"] == 100000  # type: ignore[index]
    text = run("tenant", "list", data=data).stdout
    assert "TPM" in text and "100000" in text
    for bad in ("0", "-1", "1.5", "lots"):
        error = run_json("tenant", "set", "acme", "--rpm", bad, data=data, code=2)
        assert error["error"]["code"] == "usage"  # type: ignore[index]
    run_json("tenant", "set", "nobody", "--rpm", "1", data=data, code=3)


def test_deployment_cap_and_queue(data: StoreBackend) -> None:
    added = run_json("deployment", "add", "acme", "small", "--max-in-flight", "1", "--queue",
                     "4", "--queue-timeout", "2m", data=data)
    assert (added["max_in_flight"], added["queue"], added["queue_timeout"]) == (1, 4, 120.0)
    changed = run_json("deployment", "set", "acme", "small", "--queue", "0", data=data)
    assert (changed["max_in_flight"], changed["queue"], changed["queue_timeout"]) == (1, 0, 120)
    reset = run_json("deployment", "set", "acme", "small", "--max-in-flight", "none",
                     "--queue", "default", "--queue-timeout", "default", data=data)
    assert (reset["max_in_flight"], reset["queue"], reset["queue_timeout"]) == (None, None, None)
    listed = run("deployment", "list", "acme", data=data).stdout
    assert "MAX IN FLIGHT" in listed and "QUEUE TIMEOUT" in listed
    run_json("deployment", "set", "acme", "small", "--queue-timeout", "2 hours", data=data,
             code=2)
    run_json("deployment", "set", "acme", "small", "--queue-timeout", "2h", data=data, code=2)
    run_json("deployment", "set", "acme", "nope", "--queue", "1", data=data, code=3)


def test_key_limits_expiry_and_set(data: StoreBackend) -> None:
    before = time.time()
    key = run_json("key", "add", "acme", "--rpm", "60", "--tpm", "5000", "--expires-in", "30d",
                   data=data)
    assert KEY.fullmatch(str(key["key"]))
    assert (key["rpm"], key["tpm"], key["status"], key["active"]) == (60, 5000, "active", True)
    expires = datetime.strptime(str(key["expires_at"]), "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=UTC).timestamp()
    assert before + 30 * 86400 - 2 <= expires <= time.time() + 30 * 86400 + 1
    at = run_json("key", "add", "acme", "--expires-at", "2031-01-02T03:04:05+01:00", data=data)
    assert at["expires_at"] == "2031-01-02T02:04:05Z"
    past = run_json("key", "add", "acme", "--expires-at", "2020-01-01", data=data)
    assert (past["status"], past["active"]) == ("expired", False)
    changed = run_json("key", "set", str(key["id"]), "--rpm", "none", "--deployment", "embed",
                       "--no-expiry", data=data)
    assert (changed["rpm"], changed["tpm"], changed["deployments"], changed["expires_at"]) == (
        None, 5000, ["embed"], None)
    back = run_json("key", "set", str(key["id"]), "--all-deployments", data=data)
    assert back["deployments"] is None and "key" not in back
    listing = run("key", "list", "acme", data=data).stdout
    assert "EXPIRES" in listing and "RPM/TPM" in listing and "expired 2020-01-01" in listing
    run_json("key", "add", "acme", "--expires-in", "1d", "--expires-at", "2030-01-01",
             data=data, code=2)
    run_json("key", "set", str(key["id"]), "--all-deployments", "--deployment", "coder",
             data=data, code=2)
    run_json("key", "add", "acme", "--expires-in", "soon", data=data, code=2)
    run_json("key", "add", "acme", "--expires-at", "31/12/2030", data=data, code=2)
    run_json("key", "set", str(key["id"]), "--deployment", "missing", data=data, code=3)
    run_json("key", "set", "key_aaaaaaaaaaaa", "--rpm", "1", data=data, code=3)


def test_key_rotate_prints_a_new_secret_once(data: StoreBackend) -> None:
    key = run_json("key", "add", "acme", "--name", "laptop", data=data)
    rotated = run_json("key", "rotate", str(key["id"]), "--overlap", "1h", data=data)
    assert KEY.fullmatch(str(rotated["key"])) and rotated["key"] != key["key"]
    assert rotated["id"] == key["id"] and rotated["name"] == "laptop"
    assert rotated["previous_secret_valid_until"] and rotated["rotated_at"]
    with data.open() as store:
        old, new = store.authenticate_key(str(key["key"])), \
            store.authenticate_key(str(rotated["key"]))
        assert old is not None and new is not None and old.valid_until is not None
    text = run("key", "rotate", str(key["id"]), "--overlap", "0", data=data)
    assert text.returncode == 0 and "stopped working now" in text.stdout
    assert KEY.search(text.stdout) and "Shown only once" in text.stdout
    listing = run("key", "list", "acme", data=data).stdout
    assert "old secret until" not in listing
    run_json("key", "revoke", str(key["id"]), data=data)
    error = run_json("key", "rotate", str(key["id"]), data=data, code=2)
    assert "revoked" in error["error"]["message"]  # type: ignore[index]
    run_json("key", "rotate", "key_aaaaaaaaaaaa", data=data, code=3)


def test_usage_by_key_deployment_and_day_since(data: StoreBackend) -> None:
    with data.open() as store:
        tenant_id = store.get_tenant("acme").id
        hour = int(time.time()) // 3600 * 3600
        store.record_usage([
            UsageRow(tenant_id=tenant_id, key_id="key_a", deployment="coder", bucket=hour,
                     requests=2, input_tokens=100, output_tokens=10),
            UsageRow(tenant_id=tenant_id, key_id="key_b", deployment="embed",
                     bucket=hour - 3 * 86400, requests=1, input_tokens=50, output_tokens=0,
                     estimated_requests=1, estimated_input_tokens=50),
        ])
    by_key = run_json("usage", "acme", data=data)
    assert by_key["by"] == "key" and by_key["tenant"] == "acme" and by_key["since"] is None
    assert [(r["key_id"], r["requests"], r["total_tokens"]) for r in by_key["usage"]] == [  # type: ignore[union-attr]
        ("key_a", 2, 110), ("key_b", 1, 50)]
    assert by_key["total"] == {"requests": 3, "input_tokens": 150, "output_tokens": 10,
                               "total_tokens": 160, "estimated_requests": 1,
                               "estimated_input_tokens": 50, "estimated_output_tokens": 0}
    recent = run_json("usage", "acme", "--since", "24h", "--by", "deployment", data=data)
    assert [(r["deployment"], r["requests"]) for r in recent["usage"]] == [("coder", 2)]  # type: ignore[union-attr]
    by_day = run_json("usage", "--by", "day", "--key", "key_b", data=data)
    day = datetime.fromtimestamp(hour - 3 * 86400, UTC).strftime("%Y-%m-%d")
    assert [(r["tenant"], r["day"]) for r in by_day["usage"]] == [("acme", day)]  # type: ignore[union-attr]
    since = run_json("usage", "acme", "--since", iso(time.time() + 86400), data=data)
    assert since["usage"] == [] and since["total"]["requests"] == 0  # type: ignore[index]
    text = run("usage", "acme", data=data).stdout
    assert text.splitlines()[0].split() == ["TENANT", "KEY", "REQUESTS", "INPUT", "OUTPUT",
                                            "TOTAL", "ESTIMATED"]
    assert "all" in text.splitlines()[-1] and "1 req" in text
    run_json("usage", "acme", "--by", "month", data=data, code=2)
    run_json("usage", "nobody", data=data, code=3)


@pytest.mark.parametrize(("command", "flags"), [
    (["serve"], ["--metrics-listen", "--metrics-token", "--usage-flush-interval"]),
    (["key", "add"], ["--rpm", "--tpm", "--expires-in", "--expires-at"]),
    (["key", "set"], ["--rpm", "--tpm", "--expires-in", "--expires-at", "--no-expiry",
                      "--deployment", "--all-deployments"]),
    (["key", "rotate"], ["--overlap"]),
    (["tenant", "set"], ["--rpm", "--tpm"]),
    (["deployment", "add"], ["--max-in-flight", "--queue", "--queue-timeout"]),
    (["deployment", "set"], ["--max-in-flight", "--queue", "--queue-timeout"]),
    (["usage"], ["--key", "--since", "--by"]),
])
def test_help_explains_every_new_flag(command: list[str], flags: list[str]) -> None:
    shown = run(*command, "--help")
    assert shown.returncode == 0
    for flag in flags:
        line = next((ln for ln in shown.stdout.splitlines() if flag in ln), "")
        assert line, f"{flag} missing from {command} --help"
    assert len(shown.stdout) > 300
