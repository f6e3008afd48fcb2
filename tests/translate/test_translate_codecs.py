"""Unit tests of what the golden matrix does not pin: per-backend differences, the stream
context, passthrough, count_tokens, models, embeddings, error envelopes and limits."""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson
import pytest
import translate_sdk_check as sdk
from anthropic.types import ModelInfo
from translate_convo import HI_TURNS, Convo, to_chat, to_messages, to_responses

import tokios_translate
from tokios_translate import (
    BackendKind,
    ClientFormat,
    ErrorKind,
    TranslationError,
    count_tokens,
    error_response,
    models_request,
    tokenize_request,
    translate_embeddings_request,
    translate_embeddings_response,
    translate_models,
    translate_request,
    translate_response,
)
from tokios_translate.backends import openai_compat
from tokios_translate.ir import Reasoning, ToolCall

CHAT, RESP, MSG = ClientFormat.CHAT, ClientFormat.RESPONSES, ClientFormat.MESSAGES


def up(client: ClientFormat, request: dict[str, Any], backend: BackendKind = BackendKind.OLLAMA,
       **kw: Any) -> tokios_translate.UpstreamRequest:
    return translate_request(client, orjson.dumps(request), backend=backend,
                             upstream_model="m-up", deployment="dep", response_id="r9",
                             created=1_700_000_000, **kw)


def body(u: tokios_translate.UpstreamRequest) -> dict[str, Any]:
    return orjson.loads(u.body)  # type: ignore[no-any-return]


HISTORY_WITH_THINKING = Convo(turns=[("user", [("text", "q")]),
                                     ("assistant", [("thinking", "hmm"), ("text", "a")]),
                                     ("user", [("text", "q2")])])


@pytest.mark.parametrize(("backend", "field"), [
    (BackendKind.LLAMACPP, "reasoning_content"), (BackendKind.VLLM, "reasoning"),
    (BackendKind.LMSTUDIO, "reasoning"), (BackendKind.OPENAI, None)])
def test_reasoning_history_uses_each_backends_field(
    backend: BackendKind, field: str | None
) -> None:
    assistant = body(up(MSG, to_messages(HISTORY_WITH_THINKING), backend))["messages"][1]
    expected: dict[str, Any] = {"role": "assistant", "content": "a"}
    if field:
        expected[field] = "hmm"
    assert assistant == expected


@pytest.mark.parametrize("backend", [BackendKind.OPENAI, BackendKind.LMSTUDIO])
def test_top_k_and_thinking_switch_per_backend(backend: BackendKind) -> None:
    sent = body(up(CHAT, to_chat(Convo(turns=HI_TURNS), top_k=5, reasoning_effort="none"),
                   backend))
    assert ("top_k" in sent) is (backend is BackendKind.LMSTUDIO)
    assert "chat_template_kwargs" not in sent
    limited = body(up(CHAT, to_chat(Convo(turns=HI_TURNS), max_tokens=9), backend))
    name = "max_completion_tokens" if backend is BackendKind.OPENAI else "max_tokens"
    assert limited[name] == 9 and len({"max_tokens", "max_completion_tokens"} & set(limited)) == 1


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning", "thinking"])
def test_every_reasoning_field_is_accepted_from_openai_compatible(field: str) -> None:
    answer = {"choices": [{"message": {"role": "assistant", "content": "x", field: "why"},
                           "finish_reason": "stop"}]}
    completion = openai_compat.decode_response(orjson.dumps(answer), "r")
    assert completion.parts[0] == Reasoning(text="why")


def test_chat_client_reasoning_fields_are_accepted() -> None:
    request = to_chat(Convo(turns=HI_TURNS))
    request["messages"] = [{"role": "user", "content": "q"},
                           {"role": "assistant", "content": "a", "reasoning": "hmm"},
                           {"role": "user", "content": "q2"}]
    assert body(up(CHAT, request))["messages"][1]["thinking"] == "hmm"


def test_streamed_requests_ask_for_usage_and_set_accept() -> None:
    ollama = up(CHAT, to_chat(Convo(turns=HI_TURNS), stream=True))
    assert body(ollama)["stream"] is True and ollama.stream
    assert ("accept", "application/x-ndjson") in ollama.headers
    sse = up(CHAT, to_chat(Convo(turns=HI_TURNS), stream=True), BackendKind.VLLM)
    assert body(sse)["stream_options"] == {"include_usage": True}
    assert ("accept", "text/event-stream") in sse.headers
    assert not sse.context.include_usage  # the client did not ask for the usage chunk


