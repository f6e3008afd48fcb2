"""Validate translated client streams with the official SDKs (code nobody here wrote).

Each ``check_*`` function parses the bytes with the SDK's own SSE decoder, builds the SDK's
pydantic types from every event, accumulates the whole stream with the SDK's stream helper and
runs the SDK client itself against the bytes (through ``httpx.MockTransport``). Any shape error
raises. They return the accumulated final object for the test to assert on.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import openai
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from openai._streaming import SSEDecoder
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

try:  # recent anthropic releases require their own httpx fork's client
    import httpx2 as _ANTHROPIC_HTTP
except ImportError:  # pragma: no cover - older SDKs use httpx
    _ANTHROPIC_HTTP = httpx

_RESPONSES_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
_RESPONSES_BY_TYPE: dict[str, Any] = {
    cls.model_fields["type"].annotation.__args__[0]: cls
    for cls in typing.get_args(typing.get_args(ResponseStreamEvent)[0])
}
_MESSAGES_EVENT: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)


@dataclass
class SSE:
    event: str | None
    data: str


def sse_events(body: bytes) -> list[SSE]:
    """Split bytes into SSE events with openai-python's own decoder."""
    decoder = SSEDecoder()
    return [SSE(event=e.event, data=e.data) for e in decoder.iter_bytes(iter([body]))]


def _http_client(body: bytes, module: Any = httpx) -> Any:
    """An HTTP client (of the flavour the SDK wants) whose transport serves ``body``."""

    def handler(request: Any) -> Any:
        return module.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return module.Client(transport=module.MockTransport(handler))


# -- Chat Completions ---------------------------------------------------------------------------


@dataclass
class ChatResult:
    completion: Any  # ParsedChatCompletion, None when the stream is an error
    chunks: list[ChatCompletionChunk]
    error: dict[str, Any] | None


def check_chat(
    body: bytes, *, expect_usage: bool | None = None, run_client: bool = True
) -> ChatResult:
    events = sse_events(body)
    assert events, "empty stream"
    assert events[-1].data == "[DONE]", "chat stream must end with [DONE]"
    assert all(e.data != "[DONE]" for e in events[:-1]), "[DONE] before the end"
    state = ChatCompletionStreamState()
    chunks: list[ChatCompletionChunk] = []
    error = None
    for position, sse in enumerate(events[:-1]):
        obj = json.loads(sse.data)
        if "error" in obj:
            assert position == len(events) - 2, "error chunk must be the last before [DONE]"
            error = obj["error"]
            assert isinstance(error["message"], str)
            break
        chunk = ChatCompletionChunk.model_validate(obj)
        chunks.append(chunk)
        state.handle_chunk(chunk)
    assert chunks, "no role chunk"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:] if c.choices)
    ids = {c.id for c in chunks}
    assert len(ids) == 1
    usage_chunks = [c for c in chunks if not c.choices]
    if error is None:
        assert usage_chunks == [] or usage_chunks[0] is chunks[-1]
        if expect_usage is not None:
            assert bool(usage_chunks) == expect_usage
        finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
        assert len(finish) == 1
    # The SDK client itself, over the same bytes.
    if not run_client:
        return ChatResult(completion=state.current_completion_snapshot, chunks=chunks, error=error)
    client = openai.OpenAI(
        api_key="x", base_url="http://t/v1",
        http_client=_http_client(body),
    )
    stream = client.chat.completions.create(model="m", messages=[], stream=True)
    if error is None:
        assert len(list(stream)) == len(chunks)
        try:
            completion = state.get_final_completion()
        except (openai.LengthFinishReasonError, openai.ContentFilterFinishReasonError):
            # The SDK's way of reporting these finish reasons; the snapshot is still complete.
            completion = state.current_completion_snapshot
        return ChatResult(completion=completion, chunks=chunks, error=None)
    try:
        list(stream)
    except openai.APIError:
        pass
    else:
        raise AssertionError("openai client did not raise on the error chunk")
    return ChatResult(completion=state.current_completion_snapshot, chunks=chunks, error=error)


# -- Responses ----------------------------------------------------------------------------------


