"""``tokios-gateway serve``: argument validation and the hand-off to runtimes.gateway.server.

The server itself is tested elsewhere; here a stand-in module records the options it gets.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import pytest

from runtimes.gateway import cli
from runtimes.gateway.options import (
    DEFAULT_GRACE_PERIOD,
    DEFAULT_MAX_BODY_BYTES,
    ListenAddress,
    ServeOptions,
    parse_listen_address,
)

REPO = Path(__file__).resolve().parents[2]


class FakeServer:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, exit_code: int = 0) -> None:
        self.calls: list[ServeOptions] = []
        module = types.ModuleType("runtimes.gateway.server")

        def run(options: ServeOptions) -> int:
            self.calls.append(options)
            return exit_code

        module.run = run  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "runtimes.gateway.server", module)


def _tls_files(tmp_path: Path) -> tuple[str, str]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("cert")
    key.write_text("key")
    return str(cert), str(key)


def test_tls_options_reach_the_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    server = FakeServer(monkeypatch, exit_code=7)
    cert, key = _tls_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    code = cli.main(["serve", "--data", "data", "--listen", "0.0.0.0:8443", "--tls-cert", cert,
                     "--tls-key", key, "--tunnel-listen", "[::]:9443", "--loop", "asyncio",
                     "--grace-period", "5", "--max-body-bytes", "2048",
                     "--max-header-bytes", "8192", "--header-timeout", "4.5",
                     "--body-timeout", "12", "--stream-silence-timeout", "120"])
    assert code == 7  # the server's exit code is the command's
    [options] = server.calls
    assert options == ServeOptions(
        data_dir=tmp_path / "data", listen=ListenAddress(host="0.0.0.0", port=8443),
        tls_cert=Path(cert), tls_key=Path(key), insecure_http=False,
        allow_insecure_non_loopback=False, tunnel_listen=ListenAddress(host="::", port=9443),
        loop="asyncio", grace_period=5.0, max_body_bytes=2048, max_header_bytes=8192,
        header_timeout=4.5, body_timeout=12.0, log_level="info",
        stream_silence_timeout=120.0)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "localhost:8080", "[::1]:8080",
                                    "127.1.2.3:80"])
def test_insecure_http_is_allowed_on_loopback(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path, listen: str) -> None:
    server = FakeServer(monkeypatch)
    monkeypatch.setenv("TOKIOS_DATA", str(tmp_path))
    assert cli.main(["serve", "--listen", listen, "--insecure-http"]) == 0
    [options] = server.calls
    assert options.insecure_http and options.tls_cert is None and options.tls_key is None
    assert options.data_dir == tmp_path  # from $TOKIOS_DATA
    assert options.grace_period == DEFAULT_GRACE_PERIOD
    assert options.max_body_bytes == DEFAULT_MAX_BODY_BYTES
    expected_loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    assert options.loop == expected_loop  # auto: uvloop where installed


@pytest.mark.parametrize("listen", ["0.0.0.0:8080", "[::]:8080", "192.168.1.5:80",
                                    "gateway.example.com:80"])
def test_insecure_http_elsewhere_needs_explicit_insistence(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], listen: str) -> None:
    server = FakeServer(monkeypatch)
    argv = ["serve", "--data", str(tmp_path), "--listen", listen, "--insecure-http"]
    assert cli.main(argv) == 2
    assert "refusing --insecure-http" in capsys.readouterr().err
    assert server.calls == []
    assert cli.main([*argv, "--allow-insecure-non-loopback"]) == 0
    assert server.calls[0].allow_insecure_non_loopback


def test_insecure_tunnel_listener_is_checked_too(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    server = FakeServer(monkeypatch)
    assert cli.main(["serve", "--data", str(tmp_path), "--listen", "127.0.0.1:8080",
                     "--insecure-http", "--tunnel-listen", "0.0.0.0:9000"]) == 2
    assert "--tunnel-listen" in capsys.readouterr().err
    assert server.calls == []


@pytest.mark.parametrize(("extra", "message"), [
    ([], "--tls-cert FILE --tls-key FILE, or --insecure-http"),
    (["--tls-cert", "{cert}"], "go together"),
    (["--tls-key", "{key}"], "go together"),
    (["--tls-cert", "{cert}", "--tls-key", "{key}", "--insecure-http"], "not both"),
    (["--tls-cert", "{cert}", "--tls-key", "/nonexistent/key.pem"], "no such file"),
    (["--insecure-http", "--grace-period", "-1"], "--grace-period"),
    (["--insecure-http", "--grace-period", "nan"], "--grace-period"),
    (["--insecure-http", "--max-body-bytes", "10"], "--max-body-bytes"),
    (["--insecure-http", "--max-header-bytes", "100"], "--max-header-bytes"),
    (["--insecure-http", "--max-header-bytes", "1000000"], "--max-header-bytes"),
    (["--insecure-http", "--header-timeout", "0"], "--header-timeout"),
    (["--insecure-http", "--body-timeout", "inf"], "--body-timeout"),
    (["--insecure-http", "--stream-silence-timeout", "0"], "--stream-silence-timeout"),
    (["--insecure-http", "--stream-silence-timeout", "inf"], "--stream-silence-timeout"),
    (["--tls-cert", "{cert}", "--tls-key", "{key}", "--allow-insecure-non-loopback"],
     "only applies with --insecure-http"),
    (["--insecure-http", "--tunnel-listen", "127.0.0.1:8080"], "must differ"),
    (["--insecure-http", "--tunnel-listen", "nonsense"], "--tunnel-listen"),
    (["--insecure-http", "--loop", "trio"], "invalid choice"),
])
def test_invalid_serve_arguments_are_refused(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        extra: list[str], message: str) -> None:
    server = FakeServer(monkeypatch)
    cert, key = _tls_files(tmp_path)
    argv = ["serve", "--data", str(tmp_path), "--listen", "127.0.0.1:8080",
            *(a.format(cert=cert, key=key) for a in extra)]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert server.calls == []


def test_serve_needs_a_data_directory(monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    server = FakeServer(monkeypatch)
    monkeypatch.delenv("TOKIOS_DATA", raising=False)
    assert cli.main(["serve", "--listen", "127.0.0.1:0", "--insecure-http"]) == 2
    assert "TOKIOS_DATA" in capsys.readouterr().err
    assert server.calls == []


def test_uvloop_requested_but_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    server = FakeServer(monkeypatch)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "uvloop" else real_find_spec(name, *a))
    argv = ["serve", "--data", str(tmp_path), "--listen", "127.0.0.1:0", "--insecure-http"]
    assert cli.main([*argv, "--loop", "uvloop"]) == 2
    assert "uvloop is not installed" in capsys.readouterr().err
    assert cli.main(argv) == 0
    assert server.calls[0].loop == "asyncio"


def test_a_missing_server_module_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "runtimes.gateway.server", None)  # import fails
    assert cli.main(["serve", "--data", str(tmp_path), "--listen", "127.0.0.1:0",
                     "--insecure-http"]) == 2
    assert "no gateway server" in capsys.readouterr().err


def test_serve_validation_in_a_real_process(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "runtimes.gateway.cli", "serve", "--data", str(tmp_path),
         "--listen", "0.0.0.0:8080", "--insecure-http"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert "refusing --insecure-http" in done.stderr


@pytest.mark.parametrize(("text", "host", "port"), [
    ("127.0.0.1:8443", "127.0.0.1", 8443), ("[::1]:0", "::1", 0),
    ("example.com:65535", "example.com", 65535), ("localhost:1", "localhost", 1),
])
def test_listen_addresses_parse(text: str, host: str, port: int) -> None:
    address = parse_listen_address(text)
    assert (address.host, address.port) == (host, port)
    assert parse_listen_address(str(address)) == address


@pytest.mark.parametrize("text", ["8443", ":8443", "host:", "host:65536", "host:-1",
                                  "::1:8443", "[::1]8443", "[nothost]:1", "[::1", "x" * 400,
                                  "host:８０", "bad host:80", "-x:80"])
def test_bad_listen_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen_address(text)
