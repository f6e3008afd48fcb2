"""The chaos suite: connectors SIGKILLed and the gateway restarted under mixed real traffic,
and not one request may end as a defect (tests/chaos/runner.py; classify.py says what counts).

The CI run lasts ``TOKIOS_CHAOS_SECONDS`` (default 30) per stack; a release check runs
``python -m tests.chaos --seconds 600`` (docs/chaos.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.classify import Api, Seen, Verdict, judge
from tests.chaos.runner import ChaosRun

SECONDS = float(os.environ.get("TOKIOS_CHAOS_SECONDS", "30"))


@pytest.mark.timeout(SECONDS * 4 + 120)
@pytest.mark.parametrize(("runtime", "backend"), [("asyncio", "ollama"),
                                                  ("threaded", "llamacpp")])
def test_no_request_ends_as_a_defect(tmp_path: Path, runtime: str, backend: str) -> None:
    report = ChaosRun(tmp_path, seconds=SECONDS, clients=16, kill_every=5.0,
                      runtime=runtime, backend=backend).run()
    print(report.summary())
    assert not report.defects, report.summary()
    # the run was a real one: faults happened, hit answers in flight, and most requests passed
    assert report.gateway_restarts == 1
    assert report.connector_kills >= SECONDS / 5 - 2
    errors = report.count(Verdict.CLEAN_ERROR)
    assert errors > 0, report.summary()
    assert report.count(Verdict.COMPLETE) > report.total / 2, report.summary()


# -- the judge itself must be able to fail -----------------------------------------------------

EXPECTED = "Echo: hi w0"


def chat_chunk(content: str, finish: str | None = None) -> bytes:
    return (b'data: {"choices":[{"index":0,"delta":{"content":"' + content.encode()
            + b'"},"finish_reason":' + (f'"{finish}"' if finish else "null").encode()
            + b"}]}\n\n")


def seen(api: Api, body: bytes, *, stream: bool = True, status: int | None = 200,
         content_type: str = "text/event-stream", failure: str | None = None,
         **extra: bool) -> Seen:
    return Seen(api=api, stream=stream, expected_text=EXPECTED, status=status,
                content_type=content_type, body=body, failure=failure, **extra)


def test_the_judge_passes_a_whole_chat_stream() -> None:
    body = chat_chunk("Echo: ") + chat_chunk("hi ") + chat_chunk("w0", "stop") + \
        b"data: [DONE]\n\n"
    assert judge(seen(Api.CHAT, body)).verdict is Verdict.COMPLETE


@pytest.mark.parametrize(("body", "detail"), [
    (chat_chunk("Echo: ") + chat_chunk("hi "), "malformed"),  # cut between events, no [DONE]
    (chat_chunk("Echo: ") + b'data: {"choi', "malformed"),  # cut inside an event
    (chat_chunk("Echo: ") + chat_chunk("hi ") + chat_chunk("w9", "stop") + b"data: [DONE]\n\n",
     "corrupted"),
    (chat_chunk("Echo: ") + b"data: [DONE]\n\n", "malformed"),  # [DONE] with no finish
])
def test_the_judge_finds_chat_defects(body: bytes, detail: str) -> None:
    outcome = judge(seen(Api.CHAT, body))
    assert outcome.verdict is Verdict.DEFECT and outcome.detail.startswith(detail)


def test_the_judge_accepts_an_in_stream_error_after_a_right_prefix_only() -> None:
    error = b'data: {"error":{"message":"lost","type":"server_error"}}\n\ndata: [DONE]\n\n'
    good = judge(seen(Api.CHAT, chat_chunk("Echo: ") + error))
    assert good.verdict is Verdict.CLEAN_ERROR
    wrong = judge(seen(Api.CHAT, chat_chunk("Hello ") + error))
    assert wrong.verdict is Verdict.DEFECT


def test_the_judge_on_transport_failures() -> None:
    cut = judge(seen(Api.OLLAMA, b'{"message":{"content":"Echo: "},"done":false}\n',
                     content_type="application/x-ndjson", failure="RemoteProtocolError"))
    assert cut.verdict is Verdict.DEFECT and cut.detail.startswith("truncated")
    dropped = judge(seen(Api.CHAT, b"", status=None, failure="RemoteProtocolError"))
    assert dropped.verdict is Verdict.DEFECT
    during_restart = judge(seen(Api.CHAT, b"", status=None, failure="RemoteProtocolError",
                                gateway_restarting=True))
    assert during_restart.verdict is Verdict.NOT_STARTED
    refused = judge(seen(Api.CHAT, b"", status=None, failure="ConnectError", refused=True))
    assert refused.verdict is Verdict.NOT_STARTED
    hung = judge(seen(Api.CHAT, chat_chunk("Echo: "), timed_out=True))
    assert hung.verdict is Verdict.DEFECT and hung.detail == "hung"


def test_the_judge_wants_errors_in_the_clients_format() -> None:
    anthropic_body = b'{"type":"error","error":{"type":"api_error","message":"x"}}'
    assert judge(seen(Api.MESSAGES, anthropic_body, stream=False, status=502,
                      content_type="application/json")).verdict is Verdict.CLEAN_ERROR
    openai_body = b'{"error":{"message":"x","type":"server_error"}}'
    assert judge(seen(Api.MESSAGES, openai_body, stream=False, status=502,
                      content_type="application/json")).verdict is Verdict.DEFECT
    assert judge(seen(Api.CHAT, b"bad gateway", stream=False, status=502,
                      content_type="text/plain")).verdict is Verdict.DEFECT
    assert judge(seen(Api.OLLAMA, b'{"error":"x"}', stream=False, status=503,
                      content_type="application/json")).verdict is Verdict.CLEAN_ERROR


def test_the_judge_checks_responses_sequence_and_end() -> None:
    def event(kind: str, seq: int, extra: str = "") -> bytes:
        return (f'event: {kind}\ndata: {{"type":"{kind}","sequence_number":{seq}{extra}}}\n\n'
                .encode())
    whole = (event("response.created", 0) + event("response.output_text.delta", 1,
                                                   ',"delta":"Echo: hi w0"')
             + event("response.completed", 2))
    assert judge(seen(Api.RESPONSES, whole)).verdict is Verdict.COMPLETE
    skipped = (event("response.created", 0) + event("response.output_text.delta", 2,
                                                     ',"delta":"Echo: hi w0"')
               + event("response.completed", 3))
    assert judge(seen(Api.RESPONSES, skipped)).verdict is Verdict.DEFECT
    unfinished = event("response.created", 0) + event("response.output_text.delta", 1,
                                                      ',"delta":"Echo: "')
    assert judge(seen(Api.RESPONSES, unfinished)).verdict is Verdict.DEFECT


def test_the_judge_checks_messages_end() -> None:
    def event(kind: str, extra: str = "") -> bytes:
        return f'event: {kind}\ndata: {{"type":"{kind}"{extra}}}\n\n'.encode()
    delta = ',"index":0,"delta":{"type":"text_delta","text":"Echo: hi w0"}'
    whole = event("message_start") + event("content_block_delta", delta) + \
        event("message_stop")
    assert judge(seen(Api.MESSAGES, whole)).verdict is Verdict.COMPLETE
    no_stop = event("message_start") + event("content_block_delta", delta)
    assert judge(seen(Api.MESSAGES, no_stop)).verdict is Verdict.DEFECT
