"""A streamed answer and the same answer non-streamed end up identical for the client.

The non-streamed path is this part's (translate_response); the streamed path is
tokios_translate.stream (open_stream_translator), used only through its public API. Each stream
is accumulated with the SDKs' own accumulators (anthropic ``accumulate_event``, openai
``ChatCompletionStreamState``; for Responses the ``response.completed`` object).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk
from pydantic import TypeAdapter
from translate_convo import Answer, ollama_answer, openai_answer
from translate_view import client_view

from tokios_translate import (
    BackendKind,
    ClientFormat,
    open_stream_translator,
    translate_request,
    translate_response,
)

ANSWERS = {
    "text": Answer(text="Hello there."),
    "thinking-text-tools": Answer(text="Checking.", thinking="Think.", calls=[
        ("call_1", "get_weather", {"city": "Paris"}), ("call_2", "get_time", {})]),
    "length": Answer(text="cut", finish="length"),
    "no-ids": Answer(text="", calls=[(None, "get_time", {"tz": "UTC"})]),
    "no-usage": Answer(text="hi", usage=None),
}
REQUESTS = {
    ClientFormat.CHAT: {"model": "dep", "stream": True, "stream_options": {"include_usage": True},
                        "messages": [{"role": "user", "content": "hi"}]},
    ClientFormat.RESPONSES: {"model": "dep", "stream": True, "input": "hi"},
    ClientFormat.MESSAGES: {"model": "dep", "stream": True, "max_tokens": 100,
                            "messages": [{"role": "user", "content": "hi"}]},
}


def upstream_stream(backend: BackendKind, answer: Answer) -> bytes:
    """The answer as the backend streams it: Ollama NDJSON or OpenAI-chat SSE."""
    if backend is BackendKind.OLLAMA:
        whole = ollama_answer(answer)
        message = whole["message"]
        lines = []
        if "thinking" in message:
            lines.append({"message": {"role": "assistant", "content": "",
                                      "thinking": message["thinking"]}, "done": False})
        if message["content"]:
            lines.append({"message": {"role": "assistant", "content": message["content"]},
                          "done": False})
        if "tool_calls" in message:
            lines.append({"message": {"role": "assistant", "content": "",
                                      "tool_calls": message["tool_calls"]}, "done": False})
        final = {k: v for k, v in whole.items() if k != "message"}
        lines.append({**final, "message": {"role": "assistant", "content": ""}})
        return b"".join(orjson.dumps(line) + b"\n" for line in lines)
    whole = openai_answer(answer)
    message, choice = whole["choices"][0]["message"], whole["choices"][0]
    base = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    if "reasoning_content" in message:
        deltas.append({"reasoning_content": message["reasoning_content"]})
    if message["content"]:
        deltas.append({"content": message["content"]})
    for i, call in enumerate(message.get("tool_calls", [])):
        deltas.append({"tool_calls": [{"index": i, **call}]})
    events = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]}
              for d in deltas]
    events.append({**base, "choices": [{"index": 0, "delta": {},
                                        "finish_reason": choice["finish_reason"]}]})
    if "usage" in whole:
        events.append({**base, "choices": [], "usage": whole["usage"]})
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def sse_events(data: bytes) -> list[tuple[str | None, bytes]]:
    events = []
    for block in data.split(b"\n\n"):
        name, payload = None, b""
        for line in block.split(b"\n"):
            if line.startswith(b"event: "):
                name = line[7:].decode()
            elif line.startswith(b"data: "):
                payload = line[6:]
        if payload:
            events.append((name, payload))
    return events


def accumulated(client: ClientFormat, stream: bytes) -> bytes:
    """The stream accumulated by the SDK, re-serialised as the whole-answer JSON."""
    events = sse_events(stream)
    if client is ClientFormat.MESSAGES:
        adapter: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
        snapshot = None
        json_bufs: dict[int, bytes] = {}
        for name, payload in events:
            if name == "ping":
                continue
            snapshot = accumulate_event(event=adapter.validate_json(payload),
                                        current_snapshot=snapshot, json_bufs=json_bufs)
        assert snapshot is not None
        return snapshot.model_dump_json().encode()
    if client is ClientFormat.CHAT:
        state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
        for _, payload in events:
            if payload == b"[DONE]":
                break
            state.handle_chunk(ChatCompletionChunk.model_validate_json(payload))
        # The snapshot, not get_final_completion(): that one is for structured parsing (it adds
        # ``parsed`` and refuses a length cut-off).
        snapshot = state.current_completion_snapshot.model_dump(mode="json", exclude_unset=True)
        snapshot["object"] = "chat.completion"
        for choice in snapshot["choices"]:  # keys the accumulator itself adds
            choice["message"].pop("parsed", None)
            for call in choice["message"].get("tool_calls") or []:
                call.pop("index", None)
                call["function"].pop("parsed_arguments", None)
        return orjson.dumps(snapshot)
    final = [p for name, p in events if name in ("response.completed", "response.incomplete")]
    assert len(final) == 1
    return orjson.dumps(orjson.loads(final[0])["response"])


@pytest.mark.parametrize("answer_name", list(ANSWERS))
@pytest.mark.parametrize("backend", [BackendKind.OLLAMA, BackendKind.VLLM])
# (Ollama's formats and legacy completions: tests/translate/test_translate_client_apis.py)
@pytest.mark.parametrize("client", list(REQUESTS))
def test_streamed_and_whole_answers_agree(client: ClientFormat, backend: BackendKind,
                                          answer_name: str) -> None:
    answer = ANSWERS[answer_name]
    body = orjson.dumps(REQUESTS[client])
    streamed_request = translate_request(client, body, backend=backend, upstream_model="m",
                                         deployment="dep", response_id="r1", created=5)
    assert streamed_request.stream
    translator = open_stream_translator(streamed_request.context)
    stream = translator.feed(upstream_stream(backend, answer)) + translator.finish()
    whole_body = orjson.dumps({**REQUESTS[client], "stream": False})
    whole_request = translate_request(client, whole_body, backend=backend, upstream_model="m",
                                      deployment="dep", response_id="r1", created=5)
    raw = ollama_answer(answer) if backend is BackendKind.OLLAMA else openai_answer(answer)
    whole = translate_response(whole_request.context, 200, orjson.dumps(raw))
    from_stream = client_view(client, accumulated(client, stream))
    from_whole = client_view(client, whole.body)
    assert from_stream == from_whole
