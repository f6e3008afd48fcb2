"""Feature cases for the request shapes coding agents send today (registered into
:mod:`translate_cases`' matrix when it is imported).

Each shape here was seen in the agents' own traffic (Claude Code 2.1, Codex CLI 0.17x,
opencode 1.18) or is listed by the official API references as accepted; the rule is that a shape
the official API accepts never gets a 400 from Tokios: it is translated, or dropped where a
local model cannot use it (``dropped``, asserted absent upstream).
"""

from __future__ import annotations

from typing import Any

from translate_cases import (
    CHAT,
    HI,
    MSG,
    RESP,
    Case,
    ClientFormat,
    Up,
    View,
    feature,
    msgs,
    na,
    render,
)
from translate_convo import WEATHER_SCHEMA, Answer, Convo, to_chat, to_messages, to_responses

SHELL_SCHEMA = {"type": "object", "properties": {"cmd": {"type": "string"}},
                "required": ["cmd"]}
TALK = Convo(system="Be brief.", turns=[("user", [("text", "one")]),
                                        ("assistant", [("text", "two")]),
                                        ("user", [("text", "three")])])


def _tool_names(u: Up) -> list[str]:
    return [t["function"]["name"] for t in u.get("tools", [])]


def _user_texts(u: Up) -> list[str]:
    return [m["content"] for m in msgs(u) if m["role"] == "user"]


# -- system text after the first turn -----------------------------------------------------------

@feature("system-mid-conversation",
         "System / developer message after the first turn (kept in place, as user text)")
def _(client: ClientFormat, backend: str) -> Case:
    note = "in place as `<system>` user text (every chat template accepts it)"
    if client is MSG:
        request = to_messages(TALK)
        request["messages"].insert(2, {"role": "system", "content": "Now be formal."})
    elif client is CHAT:
        request = to_chat(TALK)
        request["messages"].insert(3, {"role": "system", "content": "Now be formal."})
    else:
        request = to_responses(TALK)
        request["input"].insert(2, {"type": "message", "role": "developer",
                                    "content": [{"type": "input_text", "text": "Now be formal."}]})

    def up(u: Up) -> None:
        assert msgs(u)[0] == {"role": "system", "content": "Be brief."}
        assert [m["role"] for m in msgs(u)] == ["system", "user", "assistant", "user"]
        assert _user_texts(u)[1] == "<system>\nNow be formal.\n</system>\nthree"
    return Case("system-mid-conversation", client, backend, request, check_up=up, note=note)


@feature("system-clear-at", "Anthropic `system` message with clear_at: next_user_message")
def _(client: ClientFormat, backend: str) -> Case:
    if client is not MSG:
        return na("system-clear-at", client, backend, "Messages only")
    request = to_messages(TALK)
    request["messages"].insert(1, {"role": "system", "content": "Only once.",
                                   "clear_at": "next_user_message"})

    def up(u: Up) -> None:
        assert "Only once." not in str(msgs(u))
        assert _user_texts(u) == ["one", "three"]
    return Case("system-clear-at", client, backend, request, check_up=up,
                note="left out once a later user turn exists, as the API does")


# -- tools the model cannot run, tools in other shapes ----------------------------------------

@feature("tools-hosted", "Hosted / server tools (web search, code execution, MCP, ...)")
def _(client: ClientFormat, backend: str) -> Case:
    weather = Convo(turns=HI.turns, tools=[{"name": "get_weather", "description": "w",
                                            "schema": WEATHER_SCHEMA}])
    if client is CHAT:  # Chat has no hosted tools: an unknown type is refused, as OpenAI does
        return Case("tools-hosted", client, backend,
                    to_chat(HI, tools=[{"type": "retrieval"}]), status="error",
                    error=(400, "function or custom"), note="an unknown tool type is a 400")
    if client is MSG:
        request = to_messages(weather)
        request["tools"] += [{"type": "web_search_20250305", "name": "web_search"},
                             {"type": "code_execution_20250825", "name": "code_execution"}]
        request["mcp_servers"] = [{"type": "url", "url": "https://mcp.example", "name": "x"}]
    else:
        request = to_responses(weather)
        request["tools"] += [{"type": "web_search", "external_web_access": False},
                             {"type": "file_search", "vector_store_ids": ["vs_1"]},
                             {"type": "code_interpreter", "container": {"type": "auto"}},
                             {"type": "image_generation"}, {"type": "local_shell"},
                             {"type": "mcp", "server_label": "x", "server_url": "https://x"},
                             {"type": "computer_use_preview", "display_width": 1,
                              "display_height": 1, "environment": "linux"}]

    def up(u: Up) -> None:
        assert _tool_names(u) == ["get_weather"]
    return Case("tools-hosted", client, backend, request, check_up=up, status="dropped",
                note="left out of what the model sees")


