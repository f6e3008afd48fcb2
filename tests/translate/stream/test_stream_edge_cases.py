"""Stream edge cases (split events, usage placement, tool-call fragments, errors mid-stream and
the like), each checked through the SDKs."""

from __future__ import annotations

import json

import pytest
from stream_scenarios import (
    CLIENTS,
    oa,
    oa_call,
    oa_usage,
    ollama,
    ollama_done,
    ollama_msg,
    sse,
)
from stream_sdk_check import check_chat, check_messages, check_responses, outcome, sse_events

from tokios_translate._common import (
    BackendKind,
    ClientFormat,
    ErrorKind,
    StopReason,
    StreamContext,
    Usage,
)
from tokios_translate.stream import open_stream_translator
from tokios_translate.stream.encoders import MessagesEncoder
from tokios_translate.stream.events import Finished

SSE_BACKENDS = [BackendKind.LLAMACPP, BackendKind.VLLM, BackendKind.LMSTUDIO, BackendKind.OPENAI]


def ctx(client: ClientFormat, backend: BackendKind, **kw: object) -> StreamContext:
    return StreamContext(client=client, backend=backend, model="dep", response_id="e1",
                         created=1, stream=True, include_usage=True,
                         estimated_input_tokens=3, **kw)  # type: ignore[arg-type]


def translate(client: ClientFormat, backend: BackendKind, upstream: bytes, **kw: object) -> bytes:
    translator = open_stream_translator(ctx(client, backend, **kw))
    out = translator.feed(upstream) + translator.finish()
    assert translator.done
    return out


# -- §9.1 parallel calls with interleaved fragments -------------------------------------------


def test_interleaved_parallel_calls_become_sequential_anthropic_blocks() -> None:
    upstream = sse(
        oa({"role": "assistant", "content": "Let me check."}),
        oa_call(0, id="a", name="f0", args='{"n":'),
        oa_call(1, id="b", name="f1", args='{"n":'),
        oa_call(2, id="c", name="f2", args="{"),
        oa_call(1, args="1}"), oa_call(0, args="0}"), oa_call(2, args='"n":2}'),
        oa(finish="tool_calls"), oa_usage(), "[DONE]",
    )
    body = translate(ClientFormat.MESSAGES, BackendKind.LLAMACPP, upstream)
    result = check_messages(body)  # checks one open block at a time, deltas in their block
    assert [(b.type, getattr(b, "input", None)) for b in result.message.content] == [
        ("text", None), ("tool_use", {"n": 0}), ("tool_use", {"n": 1}), ("tool_use", {"n": 2}),
    ]
    # The live call streams its fragments at once (to clients that take partial arguments).
    translator = open_stream_translator(ctx(ClientFormat.CHAT, BackendKind.LLAMACPP))
    reads = upstream.split(b"\n\n")
    translator.feed(reads[0] + b"\n\n")
    assert b'{\\"n\\":' in translator.feed(reads[1] + b"\n\n")
    for client in CLIENTS:
        got = outcome(client.value, translate(client, BackendKind.LLAMACPP, upstream))
        assert got.tools == [("a", "f0", {"n": 0}), ("b", "f1", {"n": 1}), ("c", "f2", {"n": 2})]


# -- §9.2 fragment shapes -----------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_name_in_a_later_chunk_and_empty_tool_calls_on_text(client: ClientFormat) -> None:
    upstream = sse(
        oa({"content": "Hi", "tool_calls": []}),
        oa_call(0, id="x", args='{"q"'),
        oa_call(0, name="search"),
        oa_call(0, args=':"a"}'),
        oa(finish="tool_calls"), "[DONE]",
    )
    got = outcome(client.value, translate(client, BackendKind.VLLM, upstream))
    assert got.text == "Hi"
    assert got.tools == [("x", "search", {"q": "a"})]


@pytest.mark.parametrize("client", CLIENTS)
def test_arguments_only_in_the_final_chunk_and_missing_ids(client: ClientFormat) -> None:
    upstream = sse(
        oa_call(0, name="a"), oa_call(1, name="b"),
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": '{"x":1}'}},
            {"index": 1, "function": {"arguments": '{"y":2}'}}]}, "finish_reason": "tool_calls"}]},
        "[DONE]",
    )
    got = outcome(client.value, translate(client, BackendKind.LMSTUDIO, upstream))
    # Ids generated deterministically: call_{response_id}_{index}.
    assert got.tools == [("call_e1_0", "a", {"x": 1}), ("call_e1_1", "b", {"y": 2})]
    assert got.stop in {"tool_calls", "completed", "tool_use"}


