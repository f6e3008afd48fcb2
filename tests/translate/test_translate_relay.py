"""The gateway's stream guard (tokios_translate/stream/relay.py): a relayed stream cut at any
byte still reaches the client as a well-formed stream of its own format ending in an error,
checked with the official SDKs' types and parsers; a complete stream passes untouched."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_translate_client_apis import prompt_stream, up
from test_translate_stream_agreement import ANSWERS, REQUESTS, upstream_stream

from tokios_translate import BackendKind, ClientFormat, ErrorKind
from tokios_translate.stream import open_stream_translator, relay
from tokios_translate.stream.relay import StreamGuard

sys.path.insert(0, str(Path(__file__).parent / "stream"))
from stream_client_apis_check import check_completions, check_ollama
from stream_sdk_check import outcome, sse_events

OLLAMA, LLAMACPP = BackendKind.OLLAMA, BackendKind.LLAMACPP
CHAT, RESPONSES, MESSAGES = ClientFormat.CHAT, ClientFormat.RESPONSES, ClientFormat.MESSAGES
OCHAT, OGEN, CMPL = ClientFormat.OLLAMA_CHAT, ClientFormat.OLLAMA_GENERATE, ClientFormat.COMPLETIONS
PROMPT_BODY = {"model": "dep", "stream": True, "prompt": "hi",
               "stream_options": {"include_usage": True}}
CASES = [(c, b) for c in (CHAT, RESPONSES, MESSAGES) for b in (OLLAMA, LLAMACPP)] + [
    (OCHAT, OLLAMA), (OGEN, OLLAMA), (CMPL, LLAMACPP)]
MESSAGE = "the connector serving this deployment went away"


def content_type(client: ClientFormat) -> str:
    return "application/x-ndjson" if client.speaks_ollama else "text/event-stream"


def whole_stream(client: ClientFormat, backend: BackendKind, answer: str) -> bytes:
    """What the connector sends for a whole answer: opening, a keep-alive, the answer."""
    if client in REQUESTS:
        body: dict[str, Any] = REQUESTS[client]
        upstream = upstream_stream(backend, ANSWERS[answer])
    else:
        body = {**PROMPT_BODY, "messages": [{"role": "user", "content": "hi"}]}
        upstream = (upstream_stream(backend, ANSWERS[answer]) if client is OCHAT
                    else prompt_stream(backend, ANSWERS[answer]))
    translator = open_stream_translator(up(client, body, backend).context)
    out = translator.open() + translator.keepalive() + translator.feed(upstream)
    out += translator.finish()
    assert translator.done
    return out


def error_of(client: ClientFormat, body: bytes) -> str | None:
    """The error the client's own SDK sees in ``body`` (validated as a stream of its format)."""
    if client is OCHAT or client is OGEN:
        return check_ollama(body, chat=client is OCHAT).error
    if client is CMPL:
        return check_completions(body).error
    events = sse_events(body)
    if client is CHAT and len(events) == 2 and events[1].data == "[DONE]":
        # cut after the opening comment, before the first chunk: the error chunk alone,
        # which the openai SDK raises as APIError
        error: str = orjson.loads(events[0].data)["error"]["message"]
        return error
    return outcome(client.value, body, run_client=False).error


def boundaries(client: ClientFormat, body: bytes) -> list[int]:
    """The indexes just past each event of ``body``."""
    sep = b"\n" if client.speaks_ollama else b"\n\n"
    ends, at = [], body.find(sep)
    while at >= 0:
        ends.append(at + len(sep))
        at = body.find(sep, at + len(sep))
    return ends