def test_num_ctx_comes_from_the_connector() -> None:
    sent = body(up(MSG, to_messages(Convo(turns=HI_TURNS)), num_ctx=65536))
    assert sent["options"] == {"num_predict": 1024, "num_ctx": 65536}


def test_stream_context_carries_what_the_answer_needs() -> None:
    ctx = up(CHAT, to_chat(Convo(system="s" * 400, turns=HI_TURNS), stream=True,
                           stream_options={"include_usage": True}, stop="END",
                           parallel_tool_calls=False)).context
    assert (ctx.client, ctx.backend, ctx.model, ctx.response_id, ctx.created) == (
        CHAT, BackendKind.OLLAMA, "dep", "r9", 1_700_000_000)
    assert ctx.stream and ctx.include_usage and not ctx.parallel_tool_calls
    assert ctx.stop_sequences == ("END",)
    assert 100 <= ctx.estimated_input_tokens <= 110
    again = up(CHAT, to_chat(Convo(system="s" * 400, turns=HI_TURNS))).context
    assert again.estimated_input_tokens == ctx.estimated_input_tokens


def test_responses_context_echoes_request_fields() -> None:
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}}]
    ctx = up(RESP, to_responses(Convo(turns=HI_TURNS), instructions="be nice", tools=tools,
                                temperature=0.5)).context
    assert ctx.echo["instructions"] == "be nice"
    assert ctx.echo["tools"] == tools
    assert ctx.echo["temperature"] == 0.5
    assert ctx.echo["tool_choice"] == "auto"


def test_responses_items_group_into_turns_with_parallel_calls() -> None:
    request = {"model": "x", "input": [
        {"role": "user", "content": "go"},
        {"type": "reasoning", "id": "rs", "summary": [{"type": "summary_text", "text": "t"}]},
        {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "b", "name": "g", "arguments": "{\"x\":1}"},
        {"type": "function_call_output", "call_id": "a", "output": "1"},
        {"type": "function_call_output", "call_id": "b", "output": "2"},
    ]}
    messages = body(up(RESP, request))["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool"]
    assert messages[1]["thinking"] == "t"
    assert [c["function"]["name"] for c in messages[1]["tool_calls"]] == ["f", "g"]
    assert [m["tool_name"] for m in messages[2:]] == ["f", "g"]


def test_messages_redacted_thinking_is_dropped_and_same_role_turns_merged() -> None:
    request = to_messages(Convo(turns=[("user", [("text", "a")]), ("user", [("text", "b")])]))
    request["messages"].append({"role": "assistant", "content": [
        {"type": "redacted_thinking", "data": "xxx"}, {"type": "text", "text": "ok"}]})
    for backend in (BackendKind.OLLAMA, BackendKind.LLAMACPP):
        messages = body(up(MSG, request, backend))["messages"]
        assert messages == [{"role": "user", "content": "a\nb"},
                            {"role": "assistant", "content": "ok"}]


def test_cached_tokens_are_not_counted_twice_for_anthropic() -> None:
    answer = {"choices": [{"message": {"role": "assistant", "content": "x"},
                           "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 100, "completion_tokens": 5,
                        "prompt_tokens_details": {"cached_tokens": 60}}}
    usage = {}
    for client in (CHAT, RESP, MSG):  # the formats that report cached tokens
        ctx = up(client, {"model": "x", "max_tokens": 5, "input": "q",
                          "messages": [{"role": "user", "content": "q"}]},
                 BackendKind.VLLM).context
        usage[client] = orjson.loads(translate_response(ctx, 200, orjson.dumps(answer)).body)[
            "usage"]
    assert usage[MSG]["input_tokens"] == 40 and usage[MSG]["cache_read_input_tokens"] == 60
    assert usage[CHAT]["prompt_tokens"] == 100
    assert usage[CHAT]["prompt_tokens_details"] == {"cached_tokens": 60}
    assert usage[RESP]["input_tokens"] == 100
    assert usage[RESP]["input_tokens_details"]["cached_tokens"] == 60


def test_non_object_tool_arguments_reach_anthropic_as_an_object() -> None:
    ctx = up(MSG, to_messages(Convo(turns=HI_TURNS)), BackendKind.VLLM).context
    answer = {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "not json"}}]},
        "finish_reason": "tool_calls"}]}
    out = translate_response(ctx, 200, orjson.dumps(answer))
    message = sdk.message(out.body)
    assert message.content[0].input == {"_raw_arguments": "not json"}  # type: ignore[union-attr]
    assert message.stop_reason == "tool_use"


