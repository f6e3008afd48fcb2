"""The model's side of an agentic loop: a script for the test upstreams' ``script`` hook.

Installed as ``server.script = agent_script`` on an :class:`~tests.upstreams.model_servers`
server (Ollama or OpenAI-compatible; the wire bytes stay the backend's own), it answers:

* a request that offers the agent's shell tool and carries no tool result yet: one call of that
  tool, with arguments built from the tool's own JSON schema, running :data:`COMMAND` (which
  writes :data:`PROOF_FILE` in the agent's working directory);
* a request whose messages carry a tool result: the fixed :data:`FINAL_TEXT`;
* any other request (title generation, a request without tools): :data:`SHORT_TEXT`;

and, when the request asks for thinking, streams :data:`REASONING` first in the backend's
reasoning field (Ollama ``thinking``, llama.cpp ``reasoning_content``).
"""

from __future__ import annotations

from typing import Any

from tests.upstreams.model_servers import Script

#: The shell tools of the agents the tier drives (Claude Code, opencode, Codex).
SHELL_TOOLS = ("Bash", "bash", "exec_command", "shell", "shell_command", "local_shell")
PROOF_FILE = "proof.txt"
PROOF_TEXT = "tokios-agent-ok"
COMMAND = f"echo {PROOF_TEXT} > {PROOF_FILE}"
FINAL_TEXT = "Done: the file is written."
SHORT_TEXT = "Tokios agent check"
REASONING = "Planning: write the proof file with the shell tool."


def shell_tool(tools: list[dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """The first offered tool named like a shell tool: ``(name, parameters schema)``."""
    by_name: dict[str, dict[str, Any]] = {}
    for tool in tools:
        function = tool.get("function") if isinstance(tool.get("function"), dict) else tool
        name = function.get("name")
        if isinstance(name, str):
            by_name[name] = function.get("parameters") or {}
    for name in SHELL_TOOLS:
        if name in by_name:
            return name, by_name[name]
    return None


def arguments_for(schema: dict[str, Any], command: str = COMMAND) -> dict[str, Any]:
    """Arguments that satisfy the tool's schema and run ``command``.

    ``command``/``cmd`` get the command (as ``["bash", "-lc", command]`` when the schema wants
    an array), ``description`` a short description, any other required property an empty value
    of its type.
    """
    properties: dict[str, Any] = schema.get("properties") or {}
    args: dict[str, Any] = {}
    for key in ("command", "cmd"):
        if key in properties:
            kind = properties[key].get("type")
            args[key] = ["bash", "-lc", command] if kind == "array" else command
            break
    if "description" in properties:
        args["description"] = "Write the proof file"
    empty: dict[str, Any] = {"string": "", "array": [], "object": {}, "boolean": False,
                             "number": 0, "integer": 0}
    for key in schema.get("required") or []:
        if key not in args:
            kind = (properties.get(key) or {}).get("type", "string")
            args[key] = empty.get(kind if isinstance(kind, str) else "string", "")
    return args


def has_tool_result(messages: list[dict[str, Any]]) -> bool:
    """True when the conversation carries a tool's result (``role: "tool"`` on both backends)."""
    return any(message.get("role") == "tool" for message in messages)


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + [words[-1]]


def agent_script(body: dict[str, Any], thinking_requested: bool, events: int) -> Script:
    """The answer to one upstream request (the servers' ``script`` hook signature)."""
    del events
    messages = body.get("messages") or []
    tool = shell_tool(body.get("tools") or [])
    calls: list[tuple[str, dict[str, Any]]] = []
    if has_tool_result(messages):
        text = FINAL_TEXT
    elif tool is not None:
        calls.append((tool[0], arguments_for(tool[1])))
        text = ""
    else:
        text = SHORT_TEXT
    return Script(
        text_words=_words(text) if text else [],
        tool_calls=calls,
        thinking=REASONING if thinking_requested else None,
        error_status=None,
        midstream_error=False,
    )