@pytest.mark.parametrize(("client", "backend"), CASES)
@pytest.mark.parametrize("answer", ["text", "thinking-text-tools"])
def test_a_stream_cut_anywhere_ends_with_the_clients_own_error(
        client: ClientFormat, backend: BackendKind, answer: str) -> None:
    full = whole_stream(client, backend, answer)
    ends = boundaries(client, full)
    assert ends[-1] == len(full)
    cuts = sorted({0, len(full) - 1} | {e + d for e in ends for d in (-1, 0, 1)
                                        if 0 <= e + d < len(full)})
    for cut in cuts:
        guard = StreamGuard.for_response(client, content_type(client))
        assert guard is not None
        half = cut // 2
        sent = guard.feed(full[:half]) + guard.feed(full[half:cut])
        assert full.startswith(sent) and (not sent or len(sent) in ends), cut
        ended = sent + guard.cut(MESSAGE)
        if not sent or (client is RESPONSES and len(sse_events(sent)) == 1):
            # nothing sent: the gateway answers a whole error instead; and the connector
            # sends response.created and response.in_progress in one piece (the checker
            # wants both before anything else)
            assert MESSAGE.encode() in ended
            continue
        assert error_of(client, ended) == MESSAGE, (cut, ended[-300:])
    # the whole stream, however it is split, goes through untouched and gets nothing added
    guard = StreamGuard.for_response(client, content_type(client))
    assert guard is not None
    relayed = b"".join(guard.feed(full[i:i + 7]) for i in range(0, len(full), 7))
    assert relayed + guard.finish() == full
    assert guard.cut(MESSAGE) == b""
    assert error_of(client, full) is None


def test_kinds_pick_the_formats_error_types() -> None:
    for client, expected in ((MESSAGES, b'"overloaded_error"'), (CHAT, b'"server_error"')):
        guard = StreamGuard.for_response(client, "text/event-stream")
        assert guard is not None
        guard.feed(whole_stream(client, OLLAMA, "text")[:40])
        assert expected in guard.cut("draining", ErrorKind.OVERLOADED)
    guard = StreamGuard.for_response(MESSAGES, "text/event-stream")
    assert guard is not None
    assert b'"api_error"' in guard.cut("lost")


def test_responses_failure_carries_the_streams_response_and_numbering() -> None:
    full = whole_stream(RESPONSES, LLAMACPP, "thinking-text-tools")
    events = sse_events(full)
    created = orjson.loads(events[0].data)["response"]
    cut = boundaries(RESPONSES, full)[6]
    guard = StreamGuard.for_response(RESPONSES, "text/event-stream; charset=utf-8")
    assert guard is not None
    sent = guard.feed(full[:cut])
    tail = sse_events(guard.cut(MESSAGE))
    assert [e.event for e in tail] == ["error", "response.failed"]
    numbers = [orjson.loads(e.data)["sequence_number"] for e in tail]
    assert numbers == [len(sse_events(sent)), len(sse_events(sent)) + 1]
    failed = orjson.loads(tail[1].data)["response"]
    assert failed["id"] == created["id"] and failed["model"] == created["model"] == "dep"
    assert failed["status"] == "failed" and failed["error"]["message"] == MESSAGE


def test_sse_with_crlf_lines_is_cut_on_its_own_boundaries() -> None:
    full = b"".join(b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {
        "content": w}}]}) + b"\r\n\r\n" for w in ("a", "b"))
    guard = StreamGuard.for_response(CHAT, "text/event-stream")
    assert guard is not None
    first = full.index(b"\r\n\r\n") + 4
    assert guard.feed(full[:first + 5]) == full[:first]
    assert guard.cut(MESSAGE).startswith(b'data: {"error":')


def test_only_streams_of_the_clients_format_are_guarded() -> None:
    assert StreamGuard.for_response(CHAT, "application/json") is None
    assert StreamGuard.for_response(CHAT, "application/x-ndjson") is None
    assert StreamGuard.for_response(OCHAT, "text/event-stream") is None
    assert StreamGuard.for_response(OCHAT, "application/x-ndjson") is not None
    assert StreamGuard.for_response(MESSAGES, "Text/Event-Stream; charset=utf-8") is not None


def test_what_is_held_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay, "MAX_HELD_BYTES", 64)
    guard = StreamGuard.for_response(CHAT, "text/event-stream")
    assert guard is not None
    assert guard.feed(b"data: {}\n\ndata: " + b"x" * 30) == b"data: {}\n\n"
    long_event = b"y" * 100
    out = guard.feed(long_event)  # over the bound: it goes out unfinished, nothing is held
    assert out == b"data: " + b"x" * 30 + long_event and guard.finish() == b""
    # the unfinished event is closed by a blank line before the error
    assert guard.cut(MESSAGE).startswith(b'\n\ndata: {"error":')


# -- edges the mutation run found untested (docs/testing.md) -------------------------------------