# -- passthrough ----------------------------------------------------------------------------------

def test_passthrough_only_rewrites_the_model() -> None:
    request = to_messages(Convo(turns=HI_TURNS), thinking={"type": "enabled",
                                                          "budget_tokens": 2048}, odd=1)
    u = up(MSG, request, BackendKind.LLAMACPP, passthrough=True)
    assert u.path == "/v1/messages" and u.context.passthrough
    assert body(u) == {**request, "model": "m-up"}
    answer = {"id": "msg_x", "type": "message", "model": "m-up", "content": []}
    out = translate_response(u.context, 200, orjson.dumps(answer))
    assert orjson.loads(out.body) == {**answer, "model": "dep"}
    err = translate_response(u.context, 500, b"oops")
    assert (err.status, err.body) == (500, b"oops")


def test_passthrough_falls_back_to_translation_when_not_native() -> None:
    u = up(MSG, to_messages(Convo(turns=HI_TURNS)), BackendKind.OPENAI, passthrough=True)
    assert u.path == "/v1/chat/completions" and not u.context.passthrough


# -- count_tokens ---------------------------------------------------------------------------------

def test_count_tokens_estimate_and_tokenizer() -> None:
    request = orjson.dumps(to_messages(Convo(system="x" * 40, turns=HI_TURNS)))
    assert tokenize_request(request, backend=BackendKind.OLLAMA, upstream_model="m") is None
    estimate = count_tokens(request)
    assert estimate.status == 200
    assert sdk.count_tokens(estimate.body).input_tokens == 12  # (40 + 2 + 4) / 4, rounded up
    call = tokenize_request(request, backend=BackendKind.LLAMACPP, upstream_model="m")
    assert call is not None and call.path == "/tokenize"
    assert orjson.loads(call.body)["content"] == "x" * 40 + "\nhi"
    vllm = tokenize_request(request, backend=BackendKind.VLLM, upstream_model="m")
    assert vllm is not None and orjson.loads(vllm.body)["model"] == "m"
    exact = count_tokens(request, tokenizer_status=200, tokenizer_body=b'{"tokens":[1,2,3]}')
    assert sdk.count_tokens(exact.body).input_tokens == 3
    counted = count_tokens(request, tokenizer_status=200, tokenizer_body=b'{"count":9}')
    assert sdk.count_tokens(counted.body).input_tokens == 9
    fallback = count_tokens(request, tokenizer_status=500, tokenizer_body=b"err")
    assert fallback.body == estimate.body


def test_count_tokens_does_not_need_max_tokens_and_reports_errors() -> None:
    request = to_messages(Convo(turns=HI_TURNS))
    del request["max_tokens"]
    assert count_tokens(orjson.dumps(request)).status == 200
    bad = count_tokens(b'{"model":"x"}')
    assert bad.status == 400 and sdk.anthropic_error(bad.body)["error"]["type"] == (
        "invalid_request_error")


# -- models and embeddings ------------------------------------------------------------------------

def test_models_from_ollama_and_openai_compatible() -> None:
    assert models_request(BackendKind.OLLAMA).path == "/api/tags"
    assert models_request(BackendKind.VLLM).path == "/v1/models"
    tags = orjson.dumps({"models": [{"name": "qwen3:8b", "model": "qwen3:8b"},
                                    {"name": "llama3:8b", "model": "llama3:8b"}]})
    out = translate_models(CHAT, BackendKind.OLLAMA, 200, tags, created=5)
    assert sdk.models_list(out.body) == ["qwen3:8b", "llama3:8b"]
    mapped = translate_models(CHAT, BackendKind.OLLAMA, 200, tags, created=5,
                              names={"qwen3:8b": "coder"})
    assert sdk.models_list(mapped.body) == ["coder"]
    listing = orjson.dumps({"object": "list", "data": [{"id": "a", "object": "model"}]})
    anthropic = orjson.loads(translate_models(MSG, BackendKind.LLAMACPP, 200, listing,
                                              created=86400 * 365).body)
    info = ModelInfo.model_validate_json(orjson.dumps(anthropic["data"][0]), strict=True)
    sdk.no_unknown_keys(info)
    assert info.id == "a" and info.created_at.isoformat() == "1971-01-01T00:00:00+00:00"
    assert anthropic["has_more"] is False
    failed = translate_models(CHAT, BackendKind.OLLAMA, 500, b"{}", created=5)
    assert failed.status == 502
    garbage = translate_models(CHAT, BackendKind.OLLAMA, 200, b"[1]", created=5)
    assert garbage.status == 502 and sdk.openai_error(garbage.body).type == "server_error"