@dataclass
class ResponsesResult:
    response: Any  # the final Response from the SDK's stream state
    events: list[Any]
    error: dict[str, Any] | None


def check_responses(body: bytes, *, run_client: bool = True) -> ResponsesResult:
    events = sse_events(body)
    assert events
    assert all(e.data != "[DONE]" for e in events)
    state: ResponseStreamState[Any] = ResponseStreamState(
        input_tools=openai.omit, text_format=openai.omit
    )
    typed: list[Any] = []
    error = None
    for number, sse in enumerate(events):
        obj = json.loads(sse.data)
        assert sse.event == obj["type"], "event: name must equal data.type"
        assert obj["sequence_number"] == number, "sequence_number must count from 0"
        # The class for this type first (readable errors), then the SDK's whole union.
        _RESPONSES_BY_TYPE[obj["type"]].model_validate(obj)
        event = _RESPONSES_EVENT.validate_python(obj)
        typed.append(event)
        if obj["type"] == "error":
            error = obj
            continue
        state.handle_event(event)
    kinds = [e.type for e in typed]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    terminal = {"response.completed", "response.incomplete", "response.failed"}
    assert kinds[-1] in terminal and not terminal & set(kinds[:-1])
    # Every delta belongs to an item already added and not yet done (Codex rejects orphans).
    open_items: set[str] = set()
    for event in typed:
        if event.type == "response.output_item.added":
            open_items.add(event.item.id)
        elif event.type == "response.output_item.done":
            open_items.remove(event.item.id)
        elif event.type.endswith(".delta"):
            assert event.item_id in open_items, f"orphan {event.type}"
    final = typed[-1].response
    assert final.id == typed[0].response.id
    if kinds[-1] != "response.failed":
        assert not open_items
        done_items = [e.item for e in typed if e.type == "response.output_item.done"]
        assert [i.id for i in final.output] == [i.id for i in done_items]
        assert final.usage is not None
        assert final.usage.total_tokens == final.usage.input_tokens + final.usage.output_tokens
    # The SDK client's own stream helper over the same bytes.
    if not run_client:
        return ResponsesResult(response=final, events=typed, error=error)
    client = openai.OpenAI(
        api_key="x", base_url="http://t/v1",
        http_client=_http_client(body),
    )
    with client.responses.stream(model="m", input="hi") as stream:
        seen = list(stream)
        assert len(seen) >= len(typed)
        if kinds[-1] == "response.completed":
            stream.get_final_response()
    return ResponsesResult(response=final, events=typed, error=error)


# -- Anthropic Messages -------------------------------------------------------------------------


@dataclass
class MessagesResult:
    message: Any  # the accumulated Message snapshot
    events: list[Any]
    error: dict[str, Any] | None


def check_messages(body: bytes, *, run_client: bool = True) -> MessagesResult:
    events = sse_events(body)
    assert events
    snapshot: Any = None
    json_bufs: dict[int, bytes] = {}
    typed: list[Any] = []
    error = None
    open_block: int | None = None
    starts = 0
    for position, sse in enumerate(events):
        obj = json.loads(sse.data)
        assert sse.event == obj["type"], "event: name must equal data.type"
        if obj["type"] == "ping":
            continue
        if obj["type"] == "error":
            assert position == len(events) - 1, "nothing may follow event: error"
            assert set(obj["error"]) == {"type", "message"}
            error = obj["error"]
            break
        event = _MESSAGES_EVENT.validate_python(obj)
        typed.append(event)
        if event.type == "message_start":
            starts += 1
        elif event.type == "content_block_start":
            assert open_block is None, "block opened before the previous one closed"
            assert snapshot is not None
            assert event.index == len(snapshot.content), "block index must equal position"
            open_block = event.index
        elif event.type == "content_block_delta":
            assert event.index == open_block, "delta outside its open block"
            block = snapshot.content[event.index]
            expected = {
                "text_delta": "text",
                "thinking_delta": "thinking",
                "signature_delta": "thinking",
                "input_json_delta": "tool_use",
            }[event.delta.type]
            assert block.type == expected, "Mismatched content block type"
        elif event.type == "content_block_stop":
            assert event.index == open_block
            if snapshot.content[event.index].type == "thinking":
                assert snapshot.content[event.index].signature, "thinking without a signature"
            open_block = None
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
    assert starts == 1, "exactly one message_start"
    assert typed[0].type == "message_start"
    if error is None:
        assert open_block is None
        assert [e.type for e in typed[-2:]] == ["message_delta", "message_stop"]
        assert snapshot.stop_reason is not None
    # The SDK client's own message stream over the same bytes.
    if not run_client:
        return MessagesResult(message=snapshot, events=typed, error=error)
    client = anthropic.Anthropic(
        api_key="x", base_url="http://t",
        http_client=_http_client(body, _ANTHROPIC_HTTP),
    )
    with client.messages.stream(model="m", max_tokens=10, messages=[]) as stream:
        if error is None:
            final = stream.get_final_message()
            assert final.model_dump() == snapshot.model_dump()
        else:
            try:
                stream.until_done()
            except anthropic.APIStatusError:
                pass
            else:
                raise AssertionError("anthropic client did not raise on event: error")
    return MessagesResult(message=snapshot, events=typed, error=error)


