"""End to end, real processes: two connectors serve one deployment and the model server behind
one of them fails before answering - it refuses connections, answers 503 (loading), or says
nothing until the connector's --first-byte-timeout. Every request still succeeds (the gateway
sends it to the other connector), each reaches the good model server exactly once, and when the
failing connector is the only one left the client gets that model server's own error in its
API's format. On both connector runtimes. See docs/operations.md, "Failover" and "Timeouts".
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.e2e.stack import Proc, Stack, wait_for
from tests.upstreams.model_servers import OpenAICompatServer

pytestmark = pytest.mark.timeout(180)

RUNTIMES = ["asyncio", "threaded"]


@pytest.fixture(scope="module", params=RUNTIMES)
def stack(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp(f"failover-{request.param}")
    built = Stack(workdir=workdir, backend="llamacpp", runtime=request.param)
    with built.running():
        yield built


def tunnels(stack: Stack) -> int:
    with stack.http(timeout=5) as client:
        return int(client.get(f"{stack.base_url}/readyz").json()["tunnels"])


@contextmanager
def second_connector(stack: Stack, upstream: str, *args: str) -> Iterator[Proc]:
    """Another connector serving the stack's deployment, with its own model server. Without
    health checks: they would report the failing model server unhealthy and the gateway would
    route around it before any request fails over (test_e2e_connector_ops.py tests that)."""
    argv = stack.connector_argv()
    argv[argv.index("--upstream") + 1] = upstream
    n = len(list(stack.workdir.glob("second*.log")))
    proc = Proc("second", [*argv, "--health-interval", "0", *args],
                stack.workdir / f"second{n}.log")
    proc.start()
    try:
        wait_for(lambda: tunnels(stack) == 2, 20, "the second connector's tunnel")
        yield proc
    finally:
        proc.stop()
        wait_for(lambda: tunnels(stack) == 1, 10, "the second connector to leave")


@contextmanager
def failing_model(stack: Stack, **knobs: object) -> Iterator[OpenAICompatServer]:
    server = OpenAICompatServer(model_names=(stack.upstream_model,))
    for name, value in knobs.items():
        setattr(server, name, value)
    stack.bg.run(server.__aenter__())
    try:
        yield server
    finally:
        stack.bg.run(server.__aexit__(None, None, None))


@contextmanager
def only_the_second(stack: Stack) -> Iterator[None]:
    """The stack's own (good) connector stopped for the block, then started again."""
    assert stack.connector is not None
    stack.connector.stop()
    wait_for(lambda: tunnels(stack) == 1, 10, "the good connector to leave")
    try:
        yield
    finally:
        stack.start_connector()
        wait_for(lambda: tunnels(stack) == 2, 20, "the good connector again")


def every_request_succeeds(stack: Stack, count: int = 8) -> None:
    """``count`` requests, whole and streamed, Chat and Messages, all answered in full; each
    reached the good model server once."""
    assert stack.upstream is not None
    before = len(stack.upstream.paths)
    with stack.openai() as oai, stack.anthropic() as ant:
        for i in range(count // 2):
            whole = oai.chat.completions.create(
                model=stack.deployment, messages=[{"role": "user", "content": f"whole {i}"}])
            assert whole.choices[0].message.content == f"Echo: whole {i}"
            with ant.messages.stream(model=stack.deployment, max_tokens=50, messages=[
                    {"role": "user", "content": f"streamed {i}"}]) as stream:
                assert "".join(stream.text_stream) == f"Echo: streamed {i}"
    assert stack.upstream.paths[before:] == ["/v1/chat/completions"] * count


def test_a_model_server_that_refuses_connections_is_failed_over(stack: Stack) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"  # nothing listens there now
    with second_connector(stack, dead) as second:
        every_request_succeeds(stack)
        assert second.log().count("upstream call failed") >= 2  # it was tried, and failed
        with only_the_second(stack), stack.openai() as oai, \
                pytest.raises(openai.APIStatusError) as caught:
            oai.chat.completions.create(model=stack.deployment,
                                        messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 502
    assert "the model server could not be reached" in caught.value.message


def test_a_model_server_answering_503_is_failed_over_and_alone_gives_its_own_error(
        stack: Stack) -> None:
    with failing_model(stack, error_status=503) as loading, \
            second_connector(stack, loading.base_url):
        every_request_succeeds(stack)
        assert loading.paths  # it was asked (and answered 503 before any byte)
        with only_the_second(stack):
            with stack.anthropic() as ant, pytest.raises(anthropic.APIStatusError) as caught:
                ant.messages.create(model=stack.deployment, max_tokens=20,
                                    messages=[{"role": "user", "content": "hi"}])
            with stack.http() as client:
                raw = client.post(f"{stack.base_url}/v1/chat/completions",
                                  headers={"authorization": f"Bearer {stack.key}"},
                                  json={"model": stack.deployment, "stream": True,
                                        "messages": [{"role": "user", "content": "hi"}]})
    # the model server's own error, in each client's format
    assert caught.value.status_code in (503, 529)
    assert "Loading model" in str(caught.value.body)
    assert raw.status_code == 503 and "Loading model" in raw.json()["error"]["message"]
    assert "tokios-retryable" not in raw.headers  # for the gateway only


def test_a_model_server_silent_past_the_first_byte_timeout_is_failed_over(
        stack: Stack) -> None:
    with failing_model(stack, first_delay=3600) as hung, \
            second_connector(stack, hung.base_url, "--first-byte-timeout", "1",
                             "--head-hold", "2"):
        every_request_succeeds(stack)
        tried = len(hung.paths)
        assert tried >= 1
        wait_for(lambda: len(hung.disconnects) == tried, 5, "each hung call to be dropped")
        with only_the_second(stack), stack.http() as client:
            started = time.monotonic()
            timed_out = client.post(f"{stack.base_url}/v1/chat/completions",
                                    headers={"authorization": f"Bearer {stack.key}"},
                                    json={"model": stack.deployment,
                                          "messages": [{"role": "user", "content": "hi"}]})
            took = time.monotonic() - started
    assert timed_out.status_code == 504 and 1.0 <= took < 5.0
    assert "did not start answering within 1 s" in timed_out.json()["error"]["message"]
    assert "tokios-retryable" not in timed_out.headers


def test_without_a_second_connector_nothing_is_retried(stack: Stack) -> None:
    """One connector: its error is the answer at once, and the model got the request once."""
    assert stack.upstream is not None
    before = len(stack.upstream.paths)
    stack.upstream.error_status = 503
    try:
        with stack.http() as client:
            answer = client.post(f"{stack.base_url}/v1/chat/completions",
                                 headers={"authorization": f"Bearer {stack.key}"},
                                 json={"model": stack.deployment,
                                       "messages": [{"role": "user", "content": "hi"}]})
    finally:
        stack.upstream.error_status = None
    assert answer.status_code == 503 and "Loading model" in answer.text
    assert stack.upstream.paths[before:] == ["/v1/chat/completions"]
    assert isinstance(answer, httpx.Response)