@pytest.mark.parametrize("client", CLIENTS)
def test_ollama_whole_calls_object_arguments_no_ids_and_no_arguments(
    client: ClientFormat,
) -> None:
    upstream = ollama(
        ollama_msg(tool_calls=[
            {"function": {"name": "write", "arguments": {"path": "a.py", "body": "x = 'é'\n",
                                                         "n": [1, 2.5, None, True]}}},
            {"function": {"name": "noargs"}},
        ]),
        ollama_done(),  # done_reason stays "stop" when tools were called
    )
    got = outcome(client.value, translate(client, BackendKind.OLLAMA, upstream))
    assert got.tools == [
        ("call_e1_0", "write", {"path": "a.py", "body": "x = 'é'\n", "n": [1, 2.5, None, True]}),
        ("call_e1_1", "noargs", {}),
    ]
    assert got.stop == {"chat": "tool_calls", "responses": "completed",
                        "messages": "tool_use"}[client.value]


@pytest.mark.parametrize("backend", [BackendKind.OLLAMA, BackendKind.LLAMACPP])
def test_parallel_tool_calls_false_keeps_only_the_first(backend: BackendKind) -> None:
    if backend is BackendKind.OLLAMA:
        upstream = ollama(ollama_msg(tool_calls=[{"function": {"name": "a", "arguments": {}}},
                                                 {"function": {"name": "b", "arguments": {}}}]),
                          ollama_msg(tool_calls=[{"function": {"name": "c", "arguments": {}}}]),
                          ollama_done())
    else:
        upstream = sse(oa_call(0, name="a", args="{}"), oa_call(1, name="b", args="{}"),
                       oa(finish="tool_calls"), "[DONE]")
    for client in CLIENTS:
        body = translate(client, backend, upstream, parallel_tool_calls=False)
        assert [t[1] for t in outcome(client.value, body).tools] == ["a"]


# -- §9.3 thinking placement --------------------------------------------------------------------


@pytest.mark.parametrize("backend", [BackendKind.OLLAMA, *SSE_BACKENDS])
@pytest.mark.parametrize("field", ["reasoning_content", "reasoning", "thinking"])
def test_thinking_only_response_any_reasoning_field(backend: BackendKind, field: str) -> None:
    if backend is BackendKind.OLLAMA:
        upstream = ollama(ollama_msg(thinking="deep"), ollama_done())
    else:
        upstream = sse(oa({field: "deep"}), oa(finish="stop"), "[DONE]")
    for client in CLIENTS:
        got = outcome(client.value, translate(client, backend, upstream))
        assert (got.reasoning, got.text) == ("deep", "")


def test_thinking_after_text_opens_a_new_thinking_block_with_signature() -> None:
    upstream = ollama(ollama_msg("A"), ollama_msg(thinking="B"), ollama_msg("C"), ollama_done())
    result = check_messages(translate(ClientFormat.MESSAGES, BackendKind.OLLAMA, upstream))
    blocks = result.message.content
    assert [b.type for b in blocks] == ["text", "thinking", "text"]
    assert blocks[1].signature  # placeholder, required by Claude Code
    responses = check_responses(translate(ClientFormat.RESPONSES, BackendKind.OLLAMA, upstream))
    assert [i.type for i in responses.response.output] == ["message", "reasoning", "message"]


def test_responses_reasoning_item_is_added_before_any_summary_delta() -> None:
    body = translate(ClientFormat.RESPONSES, BackendKind.LLAMACPP,
                     sse(oa({"reasoning_content": "x"}), oa(finish="stop"), "[DONE]"))
    kinds = [json.loads(e.data)["type"] for e in sse_events(body)]
    assert kinds.index("response.output_item.added") < kinds.index(
        "response.reasoning_summary_part.added") < kinds.index(
        "response.reasoning_summary_text.delta")


