"""The store's key lifecycle (expiry, rotation, key set), limits, deployment queues and usage
counts, on SQLite and on PostgreSQL (``store_backend``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runtimes.store import KEEP, InvalidName, NotFound, SqlStore, UsageRow
from tests.store_backends import StoreBackend

NOW = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(store_backend: StoreBackend, clock: Clock) -> Iterator[SqlStore]:
    with store_backend.open(clock=clock) as opened:
        opened.add_tenant("acme")
        opened.add_deployment("acme", "coder")
        opened.add_deployment("acme", "embed")
        opened.add_tenant("globex")
        opened.add_deployment("globex", "coder")
        yield opened


def test_an_expiring_key_works_until_its_time_and_not_after(store: SqlStore,
                                                            clock: Clock) -> None:
    info, secret = store.add_key("acme", expires_at=NOW + 60)
    assert info.expires_at == NOW + 60 and info.status(NOW) == "active"
    grant = store.authenticate_key(secret)
    assert grant is not None and grant.valid_until == NOW + 60
    clock.now = NOW + 60
    assert store.authenticate_key(secret) is None
    assert store.list_keys("acme")[0].status(clock.now) == "expired"
    # key set moves the expiry (or removes it) and the key works again
    assert store.set_key(info.id, expires_at=None).expires_at is None
    again = store.authenticate_key(secret)
    assert again is not None and again.valid_until is None


def test_rotation_keeps_the_old_secret_for_the_overlap_only(store: SqlStore,
                                                            clock: Clock) -> None:
    info, old = store.add_key("acme", ["coder"], "laptop", rpm=10)
    rotated, new = store.rotate_key(info.id, 3600)
    assert new != old and new.startswith(info.prefix + "_")
    assert (rotated.id, rotated.deployments, rotated.rpm, rotated.name) == (
        info.id, ("coder",), 10, "laptop")
    assert rotated.rotated_at == NOW and rotated.previous_valid_until == NOW + 3600
    new_grant, old_grant = store.authenticate_key(new), store.authenticate_key(old)
    assert new_grant is not None and new_grant.valid_until is None
    assert old_grant is not None and old_grant.valid_until == NOW + 3600
    assert new_grant.key_id == old_grant.key_id == info.id
    clock.now = NOW + 3599
    assert store.authenticate_key(old) is not None
    clock.now = NOW + 3600
    assert store.authenticate_key(old) is None
    assert store.authenticate_key(new) is not None


def test_a_second_rotation_ends_the_oldest_secret_and_overlap_zero_ends_at_once(
        store: SqlStore) -> None:
    info, first = store.add_key("acme")
    _, second = store.rotate_key(info.id, 600)
    _, third = store.rotate_key(info.id, 600)
    assert store.authenticate_key(first) is None
    assert store.authenticate_key(second) is not None
    assert store.authenticate_key(third) is not None
    done, fourth = store.rotate_key(info.id, 0)
    assert done.previous_valid_until is None
    assert store.authenticate_key(third) is None
    assert store.authenticate_key(fourth) is not None


def test_an_old_secret_never_outlives_the_keys_expiry_or_revocation(store: SqlStore,
                                                                    clock: Clock) -> None:
    info, old = store.add_key("acme", expires_at=NOW + 100)
    _, new = store.rotate_key(info.id, 3600)
    grant = store.authenticate_key(old)
    assert grant is not None and grant.valid_until == NOW + 100
    store.revoke_key(info.id)
    assert store.authenticate_key(old) is None and store.authenticate_key(new) is None
    with pytest.raises(InvalidName, match="revoked"):
        store.rotate_key(info.id, 60)
    with pytest.raises(NotFound):
        store.rotate_key("key_aaaaaaaaaaaa", 60)
    with pytest.raises(InvalidName):
        store.rotate_key(info.id, -1)


def test_limits_of_the_key_and_its_tenant_reach_the_grant(store: SqlStore) -> None:
    info, secret = store.add_key("acme", rpm=60, tpm=10_000)
    tenant = store.set_tenant_limits("acme", rpm=600)
    assert (tenant.rpm, tenant.tpm) == (600, None)
    grant = store.authenticate_key(secret)
    assert grant is not None
    assert (grant.rpm, grant.tpm, grant.tenant_rpm, grant.tenant_tpm) == (60, 10_000, 600, None)
    store.set_key(info.id, rpm=None)  # None lifts a limit; KEEP leaves it
    store.set_tenant_limits("acme", tpm=1_000_000)
    grant = store.authenticate_key(secret)
    assert grant is not None
    assert (grant.rpm, grant.tpm, grant.tenant_rpm, grant.tenant_tpm) == (
        None, 10_000, 600, 1_000_000)
    assert store.get_tenant("acme").tpm == 1_000_000
    assert [(t.name, t.rpm) for t in store.list_tenants()] == [("acme", 600), ("globex", None)]
    for bad in (0, -5, 10**10, 1.5, True):
        with pytest.raises(InvalidName):
            store.set_key(info.id, rpm=bad)  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        store.set_tenant_limits("nobody", rpm=1)


def test_key_set_changes_deployments_within_the_tenant(store: SqlStore) -> None:
    info, secret = store.add_key("acme")
    assert store.set_key(info.id, deployments=["embed"]).deployments == ("embed",)
    grant = store.authenticate_key(secret)
    assert grant is not None and grant.deployments == frozenset({"embed"})
    with pytest.raises(NotFound, match="no deployment"):
        store.set_key(info.id, deployments=["secret-of-globex"])
    assert store.set_key(info.id, deployments=None).deployments is None
    unchanged = store.set_key(info.id, deployments=KEEP, tpm=5)
    assert unchanged.deployments is None and unchanged.tpm == 5
    with pytest.raises(NotFound):
        store.set_key("sk-tokios-aaaaaaaaaaaa_" + "x" * 43, rpm=1)


def test_deployment_cap_and_queue_settings(store: SqlStore) -> None:
    added = store.add_deployment("acme", "small", max_in_flight=1, queue_size=4,
                                 queue_timeout=2.5)
    assert (added.max_in_flight, added.queue_size, added.queue_timeout) == (1, 4, 2.5)
    changed = store.set_deployment("acme", "small", queue_size=0)
    assert (changed.max_in_flight, changed.queue_size, changed.queue_timeout) == (1, 0, 2.5)
    reset = store.set_deployment("acme", "small", max_in_flight=None, queue_timeout=None)
    assert (reset.max_in_flight, reset.queue_size, reset.queue_timeout) == (None, 0, None)
    listed = {d.name: d for d in store.list_deployments("acme")}
    assert listed["small"] == reset and listed["coder"].queue_size is None
    for bad in ({"max_in_flight": 0}, {"queue_size": -1}, {"queue_timeout": 0.0},
                {"queue_timeout": float("nan")}, {"queue_timeout": 10_000.0}):
        with pytest.raises(InvalidName):
            store.set_deployment("acme", "small", **bad)  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        store.set_deployment("acme", "nope", queue_size=1)


def test_usage_adds_up_per_hour_and_sums_by_key_deployment_and_day(store: SqlStore) -> None:
    acme, globex = store.get_tenant("acme").id, store.get_tenant("globex").id
    hour = int(NOW) // 3600 * 3600
    day_two = hour + 86400

    def row(tenant: str, key: str, deployment: str, bucket: int, n: int, i: int, o: int,
            estimated: bool = False) -> UsageRow:
        return UsageRow(tenant_id=tenant, key_id=key, deployment=deployment, bucket=bucket,
                        requests=n, input_tokens=i, output_tokens=o,
                        estimated_requests=n if estimated else 0,
                        estimated_input_tokens=i if estimated else 0,
                        estimated_output_tokens=o if estimated else 0)

    store.record_usage([row(acme, "key_a", "coder", hour, 2, 100, 10),
                        row(acme, "key_b", "embed", hour, 1, 50, 0)])
    store.record_usage([row(acme, "key_a", "coder", hour, 1, 7, 3, estimated=True),
                        row(acme, "key_a", "embed", day_two, 1, 5, 0),
                        row(globex, "key_g", "coder", hour, 9, 9, 9)])
    store.record_usage([])
    by_key = store.usage("acme", by="key")
    assert [(u.group, u.requests, u.input_tokens, u.output_tokens) for u in by_key] == [
        ("key_a", 4, 112, 13), ("key_b", 1, 50, 0)]
    assert (by_key[0].estimated_requests, by_key[0].estimated_input_tokens,
            by_key[0].estimated_output_tokens) == (1, 7, 3)
    by_deployment = store.usage("acme", by="deployment")
    assert [(u.group, u.requests) for u in by_deployment] == [("coder", 3), ("embed", 2)]
    by_day = store.usage("acme", by="day")
    assert [(u.group, u.requests) for u in by_day] == [("2023-11-14", 4), ("2023-11-15", 1)]
    assert [(u.group, u.requests) for u in store.usage("acme", since=day_two + 1800)] == [
        ("key_a", 1)]  # the hour holding `since` counts whole
    assert [u.requests for u in store.usage("acme", key_id="key_b")] == [1]
    everyone = store.usage(by="deployment")
    assert [(u.tenant, u.group, u.requests) for u in everyone] == [
        ("acme", "coder", 3), ("acme", "embed", 2), ("globex", "coder", 9)]
    with pytest.raises(InvalidName):
        store.usage("acme", by="minute")  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        store.usage("nobody")