@pytest.mark.parametrize("fmt", ["float", "base64"])
def test_embeddings_via_ollama(fmt: str) -> None:
    request = orjson.dumps({"model": "dep", "input": ["a", "b"], "encoding_format": fmt,
                            "dimensions": 2})
    call, ctx = translate_embeddings_request(request, backend=BackendKind.OLLAMA,
                                             upstream_model="nomic", deployment="emb")
    assert call.path == "/api/embed"
    assert orjson.loads(call.body) == {"model": "nomic", "input": ["a", "b"], "dimensions": 2}
    answer = orjson.dumps({"model": "nomic", "embeddings": [[0.5, -1.0], [0.25, 2.0]],
                           "prompt_eval_count": 4})
    out = translate_embeddings_response(ctx, 200, answer)
    parsed = orjson.loads(out.body)
    first = parsed["data"][0]["embedding"]
    if fmt == "base64":
        first = list(struct.unpack("<2f", base64.b64decode(first)))
    else:
        sdk.embeddings(out.body)
    assert first == [0.5, -1.0]
    assert parsed["model"] == "emb" and parsed["usage"] == {"prompt_tokens": 4,
                                                            "total_tokens": 4}


def test_embeddings_via_openai_compatible_and_refusals() -> None:
    request = orjson.dumps({"model": "dep", "input": [[1, 2, 3]]})
    with pytest.raises(TranslationError):
        translate_embeddings_request(request, backend=BackendKind.OLLAMA, upstream_model="n",
                                     deployment="emb")
    call, ctx = translate_embeddings_request(request, backend=BackendKind.VLLM,
                                             upstream_model="n", deployment="emb")
    assert call.path == "/v1/embeddings" and orjson.loads(call.body)["input"] == [[1, 2, 3]]
    answer = orjson.dumps({"data": [{"index": 1, "embedding": [2.0]},
                                    {"index": 0, "embedding": [1.0]}],
                           "usage": {"prompt_tokens": 3, "total_tokens": 3}})
    parsed = sdk.embeddings(translate_embeddings_response(ctx, 200, answer).body)
    assert [d.embedding for d in parsed.data] == [[1.0], [2.0]]
    assert translate_embeddings_response(ctx, 404, b'{"error":"nope"}').status == 404
    with pytest.raises(TranslationError):
        translate_embeddings_request(b'{"model":"x","input":[]}', backend=BackendKind.VLLM,
                                     upstream_model="n", deployment="e")


# -- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(ErrorKind))
@pytest.mark.parametrize("client", list(ClientFormat))
def test_every_error_kind_in_every_envelope(kind: ErrorKind, client: ClientFormat) -> None:
    out = error_response(client, TranslationError(kind, "went wrong", param="x"))
    if client is MSG:
        sdk.anthropic_error(out.body)
        assert out.status == (529 if kind is ErrorKind.OVERLOADED else
                              TranslationError(kind, "m").status)
    elif client.speaks_ollama:  # Ollama's envelope: {"error": "..."} and the status
        assert orjson.loads(out.body) == {"error": "went wrong"}
        assert out.status == TranslationError(kind, "m").status
    else:
        error = sdk.openai_error(out.body)
        assert error.param == "x"
        assert out.status == TranslationError(kind, "m").status
    has_retry = ("retry-after", "1") in out.headers
    assert has_retry is (kind in (ErrorKind.RATE_LIMITED, ErrorKind.OVERLOADED))


@pytest.mark.parametrize(("status", "expected"), [
    (400, 400), (401, 502), (404, 404), (413, 413), (422, 400), (429, 429), (500, 502),
    (503, 503), (504, 504)])