@feature("tools-namespace", "Responses `namespace` tools (flattened; calls keep `namespace`)")
def _(client: ClientFormat, backend: str) -> Case:
    if client is not RESP:
        return na("tools-namespace", client, backend, "Responses only")
    request = to_responses(HI)
    request["tools"] = [
        {"type": "function", "name": "exec_command", "parameters": SHELL_SCHEMA},
        {"type": "namespace", "name": "agents", "description": "Sub-agents", "tools": [
            {"type": "function", "name": "spawn", "description": "Start one",
             "parameters": {"type": "object"}},
            {"type": "function", "name": "exec_command", "parameters": SHELL_SCHEMA}]}]
    answer = Answer(text="", calls=[("call_1", "spawn", {}), ("call_2", "agents__exec_command",
                                                             {"cmd": "ls"})])

    def up(u: Up) -> None:
        assert _tool_names(u) == ["exec_command", "spawn", "agents__exec_command"]

    def view(v: View) -> None:
        assert [c[1] for c in v.calls] == ["agents/spawn", "agents/exec_command"]
    return Case("tools-namespace", client, backend, request, answer=answer, check_up=up,
                check_view=view, note="a clashing name becomes `<namespace>__<name>`")


@feature("tools-custom", "Custom (freeform) tools: a function with one string argument")
def _(client: ClientFormat, backend: str) -> Case:
    if client is MSG:
        return na("tools-custom", client, backend, "OpenAI formats only")
    grammar = {"type": "grammar", "syntax": "lark", "definition": "start: /[a-z]+/"}
    if client is CHAT:
        request = to_chat(HI, tools=[{"type": "custom", "custom": {
            "name": "apply_patch", "description": "Patch files", "format": grammar}}])
    else:
        request = to_responses(HI, tools=[{"type": "custom", "name": "apply_patch",
                                           "description": "Patch files", "format": grammar}])
    answer = Answer(text="", calls=[("call_1", "apply_patch", {"input": "abc"})])

    def up(u: Up) -> None:
        (tool,) = u["tools"]
        assert tool["function"]["name"] == "apply_patch"
        assert tool["function"]["parameters"]["required"] == ["input"]
        assert "start: /[a-z]+/" in tool["function"]["description"]

    def view(v: View) -> None:
        assert v.calls == [("call_1", "custom:apply_patch", {"input": "abc"})]
    return Case("tools-custom", client, backend, request, answer=answer, check_up=up,
                check_view=view, note="answered as a custom tool call with its `input`")


@feature("tools-deferred", "Deferred tools (`defer_loading`), found by tool search")
def _(client: ClientFormat, backend: str) -> Case:
    if client is CHAT:
        return na("tools-deferred", client, backend, "no deferred tools in Chat")
    if client is MSG:
        request = to_messages(Convo(turns=[
            ("user", [("text", "find a tool")]),
            ("assistant", [("call", "toolu_1", "ToolSearch", {"query": "time"})]),
            ("user", [("text", "ok")])]))
        request["messages"][2]["content"].insert(0, {
            "type": "tool_result", "tool_use_id": "toolu_1",
            "content": [{"type": "tool_reference", "tool_name": "get_time"}]})
        request["tools"] = [
            {"name": "ToolSearch", "input_schema": {"type": "object"}},
            {"name": "get_time", "input_schema": {"type": "object"}, "defer_loading": True},
            {"name": "get_weather", "input_schema": WEATHER_SCHEMA, "defer_loading": True}]
        expected = ["ToolSearch", "get_time"]
        note = "offered once a `tool_reference` names it"
    else:
        request = to_responses(HI)
        request["tools"] = [{"type": "tool_search"},
                            {"type": "function", "name": "get_time",
                             "parameters": {"type": "object"}, "defer_loading": True}]
        expected = ["get_time"]
        note = "offered at once (hosted tool search is left out)"

    def up(u: Up) -> None:
        assert _tool_names(u) == expected
    return Case("tools-deferred", client, backend, request, check_up=up, note=note)


@feature("tools-mid-conversation", "Anthropic `tool_addition` / `tool_removal` blocks")
def _(client: ClientFormat, backend: str) -> Case:
    if client is not MSG:
        return na("tools-mid-conversation", client, backend, "Messages only")
    request = to_messages(TALK, tools=[
        {"name": "get_weather", "input_schema": WEATHER_SCHEMA},
        {"name": "get_time", "input_schema": {"type": "object"}, "defer_loading": True}])
    request["messages"].insert(2, {"role": "system", "content": [
        {"type": "tool_removal", "tool": {"type": "tool_reference", "name": "get_weather"}},
        {"type": "tool_addition", "tool": {"type": "tool_reference", "name": "get_time"}},
        {"type": "tool_addition", "tool": {"type": "tool_definition", "definition": {
            "name": "get_date", "input_schema": {"type": "object"}}}}]})

    def up(u: Up) -> None:
        assert _tool_names(u) == ["get_time", "get_date"]
        assert _user_texts(u) == ["one", "three"]
    return Case("tools-mid-conversation", client, backend, request, check_up=up,
                note="the tool set at the end of the conversation is offered")


