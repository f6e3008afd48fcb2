"""Early bytes during slow prefill: ``open()``, ``keepalive()`` and the in-stream errors of an
upstream that fails after the opening, for the three client formats (docs/translation.md,
"Slow prefill: early bytes and keep-alives"). Every stream is checked with the official SDKs."""

from __future__ import annotations

import json

import openai
import pytest
from stream_scenarios import (
    CLIENTS,
    SCENARIOS,
    Scenario,
    oa,
    oa_usage,
    ollama,
    ollama_done,
    ollama_msg,
    scenario_id,
    sse,
)
from stream_sdk_check import (
    _http_client,
    check_messages,
    check_responses,
    outcome,
    sse_events,
)

from tokios_translate._common import BackendKind, ClientFormat, ErrorKind, StreamContext
from tokios_translate.stream import (
    CHAT_OPENING,
    MESSAGES_PING,
    SSE_COMMENT_KEEPALIVE,
    StreamTranslator,
    open_stream_translator,
)

OLL, L = BackendKind.OLLAMA, BackendKind.LLAMACPP


def ctx(client: ClientFormat, backend: BackendKind = L) -> StreamContext:
    return StreamContext(client=client, backend=backend, model="dep", response_id="k1",
                         created=1, stream=True, include_usage=True, estimated_input_tokens=9)


def translate(translator: StreamTranslator, upstream: bytes, size: int = 7) -> bytes:
    """Feed ``upstream`` in ``size``-byte reads the way a shell does; the client's bytes."""
    out = []
    for i in range(0, len(upstream), size):
        out.append(translator.feed(upstream[i:i + size]))
        if translator.done:
            break
    else:
        out.append(translator.finish())
    return b"".join(out)


# -- the opening and the keep-alives --------------------------------------------------------


def test_messages_opening_is_message_start_then_ping() -> None:
    translator = open_stream_translator(ctx(ClientFormat.MESSAGES))
    events = sse_events(translator.open())
    assert [e.event for e in events] == ["message_start", "ping"]
    start = json.loads(events[0].data)["message"]
    assert start["usage"] == {"input_tokens": 9, "output_tokens": 0}  # the estimate
    assert start["model"] == "dep" and start["content"] == []
    assert translator.opened and not translator.answering
    assert translator.keepalive() == MESSAGES_PING == b'event: ping\ndata: {"type":"ping"}\n\n'


def test_responses_opening_is_created_then_in_progress() -> None:
    translator = open_stream_translator(ctx(ClientFormat.RESPONSES))
    events = sse_events(translator.open())
    assert [e.event for e in events] == ["response.created", "response.in_progress"]
    assert [json.loads(e.data)["sequence_number"] for e in events] == [0, 1]
    assert json.loads(events[0].data)["response"]["status"] == "in_progress"
    assert translator.keepalive() == SSE_COMMENT_KEEPALIVE


def test_chat_opening_and_keepalive_are_sse_comments() -> None:
    translator = open_stream_translator(ctx(ClientFormat.CHAT))
    opening, keepalive = translator.open(), translator.keepalive()
    assert opening == CHAT_OPENING and keepalive == SSE_COMMENT_KEEPALIVE
    for comment in (opening, keepalive):
        assert comment.startswith(b": ") and comment.endswith(b"\n\n")
        assert comment.count(b"\n") == 2
        assert sse_events(comment) == []  # an SSE parser sees no event at all


@pytest.mark.parametrize("client", CLIENTS, ids=str)
def test_open_once_and_keepalive_before_open_opens(client: ClientFormat) -> None:
    first = open_stream_translator(ctx(client))
    opening = first.open()
    assert first.open() == b""
    second = open_stream_translator(ctx(client))
    assert second.keepalive() == opening  # a shell that skipped open() still opens first
    assert second.open() == b""


@pytest.mark.parametrize("client", CLIENTS, ids=str)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=scenario_id)
def test_early_stream_is_the_same_answer(client: ClientFormat, scenario: Scenario) -> None:
    """open() + keep-alives, then the upstream: the SDKs accumulate exactly the answer of a
    stream without early bytes (nothing of the opening repeated; checks in stream_sdk_check)."""
    plain = translate(open_stream_translator(scenario.context(client)), scenario.upstream)
    translator = open_stream_translator(scenario.context(client))
    early = translator.open() + translator.keepalive() + translator.keepalive()
    body = early + translate(translator, scenario.upstream)
    assert translator.done
    assert outcome(client.value, body, include_usage=scenario.include_usage) == outcome(
        client.value, plain, include_usage=scenario.include_usage)
    assert translator.keepalive() == b""


def test_messages_usage_estimate_first_backend_count_last() -> None:
    upstream = ollama(ollama_msg("Hi"), ollama_done(prompt=1234, completion=2))
    translator = open_stream_translator(ctx(ClientFormat.MESSAGES, OLL))
    body = translator.open() + translator.keepalive() + translate(translator, upstream)
    result = check_messages(body)
    events = [json.loads(e.data) for e in sse_events(body)]
    assert events[0]["message"]["usage"]["input_tokens"] == 9
    delta = next(e for e in events if e["type"] == "message_delta")
    assert delta["usage"]["input_tokens"] == 1234
    assert result.message.usage.input_tokens == 1234  # what the SDK ends up with


