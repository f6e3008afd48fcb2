"""Config files (runtimes/config.py) and JSON logs (runtimes/logs.py), on both CLIs' parsers,
plus the deploy/ files: example configs accepted, systemd units verified, the image built where
a Docker engine runs."""

from __future__ import annotations

import io
import json
import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from runtimes.config import ConfigError, apply_config, read_config, take_config_argument
from runtimes.connector import cli as connector_cli
from runtimes.gateway import cli as gateway_cli
from runtimes.logs import configure_logging

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- --config on the command line -------------------------------------------------------------

@pytest.mark.parametrize(("argv", "rest", "found"), [
    (["serve", "--config", "a.toml", "--listen", "x"], ["serve", "--listen", "x"], "a.toml"),
    (["--config=b.toml", "key", "list"], ["key", "list"], "b.toml"),
    (["key", "list"], ["key", "list"], None),
    (["x", "--", "--config", "c"], ["x", "--", "--config", "c"], None),
])
def test_take_config_argument(argv: list[str], rest: list[str], found: str | None,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("T_CONFIG", raising=False)
    got_rest, path = take_config_argument(argv, env_var="T_CONFIG")
    assert got_rest == rest
    assert path == (Path(found) if found else None)


def test_the_config_file_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_CONFIG", "/etc/x.toml")
    assert take_config_argument(["run"], env_var="T_CONFIG") == (["run"], Path("/etc/x.toml"))
    assert take_config_argument(["--config", "y.toml"], env_var="T_CONFIG")[1] == \
        Path("y.toml")
    with pytest.raises(ConfigError, match="needs a FILE"):
        take_config_argument(["--config"], env_var="T_CONFIG")


# -- values, checked as the command line checks them ------------------------------------------

def connector_args(tmp_path: Path, text: str, *argv: str) -> object:
    path = write(tmp_path, text)
    return connector_cli.parse_arguments([*argv, "--config", str(path)])


CONNECTOR_BASE = 'gateway = "https://gw"\nupstream = "http://127.0.0.1:1"\n'


def test_connector_options_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in connector_cli.ENVIRONMENT.values():
        monkeypatch.delenv(name, raising=False)
    args = connector_args(tmp_path, CONNECTOR_BASE + 'max_concurrent_streams = 8\n'
                          'keepalive-interval = 2.5\nlog-format = "json"\nbackend = "ollama"\n'
                          'model = ["coder=qwen3:8b", "small"]\n')
    assert args.gateway == ["https://gw"] and args.max_concurrent_streams == 8
    assert args.tunnels == 2  # the command's default
    assert args.keepalive_interval == 2.5 and args.log_format == "json"
    assert args.backend == "ollama" and args.model == ["coder=qwen3:8b", "small"]


def test_precedence_flag_then_environment_then_file_then_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in connector_cli.ENVIRONMENT.values():
        monkeypatch.delenv(name, raising=False)
    text = 'gateway = "https://file"\nupstream = "http://file:1"\nmodel = "a"\n'
    args = connector_args(tmp_path, text)
    assert (args.gateway, args.upstream, args.runtime) == (["https://file"], "http://file:1",
                                                          "asyncio")
    monkeypatch.setenv("TOKIOS_GATEWAY", "https://env")
    args = connector_args(tmp_path, text)
    assert (args.gateway, args.upstream) == (["https://env"], "http://file:1")
    args = connector_args(tmp_path, text, "--gateway", "https://flag")
    assert args.gateway == ["https://flag"]


def test_several_gateways_and_tunnels_from_flags_environment_or_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in connector_cli.ENVIRONMENT.values():
        monkeypatch.delenv(name, raising=False)
    text = ('gateway = ["https://a", "https://b"]\ntunnels = 3\nupstream = "http://u:1"\n'
            'model = "m"\ntoken = "t"\n')
    args = connector_args(tmp_path, text)
    assert args.gateway == ["https://a", "https://b"] and args.tunnels == 3
    settings = connector_cli.settings_from_args(args)  # type: ignore[arg-type]
    assert settings.tunnels == 3
    assert (settings.tunnel_url, settings.other_tunnel_urls) == ("wss://a/v1/tunnel",
                                                                 ("wss://b/v1/tunnel",))
    # the first flag replaces the file's list, the next ones add to it; duplicates go
    args = connector_args(tmp_path, text, "--gateway", "https://c", "--gateway", "https://d",
                          "--gateway", "https://c/", "--tunnels", "1")
    settings = connector_cli.settings_from_args(args)  # type: ignore[arg-type]
    assert (settings.tunnel_url, settings.other_tunnel_urls, settings.tunnels) == (
        "wss://c/v1/tunnel", ("wss://d/v1/tunnel",), 1)
    monkeypatch.setenv("TOKIOS_GATEWAY", "https://e, https://f")
    monkeypatch.setenv("TOKIOS_TUNNELS", "4")
    args = connector_args(tmp_path, text)
    assert args.gateway == ["https://e", "https://f"] and args.tunnels == 4
    for bad in ("0", "9"):
        args = connector_args(tmp_path, text, "--tunnels", bad)
        with pytest.raises(ValueError, match=r"--tunnels must be in 1\.\.8"):
            connector_cli.settings_from_args(args)  # type: ignore[arg-type]
    many = " ".join(f"--gateway https://g{i}" for i in range(17)).split()
    with pytest.raises(ValueError, match="at most 16"):
        connector_cli.settings_from_args(connector_args(tmp_path, text, *many))  # type: ignore[arg-type]


@pytest.mark.parametrize(("line", "message"), [
    ("gatewey = 'x'", "unknown option `gatewey` (did you mean `gateway`?)"),
    ("max-concurrent-streams = 'many'", "invalid value 'many'"),
    ("max-concurrent-streams = true", "must be a single value"),
    ("backend = 'tgi'", "must be one of ollama, llamacpp"),
    ("model = [1.5, true]", "must be a string or an array of strings"),
    ("[section]\nx = 1", "`section` is a table"),
    ("gateway = ", "not valid TOML"),
])
def test_bad_config_files_are_refused_with_the_key_and_reason(tmp_path: Path, line: str,
                                                              message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        connector_args(tmp_path, line + "\n")
    assert message in str(caught.value) and str(tmp_path / "c.toml") in str(caught.value)


def test_switches_take_booleans(tmp_path: Path) -> None:
    serve = gateway_cli._serve_parser(gateway_cli.build_parser())
    path = write(tmp_path, "insecure-http = true\n")
    apply_config(read_config(path), path, [serve], environment={})
    assert serve.parse_args(["--listen", "127.0.0.1:1"]).insecure_http is True
    with pytest.raises(ConfigError, match="must be true or false"):
        path = write(tmp_path, "insecure-http = 'yes'\n")
        apply_config(read_config(path), path, [serve], environment={})


def test_a_missing_or_huge_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        read_config(tmp_path / "nope.toml")
    big = write(tmp_path, "# " + "x" * (1024 * 1024) + "\n")
    with pytest.raises(ConfigError, match="at most"):
        read_config(big)


def test_the_connector_cli_exits_2_on_a_bad_config(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "nonsense = 1\n")
    assert connector_cli.main(["--config", str(path)]) == 2
    assert "unknown option `nonsense`" in capsys.readouterr().err


# -- the gateway: data for every command, serve's options for serve ---------------------------

def test_gateway_admin_commands_take_data_from_the_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("TOKIOS_DATA", raising=False)
    data = tmp_path / "data"
    path = write(tmp_path, f'data = "{data}"\nlisten = "127.0.0.1:0"\n')
    assert gateway_cli.main(["--config", str(path), "tenant", "add", "acme", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "acme"
    assert (data / "tokios.db").is_file()
    # a flag wins: the tenant list of another data dir is empty
    other = tmp_path / "other"
    assert gateway_cli.main(["tenant", "add", "x", "--data", str(other), "--config",
                             str(path)]) == 0
    assert (other / "tokios.db").is_file()


def test_gateway_serve_options_from_the_config(tmp_path: Path) -> None:
    parser = gateway_cli.build_parser()
    path = write(tmp_path, 'listen = "127.0.0.1:9"\ninsecure-http = true\ngrace-period = 3\n'
                           'log-format = "json"\n')
    apply_config(read_config(path), path, [gateway_cli._serve_parser(parser)], environment={})
    args = parser.parse_args(["serve"])  # --listen is no longer required: the file gave it
    options = gateway_cli.serve_options(args, str(tmp_path))
    assert options.listen.port == 9 and options.grace_period == 3.0
    assert options.log_format == "json" and options.insecure_http


def test_gateway_bad_config_exits_2_with_json(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "data = 5\n")
    assert gateway_cli.main(["--config", str(path), "tenant", "list", "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "usage"


# -- JSON logs --------------------------------------------------------------------------------

def test_json_logs_are_one_redacted_object_per_line() -> None:
    stream = io.StringIO()
    handler = configure_logging("info", stream, fmt="json")
    try:
        log = logging.getLogger("tokios.test")
        log.info("POST %s with %s", "/v1/x", "Bearer sk-tokios-abcdefghijkl_secret\nnext",
                 extra={"request_id": "req_1"})
        logging.getLogger("hpack").info("dropped: below WARNING")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["level"] == "info" and entry["logger"] == "tokios.test"
    assert entry["request_id"] == "req_1" and entry["time"].endswith("Z")
    assert "secret" not in lines[0] and "[REDACTED]" in entry["message"]
    assert "\\n" in entry["message"]  # one record, one line


# -- deploy/ ----------------------------------------------------------------------------------

def test_the_example_configs_are_accepted_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = gateway_cli.build_parser()
    table = read_config(DEPLOY / "gateway.toml")
    assert isinstance(table.pop("data"), str)
    applied = apply_config(table, DEPLOY / "gateway.toml", [gateway_cli._serve_parser(parser)],
                           environment={})
    assert applied["listen"] == "0.0.0.0:443" and applied["log_format"] == "json"
    for name in connector_cli.ENVIRONMENT.values():
        monkeypatch.delenv(name, raising=False)
    args = connector_cli.parse_arguments(["--config", str(DEPLOY / "connector.toml")])
    assert args.model == ["coder=qwen3:8b"] and args.token is None  # the token is not in it


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("unit", ["tokios-gateway.service", "tokios-connector.service"])
def test_the_systemd_units_verify_cleanly(tmp_path: Path, unit: str) -> None:
    """systemd-analyze verify with ExecStart pointing at this checkout's programs: no error and
    not one warning (an unknown or misspelt key is only a warning)."""
    venv_bin = ROOT / ".venv" / "bin"
    text = (DEPLOY / unit).read_text().replace("/opt/tokios/bin", str(venv_bin))
    copy = tmp_path / unit
    copy.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def _docker_engine() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20,
                              check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _docker_engine(), reason="no Docker engine here (the units are verified)")
@pytest.mark.timeout(900)
def test_the_image_builds_and_runs_both_programs() -> None:
    subprocess.run(["docker", "build", "-f", "deploy/Dockerfile", "-t", "tokios-test", "."],
                   cwd=ROOT, check=True, timeout=800)
    for program in ("tokios-gateway", "tokios-connector"):
        out = subprocess.run(["docker", "run", "--rm", "--entrypoint", program, "tokios-test",
                              "--help"], capture_output=True, text=True, check=True, timeout=60)
        assert program in out.stdout
