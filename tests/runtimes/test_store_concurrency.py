"""Several processes writing one store at once (the CLI beside running gateways), on SQLite
and on PostgreSQL: nothing lost, nothing duplicated, usage counters add up exactly."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from runtimes.store import UsageRow
from tests.store_backends import StoreBackend

WRITER = textwrap.dedent("""
    import sys, time
    from runtimes.store import open_store
    where, tag, rounds, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    with open_store(where) as store:
        time.sleep(max(0.0, start_at - time.time()))  # both start writing together
        for i in range(rounds):
            store.add_deployment("acme", f"{tag}-{i}")
            info, key = store.add_key("acme", [f"{tag}-{i}"], name=tag)
            assert store.authenticate_key(key) is not None
            if i % 3 == 0:
                store.revoke_key(info.id)
                assert store.authenticate_key(key) is None
    print("ok")
""")

COUNTER = textwrap.dedent("""
    import sys, time
    from runtimes.store import open_store, UsageRow
    where, tenant_id, rounds, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), \\
        float(sys.argv[4])
    with open_store(where) as store:
        time.sleep(max(0.0, start_at - time.time()))
        for i in range(rounds):
            # the same two rows from every writer: each write must add, never overwrite
            store.record_usage([
                UsageRow(tenant_id=tenant_id, key_id="key_a", deployment="coder",
                         bucket=3600, requests=1, input_tokens=10, output_tokens=i),
                UsageRow(tenant_id=tenant_id, key_id="key_b", deployment="coder",
                         bucket=3600, requests=1, input_tokens=1, output_tokens=1)])
    print("ok")
""")


def _run_together(script: str, argvs: list[list[str]]) -> None:
    """Run ``script`` once per argument list, all starting their writes at the same time."""
    start_at = str(time.time() + 1.5)
    procs = [subprocess.Popen([sys.executable, "-c", script, *argv, start_at],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for argv in argvs]
    outputs = [proc.communicate(timeout=90) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert out.strip() == "ok"


def test_two_processes_write_at_the_same_time(store_backend: StoreBackend) -> None:
    with store_backend.open() as store:
        store.add_tenant("acme")
    rounds = 60
    _run_together(WRITER, [[store_backend.location, tag, str(rounds)] for tag in ("a", "b")])
    with store_backend.open() as store:
        keys = store.list_keys("acme")
        assert len(keys) == 2 * rounds
        assert len(store.list_deployments("acme")) == 2 * rounds
        for tag in ("a", "b"):
            mine = [k for k in keys if k.name == tag]
            assert len(mine) == rounds
            assert sum(not k.active for k in mine) == len(range(0, rounds, 3))


def test_usage_counters_from_several_processes_add_up_exactly(
        store_backend: StoreBackend) -> None:
    with store_backend.open() as store:
        tenant_id = store.add_tenant("acme").id
        store.record_usage([UsageRow(tenant_id=tenant_id, key_id="key_a", deployment="coder",
                                     bucket=3600, requests=5, input_tokens=0,
                                     output_tokens=0)])
    writers, rounds = 3, 80
    _run_together(COUNTER, [[store_backend.location, tenant_id, str(rounds)]] * writers)
    with store_backend.open() as store:
        totals = {u.group: u for u in store.usage("acme")}
    assert totals["key_a"].requests == 5 + writers * rounds
    assert totals["key_a"].input_tokens == 10 * writers * rounds
    assert totals["key_a"].output_tokens == writers * sum(range(rounds))
    assert (totals["key_b"].requests, totals["key_b"].output_tokens) == (
        writers * rounds, writers * rounds)