def test_upstream_status_mapping(status: int, expected: int) -> None:
    ctx = up(CHAT, to_chat(Convo(turns=HI_TURNS)), BackendKind.VLLM).context
    upstream_body = orjson.dumps({"object": "error", "message": "m" * 1000, "type": "x"})
    out = translate_response(ctx, status, upstream_body)
    assert out.status == expected
    assert len(sdk.openai_error(out.body).message) < 400


def test_malformed_or_error_answers_become_upstream_errors() -> None:
    ctx = up(MSG, to_messages(Convo(turns=HI_TURNS))).context
    for answer in (b"not json", b"[]", b'{"message": 5}', b'{"error": "boom"}'):
        out = translate_response(ctx, 200, answer)
        assert out.status == 502, answer
        sdk.anthropic_error(out.body)


@pytest.mark.parametrize(("client", "request_body", "param"), [
    (CHAT, b"{", None), (CHAT, b"[]", None),
    (CHAT, b'{"model":"x","messages":[]}', "messages"),
    (CHAT, b'{"model":"x","messages":[{"role":"user","content":"hi"}],"n":2}', "n"),
    (CHAT, b'{"model":"x","messages":[{"role":"function","content":"hi"}]}',
     "messages[0].role"),
    (CHAT, b'{"model":"x","messages":[{"role":"user","content":"hi"}],"temperature":"hot"}',
     "temperature"),
    (MSG, b'{"model":"x","messages":[{"role":"user","content":"hi"}]}', "max_tokens"),
    (MSG, b'{"model":"x","max_tokens":1,"messages":[{"role":"user","content":[{"type":'
          b'"document","source":{}}]}]}', "messages[0].content[0].source.type"),
    (MSG, b'{"model":"x","max_tokens":1,"messages":[{"role":"user","content":[{"type":'
          b'"hologram"}]}]}', "messages[0].content[0].type"),
    (RESP, b'{"model":"x","input":[{"type":"item_reference","id":"x"}]}', "input[0].type"),
    (RESP, b'{"model":"x","input":"hi","conversation":"c"}', "conversation"),
])
def test_invalid_requests_name_the_field(client: ClientFormat, request_body: bytes,
                                         param: str | None) -> None:
    with pytest.raises(TranslationError) as caught:
        translate_request(client, request_body, backend=BackendKind.OLLAMA, upstream_model="m",
                          deployment="d", response_id="r", created=0)
    assert caught.value.kind is ErrorKind.INVALID_REQUEST
    assert caught.value.param == param
    assert "hot" not in caught.value.message  # values are never echoed


def test_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tokios_translate._parse.MAX_BODY_BYTES", 100)
    with pytest.raises(TranslationError) as caught:
        up(CHAT, to_chat(Convo(turns=[("user", [("text", "x" * 200)])])))
    assert caught.value.status == 413
    monkeypatch.undo()
    deep: dict[str, Any] = {"type": "object"}
    for _ in range(70):
        deep = {"type": "object", "properties": {"a": deep}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": deep}}]
    with pytest.raises(TranslationError) as caught:
        up(CHAT, to_chat(Convo(turns=HI_TURNS), tools=tools))
    assert caught.value.param == "tools[0].function.parameters"
    with pytest.raises(TranslationError):
        up(CHAT, to_chat(Convo(turns=HI_TURNS), stop=[str(i) for i in range(17)]))
    with pytest.raises(TranslationError):
        up(CHAT, to_chat(Convo(turns=HI_TURNS), tools=tools[:1] * 513))


def test_parallel_off_keeps_only_the_first_call_in_the_ir() -> None:
    ctx = up(CHAT, to_chat(Convo(turns=HI_TURNS), parallel_tool_calls=False)).context
    answer = {"message": {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "a", "arguments": {}}}, {"function": {"name": "b", "arguments": {}}}
    ]}, "done": True, "done_reason": "stop"}
    completion = tokios_translate.decode_completion(ctx, orjson.dumps(answer))
    assert [p.name for p in completion.parts if isinstance(p, ToolCall)] == ["a"]


def test_facade_reexports_the_stream_translator() -> None:
    from tokios_translate.stream import open_stream_translator
    assert tokios_translate.open_stream_translator is open_stream_translator


def test_depth_counts_levels() -> None:
    from tokios_translate._parse import depth

    assert depth(1) == 1
    assert depth({"a": [1, {"b": 2}]}) == 3
    assert depth([[[[]]]], limit=2) == 3


