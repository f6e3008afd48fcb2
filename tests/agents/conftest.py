"""Fixtures for the agents tier: installed agents and one shared Stack per backend.

The agents are installed from npm on first use (session-scoped, cached under
``~/.cache/tokios/agents``; see :mod:`tests.agents.install`). Without npm, or when the install
fails, the tests skip, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.agents.install import AGENTS, Installed, InstallError, cache_root, ensure
from tests.agents.upstream import agent_script
from tests.e2e.stack import Stack

#: The backends every agent runs against: Ollama's NDJSON API and llama.cpp's OpenAI SSE.
BACKENDS = ["ollama", "llamacpp"]


def _unavailable(message: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def install_agent() -> Callable[[str], Installed]:
    """``install_agent(name)``: the agent installed (once per session), or skip/fail."""
    done: dict[str, Installed | str] = {}

    def get(name: str) -> Installed:
        if name not in done:
            try:
                done[name] = ensure(name)
            except InstallError as exc:
                done[name] = str(exc)
        result = done[name]
        if isinstance(result, str):
            _unavailable(f"{name} is not installed: {result}")
            raise AssertionError("unreachable")
        return result

    return get


@pytest.fixture(scope="session")
def opencode_cache() -> Path:
    """opencode's XDG cache, kept between tests and runs: its provider package installs once."""
    path = cache_root() / f"opencode-xdg-cache@{AGENTS['opencode'].version}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module", params=BACKENDS)
def agent_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Gateway + connector + a test upstream scripted for agentic loops, over TLS."""
    backend: str = request.param
    built = Stack(workdir=tmp_path_factory.mktemp(f"agents-{backend}"), backend=backend,
                  runtime="asyncio")
    with built.running():
        assert built.upstream is not None
        built.upstream.script = agent_script
        yield built
