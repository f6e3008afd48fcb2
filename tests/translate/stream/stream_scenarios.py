"""Upstream stream scenarios shared by the golden, chunking and fuzz tests.

Each scenario is an upstream byte stream (Ollama NDJSON or OpenAI-compatible SSE) plus what any
client must end up with after translation, in neutral terms (text, reasoning, tool calls, stop
reason, usage, error).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from tokios_translate._common import BackendKind, ClientFormat, StopReason, StreamContext


def ollama(*lines: dict[str, Any]) -> bytes:
    """Ollama /api/chat NDJSON from line objects."""
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def ollama_msg(content: str = "", thinking: str | None = None, **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking is not None:
        message["thinking"] = thinking
    message.update(extra)
    return {"model": "qwen3:8b", "created_at": "2025-07-07T20:22:19Z", "message": message,
            "done": False}


def ollama_done(reason: str = "stop", prompt: int | None = 12, completion: int | None = 5,
                ) -> dict[str, Any]:
    line: dict[str, Any] = {"model": "qwen3:8b", "created_at": "2025-07-07T20:22:20Z",
                            "message": {"role": "assistant", "content": ""}, "done": True,
                            "done_reason": reason, "total_duration": 182242375}
    if prompt is not None:
        line["prompt_eval_count"] = prompt
    if completion is not None:
        line["eval_count"] = completion
    return line


def sse(*chunks: dict[str, Any] | str) -> bytes:
    """OpenAI-compatible SSE from chunk objects (a str is sent as raw data, e.g. "[DONE]")."""
    out = []
    for chunk in chunks:
        data = chunk.encode() if isinstance(chunk, str) else orjson.dumps(chunk)
        out.append(b"data: " + data + b"\n\n")
    return b"".join(out)


def oa(delta: dict[str, Any] | None = None, finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "up",
            "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}]}


def oa_usage(prompt: int = 12, completion: int = 5) -> dict[str, Any]:
    return {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "up",
            "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                     "total_tokens": prompt + completion}}


def oa_call(index: int, *, id: str | None = None, name: str | None = None,
            args: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index}
    function: dict[str, Any] = {}
    if id is not None:
        call["id"] = id
        call["type"] = "function"
    if name is not None:
        function["name"] = name
    if args is not None:
        function["arguments"] = args
    call["function"] = function
    return oa({"tool_calls": [call]})


@dataclass
class Scenario:
    name: str
    backend: BackendKind
    upstream: bytes
    text: str = ""
    reasoning: str = ""
    tools: list[tuple[str, str, Any]] = field(default_factory=list)
    stop: StopReason | None = StopReason.END_TURN  # None: the stream ends in an error
    input_tokens: int = 12
    output_tokens: int = 5
    error: str | None = None
    include_usage: bool = True
    parallel_tool_calls: bool = True

    def context(self, client: ClientFormat) -> StreamContext:
        return StreamContext(
            client=client, backend=self.backend, model="dep-1", response_id="r1",
            created=1700000000, stream=True, include_usage=self.include_usage,
            estimated_input_tokens=7, parallel_tool_calls=self.parallel_tool_calls,
        )


OLL, L = BackendKind.OLLAMA, BackendKind.LLAMACPP
TEXT = "Hello, wörld 👋 — “quoted” \\ \"done\"\n"

SCENARIOS: list[Scenario] = [
    Scenario("text", OLL, ollama(ollama_msg("Hello, "), ollama_msg("wörld 👋 — “quoted” "),
                               ollama_msg('\\ "done"\n'), ollama_done()), text=TEXT),
    Scenario("text", L, sse(oa({"role": "assistant", "content": ""}), oa({"content": "Hello, "}),
                            oa({"content": "wörld 👋 — “quoted” "}),
                            oa({"content": '\\ "done"\n'}), oa(finish="stop"), oa_usage(),
                            "[DONE]"), text=TEXT),
    Scenario("reasoning", OLL, ollama(ollama_msg(thinking="Let me "), ollama_msg(thinking="think."),
                                    ollama_msg("Answer."), ollama_done()),
             reasoning="Let me think.", text="Answer."),
    Scenario("reasoning", L, sse(oa({"role": "assistant", "reasoning_content": "Let me "}),
                                 oa({"reasoning_content": "think."}), oa({"content": "Answer."}),
                                 oa(finish="stop"), oa_usage(), "[DONE]"),
             reasoning="Let me think.", text="Answer."),
    Scenario("reasoning_vllm", BackendKind.VLLM,
             sse(oa({"role": "assistant", "reasoning": "Hmm."}), oa({"content": "Ok."}),
                 oa(finish="stop"), oa_usage(), "[DONE]"), reasoning="Hmm.", text="Ok."),
    Scenario("tools", OLL, ollama(
        ollama_msg("Checking."),
        ollama_msg(tool_calls=[{"id": "call_x1", "function": {
            "index": 0, "name": "get_weather", "arguments": {"city": "Tokyo", "days": 2}}}]),
        ollama_done()),
        text="Checking.", tools=[("call_x1", "get_weather", {"city": "Tokyo", "days": 2})],
        stop=StopReason.TOOL_USE),
    Scenario("tools", L, sse(
        oa({"role": "assistant", "content": "Checking."}),
        oa_call(0, id="call_x1", name="get_weather", args=""),
        oa_call(0, args='{"city": "To'), oa_call(0, args='kyo", "days": 2}'),
        oa(finish="tool_calls"), oa_usage(), "[DONE]"),
        text="Checking.", tools=[("call_x1", "get_weather", {"city": "Tokyo", "days": 2})],
        stop=StopReason.TOOL_USE),
    Scenario("parallel_tools", OLL, ollama(
        ollama_msg(tool_calls=[
            {"function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}},
            {"function": {"index": 1, "name": "get_time", "arguments": {}}}]),
        ollama_done()),
        tools=[("call_r1_0", "get_weather", {"city": "Paris"}), ("call_r1_1", "get_time", {})],
        stop=StopReason.TOOL_USE),
    Scenario("parallel_tools", L, sse(
        oa_call(0, id="c_a", name="get_weather", args='{"city":'),
        oa_call(1, id="c_b", name="get_time", args="{"),
        oa_call(0, args=' "Paris"}'), oa_call(1, args="}"),
        oa(finish="tool_calls"), oa_usage(), "[DONE]"),
        tools=[("c_a", "get_weather", {"city": "Paris"}), ("c_b", "get_time", {})],
        stop=StopReason.TOOL_USE),
    Scenario("parallel_disabled", OLL, ollama(
        ollama_msg(tool_calls=[
            {"function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}},
            {"function": {"index": 1, "name": "get_time", "arguments": {}}}]),
        ollama_done()),
        tools=[("call_r1_0", "get_weather", {"city": "Paris"})], stop=StopReason.TOOL_USE,
        parallel_tool_calls=False),
    Scenario("parallel_disabled", L, sse(
        oa_call(0, id="c_a", name="get_weather", args='{"city":'),
        oa_call(1, id="c_b", name="get_time", args="{}"), oa_call(0, args=' "Paris"}'),
        oa(finish="tool_calls"), oa_usage(), "[DONE]"),
        tools=[("c_a", "get_weather", {"city": "Paris"})], stop=StopReason.TOOL_USE,
        parallel_tool_calls=False),
    Scenario("usage_absent", OLL,
             ollama(ollama_msg("Hi"), ollama_done(prompt=None, completion=None)),
             text="Hi", input_tokens=0, output_tokens=0),
    Scenario("usage_absent", L, sse(oa({"content": "Hi"}), oa(finish="stop"), "[DONE]"),
             text="Hi", input_tokens=0, output_tokens=0),
    Scenario("no_include_usage", L, sse(oa({"content": "Hi"}), oa(finish="stop"), oa_usage(),
                                        "[DONE]"), text="Hi", include_usage=False),
    Scenario("length", OLL, ollama(ollama_msg("Once upon"), ollama_done("length", 12, 2)),
             text="Once upon", stop=StopReason.MAX_TOKENS, output_tokens=2),
    Scenario("length", L, sse(oa({"content": "Once upon"}), oa(finish="length"),
                              oa_usage(12, 2), "[DONE]"),
             text="Once upon", stop=StopReason.MAX_TOKENS, output_tokens=2),
    Scenario("content_filter", L, sse(oa({"content": "I"}), oa(finish="content_filter"),
                                      oa_usage(12, 1), "[DONE]"),
             text="I", stop=StopReason.CONTENT_FILTER, output_tokens=1),
    Scenario("error", OLL, ollama(ollama_msg("Partial"), {"error": "model runner crashed"}),
             text="Partial", stop=None, error="model runner crashed"),
    Scenario("error", L, sse(oa({"content": "Partial"}),
                             {"error": {"message": "model runner crashed", "type": "server_error",
                                        "code": 500}}),
             text="Partial", stop=None, error="model runner crashed"),
    Scenario("empty", OLL, ollama(ollama_done(prompt=12, completion=0)), output_tokens=0),
    Scenario("empty", L, sse(oa({"role": "assistant", "content": ""}), oa(finish="stop"),
                             oa_usage(12, 0), "[DONE]"), output_tokens=0),
    Scenario("interleaved", OLL, ollama(
        ollama_msg(thinking="Plan."), ollama_msg("Let me look."),
        ollama_msg(tool_calls=[{"id": "call_q", "function": {"name": "search",
                                                             "arguments": {"q": "x"}}}]),
        ollama_msg(thinking="Found it."), ollama_msg("Done."), ollama_done()),
        reasoning="Plan.Found it.", text="Let me look.Done.",
        tools=[("call_q", "search", {"q": "x"})], stop=StopReason.TOOL_USE),
]

CLIENTS = [ClientFormat.CHAT, ClientFormat.RESPONSES, ClientFormat.MESSAGES]

CHAT_STOP = {StopReason.END_TURN: "stop", StopReason.MAX_TOKENS: "length",
             StopReason.TOOL_USE: "tool_calls", StopReason.CONTENT_FILTER: "content_filter",
             StopReason.STOP_SEQUENCE: "stop"}
RESPONSES_STOP = {StopReason.END_TURN: "completed", StopReason.TOOL_USE: "completed",
                  StopReason.STOP_SEQUENCE: "completed",
                  StopReason.MAX_TOKENS: "incomplete/max_output_tokens",
                  StopReason.CONTENT_FILTER: "incomplete/content_filter"}
MESSAGES_STOP = {StopReason.END_TURN: "end_turn", StopReason.MAX_TOKENS: "max_tokens",
                 StopReason.TOOL_USE: "tool_use", StopReason.CONTENT_FILTER: "refusal",
                 StopReason.STOP_SEQUENCE: "stop_sequence"}
CLIENT_STOP = {ClientFormat.CHAT: CHAT_STOP, ClientFormat.RESPONSES: RESPONSES_STOP,
               ClientFormat.MESSAGES: MESSAGES_STOP}


def scenario_id(scenario: Scenario) -> str:
    codec = "ollama" if scenario.backend.speaks_ollama else f"sse-{scenario.backend.value}"
    return f"{codec}-{scenario.name}"
