"""``scripts/quickstart``: the README's first command, run as a user would (``--once`` makes it
exit after its demo request instead of serving until Ctrl-C).

Against a test Ollama server (``--upstream``) it runs everywhere; with the built-in engine
(llama-cpp-python + Gemma) it is a ``real_model`` test.
"""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import anthropic
import orjson
import pytest

from runtimes.quickstart import engine, install, options
from runtimes.quickstart.progress import Progress, format_elapsed
from tests.e2e.stack import ROOT, BackgroundLoop
from tests.real_model.conftest import require_engine
from tests.real_model.test_demo_answer import problems
from tests.upstreams.model_servers import OllamaServer


def quickstart(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtimes.quickstart", "--home", str(home), "--port", "0",
         "--once", "--skip-install", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=timeout, check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def exported(env_file: Path) -> dict[str, str]:
    return dict(re.findall(r"^export (\w+)='([^']*)'$", env_file.read_text(), re.MULTILINE))


def test_help_explains_the_quick_start() -> None:
    result = subprocess.run([str(ROOT / "scripts" / "quickstart"), "--help"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    for needle in ("--upstream", "--insecure-http", "Question: ... / Answer:", "Ctrl-C",
                   "ca.pem", "--once", "3-10 minutes", "temperature 0"):
        assert needle in result.stdout


def test_progress_in_a_log_prints_plain_lines_not_a_spinner() -> None:
    out = io.StringIO()
    progress = Progress("building the engine", stream=out, width=80, quiet_interval=3600)
    progress.tick("compiling ggml")
    progress.tick("compiling ggml")  # unchanged, and the interval has not passed: silent
    progress.done("built")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("... building the engine (0s) compiling ggml")
    assert lines[1].startswith("✓ building the engine: built (")
    assert len(lines) == 2 and "\r" not in out.getvalue()
    assert format_elapsed(59.9) == "59s" and format_elapsed(605) == "10m05s"


def test_a_missing_engine_fails_in_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine, "missing", lambda: ["llama_cpp"])
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="demo extra is not installed"):
        require_engine()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="setup-dev installs it"):
        require_engine()


def test_options_refuse_inconsistent_arguments() -> None:
    with pytest.raises(SystemExit):
        options.parse(["--model", "qwen3:8b"])  # --model names a model of --upstream
    with pytest.raises(SystemExit):
        options.parse(["--port", "70000"])
    args = options.parse(["--upstream", "http://localhost:11434", "--backend", "ollama"])
    assert args.upstream == "http://localhost:11434" and args.port == 8443


def test_without_the_engine_only_the_light_requirements_are_installed() -> None:
    heavy = install.pip_targets(with_engine=True)
    light = install.pip_targets(with_engine=False)
    assert heavy[-1].endswith("[demo]")
    names = {install.package_name(r) for r in light[2:]}
    assert {"openai", "trustme"} <= names
    assert not names & set(install.ENGINE_PACKAGES)
    assert set(install.ENGINE_PACKAGES) <= {
        install.package_name(r) for r in install.demo_requirements()}


def test_engine_build_options_match_setup_dev() -> None:
    x86 = install.engine_cmake_args("x86_64").split()
    assert "-DLLAVA_BUILD=OFF" in x86 and "-DGGML_NATIVE=OFF" in x86 and "-DGGML_AVX2=ON" in x86
    assert install.engine_cmake_args("arm64").split() == ["-DLLAVA_BUILD=OFF"]
    setup_dev = (ROOT / "scripts" / "setup-dev").read_text()
    for flag in x86:  # the quick start and the developers' venv build the same engine
        assert flag in setup_dev


