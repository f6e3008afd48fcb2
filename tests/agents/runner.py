"""Run one coding agent, non-interactively, against a :class:`~tests.e2e.stack.Stack`.

Each agent keeps its default configuration except what points it at the gateway: base URL,
key, model (the deployment ``coder``) and the test CA. It runs in a fresh HOME and working
directory, with telemetry, update checks and other non-essential traffic switched off through
its documented settings. Call :func:`run_agent`; it returns an :class:`AgentRun` whose
``output`` holds what the agent printed (JSON events where the agent has them) and
``gateway_calls`` the gateway's log lines of the requests the run made.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from runtimes.quickstart.run import CODEX_KEY_VARIABLE, CODEX_PROFILE, codex_profile
from tests.agents.install import Installed
from tests.e2e.stack import Stack

#: Bound on one agent run, start to exit.
RUN_TIMEOUT = 90.0
PROMPT = "Create the file proof.txt in the current directory using the shell tool."

#: The gateway's line per request: ``METHOD PATH STATUS deployment=...``.
GATEWAY_CALL = re.compile(r"\b(GET|POST|PUT|DELETE|HEAD|OPTIONS|PATCH) (/\S*) (\d{3}) deployment=")


@dataclass(frozen=True)
class GatewayCall:
    """One request the gateway served, from its log."""

    method: str
    path: str
    status: int


@dataclass(frozen=True)
class AgentRun:
    """What one agent run produced. ``timed_out`` runs were killed after :data:`RUN_TIMEOUT`."""

    argv: tuple[str, ...]
    returncode: int | None
    timed_out: bool
    output: str
    errors: str
    gateway_calls: tuple[GatewayCall, ...]
    seconds: float

    def report(self, stack: Stack) -> str:
        """Everything needed to see why a run failed: output, errors and the stack's logs."""
        return (f"argv: {' '.join(self.argv[:3])} ...\nreturncode: {self.returncode} "
                f"(timed out: {self.timed_out}, {self.seconds:.1f}s)\n"
                f"--- stdout ---\n{self.output[-6000:]}\n--- stderr ---\n{self.errors[-6000:]}\n"
                f"--- stack logs ---\n{stack.logs()[-8000:]}")


def base_env(home: Path, ca_file: Path) -> dict[str, str]:
    """A minimal environment: a fresh HOME, PATH, and the test CA for Node/Bun and Rust TLS."""
    return {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
        "TMPDIR": str(home / "tmp"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "NODE_EXTRA_CA_CERTS": str(ca_file),
        "SSL_CERT_FILE": str(ca_file),
    }


def claude_code(installed: Installed, stack: Stack, home: Path,
                thinking: bool) -> tuple[list[str], dict[str, str]]:
    """``claude -p``, streaming JSON events, allowed to run Bash without asking."""
    env = {
        **base_env(home, stack.ca_file),
        "ANTHROPIC_BASE_URL": stack.base_url,
        "ANTHROPIC_AUTH_TOKEN": stack.key,
        "ANTHROPIC_MODEL": stack.deployment,
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    if thinking:
        env["MAX_THINKING_TOKENS"] = "2048"
    argv = [str(installed.binary), "-p", PROMPT, "--output-format", "stream-json", "--verbose",
            "--allowedTools", "Bash"]
    return argv, env


def codex(installed: Installed, stack: Stack, home: Path,
          thinking: bool) -> tuple[list[str], dict[str, str]]:
    """``codex exec --json --profile tokios``: the quick start's profile file, as users get it."""
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(
        "check_for_update_on_startup = false\n"
        "\n[analytics]\nenabled = false\n"
    )
    (codex_home / f"{CODEX_PROFILE}.config.toml").write_text(
        codex_profile(stack.base_url, stack.deployment))
    env = {
        **base_env(home, stack.ca_file),
        "CODEX_HOME": str(codex_home),
        "CODEX_CA_CERTIFICATE": str(stack.ca_file),
        CODEX_KEY_VARIABLE: stack.key,
    }
    # workspace-write: the shell command may write in the work dir (and only there).
    argv = [str(installed.binary), "exec", "--profile", CODEX_PROFILE, "--skip-git-repo-check",
            "--json", "--sandbox", "workspace-write"]
    if thinking:
        argv += ["-c", 'model_reasoning_effort="high"']
    argv.append(PROMPT)
    return argv, env


def opencode(installed: Installed, stack: Stack, home: Path, thinking: bool, *,
             cache: Path) -> tuple[list[str], dict[str, str]]:
    """``opencode run --format json`` with an ``@ai-sdk/openai-compatible`` provider."""
    del thinking
    config_dir = home / ".config" / "opencode"
    config_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "$schema": "https://opencode.ai/config.json",
        "provider": {"tokios": {
            "npm": "@ai-sdk/openai-compatible",
            "name": "Tokios",
            "options": {"baseURL": f"{stack.base_url}/v1", "apiKey": stack.key},
            "models": {stack.deployment: {"name": stack.deployment}},
        }},
        "model": f"tokios/{stack.deployment}",
        "autoupdate": False,
        "share": "disabled",
    }
    (config_dir / "opencode.json").write_text(json.dumps(config, indent=1))
    env = {
        **base_env(home, stack.ca_file),
        # Shared between runs: opencode installs the provider package here on first use.
        "XDG_CACHE_HOME": str(cache),
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
        "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
        "OPENCODE_DISABLE_SHARE": "1",
    }
    argv = [str(installed.binary), "run", "--format", "json", PROMPT]
    return argv, env


def gateway_calls(log: str) -> tuple[GatewayCall, ...]:
    """The requests in a slice of the gateway's log."""
    return tuple(GatewayCall(m.group(1), m.group(2), int(m.group(3)))
                 for m in GATEWAY_CALL.finditer(log))


def run_agent(argv: list[str], env: dict[str, str], *, stack: Stack, workdir: Path,
              timeout: float = RUN_TIMEOUT) -> AgentRun:
    """Run the agent in ``workdir`` (stdin closed), killing its process group on timeout."""
    assert stack.gateway is not None
    Path(env["TMPDIR"]).mkdir(parents=True, exist_ok=True)
    log_before = len(stack.gateway.log())
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
    seconds = time.monotonic() - started
    with contextlib.suppress(ProcessLookupError):  # leftovers of the agent's own children
        os.killpg(proc.pid, signal.SIGKILL)
    # The gateway logs a request once its answer is complete: give the last line a moment.
    time.sleep(0.2)
    return AgentRun(
        argv=tuple(argv),
        returncode=None if timed_out else proc.returncode,
        timed_out=timed_out,
        output=out.decode(errors="replace"),
        errors=err.decode(errors="replace"),
        gateway_calls=gateway_calls(stack.gateway.log()[log_before:]),
        seconds=seconds,
    )
