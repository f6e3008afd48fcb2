"""Golden fixtures for every feature × client format × backend codec, non-streamed.

Each case runs the whole path (client body -> upstream request; upstream answer -> client
answer), checks the feature's semantics, validates the client's answer with the official SDK
types (strictly, unknown keys rejected), and compares both translated bodies byte-for-byte
with tests/translate/fixtures/. Regenerate after an intended change with TOKIOS_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest
import translate_sdk_check as sdk
from translate_cases import Case, View, all_cases
from translate_convo import ollama_answer, openai_answer

from tokios_translate import (
    BackendKind,
    ClientFormat,
    TranslationError,
    error_response,
    translate_request,
    translate_response,
)

FIXTURES = Path(__file__).parent / "fixtures"
UPDATE = os.environ.get("TOKIOS_UPDATE_GOLDEN") == "1"
CASES = [c for c in all_cases() if c.status != "n/a"]
BACKEND = {"ollama": BackendKind.OLLAMA, "openai": BackendKind.LLAMACPP}

_CHAT_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
              "content_filter": "content_filter"}
_MSG_STOP = {"end_turn": "end_turn", "max_tokens": "max_tokens", "tool_use": "tool_use",
             "stop_sequence": "stop_sequence", "refusal": "content_filter"}


def client_view(client: ClientFormat, body: bytes) -> View:
    """Parse the answer with the SDK and reduce it to what the client ends up with."""
    if client is ClientFormat.CHAT:
        completion = sdk.chat_completion(body)
        choice = completion.choices[0]
        extra = choice.message.model_extra or {}
        assert completion.usage is not None
        return View(
            text=choice.message.content or "",
            thinking=extra.get("reasoning_content", ""),
            calls=[(c.id, c.function.name, orjson.loads(c.function.arguments))  # type: ignore[union-attr]
                   for c in choice.message.tool_calls or []],
            stop=_CHAT_STOP[choice.finish_reason],
            stop_sequence=None,
            usage=(completion.usage.prompt_tokens, completion.usage.completion_tokens),
        )
    if client is ClientFormat.RESPONSES:
        response = sdk.response(body)
        text, thinking, calls = "", "", []
        for item in response.output:
            if item.type == "message":
                text += "".join(c.text for c in item.content if c.type == "output_text")
            elif item.type == "reasoning":
                thinking += "".join(s.text for s in item.summary)
            elif item.type == "function_call":
                calls.append((item.call_id, item.name, orjson.loads(item.arguments)))
        if response.status == "incomplete":
            assert response.incomplete_details is not None
            stop = {"max_output_tokens": "max_tokens",
                    "content_filter": "content_filter"}[response.incomplete_details.reason or ""]
        else:
            stop = "tool_use" if calls else "end_turn"
        assert response.usage is not None
        return View(text=text, thinking=thinking, calls=calls, stop=stop, stop_sequence=None,
                    usage=(response.usage.input_tokens, response.usage.output_tokens))
    message = sdk.message(body)
    text, thinking, calls = "", "", []
    for block in message.content:
        if block.type == "text":
            text += block.text
        elif block.type == "thinking":
            thinking += block.thinking
        elif block.type == "tool_use":
            calls.append((block.id, block.name, block.input))
    return View(text=text, thinking=thinking, calls=calls,
                stop=_MSG_STOP[message.stop_reason or ""], stop_sequence=message.stop_sequence,
                usage=(message.usage.input_tokens, message.usage.output_tokens))


def check_error(client: ClientFormat, status: int, body: bytes, case: Case) -> None:
    assert case.error is not None
    assert status == case.error[0]
    if client is ClientFormat.MESSAGES:
        message = sdk.anthropic_error(body)["error"]["message"]
    else:
        message = sdk.openai_error(body).message
    assert case.error[1] in message


def run(case: Case) -> dict[str, Any]:
    """Run one case end to end, check it, and return its record for the golden file."""
    body = orjson.dumps(case.request)
    record: dict[str, Any] = {"request": case.request}
    try:
        upstream = translate_request(case.client, body, backend=BACKEND[case.backend],
                                     upstream_model="qwen3:8b", deployment="dep",
                                     response_id="r1", created=1_750_000_000)
    except TranslationError as err:
        assert case.status == "error", f"unexpected error: {err.message}"
        answer = error_response(case.client, err)
        check_error(case.client, answer.status, answer.body, case)
        record["client_status"] = answer.status
        record["client_response"] = orjson.loads(answer.body)
        return record
    up = orjson.loads(upstream.body)
    assert up["model"] == "qwen3:8b"
    assert up["stream"] is False
    record["upstream_path"] = upstream.path
    record["upstream_request"] = up
    if case.check_up is not None:
        case.check_up(up)
    if case.upstream_error is not None:
        status, upstream_body = case.upstream_error
        answer = translate_response(upstream.context, status, upstream_body)
        check_error(case.client, answer.status, answer.body, case)
        record["upstream_response"] = upstream_body.decode()
    else:
        assert case.status != "error", "expected an error"
        raw = (ollama_answer if case.backend == "ollama" else openai_answer)(case.answer)
        answer = translate_response(upstream.context, 200, orjson.dumps(raw))
        assert answer.status == 200, answer.body
        view = client_view(case.client, answer.body)
        if case.check_view is not None:
            case.check_view(view)
        record["upstream_response"] = raw
    record["client_status"] = answer.status
    record["client_response"] = orjson.loads(answer.body)
    return record


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden(case: Case) -> None:
    record = run(case)
    path = FIXTURES / f"{case.feature}.{case.client.value}.{case.backend}.json"
    text = orjson.dumps(record, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    if UPDATE:
        path.write_bytes(text)
    assert path.exists(), f"missing fixture {path.name}: run with TOKIOS_UPDATE_GOLDEN=1"
    assert orjson.loads(path.read_bytes()) == record