# -- keep-alives stop at the first real event -------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS, ids=str)
def test_answering_only_once_a_real_event_went_out(client: ClientFormat) -> None:
    translator = open_stream_translator(ctx(client))
    translator.open()
    # llama.cpp's first chunk is the role alone: still nothing for the client to show
    assert translator.feed(sse(oa({"role": "assistant", "content": None}))) == b""
    assert not translator.answering
    assert translator.feed(sse(oa({"content": "Hi"}))) != b""
    assert translator.answering


def test_chat_role_chunk_comes_with_the_first_delta_after_open() -> None:
    translator = open_stream_translator(ctx(ClientFormat.CHAT))
    translator.open()
    out = translator.feed(sse(oa({"role": "assistant", "content": None}), oa({"content": "Hi"})))
    chunks = [json.loads(e.data) for e in sse_events(out)]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0]["delta"] == {"content": "Hi"}


# -- the upstream fails after the opening ---------------------------------------------------

OPENAI_500 = b'{"error":{"code":500,"message":"Internal server error","type":"server_error"}}'


@pytest.mark.parametrize(("status", "error_type"), [(500, "api_error"),
                                                    (503, "overloaded_error"),
                                                    (429, "rate_limit_error")])
def test_messages_upstream_status_after_open(status: int, error_type: str) -> None:
    translator = open_stream_translator(ctx(ClientFormat.MESSAGES))
    body = translator.open() + translator.keepalive()
    body += translator.upstream_error(status, OPENAI_500)
    assert translator.done and translator.keepalive() == b"" and translator.feed(b"x") == b""
    events = sse_events(body)
    assert [e.event for e in events] == ["message_start", "ping", "ping", "error"]
    error = json.loads(events[-1].data)
    assert error["type"] == "error" and error["error"]["type"] == error_type
    assert f"HTTP {status}" in error["error"]["message"]
    assert check_messages(body).error is not None  # the SDK raises APIStatusError


@pytest.mark.parametrize("kind", [ErrorKind.UPSTREAM, ErrorKind.OVERLOADED])
def test_messages_unreachable_after_open(kind: ErrorKind) -> None:
    translator = open_stream_translator(ctx(ClientFormat.MESSAGES))
    body = translator.open() + translator.fail("the model server could not be reached", kind)
    error = json.loads(sse_events(body)[-1].data)["error"]
    assert error == {"type": "api_error" if kind is ErrorKind.UPSTREAM else "overloaded_error",
                     "message": "the model server could not be reached"}
    check_messages(body)


def test_responses_upstream_failure_after_open_is_response_failed() -> None:
    translator = open_stream_translator(ctx(ClientFormat.RESPONSES, OLL))
    body = translator.open() + translator.keepalive()
    body += translator.upstream_error(500, b'{"error":"model runner has unexpectedly stopped"}')
    events = [json.loads(e.data) for e in sse_events(body)]
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "error",
                                           "response.failed"]
    assert [e["sequence_number"] for e in events] == [0, 1, 2, 3]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["id"] == events[0]["response"]["id"]
    assert failed["error"]["code"] == "server_error"
    assert "model runner has unexpectedly stopped" in failed["error"]["message"]
    assert check_responses(body).response.status == "failed"


def test_chat_failure_after_open_is_an_error_chunk_then_done() -> None:
    translator = open_stream_translator(ctx(ClientFormat.CHAT))
    body = translator.open() + translator.keepalive()
    body += translator.fail("the model server could not be reached")
    events = sse_events(body)
    assert [e.data for e in events][-1] == "[DONE]"
    assert len(events) == 2  # no role chunk: the error is the only chunk
    error = json.loads(events[0].data)["error"]
    assert error["message"] == "the model server could not be reached"
    assert error["type"] == "server_error"
    client = openai.OpenAI(api_key="x", base_url="http://t/v1", http_client=_http_client(body))
    stream = client.chat.completions.create(model="m", messages=[], stream=True)
    with pytest.raises(openai.APIError, match="could not be reached"):
        list(stream)


def test_chat_upstream_503_after_open_keeps_the_upstream_kind() -> None:
    translator = open_stream_translator(ctx(ClientFormat.CHAT))
    translator.open()
    error = json.loads(sse_events(translator.upstream_error(503, b"{}"))[0].data)["error"]
    assert error["code"] == "overloaded" and "HTTP 503" in error["message"]


def test_without_open_the_preamble_comes_with_the_first_read() -> None:
    """Without open() nothing changes: the preamble comes with the first read, as before."""
    translator = open_stream_translator(ctx(ClientFormat.CHAT))
    out = translator.feed(sse(oa({"content": "Hi"}), oa(finish="stop"), oa_usage(), "[DONE]"))
    assert json.loads(sse_events(out)[0].data)["choices"][0]["delta"]["role"] == "assistant"
    assert not out.startswith(b":")
