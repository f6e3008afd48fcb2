"""``tokios-connector --runtime threaded`` as a process: SIGTERM stops it with exit 0 while it is
retrying, ``--backend auto`` with no model server exits 4, and it never listens."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtimes.connector.cli import build_parser
from tests.e2e.stack import listening_sockets

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(60)


def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def _argv(*extra: str) -> list[str]:
    return [sys.executable, "-m", "runtimes.connector.cli", "--runtime", "threaded",
            "--gateway", f"http://127.0.0.1:{_closed_port()}", "--token", "tkct-x",
            "--model", "coder=m", *extra]


def test_runtime_option_defaults_to_asyncio() -> None:
    assert build_parser().parse_args([]).runtime == "asyncio"
    assert build_parser().parse_args(["--runtime", "threaded"]).runtime == "threaded"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--runtime", "trio"])


def test_sigterm_stops_a_retrying_threaded_connector_with_exit_0() -> None:
    proc = subprocess.Popen(
        _argv("--upstream", f"http://127.0.0.1:{_closed_port()}", "--backend", "ollama"),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(1.5)  # dialling a closed port, backing off, dialling again
        assert proc.poll() is None
        assert listening_sockets(proc.pid) == []
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert proc.wait(10) == 0
        assert time.monotonic() - started < 3
        out = proc.stdout.read().decode() if proc.stdout else ""
        assert "cannot reach the gateway" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_backend_auto_without_a_model_server_exits_4() -> None:
    result = subprocess.run(
        _argv("--upstream", f"http://127.0.0.1:{_closed_port()}", "--backend", "auto"),
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 4, result.stderr
    assert "no model server found" in result.stderr