# -- One summary of any client stream, read from the SDK-accumulated objects ---------------------


@dataclass
class Outcome:
    """What the client ends up with, read from the SDK's accumulated objects only."""

    text: str
    reasoning: str
    tools: list[tuple[str, str, Any]]  # (id, name, parsed arguments)
    stop: str | None  # the client's own stop value (finish_reason / status / stop_reason)
    input_tokens: int | None
    output_tokens: int | None
    error: str | None


def outcome(
    client: str, body: bytes, *, include_usage: bool = True, run_client: bool = True
) -> Outcome:
    """Validate ``body`` as a stream of ``client`` format and summarise it."""
    if client == "chat":
        chat = check_chat(body, expect_usage=include_usage, run_client=run_client)
        message = chat.completion.choices[0].message
        if chat.error is not None:
            return Outcome(message.content or "", "", [], None, None, None, chat.error["message"])
        extra = message.model_extra or {}
        usage = chat.completion.usage
        return Outcome(
            text=message.content or "",
            reasoning=extra.get("reasoning_content") or "",
            tools=[
                (t.id, t.function.name, json.loads(t.function.arguments))
                for t in message.tool_calls or []
            ],
            stop=chat.completion.choices[0].finish_reason,
            input_tokens=usage.prompt_tokens if usage else None,
            output_tokens=usage.completion_tokens if usage else None,
            error=None,
        )
    if client == "responses":
        result = check_responses(body, run_client=run_client)
        response = result.response
        text = reasoning = ""
        tools = []
        for item in response.output:
            if item.type == "message":
                text += "".join(part.text for part in item.content)
            elif item.type == "reasoning":
                reasoning += "".join(part.text for part in item.summary)
            elif item.type == "function_call":
                arguments = item.arguments
                if response.status != "failed":  # a failed answer may hold a cut call
                    arguments = json.loads(arguments)
                tools.append((item.call_id, item.name, arguments))
        if response.status == "failed":
            return Outcome(text, reasoning, tools, None, None, None, response.error.message)
        stop = response.status
        if response.incomplete_details is not None:
            stop = f"incomplete/{response.incomplete_details.reason}"
        return Outcome(
            text=text,
            reasoning=reasoning,
            tools=tools,
            stop=stop,
            input_tokens=response.usage.input_tokens,
            output_tokens=response.usage.output_tokens,
            error=None,
        )
    assert client == "messages"
    result_m = check_messages(body, run_client=run_client)
    message = result_m.message
    text = "".join(b.text for b in message.content if b.type == "text")
    reasoning = "".join(b.thinking for b in message.content if b.type == "thinking")
    tools = [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"]
    if result_m.error is not None:
        return Outcome(text, reasoning, tools, None, None, None, result_m.error["message"])
    return Outcome(
        text=text,
        reasoning=reasoning,
        tools=tools,
        stop=message.stop_reason,
        input_tokens=message.usage.input_tokens,
        output_tokens=message.usage.output_tokens,
        error=None,
    )
