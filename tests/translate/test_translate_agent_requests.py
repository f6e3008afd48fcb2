"""The first requests the coding agents really send, captured from the agents themselves
(long texts shortened, identifiers replaced), translated for every backend.

Fixtures and SDK types prove a translation matches what we believed the API to be; these prove
it accepts what the agents send today. tests/agents runs the agents themselves end to end.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from tokios_translate import BackendKind, ClientFormat, TranslationError, translate_request

CAPTURES = Path(__file__).parent / "agent_requests"
FORMATS = {"messages": ClientFormat.MESSAGES, "responses": ClientFormat.RESPONSES,
           "chat": ClientFormat.CHAT}
BACKENDS = [BackendKind.OLLAMA, BackendKind.LLAMACPP, BackendKind.VLLM]


def capture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CAPTURES / name).read_text())
    return loaded


def translate(client: ClientFormat, body: dict[str, Any], backend: BackendKind) -> Any:
    upstream = translate_request(client, orjson.dumps(body), backend=backend,
                                 upstream_model="qwen3:8b", deployment="coder",
                                 response_id="r1", created=1)
    return orjson.loads(upstream.body)


def tool_names(sent: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] for t in sent.get("tools", [])]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(p.name for p in CAPTURES.glob("*.json")))
def test_every_captured_request_translates(name: str, backend: BackendKind) -> None:
    client = FORMATS[name.rsplit(".", 2)[1]]
    sent = translate(client, capture(name)["body"], backend)
    assert sent["messages"], "the conversation reaches the backend"
    assert sent["stream"] is True


@pytest.mark.parametrize("backend", BACKENDS)
def test_claude_code_request(backend: BackendKind) -> None:
    request = capture("claude-code-2.1.332.messages.json")
    assert request["path"] == "/v1/messages?beta=true"
    body = request["body"]
    sent = translate(ClientFormat.MESSAGES, body, backend)
    offered = [t["name"] for t in body["tools"] if not t.get("defer_loading")]
    assert tool_names(sent) == offered and "DeferredToolPlaceholder" not in tool_names(sent)
    system = sent["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("x-anthropic-billing")
    # thinking: adaptive with output_config.effort: high
    assert (sent.get("think") if backend is BackendKind.OLLAMA
            else sent.get("reasoning_effort")) == "high"


@pytest.mark.parametrize("backend", BACKENDS)
def test_claude_code_mid_conversation_system_message(backend: BackendKind) -> None:
    """Claude Code's mid-conversation-system beta puts a ``system`` message after the user's
    turn; it must be kept in place (and never be a 400)."""
    body = copy.deepcopy(capture("claude-code-2.1.332.messages.json")["body"])
    body["messages"].append({"role": "system", "content": [
        {"type": "text", "text": "The user switched to plan mode."}]})
    sent = translate(ClientFormat.MESSAGES, body, backend)
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["system", "user"]
    last = sent["messages"][-1]["content"]
    assert last.endswith("<system>\nThe user switched to plan mode.\n</system>")
    assert "hello" in last


@pytest.mark.parametrize("backend", BACKENDS)
def test_codex_request(backend: BackendKind) -> None:
    body = capture("codex-0.171.0.responses.json")["body"]
    kinds = [t["type"] for t in body["tools"]]
    assert "namespace" in kinds and "web_search" in kinds
    sent = translate(ClientFormat.RESPONSES, body, backend)
    namespace = next(t for t in body["tools"] if t["type"] == "namespace")
    inner = [t["name"] for t in namespace["tools"]]
    top = [t["name"] for t in body["tools"] if t["type"] == "function"]
    assert sorted(tool_names(sent)) == sorted(top + inner)
    assert sent["messages"][0]["role"] == "system"
    assert sent["messages"][0]["content"].startswith("You are a coding agent")
    assert [m["role"] for m in sent["messages"][1:]] == ["user"]


def test_codex_request_with_a_later_developer_message_keeps_it_in_place() -> None:
    body = copy.deepcopy(capture("codex-0.171.0.responses.json")["body"])
    body["input"] += [
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Hi."}]},
        {"type": "message", "role": "developer",
         "content": [{"type": "input_text", "text": "Approval policy changed."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go"}]}]
    sent = translate(ClientFormat.RESPONSES, body, BackendKind.LLAMACPP)
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
    assert sent["messages"][-1]["content"] == (
        "<system>\nApproval policy changed.\n</system>\ngo")


@pytest.mark.parametrize("backend", BACKENDS)
def test_opencode_request(backend: BackendKind) -> None:
    body = capture("opencode-1.18.33.chat.json")["body"]
    sent = translate(ClientFormat.CHAT, body, backend)
    assert tool_names(sent) == [t["function"]["name"] for t in body["tools"]]


def test_a_shape_the_api_refuses_is_still_refused() -> None:
    """Leniency is for what the official API accepts: an unknown content block stays a 400."""
    body = copy.deepcopy(capture("claude-code-2.1.332.messages.json")["body"])
    body["messages"][0]["content"].append({"type": "hologram"})
    with pytest.raises(TranslationError) as caught:
        translate(ClientFormat.MESSAGES, body, BackendKind.OLLAMA)
    assert caught.value.param == "messages[0].content[2].type"
