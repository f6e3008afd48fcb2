"""Golden fixtures for every feature × client format × backend codec, non-streamed.

Each case runs the whole path (client body -> upstream request; upstream answer -> client
answer), checks the feature's semantics, validates the client's answer with the official SDK
types (strictly, unknown keys rejected), and compares both translated bodies byte-for-byte
with tests/translate/fixtures/. Regenerate after an intended change with TOKIOS_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
import translate_sdk_check as sdk
from translate_cases import Case, all_cases
from translate_convo import ollama_answer, openai_answer
from translate_view import client_view

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

def check_error(client: ClientFormat, status: int, body: bytes, case: Case) -> None:
    assert case.error is not None
    assert status == case.error[0]
    if client is ClientFormat.MESSAGES:
        message = sdk.anthropic_error(body)["error"]["message"]
    else:
        message = sdk.openai_error(body).message
    assert case.error[1] in message


#: Requests larger than this (the limit cases: 10,001 messages) are recorded by digest: the case
#: generates them, so a verbatim copy would only add megabytes of fixtures.
MAX_RECORDED_REQUEST = 64 * 1024


def _request_record(request: Any, body: bytes) -> Any:
    if len(body) <= MAX_RECORDED_REQUEST:
        return request
    return {"sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}


def run(case: Case) -> dict[str, Any]:
    """Run one case end to end, check it, and return its record for the golden file."""
    body = orjson.dumps(case.request)
    record: dict[str, Any] = {"request": _request_record(case.request, body)}
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
