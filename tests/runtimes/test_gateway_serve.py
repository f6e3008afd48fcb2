"""``tokios-gateway serve`` as a process: the startup line with the real port, the probes,
and a clean exit 0 on SIGTERM; ``tokios-connector`` exit codes as a process."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on (https?)://([0-9.]+):(\d+) \(tunnel: (wss?)://[0-9.]+:(\d+)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_prints_the_bound_port_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runtimes.gateway.cli", "serve", "--data",
             str(tmp_path / "data"), "--listen", "127.0.0.1:0", "--insecure-http",
             "--grace-period", "2"], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 20
        while (match := LISTENING.search(log.read_text())) is None:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        scheme, _, port, ws_scheme, tunnel_port = match.groups()
        assert (scheme, ws_scheme) == ("http", "ws")
        assert port == tunnel_port and int(port) > 0
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz").status_code == 200
        ready = httpx.get(f"{base}/readyz")
        assert ready.status_code == 200 and ready.json()["tunnels"] == 0
        assert httpx.post(f"{base}/v1/chat/completions", json={}).status_code == 401
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_connector_exit_codes(tmp_path: Path) -> None:
    dead = _free_port()
    common = [sys.executable, "-m", "runtimes.connector.cli", "--gateway",
              f"http://127.0.0.1:{dead}", "--token", "tkct-x"]
    usage = subprocess.run([*common, "--upstream", "http://127.0.0.1:1"], cwd=ROOT,
                           capture_output=True, text=True, timeout=30, check=False)
    assert usage.returncode == 2 and "--model" in usage.stderr
    probe = subprocess.run([*common, "--upstream", f"http://127.0.0.1:{dead}", "--model", "m"],
                           cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert probe.returncode == 4 and "no model server found" in probe.stderr


def test_serve_with_a_bad_certificate_exits_1_with_a_message(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    key = tmp_path / "key.pem"
    cert.write_text("not a certificate\n")
    key.write_text("not a key\n")
    result = subprocess.run(
        [sys.executable, "-m", "runtimes.gateway.cli", "serve", "--data", str(tmp_path / "d"),
         "--listen", "127.0.0.1:0", "--tls-cert", str(cert), "--tls-key", str(key)],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert "TLS certificate or key" in result.stderr
    assert "Traceback" not in result.stderr
