"""Install the coding agents the ``agents`` test tier drives, from npm, at pinned versions.

Each agent is an npm package whose native binary arrives through an optional dependency, so Node
is only needed for ``npm`` itself (install scripts are not run: the binaries need none).
Every package is installed into its own directory under the cache root::

    ${TOKIOS_AGENTS_CACHE:-~/.cache/tokios/agents}/<package>@<version>/

and an install that is already there is reused (a marker file is written only once npm has
finished, so a broken or interrupted install is redone). ``TOKIOS_AGENTS_VERSIONS=latest`` takes
the newest published version of each package instead of the pins (``npm view PKG version``).

Call :func:`ensure` for one agent (returns its :class:`Installed` binary), or run
``python -m tests.agents.install [AGENT ...]`` to install them all ahead of the tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: Bound on one ``npm install`` (the three packages are 60-120 MB of binaries).
INSTALL_TIMEOUT = 600.0
#: Bound on ``npm view`` and on running an installed binary's ``--version``.
QUERY_TIMEOUT = 60.0
MARKER = ".tokios-installed"


@dataclass(frozen=True)
class Agent:
    """An agent's npm package, its pinned version and where its native binary lands."""

    name: str
    package: str
    version: str
    #: Globs under the install directory, tried in order; the first executable match wins.
    binaries: tuple[str, ...]


AGENTS: dict[str, Agent] = {
    "claude-code": Agent(
        "claude-code", "@anthropic-ai/claude-code", "2.1.332",
        ("node_modules/@anthropic-ai/claude-code-linux-x64/claude",
         "node_modules/@anthropic-ai/claude-code/bin/claude.exe"),
    ),
    "codex": Agent(
        "codex", "@openai/codex", "0.171.0",
        ("node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex",
         "node_modules/@openai/codex-linux-x64/vendor/*/bin/codex",
         "node_modules/@openai/codex-linux-x64/vendor/*/codex/codex",
         "node_modules/@openai/codex*/vendor/**/codex"),
    ),
    "opencode": Agent(
        "opencode", "opencode-ai", "1.18.33",
        ("node_modules/opencode-linux-x64/bin/opencode",
         "node_modules/opencode-linux-x64*/bin/opencode"),
    ),
}


@dataclass(frozen=True)
class Installed:
    """An installed agent: its package, the version installed and its native binary."""

    agent: Agent
    version: str
    directory: Path
    binary: Path


class InstallError(RuntimeError):
    """npm is missing, failed, timed out, or the package holds no binary for this machine."""


def cache_root() -> Path:
    """``$TOKIOS_AGENTS_CACHE``, else ``~/.cache/tokios/agents``."""
    override = os.environ.get("TOKIOS_AGENTS_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "tokios" / "agents"


def npm() -> str:
    """The ``npm`` executable, or :class:`InstallError` when Node's npm is not installed."""
    found = shutil.which("npm")
    if found is None:
        raise InstallError("npm is not installed: ./scripts/setup-dev installs Node and npm "
                           "(as root), or install them from your distribution")
    return found


def wanted_version(agent: Agent) -> str:
    """The pin, or the newest published version when ``TOKIOS_AGENTS_VERSIONS=latest``."""
    if os.environ.get("TOKIOS_AGENTS_VERSIONS", "").strip().lower() != "latest":
        return agent.version
    try:
        result = subprocess.run([npm(), "view", agent.package, "version"], capture_output=True,
                                text=True, timeout=QUERY_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise InstallError(f"npm view {agent.package} timed out") from exc
    version = result.stdout.strip().splitlines()[-1:] if result.returncode == 0 else []
    if not version:
        raise InstallError(f"npm view {agent.package} version failed: {result.stderr[-2000:]}")
    return version[0].strip()


def find_binary(agent: Agent, directory: Path) -> Path | None:
    """The first executable file matching one of the agent's binary globs, if any."""
    for pattern in agent.binaries:
        for path in sorted(directory.glob(pattern)):
            if path.is_file() and os.access(path, os.X_OK):
                return path
    return None


def ensure(name: str) -> Installed:
    """Install agent ``name`` (a key of :data:`AGENTS`) unless its cache dir already has it."""
    agent = AGENTS[name]
    version = wanted_version(agent)
    directory = cache_root() / f"{agent.package}@{version}"
    if (directory / MARKER).exists():
        binary = find_binary(agent, directory)
        if binary is not None:
            return Installed(agent, version, directory, binary)
    directory.parent.mkdir(parents=True, exist_ok=True)
    # npm installs into a fresh sibling directory that is renamed into place once complete.
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        (staging / "package.json").write_text('{"name": "tokios-agent", "private": true}\n')
        argv = [npm(), "install", "--no-audit", "--no-fund", "--no-update-notifier",
                "--loglevel=error", "--ignore-scripts", f"{agent.package}@{version}"]
        try:
            result = subprocess.run(argv, cwd=staging, capture_output=True, text=True,
                                    timeout=INSTALL_TIMEOUT, check=False)
        except subprocess.TimeoutExpired as exc:
            raise InstallError(f"npm install {agent.package}@{version} took over "
                               f"{INSTALL_TIMEOUT:.0f}s") from exc
        if result.returncode != 0:
            raise InstallError(f"npm install {agent.package}@{version} failed "
                               f"({result.returncode}): {result.stderr[-2000:]}")
        binary = find_binary(agent, staging)
        if binary is None:
            raise InstallError(f"{agent.package}@{version} installed no native binary for this "
                               f"machine (looked for {', '.join(agent.binaries)})")
        (staging / MARKER).write_text(f"{agent.package}@{version}\n")
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    binary = find_binary(agent, directory)
    assert binary is not None
    return Installed(agent, version, directory, binary)


def binary_version(installed: Installed) -> str:
    """What the binary prints for ``--version`` (proves it runs on this machine)."""
    result = subprocess.run([str(installed.binary), "--version"], capture_output=True, text=True,
                            timeout=QUERY_TIMEOUT, check=False, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise InstallError(f"{installed.binary} --version failed ({result.returncode}): "
                           f"{result.stderr[-2000:]}")
    return result.stdout.strip()


def main(argv: list[str]) -> int:
    names = argv or list(AGENTS)
    unknown = [n for n in names if n not in AGENTS]
    if unknown:
        print(f"unknown agent(s) {', '.join(unknown)}; known: {', '.join(AGENTS)}",
              file=sys.stderr)
        return 2
    for name in names:
        try:
            installed = ensure(name)
            print(f"{name}: {installed.binary} ({binary_version(installed)})")
        except InstallError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
