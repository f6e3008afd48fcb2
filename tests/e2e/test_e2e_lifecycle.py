"""End to end: processes dying, restarting and being revoked, with no restart of the rest."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import orjson
import pytest

from tests.e2e.stack import Stack, admin, wait_for

pytestmark = pytest.mark.timeout(180)

# The suite drives the real programs; it is collected once both exist.
pytest.importorskip("runtimes.gateway.server")
pytest.importorskip("runtimes.connector.cli")


@pytest.fixture
def fresh_stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(workdir=tmp_path, backend="ollama")
    try:
        stack.up()
    except BaseException:
        print(stack.logs())
        stack.down()
        raise
    yield stack
    stack.down()


def _status(stack: Stack) -> int:
    with stack.http(timeout=10) as http:
        return http.post(
            f"{stack.base_url}/v1/chat/completions",
            headers={"authorization": f"Bearer {stack.key}"},
            json={"model": stack.deployment, "messages": [{"role": "user", "content": "x"}]},
        ).status_code


def test_connector_killed_gives_503_then_restart_serves_again(fresh_stack: Stack) -> None:
    stack = fresh_stack
    assert stack.connector is not None
    stack.connector.stop(signal.SIGKILL)
    wait_for(lambda: _status(stack) == 503, 10, "503 after the connector died")
    stack.start_connector()
    stack.wait_served(20)
    assert stack.gateway is not None and stack.gateway.alive()  # no gateway restart


def test_gateway_restart_connector_reconnects_by_itself(fresh_stack: Stack) -> None:
    stack = fresh_stack
    assert stack.gateway is not None and stack.connector is not None
    port = stack.port
    assert stack.gateway.stop(signal.SIGTERM) == 0  # graceful shutdown exits cleanly
    stack.start_gateway(port)
    assert stack.port == port
    stack.wait_served(30)
    assert stack.connector.alive()


def test_revoked_connector_token_closes_the_tunnel_and_the_connector_exits(
    fresh_stack: Stack,
) -> None:
    stack = fresh_stack
    assert stack.connector is not None and stack.connector.popen is not None
    admin(stack.data, "connector-token", "revoke", stack.token_id)
    stack.connector.popen.wait(15)
    assert stack.connector.popen.returncode not in (0, None)
    assert "revoked" in stack.connector.log().lower()
    wait_for(lambda: _status(stack) == 503, 5, "503 after the token was revoked")


def test_sigterm_lets_an_in_flight_stream_finish(fresh_stack: Stack) -> None:
    stack = fresh_stack
    assert stack.upstream is not None and stack.gateway is not None
    stack.upstream.slow, stack.upstream.events = 0.02, 60
    texts: list[str] = []

    def stream() -> None:
        with stack.openai() as client:
            chunks = client.chat.completions.create(
                model=stack.deployment,
                stream=True,
                messages=[{"role": "user", "content": "drain me"}],
            )
            texts.append("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))

    worker = threading.Thread(target=stream)
    worker.start()
    wait_for(
        lambda: bool(
            stack.upstream
            and stack.upstream.requests
            and stack.upstream.requests[-1]["messages"][-1]["content"] == "drain me"
        ),
        10,
        "the stream to start",
    )
    assert stack.gateway.popen is not None
    stack.gateway.popen.send_signal(signal.SIGTERM)
    worker.join(30)
    assert texts and texts[0].startswith("Echo: drain me")
    assert len(texts[0].split()) == 60
    assert stack.gateway.popen.wait(15) == 0


LOST = "the connector serving this deployment disconnected before the answer ended"


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
def test_connector_killed_mid_stream_ends_it_with_an_error(fresh_stack: Stack,
                                                            http2: bool) -> None:
    """SIGKILL the connector while a stream is flowing: the body still ends properly (last
    chunk / END_STREAM, no read error) with the Chat error chunk and [DONE]."""
    stack = fresh_stack
    assert stack.upstream is not None and stack.connector is not None
    stack.upstream.slow, stack.upstream.events = 0.1, 100
    body = b""
    with stack.http(http2=http2) as http, http.stream(
            "POST", f"{stack.base_url}/v1/chat/completions",
            headers={"authorization": f"Bearer {stack.key}"},
            json={"model": stack.deployment, "stream": True,
                  "messages": [{"role": "user", "content": "kill me"}]}) as resp:
        assert resp.status_code == 200
        for piece in resp.iter_raw():  # a cut body raises RemoteProtocolError here
            body += piece
            if b"kill" in body and stack.connector.alive():
                stack.connector.stop(signal.SIGKILL)
    events = body.rstrip(b"\n").split(b"\n\n")
    assert events[-1] == b"data: [DONE]"
    assert orjson.loads(events[-2].removeprefix(b"data: "))["error"]["message"] == LOST
    assert b'"content":"kill "' in body and b"w90" not in body


def test_connector_killed_mid_stream_is_an_error_to_the_anthropic_sdk(
        fresh_stack: Stack) -> None:
    stack = fresh_stack
    assert stack.upstream is not None and stack.connector is not None
    stack.upstream.slow, stack.upstream.events = 0.1, 100
    text = ""
    with stack.anthropic() as client, pytest.raises(anthropic.APIStatusError) as caught, \
            client.messages.stream(model=stack.deployment, max_tokens=200,
                                   messages=[{"role": "user", "content": "kill me"}]) as stream:
        for delta in stream.text_stream:
            text += delta
            if stack.connector.alive():
                stack.connector.stop(signal.SIGKILL)
    assert text.startswith("Echo:")
    assert caught.value.body == {"type": "error",
                                 "error": {"type": "api_error", "message": LOST}}


@pytest.mark.parametrize("backend", ["ollama", "llamacpp"])
def test_an_upstream_that_breaks_mid_stream_ends_it_with_an_error(tmp_path: Path,
                                                                   backend: str) -> None:
    """The model server drops its connection mid-body: Chat and Responses clients get the
    tokens so far, then the format's error."""
    with Stack(workdir=tmp_path, backend=backend).running() as stack:
        assert stack.upstream is not None
        stack.upstream.cut_after, stack.upstream.events = 3, 20
        with stack.openai() as client:
            text = ""
            chunks = client.chat.completions.create(
                model=stack.deployment, stream=True,
                messages=[{"role": "user", "content": "break me"}])
            with pytest.raises(openai.APIError) as caught:
                for chunk in chunks:
                    text += chunk.choices[0].delta.content or "" if chunk.choices else ""
            assert caught.value.message == "upstream connection lost"
            assert text.startswith("Echo: ") and "w19" not in text
            kinds = [event.type for event in client.responses.create(
                model=stack.deployment, input="break me", stream=True)]
            assert "response.output_text.delta" in kinds
            assert kinds[-2:] == ["error", "response.failed"]
