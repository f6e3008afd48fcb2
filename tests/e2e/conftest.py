"""Fixtures for the end-to-end suite: a whole stack per backend, shared by a module's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from tests.e2e.stack import Stack


@pytest.fixture(scope="module", params=["ollama", "llamacpp"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp(f"stack-{request.param}")
    built = Stack(workdir=workdir, backend=request.param)
    try:
        built.up()
    except BaseException:
        print(built.logs())
        built.down()
        raise
    yield built
    built.down()


@pytest.fixture
def openai_client(stack: Stack) -> Iterator[openai.OpenAI]:
    with stack.openai() as client:
        yield client


@pytest.fixture
def anthropic_client(stack: Stack) -> Iterator[anthropic.Anthropic]:
    with stack.anthropic() as client:
        yield client