# -- §9.4 empty completion ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", [BackendKind.OLLAMA, BackendKind.LLAMACPP])
def test_empty_completion_still_frames_the_answer(backend: BackendKind) -> None:
    upstream = (ollama(ollama_done(completion=0)) if backend is BackendKind.OLLAMA
                else sse(oa(finish="stop"), "[DONE]"))
    chat = check_chat(translate(ClientFormat.CHAT, backend, upstream))
    assert chat.chunks[0].choices[0].delta.role == "assistant"
    messages = check_messages(translate(ClientFormat.MESSAGES, backend, upstream))
    assert [e.type for e in messages.events] == ["message_start", "message_delta", "message_stop"]
    responses = check_responses(translate(ClientFormat.RESPONSES, backend, upstream))
    assert responses.response.status == "completed" and responses.response.output == []


# -- §9.5 usage ---------------------------------------------------------------------------------


def test_usage_in_the_finish_chunk_or_after_it() -> None:
    same_chunk = sse({**oa({"content": "x"}, finish="stop"),
                      "usage": {"prompt_tokens": 4, "completion_tokens": 1}}, "[DONE]")
    after = sse(oa({"content": "x"}), oa(finish="stop"), oa_usage(4, 1), "[DONE]")
    for upstream in (same_chunk, after):
        for client in CLIENTS:
            got = outcome(client.value, translate(client, BackendKind.LLAMACPP, upstream))
            assert (got.input_tokens, got.output_tokens) == (4, 1)


def test_prompt_eval_count_absent_uses_the_estimate_for_anthropic() -> None:
    upstream = ollama(ollama_msg("x"), ollama_done(prompt=None, completion=9))
    got = outcome("messages", translate(ClientFormat.MESSAGES, BackendKind.OLLAMA, upstream))
    assert (got.input_tokens, got.output_tokens) == (3, 9)
    got = outcome("chat", translate(ClientFormat.CHAT, BackendKind.OLLAMA, upstream))
    assert (got.input_tokens, got.output_tokens) == (0, 9)


def test_anthropic_message_start_carries_the_estimate_and_delta_the_exact_count() -> None:
    upstream = ollama(ollama_msg("x"), ollama_done(prompt=40, completion=2))
    result = check_messages(translate(ClientFormat.MESSAGES, BackendKind.OLLAMA, upstream))
    assert result.events[0].message.usage.input_tokens == 3
    assert result.events[-2].usage.input_tokens == 40
    assert result.events[-2].usage.output_tokens == 2


def test_cached_prompt_tokens_map_to_cache_read() -> None:
    upstream = sse(oa({"content": "x"}), oa(finish="stop"), {
        "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 1,
                                 "prompt_tokens_details": {"cached_tokens": 6}}}, "[DONE]")
    message = check_messages(translate(ClientFormat.MESSAGES, BackendKind.VLLM, upstream)).message
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (4, 6)
    chat = check_chat(translate(ClientFormat.CHAT, BackendKind.VLLM, upstream))
    assert chat.completion.usage.prompt_tokens_details.cached_tokens == 6


# -- §9.6 errors --------------------------------------------------------------------------------


ERROR_UPSTREAMS = {
    "ollama error line": (BackendKind.OLLAMA, ollama(ollama_msg("a"), {"error": "boom"})),
    "ollama error first": (BackendKind.OLLAMA, b'{"error":"boom"}\n'),
    "sse error object": (BackendKind.LLAMACPP,
                         sse(oa({"content": "a"}), {"error": {"message": "boom", "code": 500}})),
    "sse event: error": (BackendKind.VLLM, b'event: error\ndata: {"message":"boom"}\n\n'),
    "sse error string": (BackendKind.LMSTUDIO, sse({"error": "boom"})),
}


