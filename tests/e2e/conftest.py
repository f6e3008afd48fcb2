"""Fixtures for the end-to-end suite: a whole stack per backend, shared by a module's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from tests.e2e import stack as stack_module
from tests.e2e.stack import Stack

#: (backend, connector runtime) pairs the API suite runs on. The translation matrix (every
#: backend) does not depend on the runtime, so it runs once, on the default asyncio runtime;
#: the threaded runtime runs every API test against the OpenAI-compatible SSE upstream
#: (llama.cpp, vLLM, LM Studio). Its Ollama (NDJSON) path is covered by
#: tests/runtimes/test_threaded_connector.py, the lifecycle tests run on both runtimes.
STACKS = [("ollama", "asyncio"), ("llamacpp", "asyncio"), ("llamacpp", "threaded")]
#: The connector runtimes the lifecycle tests (kill, restart, revoke, no listener) run on.
RUNTIMES = ["asyncio", "threaded"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests that build their own Stack (``fresh_stack``) run once per connector runtime."""
    if "fresh_stack" in metafunc.fixturenames:
        metafunc.parametrize("connector_runtime", RUNTIMES, indirect=True)


@pytest.fixture(autouse=True)
def connector_runtime(request: pytest.FixtureRequest) -> Iterator[str]:
    """The runtime of Stacks built in this test without an explicit one."""
    runtime: str = getattr(request, "param", "asyncio")
    stack_module.DEFAULT_RUNTIME[0] = runtime
    yield runtime
    stack_module.DEFAULT_RUNTIME[0] = "asyncio"


@pytest.fixture(scope="module", params=STACKS, ids=["-".join(pair) for pair in STACKS])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    backend, runtime = request.param
    workdir: Path = tmp_path_factory.mktemp(f"stack-{backend}-{runtime}")
    built = Stack(workdir=workdir, backend=backend, runtime=runtime)
    with built.running():
        yield built


@pytest.fixture
def openai_client(stack: Stack) -> Iterator[openai.OpenAI]:
    with stack.openai() as client:
        yield client


@pytest.fixture
def anthropic_client(stack: Stack) -> Iterator[anthropic.Anthropic]:
    with stack.anthropic() as client:
        yield client