def test_quickstart_with_a_user_upstream_then_again(tmp_path: Path) -> None:
    bg = BackgroundLoop()
    server = OllamaServer(model_names=("qwen3:8b",))
    bg.run(server.__aenter__())
    home = tmp_path / "tokios"
    try:
        first = quickstart(home, "--upstream", server.base_url, "--prompt", "hello tunnel")
        assert first.returncode == 0, first.stdout + first.stderr
        # The test server echoes the prompt: it went through gateway and connector and back.
        assert "← Echo: hello tunnel" in first.stdout
        assert "using its model 'qwen3:8b'" in first.stdout
        settings = exported(home / "env.sh")
        assert settings["OPENAI_BASE_URL"].startswith("https://127.0.0.1:")
        assert settings["OPENAI_BASE_URL"] == settings["ANTHROPIC_BASE_URL"] + "/v1"
        assert settings["OPENAI_API_KEY"].startswith("sk-tokios-")
        assert settings["ANTHROPIC_AUTH_TOKEN"] == settings["OPENAI_API_KEY"]
        assert settings["ANTHROPIC_MODEL"] == "qwen3:8b"
        assert settings["SSL_CERT_FILE"] == str(home.resolve() / "ca.pem")
        # Codex: a profile file for ~/.codex/ (it ignores OPENAI_BASE_URL), its key and CA.
        assert settings["TOKIOS_API_KEY"] == settings["OPENAI_API_KEY"]
        assert settings["CODEX_CA_CERTIFICATE"] == settings["SSL_CERT_FILE"]
        profile = (home / "tokios.config.toml").read_text()
        assert f'base_url = "{settings["OPENAI_BASE_URL"]}"' in profile
        assert 'model = "qwen3:8b"' in profile and 'wire_api = "responses"' in profile
        assert (home / "ca.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
        for private in (home / "env.sh", home / "credentials.json", home / "tls" / "key.pem",
                        home / "tls" / "ca-key.pem"):
            assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
        assert (home / "data" / "tokios.db").exists()
        ca_before = (home / "ca.pem").read_bytes()
        key_id = orjson.loads((home / "credentials.json").read_bytes())["key"]["id"]
        # No secret in the logs of gateway or connector.
        logs = "".join(p.read_text() for p in (home / "logs").glob("*.log"))
        assert settings["OPENAI_API_KEY"] not in logs
        assert "tkct-" not in logs

        # Again, over plain http: the data dir, key and CA are reused.
        second = quickstart(home, "--upstream", server.base_url, "--insecure-http",
                            "--deployment", "coder", "--model", "qwen3:8b")
        assert second.returncode == 0, second.stdout + second.stderr
        assert "← Echo: What is a tunnel?" in second.stdout  # the default prompt
        again = exported(home / "env.sh")
        assert again["OPENAI_API_KEY"] == settings["OPENAI_API_KEY"]
        assert again["OPENAI_BASE_URL"].startswith("http://127.0.0.1:")
        assert again["ANTHROPIC_MODEL"] == "coder"
        assert "SSL_CERT_FILE" not in again
        assert (home / "ca.pem").read_bytes() == ca_before
        assert orjson.loads((home / "credentials.json").read_bytes())["key"]["id"] == key_id
    finally:
        bg.run(server.__aexit__(None, None, None))
        bg.stop()


def test_quickstart_serves_the_users_agents_until_ctrl_c(tmp_path: Path) -> None:
    bg = BackgroundLoop()
    server = OllamaServer(model_names=("qwen3:8b",))
    bg.run(server.__aenter__())
    home = tmp_path / "tokios"
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtimes.quickstart", "--home", str(home), "--port", "0",
         "--skip-install", "--upstream", server.base_url],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Serving until Ctrl-C."):
                break
        assert "Serving until Ctrl-C.\n" in lines, "".join(lines)
        settings = exported(home / "env.sh")
        # What the banner tells a user's agent to use works: the Anthropic SDK, env-style.
        context = ssl.create_default_context(cafile=settings["SSL_CERT_FILE"])
        with anthropic.Anthropic(
            base_url=settings["ANTHROPIC_BASE_URL"], auth_token=settings["ANTHROPIC_AUTH_TOKEN"],
            http_client=anthropic.DefaultHttpxClient(verify=context), max_retries=0,
        ) as client:
            message = client.messages.create(
                model=settings["ANTHROPIC_MODEL"], max_tokens=50,
                messages=[{"role": "user", "content": "from my agent"}])
        assert message.content[0].type == "text"
        assert message.content[0].text == "Echo: from my agent"

        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=30)[0]
        assert proc.returncode == 0, rest
        assert "stopped: connector, gateway" in rest
        port = int(settings["ANTHROPIC_BASE_URL"].rsplit(":", 1)[1])
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        bg.run(server.__aexit__(None, None, None))
        bg.stop()


def test_quickstart_reports_an_unreachable_upstream(tmp_path: Path) -> None:
    result = quickstart(tmp_path / "tokios", "--upstream", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert "is the model server running?" in result.stdout


@pytest.mark.real_model
def test_quickstart_with_the_built_in_engine(tmp_path: Path) -> None:
    require_engine()
    result = quickstart(tmp_path / "tokios", "--ctx-size", "2048", timeout=110)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "\n→ gemma: What is a tunnel?\n" in result.stdout
    answer = result.stdout.split("← ", 1)[1].split("\n  (", 1)[0]
    # What a newcomer sees first: a sentence that answers, not the prompt repeated.
    assert problems("What is a tunnel?", answer) == [], answer
    assert answer == answer.lstrip()
    template = orjson.loads((tmp_path / "tokios" / "engine-chat-template.json").read_bytes())
    assert template["chat_template"] == engine.CHAT_TEMPLATE
    assert re.search(r"\((\d+) chunks through the tunnel", result.stdout)
    assert "loading Gemma 3 270M into llama.cpp" in result.stderr
    assert exported(tmp_path / "tokios" / "env.sh")["ANTHROPIC_MODEL"] == "gemma"
