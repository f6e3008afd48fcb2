"""The agentic script and the installer's cache, without any agent (no npm needed)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.agents import install
from tests.agents.upstream import (
    COMMAND,
    FINAL_TEXT,
    REASONING,
    SHORT_TEXT,
    agent_script,
    arguments_for,
    shell_tool,
)
from tests.upstreams.model_servers import OllamaServer, OpenAICompatServer

pytestmark = pytest.mark.agents

#: The shell tools' schemas as the agents send them (trimmed to what matters here).
CLAUDE_BASH = {"type": "object", "required": ["command"], "properties": {
    "command": {"type": "string"}, "timeout": {"type": "number"},
    "description": {"type": "string"}, "run_in_background": {"type": "boolean"}}}
CODEX_EXEC = {"type": "object", "required": ["cmd"], "additionalProperties": False,
              "properties": {"cmd": {"type": "string"}, "workdir": {"type": "string"},
                             "yield_time_ms": {"type": "number"}}}
CODEX_SHELL = {"type": "object", "required": ["command", "workdir"], "properties": {
    "command": {"type": "array", "items": {"type": "string"}}, "workdir": {"type": "string"},
    "timeout_ms": {"type": "number"}}}
OPENCODE_BASH = {"type": "object", "required": ["command", "description"], "properties": {
    "command": {"type": "string"}, "description": {"type": "string"},
    "timeout": {"type": "integer"}}}


def _tools(name: str, schema: dict[str, Any]) -> list[dict[str, Any]]:
    other = {"type": "function", "function": {"name": "Read", "parameters": {}}}
    return [other, {"type": "function", "function": {"name": name, "parameters": schema}}]


def test_arguments_follow_each_shell_tools_schema() -> None:
    assert arguments_for(CLAUDE_BASH) == {"command": COMMAND,
                                          "description": "Write the proof file"}
    assert arguments_for(CODEX_EXEC) == {"cmd": COMMAND}
    assert arguments_for(CODEX_SHELL) == {"command": ["bash", "-lc", COMMAND], "workdir": ""}
    assert arguments_for(OPENCODE_BASH) == {"command": COMMAND,
                                            "description": "Write the proof file"}


def test_shell_tool_is_found_among_the_offered_tools() -> None:
    assert shell_tool(_tools("Bash", CLAUDE_BASH)) == ("Bash", CLAUDE_BASH)
    assert shell_tool(_tools("exec_command", CODEX_EXEC)) == ("exec_command", CODEX_EXEC)
    assert shell_tool(_tools("get_weather", {})) is None


def test_script_calls_the_tool_then_answers_its_result() -> None:
    user = [{"role": "system", "content": "s"}, {"role": "user", "content": "go"}]
    first = agent_script({"messages": user, "tools": _tools("bash", OPENCODE_BASH)}, False, 0)
    assert first.tool_calls == [("bash", arguments_for(OPENCODE_BASH))]
    assert first.text_words == [] and first.thinking is None
    result = [*user, {"role": "assistant", "tool_calls": [{"id": "call_0"}]},
              {"role": "tool", "tool_call_id": "call_0", "content": "(no output)"}]
    final = agent_script({"messages": result, "tools": _tools("bash", OPENCODE_BASH)}, True, 0)
    assert final.tool_calls == [] and "".join(final.text_words) == FINAL_TEXT
    assert final.thinking == REASONING
    title = agent_script({"messages": user}, False, 0)
    assert title.tool_calls == [] and "".join(title.text_words) == SHORT_TEXT


async def _wire(server_cls: type[OllamaServer] | type[OpenAICompatServer]) -> bytes:
    path = "/api/chat" if server_cls is OllamaServer else "/v1/chat/completions"
    async with server_cls(model_names=("m",), script=agent_script) as server:
        body = {"model": "m", "stream": True, "tools": _tools("Bash", CLAUDE_BASH),
                "messages": [{"role": "user", "content": "hi"}]}
        async with httpx.AsyncClient() as client:
            resp = await client.post(f"{server.base_url}{path}", json=body, timeout=10)
            assert resp.status_code == 200
            return resp.content


def test_servers_answer_with_the_script_on_their_own_wire() -> None:
    ndjson = asyncio.run(_wire(OllamaServer))
    lines = [orjson.loads(line) for line in ndjson.splitlines() if line]
    calls = [c for x in lines for c in x["message"].get("tool_calls", [])]
    assert [c["function"]["name"] for c in calls] == ["Bash"]
    assert calls[0]["function"]["arguments"]["command"] == COMMAND  # an object on Ollama
    sse = asyncio.run(_wire(OpenAICompatServer))
    events = [e.removeprefix(b"data: ") for e in sse.split(b"\n\n") if e]
    assert events[-1] == b"[DONE]"
    arguments = "".join(
        call["function"].get("arguments", "")
        for e in events[:-1] for choice in orjson.loads(e)["choices"]
        for call in choice["delta"].get("tool_calls", []))
    assert orjson.loads(arguments)["command"] == COMMAND  # a JSON string on OpenAI SSE


def test_installed_agent_is_reused_without_npm(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    agent = install.AGENTS["opencode"]
    directory = tmp_path / f"{agent.package}@{agent.version}"
    binary = directory / "node_modules/opencode-linux-x64/bin/opencode"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\necho 9.9.9\n")
    binary.chmod(0o755)
    monkeypatch.setenv("TOKIOS_AGENTS_CACHE", str(tmp_path))
    monkeypatch.delenv("TOKIOS_AGENTS_VERSIONS", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "no-npm-here"))
    # Without the marker the install counts as unfinished and npm (missing here) is needed.
    with pytest.raises(install.InstallError, match="npm is not installed"):
        install.ensure("opencode")
    (directory / install.MARKER).write_text("done\n")
    installed = install.ensure("opencode")
    assert installed.binary == binary and installed.version == agent.version
    monkeypatch.setenv("PATH", os.defpath)
    assert install.binary_version(installed) == "9.9.9"