def test_tool_arguments_text_nested_too_deep_is_a_clean_error() -> None:
    arguments = "{\"a\":" * 300 + "1" + "}" * 300
    request = to_chat(Convo(turns=HI_TURNS))
    request["messages"] = [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}]}]
    with pytest.raises(TranslationError) as caught:
        up(CHAT, request)
    assert caught.value.status == 400


@pytest.mark.parametrize("client", list(ClientFormat))
def test_answer_with_arguments_nested_too_deep_is_a_clean_error(client: ClientFormat) -> None:
    ctx = up(client, {"model": "x", "max_tokens": 5, "messages": [{"role": "user",
                                                                    "content": "q"}],
                      "input": "q", "prompt": "q"}, BackendKind.VLLM).context
    arguments = "{\"a\":" * 300 + "1" + "}" * 300
    answer = {"choices": [{"message": {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}]},
        "finish_reason": "tool_calls"}]}
    out = translate_response(ctx, 200, orjson.dumps(answer))
    assert out.status in (200, 502)
    if out.status == 502:
        assert b"malformed" in out.body


def test_tokenizer_prompt_covers_every_part() -> None:
    from tokios_translate.tokens import prompt_text

    convo = Convo(system="S", tools=[{"name": "f", "description": "d", "schema": {}}], turns=[
        ("user", [("text", "u"), ("image", "AAAA")]),
        ("assistant", [("thinking", "t"), ("call", "c1", "f", {"a": 1})]),
        ("user", [("result", "c1", [("text", "r"), ("image", "AAAA")], False)]),
    ])
    from tokios_translate.clients import messages

    text, images = prompt_text(messages.decode_request(to_messages(convo)))
    assert text == 'S\nf d {}\nu\nt\nf {"a":1}\nr'
    assert images == 2


def test_passthrough_needs_a_model_and_keeps_non_json_answers() -> None:
    with pytest.raises(TranslationError):
        translate_request(CHAT, b'{"messages":[]}', backend=BackendKind.VLLM,
                          upstream_model="m", deployment="d", response_id="r", created=0,
                          passthrough=True)
    u = up(CHAT, to_chat(Convo(turns=HI_TURNS)), BackendKind.VLLM, passthrough=True)
    assert translate_response(u.context, 200, b"plain").body == b"plain"
    assert translate_response(u.context, 200, b'{"no_model":1}').body == b'{"no_model":1}'


@pytest.mark.parametrize("request_body", [
    b'{"model":"x","input":"a","encoding_format":"hex"}', b'{"model":"x","input":[true]}',
    b'{"input":"a"}'])
def test_invalid_embeddings_requests(request_body: bytes) -> None:
    with pytest.raises(TranslationError) as caught:
        translate_embeddings_request(request_body, backend=BackendKind.VLLM, upstream_model="m",
                                     deployment="d")
    assert caught.value.status == 400


def test_tool_calls_finish_without_calls_is_end_turn() -> None:
    answer = {"choices": [{"message": {"role": "assistant", "content": "hi", "tool_calls": []},
                           "finish_reason": "tool_calls"}]}
    completion = openai_compat.decode_response(orjson.dumps(answer), "r")
    assert completion.stop_reason.value == "end_turn"
    named = {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        "finish_reason": "stop"}]}  # vLLM with a named tool_choice
    assert openai_compat.decode_response(orjson.dumps(named), "r").stop_reason.value == (
        "tool_use")


def test_chat_content_part_limit() -> None:
    request = to_chat(Convo(turns=HI_TURNS))
    request["messages"][0]["content"] = [{"type": "text", "text": "x"}] * 2001
    with pytest.raises(TranslationError) as caught:
        up(CHAT, request)
    assert caught.value.param == "messages[0].content"


def test_whole_and_streamed_answers_share_ids_and_the_signature_placeholder() -> None:
    from tokios_translate import ids, stream
    from tokios_translate.stream import decoders

    assert ids.SIGNATURE_PLACEHOLDER == stream.THINKING_SIGNATURE_PLACEHOLDER
    assert ids.tool_call_id("r1", 2) == decoders.generated_tool_call_id("r1", 2)


def test_models_list_without_a_backend() -> None:
    from tokios_translate import models_list

    out = models_list(CHAT, ["a", "b", "a"], created=3)
    assert sdk.models_list(out.body) == ["a", "b"]
    anthropic = orjson.loads(models_list(MSG, [], created=3).body)
    assert anthropic == {"data": [], "has_more": False, "first_id": None, "last_id": None}
