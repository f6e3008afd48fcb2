"""The live gateway under mutated requests (tests/chaos/live_fuzz.py): no 5xx, no crash, no
traceback, no memory growth; over TLS and plain TCP, HTTP/1.1 and HTTP/2.

``TOKIOS_LIVE_FUZZ_SECONDS`` (default 20) sets the length of the run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.chaos.live_fuzz import LiveFuzz, mutate, rss_kb
from tests.e2e.stack import LISTENING, Proc, Stack, wait_for

SECONDS = float(os.environ.get("TOKIOS_LIVE_FUZZ_SECONDS", "20"))
#: RSS growth allowed over the run (allocator arenas and caches settle within this).
RSS_MARGIN_KB = 24 * 1024


def _plain_gateway(stack: Stack) -> tuple[Proc, Proc, int]:
    """A second gateway on the stack's data dir, plain HTTP on loopback, with its own
    connector (ws://), so requests through it reach the model too."""
    gateway = Proc("plain-gateway", [
        sys.executable, "-m", "runtimes.gateway.cli", "serve", "--data", str(stack.data),
        "--listen", "127.0.0.1:0", "--insecure-http", "--grace-period", "1",
    ], stack.workdir / "plain-gateway.log")
    gateway.start()
    port = 0

    def bound() -> bool:
        nonlocal port
        match = LISTENING.search(gateway.log())
        assert gateway.alive(), gateway.log()
        if match:
            port = int(match.group(3))
        return bool(match)

    wait_for(bound, 20, "the plain gateway to listen")
    argv = stack.connector_argv()
    argv[argv.index("--gateway") + 1] = f"http://127.0.0.1:{port}"
    connector = Proc("plain-connector", argv, stack.workdir / "plain-connector.log")
    connector.start()
    wait_for(lambda: "tunnel open" in gateway.log(), 20, "the plain tunnel")
    return gateway, connector, port


@pytest.mark.timeout(SECONDS + 120)
def test_mutated_requests_never_get_a_5xx_nor_hurt_the_gateway(tmp_path: Path) -> None:
    with Stack(workdir=tmp_path, backend="ollama").running() as stack:
        assert stack.gateway is not None
        plain, plain_connector, plain_port = _plain_gateway(stack)
        try:
            fuzz = LiveFuzz(key=stack.key, model=stack.deployment, tls_port=stack.port,
                            plain_port=plain_port, ca_file=stack.ca_file)
            fuzz.run(seconds=2, seed=0)  # warm up: caches, pools and arenas fill once
            before = {p.pid: rss_kb(p.pid) for p in (stack.gateway, plain)}
            result = fuzz.run(seconds=SECONDS, seed=1)
            print(result.summary())
            assert not result.failures, "\n".join(result.failures[:5])
            assert result.cases > SECONDS * 5, result.summary()
            assert 200 in result.statuses and any(400 <= s < 500 for s in result.statuses)
            for proc in (stack.gateway, plain):
                assert proc.alive(), proc.log()[-2000:]
                log = proc.log()
                assert "Traceback" not in log and "handler failed" not in log, log[-3000:]
                grown = rss_kb(proc.pid) - before[proc.pid]
                assert grown < RSS_MARGIN_KB, f"{proc.name} RSS grew by {grown} KB"
        finally:
            plain_connector.stop()
            plain.stop()


def test_the_mutator_changes_requests_and_keeps_what_it_must() -> None:
    import random

    rng = random.Random(3)
    seed = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(range(100))
    outs = {mutate(seed, rng, keep=24) for _ in range(200)}
    assert len(outs) > 150
    assert all(out[:24] == seed[:24] for out in outs)
