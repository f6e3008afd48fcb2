"""End to end: a model slow to its first token (prefill) on both connector runtimes.

The scripted upstream holds each answer ``first_delay`` seconds (head included, as Ollama
does); the connector runs with ``--keepalive-interval 0.2 --head-hold 0.3``. A streamed answer
must start once the head hold is over (200 and the format's opening: the connector first waits
that long for the model server's own head, so that a model server that refuses or fails at once
gets a whole, retryable error), carry keep-alives while the model is silent, then arrive intact
through the official SDKs; an upstream failing after the opening ends in the format's in-stream
error. See docs/translation.md, "Slow prefill: early bytes and keep-alives".
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.e2e.stack import Stack

pytestmark = pytest.mark.timeout(180)

pytest.importorskip("runtimes.connector.cli")

INTERVAL = 0.2
HOLD = 0.3
DELAY = 1.5
#: (backend, connector runtime): both runtimes, both upstream codecs.
STACKS = [("llamacpp", "asyncio"), ("llamacpp", "threaded"), ("ollama", "threaded")]


@pytest.fixture(scope="module", params=STACKS, ids=["-".join(pair) for pair in STACKS])
def slow(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    backend, runtime = request.param
    workdir: Path = tmp_path_factory.mktemp(f"prefill-{backend}-{runtime}")
    built = Stack(workdir=workdir, backend=backend, runtime=runtime,
                  connector_args=["--keepalive-interval", str(INTERVAL),
                                  "--head-hold", str(HOLD)])
    with built.running():
        assert built.upstream is not None
        built.upstream.first_delay = DELAY
        yield built


def _request(stack: Stack, path: str, content: str) -> tuple[dict[str, str], dict[str, Any]]:
    message = {"role": "user", "content": content}
    if path == "/v1/messages":
        return ({"x-api-key": stack.key, "anthropic-version": "2023-06-01"},
                {"model": stack.deployment, "max_tokens": 50, "stream": True,
                 "messages": [message]})
    headers = {"authorization": f"Bearer {stack.key}"}
    if path == "/v1/responses":
        return headers, {"model": stack.deployment, "stream": True, "input": content}
    return headers, {"model": stack.deployment, "stream": True, "messages": [message]}


#: path -> (the opening's first bytes, the keep-alive, the first bytes of the answer itself)
FORMATS = {
    "/v1/messages": (b"event: message_start\n", b"event: ping\n", b"event: content_block_start"),
    "/v1/responses": (b"event: response.created\n", b": keep-alive\n\n",
                      b"event: response.output_item.added"),
    "/v1/chat/completions": (b": the model is working on it\n\n", b": keep-alive\n\n",
                             b"data: {"),
}


@pytest.mark.parametrize("path", list(FORMATS))
def test_bytes_arrive_at_once_and_keep_coming_until_the_first_token(slow: Stack,
                                                                    path: str) -> None:
    opening, keepalive, answer = FORMATS[path]
    headers, body = _request(slow, path, "take your time")
    arrivals: list[tuple[float, bytes]] = []
    with slow.http(timeout=30) as http:
        started = time.monotonic()
        with http.stream("POST", f"{slow.base_url}{path}", json=body, headers=headers) as resp:
            head_after = time.monotonic() - started
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            for chunk in resp.iter_raw():
                arrivals.append((time.monotonic() - started, chunk))
    whole = b"".join(chunk for _, chunk in arrivals)
    first_byte_after = arrivals[0][0]
    # The head and the opening long before the model's first token (DELAY): once the head
    # hold is over, within ~1 interval.
    assert head_after < HOLD + INTERVAL + 0.6, arrivals[:3]
    assert first_byte_after < HOLD + INTERVAL + 0.6, arrivals[:3]
    assert whole.startswith(opening)
    first_token = whole.index(answer)
    before = whole[:first_token]
    # keep-alives while the model was silent, at the configured pace (~DELAY / INTERVAL)
    assert before.count(keepalive) >= 3, before
    seen, silent_until = b"", 0.0
    for at, chunk in arrivals:
        seen += chunk
        if answer in seen:
            silent_until = at
            break
    assert silent_until >= DELAY - 0.1
    last_keepalive = max(t for t, c in arrivals if keepalive in c and t < silent_until)
    assert last_keepalive > DELAY - 4 * INTERVAL  # they kept coming, not only at the start
    # the opening is never repeated, and no keep-alive follows the first token
    assert whole.count(opening) == 1
    assert keepalive not in whole[first_token:]


def test_anthropic_stream_after_slow_prefill(slow: Stack) -> None:
    with slow.anthropic() as client, client.messages.stream(
        model=slow.deployment, max_tokens=50,
        messages=[{"role": "user", "content": "think hard"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Echo: think hard"
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0  # the backend's count, from message_delta


def test_openai_chat_stream_after_slow_prefill(slow: Stack) -> None:
    with slow.openai() as client, client.chat.completions.stream(
        model=slow.deployment, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "think hard"}],
    ) as stream:
        for _ in stream:
            pass
        completion = stream.get_final_completion()
    assert completion.choices[0].message.content == "Echo: think hard"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens > 0


def test_openai_responses_stream_after_slow_prefill(slow: Stack) -> None:
    with slow.openai() as client, client.responses.stream(
        model=slow.deployment, input="think hard",
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert final.output_text == "Echo: think hard"
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds.count("response.created") == 1 and kinds[-1] == "response.completed"


# -- the upstream fails after the opening: the format's in-stream error ----------------------


def test_anthropic_sdk_raises_on_a_failure_after_the_opening(slow: Stack) -> None:
    with (
        slow.anthropic() as client,
        pytest.raises(anthropic.APIStatusError) as err,
        client.messages.stream(
            model=slow.deployment, max_tokens=50,
            messages=[{"role": "user", "content": "upstream-error"}],
        ) as stream,
    ):
        stream.until_done()
    assert err.value.status_code == 200  # raised from the stream, after the head
    body: Any = err.value.body
    assert body["type"] == "error" and body["error"]["type"] == "api_error"
    assert "HTTP 500" in body["error"]["message"]


def test_openai_chat_sdk_raises_on_a_failure_after_the_opening(slow: Stack) -> None:
    with slow.openai() as client:
        stream = client.chat.completions.create(
            model=slow.deployment, stream=True,
            messages=[{"role": "user", "content": "upstream-error"}])
        with pytest.raises(openai.APIError, match="HTTP 500") as err:
            list(stream)
    assert not isinstance(err.value, openai.APIStatusError)  # in-stream, not a status


def test_openai_responses_stream_fails_after_the_opening(slow: Stack) -> None:
    with slow.openai() as client, client.responses.stream(
        model=slow.deployment, input="upstream-error",
    ) as stream:
        events = list(stream)
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds == ["response.created", "response.in_progress", "error", "response.failed"]
    failed: Any = events[-1]
    assert failed.response.status == "failed"
    assert failed.response.error is not None and "HTTP 500" in failed.response.error.message
