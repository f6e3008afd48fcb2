"""Streamed answers that call Responses ``namespace`` and ``custom`` tools, and Chat custom
tools: each call comes back named the way the client offered the tool, checked event by event
against the SDK types and through the SDK's own stream helper."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from stream_scenarios import oa, oa_call, oa_usage, ollama, ollama_done, ollama_msg, sse
from stream_sdk_check import check_responses, sse_events

from tokios_translate import BackendKind, ClientFormat, translate_request, translate_response
from tokios_translate.stream import open_stream_translator

SHELL = {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}
RESPONSES_TOOLS = [
    {"type": "function", "name": "exec_command", "parameters": SHELL},
    {"type": "namespace", "name": "agents", "description": "Sub-agents", "tools": [
        {"type": "function", "name": "spawn", "parameters": {"type": "object"}},
        {"type": "function", "name": "exec_command", "parameters": SHELL}]},
    {"type": "custom", "name": "apply_patch", "description": "Patch files"},
    {"type": "web_search", "external_web_access": False},
]
#: What the model calls (flattened names), in order, and their arguments.
CALLS = [("spawn", {}), ("agents__exec_command", {"cmd": "ls"}),
         ("apply_patch", {"input": "*** Begin Patch\n*** End Patch"})]


def upstream_stream(backend: BackendKind) -> bytes:
    if backend is BackendKind.OLLAMA:
        calls = [{"function": {"index": i, "name": n, "arguments": a}}
                 for i, (n, a) in enumerate(CALLS)]
        return ollama(ollama_msg(tool_calls=calls), ollama_done())
    chunks: list[dict[str, Any] | str] = [oa({"role": "assistant", "content": None})]
    for i, (name, args) in enumerate(CALLS):
        text = orjson.dumps(args).decode()
        chunks += [oa_call(i, id=f"call_{i}", name=name), oa_call(i, args=text[:5]),
                   oa_call(i, args=text[5:])]
    chunks += [oa(finish="tool_calls"), oa_usage(), "[DONE]"]
    return sse(*chunks)


def _request(client: ClientFormat, body: dict[str, Any], backend: BackendKind) -> Any:
    return translate_request(client, orjson.dumps(body), backend=backend, upstream_model="m",
                             deployment="dep", response_id="a1", created=1)


@pytest.mark.parametrize("backend", [BackendKind.OLLAMA, BackendKind.LLAMACPP])
def test_responses_stream_names_namespaced_and_custom_calls(backend: BackendKind) -> None:
    upstream = _request(ClientFormat.RESPONSES, {"model": "dep", "input": "hi", "stream": True,
                                                  "tools": RESPONSES_TOOLS}, backend)
    sent = orjson.loads(upstream.body)["tools"]
    assert [t["function"]["name"] for t in sent] == [
        "exec_command", "spawn", "agents__exec_command", "apply_patch"]
    translator = open_stream_translator(upstream.context)
    body = translator.feed(upstream_stream(backend)) + translator.finish()
    result = check_responses(body)
    output = [item.model_dump(exclude_none=True) for item in result.response.output]
    assert [(o["type"], o.get("namespace"), o["name"]) for o in output] == [
        ("function_call", "agents", "spawn"), ("function_call", "agents", "exec_command"),
        ("custom_tool_call", None, "apply_patch")]
    assert json.loads(output[1]["arguments"]) == {"cmd": "ls"}
    assert output[2]["input"] == "*** Begin Patch\n*** End Patch"
    kinds = [e.event for e in sse_events(body)]
    assert "response.custom_tool_call_input.done" in kinds
    # The custom call's input is not streamed as function-call arguments.
    assert kinds.count("response.function_call_arguments.done") == 2


@pytest.mark.parametrize("backend", [BackendKind.OLLAMA, BackendKind.LLAMACPP])
def test_responses_whole_answer_names_namespaced_and_custom_calls(backend: BackendKind) -> None:
    upstream = _request(ClientFormat.RESPONSES, {"model": "dep", "input": "hi",
                                                  "tools": RESPONSES_TOOLS}, backend)
    if backend is BackendKind.OLLAMA:
        answer = {"model": "m", "created_at": "2026-01-01T00:00:00Z", "done": True,
                  "done_reason": "stop", "message": {"role": "assistant", "content": "",
                  "tool_calls": [{"function": {"name": n, "arguments": a}} for n, a in CALLS]}}
    else:
        answer = {"id": "x", "object": "chat.completion", "created": 1, "model": "m",
                  "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                      "role": "assistant", "content": None, "tool_calls": [
                          {"id": f"c{i}", "type": "function", "function": {
                              "name": n, "arguments": orjson.dumps(a).decode()}}
                          for i, (n, a) in enumerate(CALLS)]}}]}
    out = orjson.loads(translate_response(upstream.context, 200, orjson.dumps(answer)).body)
    assert [(o["type"], o.get("namespace"), o["name"]) for o in out["output"]] == [
        ("function_call", "agents", "spawn"), ("function_call", "agents", "exec_command"),
        ("custom_tool_call", None, "apply_patch")]
    assert "status" not in out["output"][2]


def test_history_calls_are_shown_to_the_model_under_their_flattened_names() -> None:
    body = {"model": "dep", "tools": RESPONSES_TOOLS, "input": [
        {"type": "message", "role": "user", "content": "hi"},
        {"type": "function_call", "call_id": "c1", "namespace": "agents",
         "name": "exec_command", "arguments": '{"cmd":"ls"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "a.txt"},
        {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "p"},
        {"type": "custom_tool_call_output", "call_id": "c2",
         "output": [{"type": "input_text", "text": "done"}]}]}
    sent = orjson.loads(_request(ClientFormat.RESPONSES, body, BackendKind.LLAMACPP).body)
    calls = [m["tool_calls"][0]["function"] for m in sent["messages"] if m.get("tool_calls")]
    assert calls == [{"name": "agents__exec_command", "arguments": '{"cmd":"ls"}'},
                     {"name": "apply_patch", "arguments": '{"input":"p"}'}]
    assert [m["content"] for m in sent["messages"] if m["role"] == "tool"] == ["a.txt", "done"]


def test_additional_tools_items_extend_the_offered_tools() -> None:
    body = {"model": "dep", "tools": [RESPONSES_TOOLS[0]], "input": [
        {"type": "additional_tools", "role": "developer", "tools": [
            {"type": "function", "name": "late_tool", "parameters": {"type": "object"}}]},
        {"type": "message", "role": "user", "content": "hi"}]}
    sent = orjson.loads(_request(ClientFormat.RESPONSES, body, BackendKind.LLAMACPP).body)
    assert [t["function"]["name"] for t in sent["tools"]] == ["exec_command", "late_tool"]


def test_chat_custom_tool_is_answered_as_a_custom_call_when_whole() -> None:
    body = {"model": "dep", "messages": [{"role": "user", "content": "hi"}], "tools": [
        {"type": "custom", "custom": {"name": "apply_patch"}}]}
    upstream = _request(ClientFormat.CHAT, body, BackendKind.LLAMACPP)
    answer = {"id": "x", "object": "chat.completion", "created": 1, "model": "m",
              "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                  "role": "assistant", "content": None, "tool_calls": [
                      {"id": "c0", "type": "function", "function": {
                          "name": "apply_patch", "arguments": '{"input":"x"}'}}]}}]}
    out = orjson.loads(translate_response(upstream.context, 200, orjson.dumps(answer)).body)
    assert out["choices"][0]["message"]["tool_calls"] == [
        {"id": "c0", "type": "custom", "custom": {"name": "apply_patch", "input": "x"}}]