@pytest.mark.parametrize("name", list(ERROR_UPSTREAMS))
@pytest.mark.parametrize("client", CLIENTS)
def test_mid_stream_error_becomes_the_in_stream_error_event(
    name: str, client: ClientFormat
) -> None:
    backend, upstream = ERROR_UPSTREAMS[name]
    translator = open_stream_translator(ctx(client, backend))
    body = translator.feed(upstream)
    assert translator.done
    assert translator.feed(b'{"message":{"content":"more"}}\n') == b""
    assert translator.finish() == b"" and translator.fail("x") == b""
    got = outcome(client.value, body)
    assert got.error == "boom"
    tail = body.rstrip().rsplit(b"\n\n", 2)
    if client is ClientFormat.CHAT:
        assert tail[-1] == b"data: [DONE]" and b'"error"' in tail[-2]
    elif client is ClientFormat.MESSAGES:
        assert tail[-1].startswith(b"event: error\n") and b"message_stop" not in body
    else:
        assert tail[-1].startswith(b"event: response.failed\n")


@pytest.mark.parametrize("client", CLIENTS)
def test_shell_detected_failure(client: ClientFormat) -> None:
    translator = open_stream_translator(ctx(client, BackendKind.OLLAMA))
    body = translator.feed(ollama(ollama_msg("par")))
    body += translator.fail("upstream connection lost")
    assert translator.done and translator.feed(b"x") == b""
    assert outcome(client.value, body).error == "upstream connection lost"


@pytest.mark.parametrize("backend", [BackendKind.OLLAMA, BackendKind.LLAMACPP])
@pytest.mark.parametrize("client", CLIENTS)
def test_eof_before_the_end_is_an_error_not_a_hang(
    backend: BackendKind, client: ClientFormat
) -> None:
    upstream = (ollama(ollama_msg("cut")) if backend is BackendKind.OLLAMA
                else sse(oa({"content": "cut"})))
    translator = open_stream_translator(ctx(client, backend))
    body = translator.feed(upstream)
    assert not translator.done
    body += translator.finish()
    assert translator.done
    assert "ended before" in (outcome(client.value, body).error or "")


def test_eof_after_finish_reason_without_done_marker_completes() -> None:
    upstream = sse(oa({"content": "x"}), oa(finish="length"))
    for client in CLIENTS:
        got = outcome(client.value, translate(client, BackendKind.OPENAI, upstream))
        assert got.error is None and got.text == "x"


MALFORMED = {
    "invalid json ndjson": (BackendKind.OLLAMA, b'{"message": {"content": "a"\n'),
    "json not an object": (BackendKind.OLLAMA, b"[1,2]\n"),
    "message not an object": (BackendKind.OLLAMA, b'{"message": "x"}\n'),
    "tool_calls not a list": (BackendKind.OLLAMA, b'{"message": {"tool_calls": 3}}\n'),
    "tool call without name": (BackendKind.OLLAMA,
                               b'{"message": {"tool_calls": [{"function": {}}]}}\n'),
    "invalid utf-8": (BackendKind.OLLAMA, b'{"message": {"content": "\xff\xfe"}}\n'),
    "invalid json sse": (BackendKind.LLAMACPP, b"data: {nope\n\n"),
    "choices not a list": (BackendKind.LLAMACPP, b'data: {"choices": 5}\n\n'),
    "delta not an object": (BackendKind.LLAMACPP, b'data: {"choices": [{"delta": 5}]}\n\n'),
    "binary garbage": (BackendKind.VLLM, b"data: \x00\x01\x02\n\n"),
    "sse name never arrives": (BackendKind.LLAMACPP, sse(oa_call(0, args="{}"),
                                                         oa(finish="tool_calls"), "[DONE]")),
    "fragment after the call closed": (BackendKind.LLAMACPP, sse(
        oa_call(0, name="a", args="{"), oa({"content": "text"}), oa_call(0, args="}"))),
}


@pytest.mark.parametrize("name", list(MALFORMED))
@pytest.mark.parametrize("client", CLIENTS)
def test_malformed_upstream_data_is_a_clean_in_stream_error(
    name: str, client: ClientFormat
) -> None:
    backend, upstream = MALFORMED[name]
    translator = open_stream_translator(ctx(client, backend))
    body = translator.feed(upstream)
    body += translator.finish()
    assert translator.done
    got = outcome(client.value, body)
    assert got.error
    # The error names no content of the stream.
    assert "text" not in got.error and "nope" not in got.error


@pytest.mark.parametrize("client", CLIENTS)
def test_oversized_unit_is_a_clean_error(client: ClientFormat) -> None:
    translator = open_stream_translator(ctx(client, BackendKind.LLAMACPP))
    body = translator.feed(b"data: " + b"x" * (9 * 1024 * 1024))
    assert translator.done
    assert "size limit" in (outcome(client.value, body).error or "")


