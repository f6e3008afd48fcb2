"""Real coding agents through a real gateway and connector: Claude Code, Codex and opencode.

Each scenario runs one agent non-interactively against the shared Stack of a backend (Ollama,
llama.cpp). The scripted upstream (:mod:`tests.agents.upstream`) answers the agent's first
request with a call of its shell tool that writes ``proof.txt``, and the tool's result with a
fixed final text, so one run proves the whole agentic loop: tools offered in the agent's own API
format, a tool call streamed back, the tool really run, its result sent up again, a final answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.agents import runner
from tests.agents.upstream import COMMAND, FINAL_TEXT, PROOF_FILE, PROOF_TEXT, REASONING
from tests.e2e.stack import Stack

pytestmark = [pytest.mark.agents, pytest.mark.timeout(runner.RUN_TIMEOUT + 60)]


@dataclass(frozen=True)
class Scenario:
    agent: str
    thinking: bool = False
    #: The gateway path of the agent's API.
    api: str = ""

    @property
    def id(self) -> str:
        return self.agent + ("-thinking" if self.thinking else "")


SCENARIOS = [
    Scenario("claude-code", api="/v1/messages"),
    Scenario("claude-code", thinking=True, api="/v1/messages"),
    Scenario("codex", api="/v1/responses"),
    Scenario("codex", thinking=True, api="/v1/responses"),
    Scenario("opencode", api="/v1/chat/completions"),
]


def _command(scenario: Scenario, installed: Any, stack: Stack, home: Path,
             opencode_cache: Path) -> tuple[list[str], dict[str, str]]:
    if scenario.agent == "claude-code":
        return runner.claude_code(installed, stack, home, scenario.thinking)
    if scenario.agent == "codex":
        return runner.codex(installed, stack, home, scenario.thinking)
    return runner.opencode(installed, stack, home, scenario.thinking, cache=opencode_cache)


def _tool_round_trip(requests: list[dict[str, Any]]) -> bool:
    """True when an upstream request carries our shell call followed by its tool result."""
    for body in requests:
        messages = body.get("messages") or []
        for i, message in enumerate(messages):
            if message.get("role") != "assistant":
                continue
            # Ollama sends arguments as an object, the OpenAI-compatible API as a JSON string.
            arguments = [json.dumps(call.get("function", {}).get("arguments"))
                         for call in message.get("tool_calls") or []]
            ran = any(json.dumps(COMMAND)[1:-1] in a for a in arguments)
            if ran and any(m.get("role") == "tool" for m in messages[i + 1:]):
                return True
    return False


def _thinking_requested(body: dict[str, Any]) -> bool:
    """Ollama's ``think``; llama.cpp's ``reasoning_effort`` or chat-template switch."""
    template = body.get("chat_template_kwargs") or {}
    return bool(body.get("think") or body.get("reasoning_effort")
                or template.get("enable_thinking"))


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.id)
def test_agent_runs_a_tool_through_the_tunnel(
    scenario: Scenario,
    agent_stack: Stack,
    install_agent: Any,
    opencode_cache: Path,
    tmp_path: Path,
) -> None:
    installed = install_agent(scenario.agent)
    home, workdir = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    workdir.mkdir()
    assert agent_stack.upstream is not None
    requests_before = len(agent_stack.upstream.requests)
    argv, env = _command(scenario, installed, agent_stack, home, opencode_cache)

    run = runner.run_agent(argv, env, stack=agent_stack, workdir=workdir)
    report = run.report(agent_stack)

    assert not run.timed_out and run.returncode == 0, report
    assert FINAL_TEXT in run.output, report
    proof = workdir / PROOF_FILE
    assert proof.is_file(), f"the shell tool did not run: no {proof}\n{report}"
    assert proof.read_text().strip() == PROOF_TEXT, report
    upstream_requests = agent_stack.upstream.requests[requests_before:]
    assert _tool_round_trip(upstream_requests), f"no tool result reached the upstream\n{report}"
    api_calls = [c for c in run.gateway_calls if c.path.split("?")[0] == scenario.api]
    assert len(api_calls) >= 2, f"expected the tool call and the final answer: {run.gateway_calls}"
    failed = [c for c in run.gateway_calls if c.status != 200]
    assert not failed, f"gateway calls that did not return 200: {failed}\n{report}"
    if scenario.thinking:
        assert any(_thinking_requested(body) for body in upstream_requests), (
            f"the upstream was never asked to think\n{report}")
        assert REASONING in run.output, f"the upstream's reasoning is not in the output\n{report}"
    elif scenario.agent == "codex":
        # Codex asks for no reasoning by default: the reasoning above is the setting's doing.
        assert not any(_thinking_requested(body) for body in upstream_requests), report
        assert REASONING not in run.output, report
