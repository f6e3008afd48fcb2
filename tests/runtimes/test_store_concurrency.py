"""Several processes writing one store at once (the CLI beside a running gateway)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from runtimes.store import open_store

WRITER = textwrap.dedent("""
    import sys, time
    from runtimes.store import open_store
    data, tag, rounds, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    with open_store(data) as store:
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


def test_two_processes_write_at_the_same_time(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with open_store(data) as store:
        store.add_tenant("acme")
    rounds = 60
    start_at = str(time.time() + 1.0)
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(data), tag, str(rounds),
                                 start_at],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for tag in ("a", "b")]
    outputs = [writer.communicate(timeout=60) for writer in writers]
    for writer, (out, err) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, err
        assert out.strip() == "ok"
    with open_store(data) as store:
        keys = store.list_keys("acme")
        assert len(keys) == 2 * rounds
        assert len(store.list_deployments("acme")) == 2 * rounds
        for tag in ("a", "b"):
            mine = [k for k in keys if k.name == tag]
            assert len(mine) == rounds
            assert sum(not k.active for k in mine) == len(range(0, rounds, 3))