# -- §9.7 stop reasons --------------------------------------------------------------------------


def test_stop_sequence_with_its_value_reaches_anthropic() -> None:
    context = ctx(ClientFormat.MESSAGES, BackendKind.OLLAMA)
    encoder = MessagesEncoder(context)
    body = encoder.start() + encoder.encode(
        Finished(stop=StopReason.STOP_SEQUENCE, usage=Usage(), stop_sequence="###"))
    message = check_messages(body).message
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "###")


# -- §9.9 SSE framing through the translator, §9.10 unknown fields --------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_comments_event_lines_unknown_events_and_unknown_fields(client: ClientFormat) -> None:
    upstream = (
        b": ping\r\n\r\n"
        b"event: message\r\ndata: "
        + json.dumps({"choices": [{"index": 0, "delta": {"content": "a", "new_field": 1},
                                   "finish_reason": None, "logprobs": None}],
                      "timings": {"predicted_ms": 1}, "system_fingerprint": "x"}).encode()
        + b"\r\n\r\n"
        b"event: future_thing\r\ndata: {\"whatever\": true}\r\n\r\n"
        b"data: " + json.dumps(oa(finish="stop")).encode() + b"\r\n\r\n"
        b"data: [DONE]\r\n\r\n"
    )
    got = outcome(client.value, translate(client, BackendKind.LLAMACPP, upstream))
    assert (got.text, got.error) == ("a", None)


def test_done_marker_without_finish_reason_ends_the_turn() -> None:
    got = outcome("messages", translate(ClientFormat.MESSAGES, BackendKind.OPENAI,
                                        sse(oa({"content": "a"}), "[DONE]")))
    assert got.stop == "end_turn"


def test_bytes_after_the_end_are_ignored() -> None:
    translator = open_stream_translator(ctx(ClientFormat.CHAT, BackendKind.LLAMACPP))
    body = translator.feed(sse(oa({"content": "a"}), oa(finish="stop"), "[DONE]") + b"data: {")
    assert translator.done and translator.finish() == b""
    assert outcome("chat", body).text == "a"


def test_invalid_tool_arguments_are_an_anthropic_error_and_passed_as_is_elsewhere() -> None:
    upstream = sse(oa_call(0, id="a", name="f", args='{"x": tru'), oa(finish="tool_calls"),
                   "[DONE]")
    got = outcome("messages", translate(ClientFormat.MESSAGES, BackendKind.LLAMACPP, upstream))
    assert got.error == "tool call arguments are not a JSON object"
    chat = check_chat(translate(ClientFormat.CHAT, BackendKind.LLAMACPP, upstream))
    assert chat.completion.choices[0].message.tool_calls[0].function.arguments == '{"x": tru'


@pytest.mark.parametrize(
    ("kind", "chat_type", "responses_code", "messages_type"),
    [
        (ErrorKind.UPSTREAM, "server_error", "server_error", "api_error"),
        (ErrorKind.OVERLOADED, "server_error", "server_error", "overloaded_error"),
        (ErrorKind.TIMEOUT, "server_error", "server_error", "timeout_error"),
        (ErrorKind.RATE_LIMITED, "rate_limit_error", "rate_limit_exceeded", "rate_limit_error"),
    ],
)
def test_fail_kind_picks_each_format_error_type(
    kind: ErrorKind, chat_type: str, responses_code: str, messages_type: str
) -> None:
    bodies = {}
    for client in CLIENTS:
        translator = open_stream_translator(ctx(client, BackendKind.OLLAMA))
        bodies[client] = translator.feed(b"") + translator.fail("upstream timed out", kind)
        assert outcome(client.value, bodies[client]).error == "upstream timed out"
    chat_error = json.loads(sse_events(bodies[ClientFormat.CHAT])[-2].data)["error"]
    assert chat_error["type"] == chat_type
    failed = check_responses(bodies[ClientFormat.RESPONSES]).response
    assert failed.error.code == responses_code
    assert check_messages(bodies[ClientFormat.MESSAGES]).error["type"] == messages_type


