"""Property tests: random valid requests in each client format translate without error for both
upstream codecs, and random backend answers come back as SDK-valid client answers."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from translate_convo import PNG, TIME, WEATHER, Answer, Convo, ollama_answer, openai_answer
from translate_view import client_view

from tokios_translate import BackendKind, ClientFormat, translate_request, translate_response
from tokios_translate.backends import ollama

SETTINGS = settings(max_examples=120, deadline=None)
text = st.text(max_size=40)
args = st.dictionaries(st.sampled_from(["city", "n", "flag"]),
                       st.one_of(text, st.integers(-5, 5), st.booleans()), max_size=3)


@st.composite
def convos(draw: st.DrawFn) -> Convo:
    tools = draw(st.sampled_from([[], [WEATHER], [WEATHER, TIME]]))
    turns: list[tuple[str, list[Any]]] = []
    pending: list[str] = []
    for i in range(draw(st.integers(1, 6))):
        if i % 2 == 0:
            parts: list[Any] = [("result", cid, draw(text), draw(st.booleans()))
                                for cid in pending]
            pending = []
            parts += draw(st.lists(st.one_of(st.tuples(st.just("text"), text),
                                             st.just(("image", PNG))), min_size=1, max_size=3))
            turns.append(("user", parts))
        else:
            parts = []
            if draw(st.booleans()):
                parts.append(("thinking", draw(text)))
            if draw(st.booleans()):
                parts.append(("text", draw(text)))
            if tools:
                for j in range(draw(st.integers(0, 2))):
                    call_id = f"call_{i}_{j}"
                    parts.append(("call", call_id, tools[j % len(tools)]["name"], draw(args)))
                    pending.append(call_id)
            if not parts:
                parts.append(("text", draw(text)))
            turns.append(("assistant", parts))
    if pending:
        turns.append(("user", [("result", cid, "ok", False) for cid in pending]))
    system = draw(st.one_of(st.none(), text))
    return Convo(turns=turns, system=system, tools=tools)


maybe_float = st.one_of(st.none(), st.floats(0, 1))
maybe_int = st.one_of(st.none(), st.integers(1, 4096))


@st.composite
def client_requests(draw: st.DrawFn, client: ClientFormat) -> dict[str, Any]:
    from translate_convo import RENDER

    convo = draw(convos())
    extra: dict[str, Any] = {"stream": draw(st.booleans())}
    for name, value in (("temperature", draw(maybe_float)), ("top_p", draw(maybe_float)),
                        ("top_k", draw(maybe_int))):
        if value is not None:
            extra[name] = value
    if client is ClientFormat.CHAT:
        extra["max_completion_tokens"] = draw(maybe_int)
        extra["stop"] = draw(st.one_of(st.none(), text, st.lists(text, max_size=4)))
        extra["reasoning_effort"] = draw(st.sampled_from([None, "low", "high", "none"]))
        extra["parallel_tool_calls"] = draw(st.sampled_from([None, True, False]))
        if convo.tools:
            extra["tool_choice"] = draw(st.sampled_from(["auto", "none", "required"]))
    elif client is ClientFormat.RESPONSES:
        extra["max_output_tokens"] = draw(maybe_int)
        extra["reasoning"] = draw(st.sampled_from([None, {"effort": "medium"}]))
        if convo.tools:
            extra["tool_choice"] = draw(st.sampled_from(["auto", "none", "required"]))
    else:
        extra["max_tokens"] = draw(st.integers(1, 4096))
        extra["stop_sequences"] = draw(st.lists(text, max_size=4))
        extra["thinking"] = draw(st.sampled_from([
            None, {"type": "disabled"}, {"type": "enabled", "budget_tokens": 1024},
            {"type": "adaptive"}]))
        if convo.tools:
            extra["tool_choice"] = draw(st.sampled_from([
                {"type": "auto"}, {"type": "any", "disable_parallel_tool_use": True},
                {"type": "tool", "name": "get_weather"}, {"type": "none"}]))
    return RENDER[client](convo, **{k: v for k, v in extra.items() if v is not None})


answers = st.builds(
    Answer,
    text=text,
    thinking=st.one_of(st.none(), text),
    calls=st.lists(st.tuples(st.one_of(st.none(), st.just("call_x")),
                             st.sampled_from(["get_weather", "get_time"]), args), max_size=3),
    finish=st.sampled_from(["stop", "length"]),
    usage=st.one_of(st.none(), st.tuples(st.integers(0, 10**6), st.integers(0, 10**6))),
)


def _roundtrip(client: ClientFormat, request: dict[str, Any], answer: Answer) -> None:
    for backend in (BackendKind.OLLAMA, BackendKind.LLAMACPP, BackendKind.VLLM):
        upstream = translate_request(client, orjson.dumps(request), backend=backend,
                                     upstream_model="m", deployment="dep", response_id="r",
                                     created=1)
        sent = orjson.loads(upstream.body)
        assert sent["model"] == "m"
        assert upstream.context.estimated_input_tokens >= 0
        if backend is BackendKind.OLLAMA:
            assert upstream.path == ollama.CHAT_PATH
            for message in sent["messages"]:
                for call in message.get("tool_calls", []):
                    assert isinstance(call["function"]["arguments"], dict)
        raw = ollama_answer(answer) if backend is BackendKind.OLLAMA else openai_answer(answer)
        out = translate_response(upstream.context, 200, orjson.dumps(raw))
        assert out.status == 200
        view = client_view(client, out.body)
        expected = answer.calls if upstream.context.parallel_tool_calls else answer.calls[:1]
        assert [(name, arguments) for _, name, arguments in view.calls] == [
            (name, arguments) for _, name, arguments in expected]
        for (call_id, _, _), (got_id, _, _) in zip(expected, view.calls, strict=True):
            assert got_id and (call_id is None or got_id == call_id)
        assert view.text == answer.text
        assert view.thinking == (answer.thinking or "")
        assert view.stop == ("max_tokens" if answer.finish == "length"
                             else "tool_use" if expected else "end_turn")
        # absent counts are 0, except an absent or zero prompt count for Anthropic clients,
        # which gets the estimate (docs/translation.md, Usage)
        prompt, output = answer.usage or (0, 0)
        if client is ClientFormat.MESSAGES and not prompt:
            prompt = upstream.context.estimated_input_tokens
        assert view.usage == (prompt, output)


@SETTINGS
@given(request=client_requests(ClientFormat.CHAT), answer=answers)
def test_random_chat_requests_translate(request: dict[str, Any], answer: Answer) -> None:
    _roundtrip(ClientFormat.CHAT, request, answer)


@SETTINGS
@given(request=client_requests(ClientFormat.RESPONSES), answer=answers)
def test_random_responses_requests_translate(request: dict[str, Any], answer: Answer) -> None:
    _roundtrip(ClientFormat.RESPONSES, request, answer)


@SETTINGS
@given(request=client_requests(ClientFormat.MESSAGES), answer=answers)
def test_random_messages_requests_translate(request: dict[str, Any], answer: Answer) -> None:
    _roundtrip(ClientFormat.MESSAGES, request, answer)


@settings(max_examples=200, deadline=None)
@given(client=st.sampled_from(list(ClientFormat)), body=st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_anything_but_translation_error(
    client: ClientFormat, body: bytes
) -> None:
    from tokios_translate import TranslationError

    with contextlib.suppress(TranslationError):
        translate_request(client, body, backend=BackendKind.OLLAMA, upstream_model="m",
                          deployment="d", response_id="r", created=0)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False), text),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(
                                ["type", "role", "content", "text", "name", "id", "input",
                                 "arguments", "function", "source", "image_url", "call_id",
                                 "tool_use_id", "output", "summary", "tool_calls", "url"]),
                                inner, max_size=4)),
    max_leaves=12,
)
FIELDS = ["model", "messages", "input", "system", "instructions", "tools", "tool_choice",
          "max_tokens", "stop", "stop_sequences", "temperature", "response_format", "text",
          "thinking", "reasoning", "stream", "stream_options", "output_config", "n"]


@settings(max_examples=300, deadline=None)
@given(client=st.sampled_from(list(ClientFormat)),
       obj=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6),
       backend=st.sampled_from([BackendKind.OLLAMA, BackendKind.VLLM]))
def test_wrongly_shaped_json_gives_only_translation_errors(
    client: ClientFormat, obj: dict[str, Any], backend: BackendKind
) -> None:
    from tokios_translate import TranslationError

    try:
        translate_request(client, orjson.dumps(obj), backend=backend, upstream_model="m",
                          deployment="d", response_id="r", created=0)
    except TranslationError as err:
        assert err.status in (400, 413)


turns = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "tool", "system"])},
    optional={"content": json_values, "type": st.sampled_from(
        ["message", "function_call", "function_call_output", "reasoning"]),
        "tool_calls": json_values, "tool_call_id": json_values, "call_id": json_values,
        "name": json_values, "arguments": json_values, "output": json_values,
        "summary": json_values}), min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(client=st.sampled_from(list(ClientFormat)), items=turns,
       backend=st.sampled_from([BackendKind.OLLAMA, BackendKind.LMSTUDIO]))
def test_wrongly_shaped_turns_give_only_translation_errors(
    client: ClientFormat, items: list[dict[str, Any]], backend: BackendKind
) -> None:
    from tokios_translate import TranslationError

    key = "input" if client is ClientFormat.RESPONSES else "messages"
    obj = {"model": "x", "max_tokens": 5, key: items}
    try:
        upstream = translate_request(client, orjson.dumps(obj), backend=backend,
                                     upstream_model="m", deployment="d", response_id="r",
                                     created=0)
    except TranslationError as err:
        assert err.status == 400
    else:
        assert orjson.loads(upstream.body)["model"] == "m"
