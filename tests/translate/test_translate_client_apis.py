"""The client codecs of Ollama's native API (``/api/chat``, ``/api/generate``, ``/api/embed`` and
the listings) and OpenAI's legacy ``/v1/completions``, on both upstream codecs.

Requests: what reaches each backend. Answers: whole and streamed, parsed with the official
clients' own types (tests/translate/stream/stream_client_apis_check.py), and a streamed answer
accumulates to exactly the whole one. The end-to-end path is tests/e2e/test_e2e_client_apis.py.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anthropic
import ollama
import openai
import orjson
import pytest
from test_translate_stream_agreement import ANSWERS, upstream_stream
from translate_convo import Answer, ollama_answer, openai_answer

from tokios_translate import (
    BackendKind,
    ClientFormat,
    ErrorKind,
    StreamContext,
    TranslationError,
    UpstreamRequest,
    error_response,
    open_stream_translator,
    translate_embeddings_request,
    translate_embeddings_response,
    translate_request,
    translate_response,
)
from tokios_translate.clients import ollama_client
from tokios_translate.models import list_body, model_body

sys.path.insert(0, str(Path(__file__).parent / "stream"))
from stream_client_apis_check import Result, check_completions, check_ollama

OCHAT, OGEN, CMPL = ClientFormat.OLLAMA_CHAT, ClientFormat.OLLAMA_GENERATE, ClientFormat.COMPLETIONS
OLLAMA, LLAMACPP = BackendKind.OLLAMA, BackendKind.LLAMACPP
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                         "parameters": {"type": "object"}}}
PNG = "iVBORw0KGgoAAAANSUhEUg=="


def up(client: ClientFormat, body: dict[str, Any], backend: BackendKind = OLLAMA
       ) -> UpstreamRequest:
    return translate_request(client, orjson.dumps(body), backend=backend, upstream_model="m",
                             deployment="dep", response_id="r1", created=1_750_000_000)


def sent(client: ClientFormat, body: dict[str, Any], backend: BackendKind = OLLAMA
         ) -> tuple[str, dict[str, Any]]:
    upstream = up(client, body, backend)
    return upstream.path, orjson.loads(upstream.body)


def refused(client: ClientFormat, body: dict[str, Any], backend: BackendKind = OLLAMA
            ) -> TranslationError:
    with pytest.raises(TranslationError) as caught:
        up(client, body, backend)
    assert caught.value.status == 400
    return caught.value


# -- /api/chat requests --------------------------------------------------------------------------

def test_ollama_chat_maps_options_think_format_and_stream_default() -> None:
    body = {"model": "dep", "messages": [{"role": "system", "content": "S"},
                                         {"role": "user", "content": "hi", "images": [PNG]}],
            "options": {"num_predict": 9, "temperature": 0.5, "top_p": 0.9, "top_k": 4,
                        "seed": 3, "stop": ["x"], "num_ctx": 99999, "repeat_penalty": 1.1},
            "think": "high", "format": {"type": "object"}, "keep_alive": "5m"}
    path, ollama_body = sent(OCHAT, body)
    assert path == "/api/chat" and ollama_body["stream"] is True  # Ollama streams by default
    assert ollama_body["messages"] == [{"role": "system", "content": "S"},
                                       {"role": "user", "content": "hi", "images": [PNG]}]
    assert ollama_body["options"] == {"num_predict": 9, "temperature": 0.5, "top_p": 0.9,
                                      "top_k": 4, "seed": 3, "stop": ["x"]}  # num_ctx dropped
    assert ollama_body["think"] == "high" and ollama_body["format"] == {"type": "object"}
    assert "keep_alive" not in ollama_body
    path, chat = sent(OCHAT, {**body, "stream": False}, LLAMACPP)
    assert path == "/v1/chat/completions" and chat["stream"] is False
    assert chat["messages"][1]["content"][1] == {
        "type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    assert (chat["max_tokens"], chat["top_k"], chat["reasoning_effort"]) == (9, 4, "high")
    assert chat["response_format"]["type"] == "json_schema"
    assert sent(OCHAT, {**body, "format": "json", "think": False}, LLAMACPP)[1][
        "response_format"] == {"type": "json_object"}
    assert "max_tokens" not in sent(OCHAT, {**body, "options": {"num_predict": -1}},
                                    LLAMACPP)[1]


def test_ollama_tool_results_find_their_call_without_ids() -> None:
    body = {"model": "dep", "tools": [TOOL], "messages": [
        {"role": "user", "content": "weather in Paris and Tokyo?"},
        {"role": "assistant", "content": "", "thinking": "two calls", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"function": {"name": "get_time", "arguments": {}}}]},
        {"role": "tool", "tool_name": "get_time", "content": "noon"},
        {"role": "tool", "content": "sunny"}]}
    messages = sent(OCHAT, body, LLAMACPP)[1]["messages"]
    calls = messages[1]["tool_calls"]
    assert [c["id"] for c in calls] == ["call_1_0", "call_1_1"]
    assert calls[0]["function"]["arguments"] == '{"city":"Paris"}'
    assert messages[1]["reasoning_content"] == "two calls"
    assert [(m["tool_call_id"], m["content"]) for m in messages[2:]] == [
        ("call_1_1", "noon"), ("call_1_0", "sunny")]  # by name, then the one left
    ollama_messages = sent(OCHAT, body)[1]["messages"]
    assert ollama_messages[2] == {"role": "tool", "content": "noon", "tool_call_id": "call_1_1",
                                  "tool_name": "get_time"}
    given = {**body, "messages": [*body["messages"][:2], {
        "role": "tool", "tool_call_id": "call_1_1", "content": "x"}]}
    assert sent(OCHAT, given, LLAMACPP)[1]["messages"][2]["tool_call_id"] == "call_1_1"


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "dep", "messages": []}, "messages"),
    ({"model": "dep", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"model": "dep", "messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
    ({"model": "dep", "messages": [{"role": "user", "images": [7]}]}, "messages[0].images"),
    ({"model": "dep", "messages": [{"role": "user"}], "think": "max"}, "think"),
    ({"model": "dep", "messages": [{"role": "user"}], "format": "yaml"}, "format"),
    ({"model": "dep", "messages": [{"role": "user"}], "options": {"top_k": "a"}},
     "options.top_k"),
    ({"model": "dep", "messages": [{"role": "user"}], "tools": [{"type": "web"}]},
     "tools[0].type"),
])
def test_ollama_chat_refusals_name_the_field(body: dict[str, Any], param: str) -> None:
    err = refused(OCHAT, body)
    assert err.param == param
    answer = error_response(OCHAT, err)
    assert answer.status == 400 and set(orjson.loads(answer.body)) == {"error"}


# -- /api/generate and /v1/completions requests --------------------------------------------------

def test_generate_with_a_template_is_a_one_turn_chat() -> None:
    body = {"model": "dep", "prompt": "why?", "system": "Be brief.", "images": [PNG],
            "think": True, "stream": False}
    path, chat = sent(OGEN, body, LLAMACPP)
    assert path == "/v1/chat/completions"
    assert chat["messages"][0] == {"role": "system", "content": "Be brief."}
    assert chat["messages"][1]["content"][0] == {"type": "text", "text": "why?"}
    assert chat["chat_template_kwargs"] == {"enable_thinking": True}
    assert sent(OGEN, body)[0] == "/api/chat"


def test_raw_generate_and_suffix_are_prompts() -> None:
    path, raw = sent(OGEN, {"model": "dep", "prompt": "<s>x", "raw": True,
                            "options": {"num_predict": 3}})
    assert path == "/api/generate"
    assert raw == {"model": "m", "prompt": "<s>x", "stream": True, "raw": True,
                   "options": {"num_predict": 3}}
    path, fim = sent(OGEN, {"model": "dep", "prompt": "a", "suffix": "b", "stream": False})
    assert path == "/api/generate" and fim["suffix"] == "b" and "raw" not in fim
    path, llama = sent(OGEN, {"model": "dep", "prompt": "<s>x", "raw": True}, LLAMACPP)
    assert path == "/v1/completions"
    assert llama == {"model": "m", "prompt": "<s>x", "stream": True,
                     "stream_options": {"include_usage": True}}
    path, infill = sent(OGEN, {"model": "dep", "prompt": "a", "suffix": "b", "stream": False,
                               "options": {"num_predict": 4, "stop": ["\n"]}}, LLAMACPP)
    assert path == "/infill"
    assert infill == {"model": "m", "input_prefix": "a", "input_suffix": "b", "prompt": "",
                      "stream": False, "n_predict": 4, "stop": ["\n"]}
    for backend in (BackendKind.VLLM, BackendKind.LMSTUDIO, BackendKind.OPENAI):
        assert refused(OGEN, {"model": "dep", "prompt": "a", "suffix": "b"}, backend).param == \
            "suffix"
    assert "raw mode" in refused(OGEN, {"model": "dep", "prompt": "a", "raw": True,
                                        "system": "s"}).message
    assert refused(OGEN, {"model": "dep", "prompt": "a", "raw": True,
                          "images": [PNG]}).param == "images"


def test_completions_request() -> None:
    body = {"model": "dep", "prompt": ["def f("], "suffix": "return 1", "max_tokens": 8,
            "temperature": 0.2, "top_p": 0.5, "stop": "\n\n", "seed": 1,
            "presence_penalty": 0.1, "logit_bias": {"1": 2}, "user": "u", "stream": True}
    path, gen = sent(CMPL, body)
    assert path == "/api/generate" and gen["suffix"] == "return 1" and gen["stream"] is True
    assert gen["options"] == {"num_predict": 8, "temperature": 0.2, "top_p": 0.5, "seed": 1,
                              "presence_penalty": 0.1, "stop": ["\n\n"]}
    no_suffix = {k: v for k, v in body.items() if k != "suffix"}
    path, llama = sent(CMPL, no_suffix, LLAMACPP)
    assert path == "/v1/completions"
    assert llama == {"model": "m", "prompt": "def f(", "stream": True,
                     "stream_options": {"include_usage": True}, "max_tokens": 8,
                     "temperature": 0.2, "top_p": 0.5, "seed": 1, "presence_penalty": 0.1,
                     "stop": ["\n\n"]}
    assert up(CMPL, body).context.prompt and not up(CMPL, body).context.include_usage


@pytest.mark.parametrize(("extra", "param"), [
    ({"prompt": ["a", "b"]}, "prompt"), ({"prompt": [1, 2, 3]}, "prompt"), ({"prompt": None},
                                                                             "prompt"),
    ({"n": 2}, "n"), ({"best_of": 2}, "best_of"), ({"echo": True}, "echo"),
    ({"logprobs": 0}, "logprobs"),
])
def test_completions_refusals(extra: dict[str, Any], param: str) -> None:
    err = refused(CMPL, {"model": "dep", "prompt": "x", **extra})
    assert err.param == param
    error = openai.types.ErrorObject.model_validate(  # OpenAI's own envelope
        orjson.loads(error_response(CMPL, err).body)["error"])
    assert error.type == "invalid_request_error"


def test_completions_accepts_what_it_can_serve() -> None:
    for extra in ({"n": 1}, {"best_of": 1}, {"echo": False}, {"logprobs": None}):
        assert up(CMPL, {"model": "dep", "prompt": "x", **extra}).path == "/api/generate"


# -- answers: whole and streamed agree -----------------------------------------------------------

def whole_result(client: ClientFormat, body: bytes) -> Result:
    obj = orjson.loads(body)
    if client is CMPL:
        completion = openai.types.Completion.model_validate(obj)
        choice = completion.choices[0]
        assert completion.usage is not None
        return Result(text=choice.text, done_reason=choice.finish_reason,
                      usage=(completion.usage.prompt_tokens, completion.usage.completion_tokens))
    if client is OCHAT:
        chat = ollama.ChatResponse.model_validate(obj)
        return Result(text=chat.message.content or "", thinking=chat.message.thinking or "",
                      calls=[(c.function.name, dict(c.function.arguments))
                             for c in chat.message.tool_calls or []],
                      done_reason=chat.done_reason,
                      usage=(chat.prompt_eval_count or 0, chat.eval_count or 0))
    gen = ollama.GenerateResponse.model_validate(obj)
    return Result(text=gen.response or "", thinking=gen.thinking or "",
                  done_reason=gen.done_reason,
                  usage=(gen.prompt_eval_count or 0, gen.eval_count or 0))


def streamed_result(client: ClientFormat, stream: bytes) -> Result:
    result = check_completions(stream) if client is CMPL else check_ollama(
        stream, chat=client is OCHAT)
    if result.usage is None:
        result.usage = (0, 0)
    return result


def prompt_stream(backend: BackendKind, answer: Answer) -> bytes:
    """A prompt answer as the backend streams it: ``/api/generate`` NDJSON or
    ``/v1/completions`` SSE."""
    usage = answer.usage or (0, 0)
    if backend.speaks_ollama:
        lines: list[dict[str, Any]] = []
        if answer.thinking:
            lines.append({"response": "", "thinking": answer.thinking, "done": False})
        lines += [{"response": w, "done": False} for w in answer.text.split(" ") if w]
        lines.append({"response": "", "done": True, "done_reason": answer.finish,
                      "prompt_eval_count": usage[0], "eval_count": usage[1]})
        return b"".join(orjson.dumps(line) + b"\n" for line in lines)
    chunks: list[dict[str, Any]] = [{"choices": [{"text": w, "index": 0, "finish_reason": None}]}
                                    for w in answer.text.split(" ") if w]
    chunks.append({"choices": [{"text": "", "index": 0, "finish_reason": answer.finish}],
                   "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]}})
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def prompt_whole(backend: BackendKind, answer: Answer) -> dict[str, Any]:
    usage = answer.usage or (0, 0)
    if backend.speaks_ollama:
        out: dict[str, Any] = {"response": "".join(answer.text.split(" ")), "done": True,
                               "done_reason": answer.finish, "prompt_eval_count": usage[0],
                               "eval_count": usage[1]}
        if answer.thinking:
            out["thinking"] = answer.thinking
        return out
    return {"choices": [{"text": "".join(answer.text.split(" ")), "index": 0,
                         "finish_reason": answer.finish}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]}}


CHAT_REQUESTS = {
    OCHAT: {"model": "dep", "messages": [{"role": "user", "content": "hi"}]},
    OGEN: {"model": "dep", "prompt": "hi"},
}


@pytest.mark.parametrize("answer_name", list(ANSWERS))
@pytest.mark.parametrize("backend", [OLLAMA, BackendKind.VLLM])
@pytest.mark.parametrize("client", [OCHAT, OGEN])
def test_chat_path_streamed_and_whole_answers_agree(client: ClientFormat, backend: BackendKind,
                                                    answer_name: str) -> None:
    answer = ANSWERS[answer_name]
    streamed = up(client, CHAT_REQUESTS[client], backend)
    assert streamed.stream
    translator = open_stream_translator(streamed.context)
    upstream = upstream_stream(backend, answer)
    stream = translator.feed(upstream) + translator.finish()
    pieces = open_stream_translator(streamed.context)
    assert b"".join(pieces.feed(upstream[i:i + 1]) for i in range(len(upstream))) + \
        pieces.finish() == stream  # any split of the upstream gives the same bytes
    whole = up(client, {**CHAT_REQUESTS[client], "stream": False}, backend)
    raw = ollama_answer(answer) if backend.speaks_ollama else openai_answer(answer)
    answered = translate_response(whole.context, 200, orjson.dumps(raw))
    assert answered.status == 200
    from_whole = whole_result(client, answered.body)
    assert streamed_result(client, stream) == from_whole
    assert from_whole.text == answer.text
    assert from_whole.done_reason == ("length" if answer.finish == "length" else "stop")
    if client is OCHAT:
        assert from_whole.calls == [(name, args) for _, name, args in answer.calls]
        assert from_whole.thinking == (answer.thinking or "")


@pytest.mark.parametrize("answer_name", ["text", "length", "no-usage"])
@pytest.mark.parametrize("backend", [OLLAMA, LLAMACPP])
@pytest.mark.parametrize("client", [CMPL, OGEN])
def test_prompt_path_streamed_and_whole_answers_agree(client: ClientFormat,
                                                      backend: BackendKind,
                                                      answer_name: str) -> None:
    answer = Answer(text="one two three", finish=ANSWERS[answer_name].finish,
                    usage=ANSWERS[answer_name].usage)
    body = {"model": "dep", "prompt": "x", "stream": True, "raw": True,
            "stream_options": {"include_usage": True}}
    streamed = up(client, body, backend)
    assert streamed.context.prompt
    translator = open_stream_translator(streamed.context)
    stream = translator.feed(prompt_stream(backend, answer)) + translator.finish()
    whole = up(client, {**body, "stream": False}, backend)
    answered = translate_response(whole.context, 200, orjson.dumps(prompt_whole(backend,
                                                                                  answer)))
    from_stream, from_whole = streamed_result(client, stream), whole_result(client, answered.body)
    assert from_stream == from_whole
    assert from_whole.text == "onetwothree"
    assert from_whole.done_reason == answer.finish
    assert from_whole.usage == (answer.usage or (0, 0))


def test_completions_usage_chunk_only_when_asked() -> None:
    body = {"model": "dep", "prompt": "x", "stream": True}
    for include, expected in ((False, None), (True, (3, 2))):
        ctx = up(CMPL, {**body, "stream_options": {"include_usage": include}}, LLAMACPP).context
        translator = open_stream_translator(ctx)
        out = translator.feed(prompt_stream(LLAMACPP, Answer(text="a", usage=(3, 2))))
        assert check_completions(out + translator.finish()).usage == expected


def test_streams_end_with_the_clients_own_error() -> None:
    for client, backend in ((OCHAT, OLLAMA), (OGEN, LLAMACPP), (CMPL, OLLAMA)):
        body = {"model": "dep", "prompt": "x", "messages": [{"role": "user", "content": "x"}]}
        translator = open_stream_translator(up(client, body, backend).context)
        out = translator.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"
                              if backend is LLAMACPP else b'{"response":"a","message":'
                              b'{"role":"assistant","content":"a"},"done":false}\n')
        out += translator.fail("upstream connection lost")
        result = check_completions(out) if client is CMPL else check_ollama(
            out, chat=client is OCHAT)
        assert result.error == "upstream connection lost" and result.text == "a"
        assert translator.done


def test_ollama_stream_holds_tool_arguments_within_a_limit() -> None:
    from tokios_translate.stream.encoders import ollama as encoders

    ctx = up(OCHAT, {"model": "dep", "messages": [{"role": "user", "content": "x"}]},
             LLAMACPP).context
    big = "x" * (encoders.MAX_HELD_ARGUMENTS + 1)
    sse = (b'data: {"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c","function":'
           b'{"name":"f","arguments":"' + big.encode() + b'"}}]}}]}\n\n')
    translator = open_stream_translator(ctx)
    result = check_ollama(translator.feed(sse) + translator.finish(), chat=True)
    assert result.error is not None and "size limit" in result.error and not result.calls


def test_upstream_errors_reach_ollama_clients_in_their_envelope() -> None:
    ctx = up(OCHAT, {"model": "dep", "stream": False,
                     "messages": [{"role": "user", "content": "x"}]}).context
    answer = translate_response(ctx, 404, b'{"error":"model \'m\' not found"}')
    assert answer.status == 404
    error = ollama.ResponseError(answer.body.decode(), answer.status)
    assert "not found" in error.error
    malformed = translate_response(ctx, 200, b"[1]")
    assert malformed.status == 502 and "malformed" in orjson.loads(malformed.body)["error"]


@pytest.mark.parametrize(("stop_type", "stopping_word", "finish"), [
    ("eos", "", "stop"), ("limit", "", "length"), ("word", "\n", "stop")])
def test_llamacpp_infill_answers(stop_type: str, stopping_word: str, finish: str) -> None:
    body = {"model": "dep", "prompt": "a", "suffix": "b", "stream": True,
            "stream_options": {"include_usage": True}}
    final = {"content": "", "stop": True, "stop_type": stop_type, "stopping_word": stopping_word,
             "tokens_predicted": 2, "tokens_evaluated": 5, "timings": {}}
    stream = b"".join(b"data: " + orjson.dumps(o) + b"\n\n" for o in (
        {"content": "x ", "stop": False}, {"content": "y", "stop": False}, final))
    for client in (CMPL, OGEN):
        ctx = up(client, body, LLAMACPP).context
        translator = open_stream_translator(ctx)
        out = translator.feed(stream)
        assert translator.done  # llama.cpp's native stream has no [DONE]: stop ends it
        whole = translate_response(up(client, {**body, "stream": False}, LLAMACPP).context, 200,
                                   orjson.dumps({**final, "content": "x y"}))
        from_stream, from_whole = streamed_result(client, out), whole_result(client, whole.body)
        assert from_stream == from_whole
        assert (from_whole.text, from_whole.usage) == ("x y", (5, 2))
        assert from_whole.done_reason == finish


# -- embed and the listings ----------------------------------------------------------------------

def test_ollama_embed() -> None:
    for backend, answer in (
            (OLLAMA, {"embeddings": [[1.0], [2.0]], "prompt_eval_count": 4}),
            (LLAMACPP, {"data": [{"index": 1, "embedding": [2.0]}, {"index": 0,
                                                                      "embedding": [1.0]}],
                        "usage": {"prompt_tokens": 4}})):
        call, ctx = translate_embeddings_request(
            orjson.dumps({"model": "dep", "input": ["a", "b"], "truncate": True}),
            backend=backend, upstream_model="m", deployment="dep", client=OCHAT)
        assert orjson.loads(call.body)["input"] == ["a", "b"]
        out = translate_embeddings_response(ctx, 200, orjson.dumps(answer))
        parsed = ollama.EmbedResponse.model_validate_json(out.body)
        assert parsed.embeddings == [[1.0], [2.0]] and parsed.prompt_eval_count == 4
        assert parsed.model == "dep"
        failed = translate_embeddings_response(ctx, 500, b"{}")
        assert failed.status == 502 and set(orjson.loads(failed.body)) == {"error"}


def test_listings_parse_with_the_official_clients() -> None:
    tags = ollama.ListResponse.model_validate_json(
        ollama_client.tags_body(["b", "a", "b"], created=1_750_000_000))
    assert [m.model for m in tags.models] == ["b", "a"]
    assert tags.models[0].modified_at is not None
    shown = ollama.ShowResponse.model_validate_json(ollama_client.show_body(created=5))
    assert shown.capabilities == ["completion", "tools"]
    assert orjson.loads(ollama_client.version_body())["version"] == ollama_client.OLLAMA_VERSION
    model = openai.types.Model.model_validate_json(model_body(ClientFormat.CHAT, "dep",
                                                              created=5))
    assert (model.id, model.object, model.created) == ("dep", "model", 5)
    info = anthropic.types.ModelInfo.model_validate_json(
        model_body(ClientFormat.MESSAGES, "dep", created=5))
    assert info.id == "dep" and info.type == "model"
    # extra fields (the gateway's `tokios` object) come after the format's own, kept as extras
    extra = {"tokios": {"healthy": True}}
    listed = orjson.loads(list_body(ClientFormat.CHAT, ["a", "b"], created=5,
                                    extra={"a": extra}))
    assert listed["data"][0] == {"id": "a", "object": "model", "created": 5,
                                 "owned_by": "tokios", **extra}
    assert "tokios" not in listed["data"][1]
    page = orjson.loads(list_body(ClientFormat.MESSAGES, ["a"], created=5, extra={"a": extra}))
    assert anthropic.types.ModelInfo.model_validate(page["data"][0]).model_extra == extra
    one = openai.types.Model.model_validate_json(
        model_body(ClientFormat.CHAT, "dep", created=5, extra=extra))
    assert one.model_extra == extra and one.id == "dep"


def test_ollama_error_envelope_for_every_kind() -> None:
    for kind in ErrorKind:
        status, body = ollama_client.encode_error(TranslationError(kind, "m"))
        assert status == TranslationError(kind, "m").status
        assert orjson.loads(body) == {"error": "m"}


def test_stream_context_defaults_to_chat_decoding() -> None:
    ctx = StreamContext(client=OCHAT, backend=OLLAMA, model="d", response_id="r", created=0,
                        stream=True)
    translator = open_stream_translator(ctx)
    out = translator.feed(b'{"message":{"role":"assistant","content":"hi"},"done":true}\n')
    assert check_ollama(out, chat=True).text == "hi"
