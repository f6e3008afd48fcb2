"""Random valid upstream answers translate to what the client must end up with, for every
backend codec × client format, checked through the official SDKs."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from stream_scenarios import (
    CLIENT_STOP,
    CLIENTS,
    oa,
    oa_usage,
    ollama,
    ollama_done,
    ollama_msg,
    sse,
)
from stream_sdk_check import outcome

from tokios_translate._common import BackendKind, ClientFormat, StopReason, StreamContext
from tokios_translate.stream import open_stream_translator

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
PART = st.one_of(
    st.tuples(st.just("text"), TEXT),
    st.tuples(st.just("reasoning"), TEXT),
    st.tuples(st.just("tool"), st.from_regex(r"[a-z_]{1,10}", fullmatch=True),
              st.dictionaries(TEXT, JSON_VALUE, max_size=3), st.booleans()),
)


def render_ollama(parts: list[tuple[Any, ...]], prompt: int, completion: int) -> bytes:
    lines = []
    for number, part in enumerate(parts):
        if part[0] == "text":
            lines.append(ollama_msg(part[1]))
        elif part[0] == "reasoning":
            lines.append(ollama_msg(thinking=part[1]))
        else:
            call: dict[str, Any] = {"function": {"name": part[1], "arguments": part[2]}}
            if part[3]:
                call["id"] = f"up_{number}"
            lines.append(ollama_msg(tool_calls=[call]))
    return ollama(*lines, ollama_done(prompt=prompt, completion=completion))


def render_sse(parts: list[tuple[Any, ...]], prompt: int, completion: int, field: str,
               cut: int) -> bytes:
    chunks: list[Any] = [oa({"role": "assistant", "content": ""})]
    tool_index = 0
    for number, part in enumerate(parts):
        if part[0] in ("text", "reasoning"):
            key = "content" if part[0] == "text" else field
            text = part[1]
            at = cut % (len(text) + 1)
            chunks.extend(oa({key: piece}) for piece in (text[:at], text[at:]) if piece)
        else:
            arguments = orjson.dumps(part[2]).decode()
            at = cut % (len(arguments) + 1)
            first: dict[str, Any] = {"index": tool_index, "type": "function",
                                     "function": {"name": part[1], "arguments": arguments[:at]}}
            if part[3]:
                first["id"] = f"up_{number}"
            chunks.append(oa({"tool_calls": [first]}))
            if arguments[at:]:
                chunks.append(oa({"tool_calls": [{"index": tool_index,
                                                  "function": {"arguments": arguments[at:]}}]}))
            tool_index += 1
    reason = "tool_calls" if tool_index else "stop"
    chunks += [oa(finish=reason), oa_usage(prompt, completion), "[DONE]"]
    return sse(*chunks)


@settings(max_examples=120, deadline=None)
@given(
    parts=st.lists(PART, max_size=6),
    backend=st.sampled_from(list(BackendKind)),
    client=st.sampled_from(CLIENTS),
    parallel=st.booleans(),
    prompt=st.integers(1, 10_000),
    completion=st.integers(0, 10_000),
    field=st.sampled_from(["reasoning_content", "reasoning", "thinking"]),
    cut=st.integers(0, 50),
)
def test_random_valid_answers_reach_the_client_intact(
    parts: list[tuple[Any, ...]], backend: BackendKind, client: ClientFormat, parallel: bool,
    prompt: int, completion: int, field: str, cut: int,
) -> None:
    if backend.speaks_ollama:
        upstream = render_ollama(parts, prompt, completion)
    else:
        upstream = render_sse(parts, prompt, completion, field, cut)
    context = StreamContext(client=client, backend=backend, model="m", response_id="p1",
                            created=1, stream=True, include_usage=True,
                            estimated_input_tokens=3, parallel_tool_calls=parallel)
    translator = open_stream_translator(context)
    body = translator.feed(upstream) + translator.finish()
    got = outcome(client.value, body, run_client=False)

    tools = []
    for number, part in enumerate(parts):
        if part[0] == "tool":
            upstream_id = f"up_{number}" if part[3] else f"call_p1_{len(tools)}"
            tools.append((upstream_id, part[1], part[2]))
    if not parallel:
        tools = tools[:1]
    assert got.error is None
    assert got.text == "".join(p[1] for p in parts if p[0] == "text")
    assert got.reasoning == "".join(p[1] for p in parts if p[0] == "reasoning")
    assert got.tools == tools
    stop = StopReason.TOOL_USE if tools else StopReason.END_TURN
    assert got.stop == CLIENT_STOP[client][stop]
    assert got.output_tokens == completion
    assert got.input_tokens == prompt