def test_a_responses_stream_cut_before_response_created_fails_with_a_valid_response() -> None:
    guard = StreamGuard.for_response(RESPONSES, "text/event-stream")
    assert guard is not None
    assert guard.feed(b": keep-alive\n\n") == b": keep-alive\n\n"  # no response.created yet
    tail = sse_events(guard.cut(MESSAGE))
    assert [e.event for e in tail] == ["error", "response.failed"]
    assert [orjson.loads(e.data)["sequence_number"] for e in tail] == [0, 1]
    failed = orjson.loads(tail[1].data)["response"]
    assert failed == {"id": "resp_unknown", "object": "response", "created_at": 0,
                      "status": "failed", "model": "", "output": [],
                      "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
                      "error": {"code": "server_error", "message": MESSAGE}}
    from openai.types.responses import Response

    Response.model_validate(failed)  # what the SDK accepts as a response object


@pytest.mark.parametrize(("client", "media", "lead"), [
    (CHAT, "text/event-stream", b"\n\n"), (OCHAT, "application/x-ndjson", b"\n")])
def test_an_over_long_event_sent_unfinished_is_closed_before_the_error(
        client: ClientFormat, media: str, lead: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay, "MAX_HELD_BYTES", 16)
    guard = StreamGuard.for_response(client, media)
    assert guard is not None
    long = b'data: {"x": "' + b"y" * 40  # no end of event in sight: sent as it comes
    assert guard.feed(long) == long
    ended = guard.cut(MESSAGE)
    assert ended.startswith(lead) and not ended.startswith(lead + b"\n")
    assert MESSAGE.encode() in ended


@pytest.mark.parametrize(("client", "media", "sep"), [
    (CHAT, "text/event-stream", b"\n\n"), (OCHAT, "application/x-ndjson", b"\n")])
def test_every_whole_event_of_a_read_goes_out_and_only_the_tail_waits(
        client: ClientFormat, media: str, sep: bytes) -> None:
    guard = StreamGuard.for_response(client, media)
    assert guard is not None
    events = b"".join(b'{"n": %d}' % n + sep for n in range(3))
    assert guard.feed(events + b'{"n": 3') == events
    assert guard.feed(b"}" + sep) == b'{"n": 3}' + sep


def test_a_read_that_starts_on_a_blank_line_passes_it_on() -> None:
    guard = StreamGuard.for_response(CHAT, "text/event-stream")
    assert guard is not None
    assert guard.feed(b"data: {}\n\n") == b"data: {}\n\n"
    assert guard.feed(b"\n\ndata: {") == b"\n\n"
    guard2 = StreamGuard.for_response(CHAT, "text/event-stream")
    assert guard2 is not None
    assert guard2.feed(b"data: {}\r\n\r\n") == b"data: {}\r\n\r\n"
    assert guard2.feed(b"\n\r\ndata: {") == b"\n\r\n"


@pytest.mark.parametrize("last", [b'{"done": true}\n', b'{"error": "upstream failed"}\n'])
def test_an_ollama_stream_that_already_ended_gets_nothing_added(last: bytes) -> None:
    guard = StreamGuard.for_response(OCHAT, "application/x-ndjson")
    assert guard is not None
    guard.feed(b'{"message": {"content": "a"}}\n' + last)
    assert guard.cut(MESSAGE) == b""


def test_an_unnamed_terminal_event_ends_the_stream_too() -> None:
    guard = StreamGuard.for_response(MESSAGES, "text/event-stream")
    assert guard is not None
    guard.feed(b'data: {"type": "message_start"}\n\ndata: {"type": "message_stop"}\n\n')
    assert guard.cut(MESSAGE) == b""
    open_guard = StreamGuard.for_response(MESSAGES, "text/event-stream")
    assert open_guard is not None
    open_guard.feed(b'data: {"type": "message_start"}\n\n')
    assert b"api_error" in open_guard.cut(MESSAGE)


def test_responses_numbering_continues_after_a_spaced_sequence_number() -> None:
    guard = StreamGuard.for_response(RESPONSES, "text/event-stream")
    assert guard is not None
    guard.feed(b'event: response.output_text.delta\ndata: {"type": "response.output_text.delta",'
               b' "sequence_number": 41}\n\n')
    tail = sse_events(guard.cut(MESSAGE))
    assert [orjson.loads(e.data)["sequence_number"] for e in tail] == [42, 43]