def test_named_non_chunk_events_and_empty_data_are_ignored() -> None:
    upstream = (b"event: ping\ndata: not json\n\ndata: \n\n"
                + sse(oa({"content": "a"}), oa(finish="stop"), "[DONE]"))
    got = outcome("chat", translate(ClientFormat.CHAT, BackendKind.LMSTUDIO, upstream))
    assert (got.text, got.error) == ("a", None)


def test_held_tool_arguments_are_bounded() -> None:
    from tokios_translate.stream import decoders

    big = "x" * (decoders.MAX_PENDING_ARGUMENTS // 4)
    chunks = [oa_call(0, id="a", name="f", args="{")]
    chunks += [oa_call(1, id="b", name="g", args=big) for _ in range(5)]
    got = outcome("chat", translate(ClientFormat.CHAT, BackendKind.LLAMACPP, sse(*chunks)))
    assert got.error == "held tool call arguments exceed the size limit"


@pytest.mark.parametrize("client", CLIENTS)
def test_repeated_upstream_tool_call_ids_are_made_unique(client: ClientFormat) -> None:
    call = {"id": "call_q", "function": {"name": "search", "arguments": {"q": "x"}}}
    upstream = ollama(ollama_msg(tool_calls=[call]), ollama_msg(tool_calls=[call]), ollama_done())
    got = outcome(client.value, translate(client, BackendKind.OLLAMA, upstream))
    assert [t[0] for t in got.tools] == ["call_q", "call_e1_1"]


@pytest.mark.parametrize("client", CLIENTS)
def test_vllm_matched_stop_string_becomes_stop_sequence(client: ClientFormat) -> None:
    finish = oa(finish="stop")
    finish["choices"][0]["stop_reason"] = "###"
    upstream = sse(oa({"content": "a"}), finish, "[DONE]")
    body = translate(client, BackendKind.VLLM, upstream, stop_sequences=("###", "END"))
    got = outcome(client.value, body)
    assert got.stop == {"chat": "stop", "responses": "completed",
                        "messages": "stop_sequence"}[client.value]
    if client is ClientFormat.MESSAGES:
        assert check_messages(body).message.stop_sequence == "###"
    # A stop_reason that is not one of the client's sequences is an ordinary end of turn.
    other = translate(client, BackendKind.VLLM, upstream, stop_sequences=("END",))
    assert outcome(client.value, other).stop in {"stop", "completed", "end_turn"}


def test_responses_stream_echoes_the_request_fields() -> None:
    from tokios_translate.clients.responses import echo_fields

    tool = {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}
    echo = echo_fields({"instructions": "Be brief.", "tools": [tool], "temperature": 0.2,
                        "max_output_tokens": 64})
    context = StreamContext(client=ClientFormat.RESPONSES, backend=BackendKind.OLLAMA, model="d",
                            response_id="e2", created=5, stream=True, echo=echo)
    translator = open_stream_translator(context)
    body = translator.feed(ollama(ollama_msg("x"), ollama_done("length", 3, 1)))
    final = check_responses(body).response
    assert (final.instructions, final.temperature) == ("Be brief.", 0.2)
    assert final.max_output_tokens == 64
    assert final.tools[0].name == "f"
    assert final.status == "incomplete" and final.output[0].status == "incomplete"


@pytest.mark.parametrize("client", CLIENTS)
def test_more_tool_call_shapes(client: ClientFormat) -> None:
    # A name and no arguments at all; no index (a new id starts a call); object arguments.
    upstream = sse(
        oa({"tool_calls": [{"id": "n1", "function": {"name": "noargs"}}]}),
        oa({"tool_calls": [{"id": "n2", "function": {"name": "obj", "arguments": {"k": [1]}}}]}),
        oa({"tool_calls": [{"function": {"arguments": ""}}]}),
        oa(finish="tool_calls"), "[DONE]",
    )
    got = outcome(client.value, translate(client, BackendKind.OPENAI, upstream))
    assert got.tools == [("n1", "noargs", {}), ("n2", "obj", {"k": [1]})]


@pytest.mark.parametrize("client", CLIENTS)
def test_ollama_string_arguments_and_a_last_line_without_newline(client: ClientFormat) -> None:
    upstream = ollama(ollama_msg(tool_calls=[{"function": {"name": "s", "arguments": '{"a":1}'}},
                                             {"function": {"name": "e", "arguments": ""}}]),
                      ollama_done()).rstrip(b"\n")
    translator = open_stream_translator(ctx(client, BackendKind.OLLAMA))
    body = translator.feed(upstream)
    assert not translator.done  # the done line is not complete until EOF
    body += translator.finish()
    assert outcome(client.value, body).tools == [("call_e1_0", "s", {"a": 1}),
                                                 ("call_e1_1", "e", {})]


def test_generated_id_that_collides_with_an_upstream_id_is_made_unique() -> None:
    calls = [{"id": "call_e1_1", "function": {"name": "a", "arguments": {}}},
             {"id": "call_e1_1", "function": {"name": "b", "arguments": {}}}]
    upstream = ollama(ollama_msg(tool_calls=calls), ollama_done())
    got = outcome("messages", translate(ClientFormat.MESSAGES, BackendKind.OLLAMA, upstream))
    assert [t[0] for t in got.tools] == ["call_e1_1", "call_e1_1_"]


def test_eof_with_a_nameless_call_after_finish_reason_is_an_error() -> None:
    upstream = sse(oa_call(0, args="{}"), oa(finish="tool_calls"))  # no [DONE]
    got = outcome("chat", translate(ClientFormat.CHAT, BackendKind.LLAMACPP, upstream))
    assert got.error == "tool call without a name"


@pytest.mark.parametrize(
    ("backend", "upstream"),
    [
        (BackendKind.OLLAMA, b'{"message": {"tool_calls": [{"function": 3}]}}\n'),
        (BackendKind.OLLAMA, b'{"message": {"tool_calls": [7]}}\n'),
        (BackendKind.LLAMACPP, b"data: [1]\n\n"),
        (BackendKind.LLAMACPP, b'data: {"choices": [7]}\n\n'),
    ],
)
def test_more_malformed_shapes(backend: BackendKind, upstream: bytes) -> None:
    for client in CLIENTS:
        got = outcome(client.value, translate(client, backend, upstream))
        assert got.error == "malformed upstream stream data"


def test_error_objects_without_a_message() -> None:
    for backend, upstream in ((BackendKind.OLLAMA, b'{"error": {}}\n'),
                              (BackendKind.VLLM, b'data: {"error": {"code": 1}}\n\n'),
                              (BackendKind.OLLAMA, b'{"error": 42}\n')):
        got = outcome("messages", translate(ClientFormat.MESSAGES, backend, upstream))
        assert got.error == "upstream error"


def test_decoders_return_nothing_once_done() -> None:
    from tokios_translate.stream.decoders import open_decoder

    decoder = open_decoder(ctx(ClientFormat.CHAT, BackendKind.OLLAMA))
    assert decoder.feed(ollama(ollama_done()))[-1].__class__.__name__ == "Finished"
    assert decoder.feed(b"{}\n") == [] and decoder.finish() == []


@pytest.mark.parametrize("client", CLIENTS)
def test_a_bug_in_an_encoder_becomes_an_internal_in_stream_error(
    client: ClientFormat, monkeypatch: pytest.MonkeyPatch
) -> None:
    translator = open_stream_translator(ctx(client, BackendKind.OLLAMA))
    body = translator.feed(b"")

    def broken(self: object, event: object) -> bytes:
        raise RuntimeError("bug")

    monkeypatch.setattr(type(translator._encoder), "encode", broken)
    body += translator.feed(ollama(ollama_msg("x")))
    assert translator.done
    assert outcome(client.value, body).error == "internal error while translating the stream"


def test_anthropic_tool_arguments_are_bounded() -> None:
    from tokios_translate.stream.encoders import messages

    piece = "x" * (messages.MAX_TOOL_ARGUMENTS // 3)
    upstream = sse(oa_call(0, id="a", name="f", args=piece), oa_call(0, args=piece),
                   oa_call(0, args=piece), oa_call(0, args=piece))
    got = outcome("messages", translate(ClientFormat.MESSAGES, BackendKind.LLAMACPP, upstream))
    assert got.error == "tool call arguments exceed the size limit"