# -- history the model cannot read ----------------------------------------------------------------

@feature("history-server-items",
         "History with server-side items (hosted tool calls, encrypted reasoning, compaction)")
def _(client: ClientFormat, backend: str) -> Case:
    if client is CHAT:
        return na("history-server-items", client, backend, "no such items in Chat")
    if client is MSG:
        request = to_messages(TALK)
        request["messages"][1]["content"] = [
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search",
             "input": {"query": "x"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
            {"type": "compaction", "content": "Earlier: we said hi."},
            {"type": "text", "text": "two"}]
        request["messages"][2]["content"] += [
            {"type": "document", "title": "notes", "source": {
                "type": "text", "media_type": "text/plain", "data": "doc text"}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                            "data": "JVBERi0="}},
            {"type": "search_result", "source": "https://s", "title": "t",
             "content": [{"type": "text", "text": "found"}]}]
        expected = ["one", "three\nnotes\n\ndoc text\n"
                    "[a document (application/pdf) omitted: this model cannot read it]\n"
                    "t\nhttps://s\n\nfound"]
    else:
        request = to_responses(TALK)
        request["input"][1:1] = [
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
            {"type": "web_search_call", "id": "ws_1", "status": "completed",
             "action": {"type": "search", "query": "x"}},
            {"type": "compaction", "id": "cmp_1", "encrypted_content": "opaque"},
            {"type": "local_shell_call", "id": "ls_1", "call_id": "call_ls", "status":
             "completed", "action": {"type": "exec", "command": ["ls"], "env": {}}},
            {"type": "local_shell_call_output", "id": "call_ls", "output": "a.txt"},
            {"type": "custom_tool_call", "call_id": "call_c", "name": "apply_patch",
             "input": "patch"},
            {"type": "custom_tool_call_output", "call_id": "call_c", "output": "applied"}]
        expected = None

    def up(u: Up) -> None:
        if expected is not None:
            assert [m.get("content") for m in msgs(u) if m["role"] == "user"] == expected
            assert msgs(u)[2]["role"] == "assistant" and "two" in msgs(u)[2]["content"]
            return
        text = str(msgs(u))
        assert "opaque" not in text and "ws_1" not in text
        assert "a.txt" in text and "applied" in text and "patch" in text
    return Case("history-server-items", client, backend, request, check_up=up,
                status="dropped", note="server-side items left out; readable ones as text")


# -- parameters the official APIs accept --------------------------------------------------------

@feature("agent-parameters", "Fields agents send (effort, store, metadata, prediction, ...)")
def _(client: ClientFormat, backend: str) -> Case:
    extra: dict[str, Any]
    if client is MSG:
        extra = {"thinking": {"type": "adaptive", "display": "omitted"},
                 "output_config": {"effort": "max"}, "context_management": {
                     "edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
                 "container": "cnt_1", "service_tier": "auto", "top_k": 5,
                 "metadata": {"user_id": '{"device_id":"d"}'}}
    elif client is CHAT:
        extra = {"max_completion_tokens": 99, "parallel_tool_calls": False,
                 "reasoning_effort": "xhigh", "store": False, "metadata": {"k": "v"},
                 "prediction": {"type": "content", "content": "x"}, "modalities": ["text"],
                 "safety_identifier": "u1", "prompt_cache_key": "k", "verbosity": "low"}
    else:
        extra = {"reasoning": {"effort": "xhigh", "summary": "auto"}, "store": False,
                 "include": ["reasoning.encrypted_content"], "prompt_cache_key": "k",
                 "client_metadata": {"turn_id": "t"}, "parallel_tool_calls": True,
                 "service_tier": "auto", "truncation": "auto"}

    def up(u: Up) -> None:
        for key in ("context_management", "container", "prediction", "metadata",
                    "prompt_cache_key", "client_metadata", "include"):
            assert key not in u
        if backend == "ollama":
            assert u["think"] in (True, "high", "max")
        else:
            assert u["reasoning_effort"] == "high"
    note = ("the effort as Ollama's think level (else true)" if backend == "ollama"
            else "an effort beyond low/medium/high is sent as high")
    return Case("agent-parameters", client, backend, render(client, HI, **extra), check_up=up,
                note=note)


@feature("chat-audio", "Chat audio output (`modalities: [audio]`)")
def _(client: ClientFormat, backend: str) -> Case:
    if client is not CHAT:
        return na("chat-audio", client, backend, "Chat only")
    return Case("chat-audio", client, backend,
                to_chat(HI, modalities=["text", "audio"], audio={"voice": "alloy",
                                                                 "format": "wav"}),
                status="error", error=(400, "audio"),
                note="a clear 400, as OpenAI answers for a model without audio")

