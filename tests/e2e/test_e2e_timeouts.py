"""End to end, real processes, both connector runtimes: each of the connector's clocks runs out
against a scripted model server, and the client gets its API's own error, through the official
SDKs - a whole 504 before the answer began, the format's in-stream error after - and the model
server sees the connection dropped. See docs/operations.md, "Timeouts".
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from tests.e2e.stack import Stack, wait_for

pytestmark = pytest.mark.timeout(180)

CLOCKS = ["--first-byte-timeout", "1", "--idle-timeout", "1", "--request-timeout", "3",
          "--head-hold", "0.3", "--keepalive-interval", "0.2"]


@pytest.fixture(scope="module", params=["asyncio", "threaded"])
def stack(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp(f"timeouts-{request.param}")
    built = Stack(workdir=workdir, backend="llamacpp", runtime=request.param,
                  connector_args=CLOCKS)
    with built.running():
        yield built


@pytest.fixture
def model(stack: Stack) -> Iterator[Stack]:
    """The stack, its model server's knobs put back afterwards."""
    assert stack.upstream is not None
    try:
        yield stack
    finally:
        stack.upstream.first_delay = 0
        stack.upstream.stall_after = None
        stack.upstream.slow, stack.upstream.events = 0.0, 0


def dropped(stack: Stack, before: int) -> None:
    assert stack.upstream is not None
    upstream = stack.upstream
    wait_for(lambda: len(upstream.disconnects) > before, 5, "the model server to be dropped")


def test_no_first_byte_in_time(model: Stack) -> None:
    assert model.upstream is not None
    model.upstream.first_delay = 30
    before = len(model.upstream.disconnects)
    with model.openai() as client, pytest.raises(openai.APIStatusError) as whole:
        started = time.monotonic()
        client.chat.completions.create(model=model.deployment,
                                       messages=[{"role": "user", "content": "hi"}])
    assert whole.value.status_code == 504 and 1.0 <= time.monotonic() - started < 4
    assert "did not start answering within 1 s" in whole.value.message
    dropped(model, before)
    with model.anthropic() as client, pytest.raises(anthropic.APIStatusError) as streamed, \
            client.messages.stream(model=model.deployment, max_tokens=20,
                                   messages=[{"role": "user", "content": "hi"}]) as stream:
        stream.until_done()
    assert streamed.value.status_code == 200  # the stream had started: an in-stream error
    body = streamed.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "timeout_error"
    assert "did not start answering within 1 s" in body["error"]["message"]


def test_a_silence_in_the_middle_of_the_answer(model: Stack) -> None:
    assert model.upstream is not None
    model.upstream.stall_after = 2
    before = len(model.upstream.disconnects)
    with model.openai() as client:
        stream = client.chat.completions.create(
            model=model.deployment, stream=True,
            messages=[{"role": "user", "content": "hello out there"}])
        text = ""
        with pytest.raises(openai.APIError, match="sent nothing for 1 s"):
            for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
    assert text == "Echo: "  # what came before the model hung, then the error
    dropped(model, before)


def test_an_answer_longer_than_the_request_timeout(model: Stack) -> None:
    assert model.upstream is not None
    model.upstream.slow, model.upstream.events = 0.2, 50  # 10 s of tokens, each in time
    before = len(model.upstream.disconnects)
    with model.openai() as client:
        started = time.monotonic()
        with client.responses.stream(model=model.deployment, input="go on") as stream:
            events = list(stream)
        took = time.monotonic() - started
    assert 3.0 <= took < 6.0
    kinds = [event.type for event in events]
    assert kinds[-2:] == ["error", "response.failed"]
    failed = events[-1]
    assert "took longer than 3 s" in failed.response.error.message  # type: ignore[union-attr]
    dropped(model, before)
