"""The connector's per-stream algorithm (runtimes/connector/serving.py), driven as a shell
drives it, over a real in-memory core pair, with the upstream's answers scripted byte for byte
in each backend's wire format and a clock the test moves. Both shells run this very code; the
shell matrix (test_connector_matrix.py) checks they drive it the same way over real sockets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from runtimes.connector import handling
from runtimes.connector.serving import Step, StreamWork, Timing
from runtimes.tunnel.headers import RETRYABLE_HEADER as RETRYABLE
from runtimes.upstream_http import Failure, Received, ResponseHead, UpstreamError, UpstreamEvent
from tests.proto.pair import Pair
from tokios_proto import (
    Config,
    DataReceived,
    RequestHead,
    ResponseReceived,
    Settings,
    StreamEnded,
)
from tokios_translate import BackendKind

CHAT = {"model": "llama", "messages": [{"role": "user", "content": "hi"}]}
SSE_HEAD = ResponseHead(200, "OK", [("content-type", "text/event-stream")])
JSON_HEAD = ResponseHead(200, "OK", [("content-type", "application/json")])


def sse(content: str | None = None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    return b"data: " + orjson.dumps({
        "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + b"\n\n"


WHOLE_CHAT = orjson.dumps({
    "id": "c1", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "Hello."}}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})


@dataclass
class Rig:
    """A stream opened by the gateway end of a pair, and its StreamWork at the connector."""

    pair: Pair
    stream_id: int
    work: StreamWork
    received: bytearray = field(default_factory=bytearray)
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return orjson.loads(bytes(self.received))
    ended: bool = False
    unacknowledged: list[DataReceived] = field(default_factory=list)

    @property
    def now(self) -> float:
        return self.pair.now

    def pump(self, *, acknowledge: bool = True) -> None:
        """Move the core's output to the gateway, which reads it (and returns credit)."""
        self.pair.flush()
        for event in self.pair.gateway_events:
            if isinstance(event, ResponseReceived):
                self.status, self.headers = event.status, dict(event.headers)
            elif isinstance(event, DataReceived):
                self.received += event.data
                self.unacknowledged.append(event)
            elif isinstance(event, StreamEnded):
                self.ended = True
        self.pair.gateway_events.clear()
        if acknowledge:
            for data in self.unacknowledged:
                self.pair.gateway.acknowledge_received_data(
                    stream_id=data.stream_id, acknowledged_size=data.flow_controlled_length)
            self.unacknowledged.clear()
        self.pair.flush()

    def feed(self, *events: UpstreamEvent) -> None:
        for event in events:
            assert self.work.step is Step.RECEIVE, self.work.step
            self.work.received(event, self.now)
            self.pump()

    def at(self, when: float) -> None:
        """The clock reaches ``when`` with the upstream silent (the shell's read returns IDLE
        at the work's deadline)."""
        while (deadline := self.work.deadline) is not None and deadline <= when:
            self.pair.now = max(self.pair.now, deadline)
            self.feed(Received.IDLE)
        self.pair.now = when


def rig(body: dict[str, object], *, path: str = "/v1/chat/completions",
        backend: BackendKind = BackendKind.LLAMACPP, window: int | None = None,
        timing: Timing | None = None) -> Rig:
    config = None
    if window is not None:
        config = Config(settings=Settings(initial_stream_window=window,
                                          initial_connection_window=window))
    pair = Pair(gateway_config=config, connector_config=config)
    pair.handshake()
    stream_id = pair.gateway.open_stream(RequestHead(method="POST", path=path,
                                                     deployment="llama"))
    pair.gateway.send_data(stream_id, orjson.dumps(body), end_stream=True)
    pair.flush()
    plan = handling.plan_request(path, orjson.dumps(body), backend=backend, deployment="llama",
                                 upstream_model="m", response_id="r1", created=1)
    work = StreamWork(pair.connector, stream_id, plan, timing or Timing(), pair.now)
    built = Rig(pair, stream_id, work)
    built.pump()
    return built


def called(r: Rig) -> None:
    assert r.work.step is Step.CALL and r.work.call is not None
    r.work.called(r.now)
    r.pump()


def test_an_answer_known_at_once_is_sent_without_a_call() -> None:
    r = rig({"model": "llama"}, path="/v1/messages")  # no max_tokens, no messages: a 400
    assert r.work.step is Step.DONE and r.ended
    assert r.status == 400 and orjson.loads(r.received)["type"] == "error"
    assert r.headers["content-length"] == str(len(r.received))


def test_a_whole_answer_is_read_translated_and_sent_after_the_upstream_ended() -> None:
    r = rig(CHAT)
    assert r.status is None  # nothing is sent before the upstream answered
    called(r)
    r.feed(JSON_HEAD, WHOLE_CHAT[:20], WHOLE_CHAT[20:])
    assert r.status is None and r.work.step is Step.RECEIVE
    r.feed(Received.END)
    assert r.work.step is Step.DONE and r.ended and r.status == 200
    assert orjson.loads(r.received)["choices"][0]["message"]["content"] == "Hello."


def test_a_whole_answer_cut_by_the_upstream_is_a_502_not_retried() -> None:
    r = rig(CHAT)
    called(r)
    r.feed(JSON_HEAD, WHOLE_CHAT[:10])
    r.work.upstream_failed(UpstreamError("upstream read failed", Failure.CLOSED), r.now)
    r.pump()
    assert r.work.step is Step.DONE and r.status == 502 and RETRYABLE not in r.headers
    assert r.json()["error"]["message"] == "upstream connection lost"


def test_a_stream_starts_with_the_models_head_then_keeps_alive_until_the_first_token() -> None:
    r = rig({**CHAT, "stream": True}, timing=Timing(keepalive_interval=1.0, head_hold=5.0))
    called(r)
    assert r.status is None  # nothing before the model server answered
    r.feed(SSE_HEAD)  # llama.cpp: its head at once, tokens after the prefill
    assert r.status == 200 and r.headers["content-type"] == "text/event-stream"
    assert bytes(r.received).startswith(b":")  # Chat's opening: an SSE comment
    assert RETRYABLE not in r.headers
    r.at(3.5)  # three keep-alives, at 1, 2 and 3 s
    assert bytes(r.received).count(b": keep-alive") == 3
    r.feed(sse("Hel"), sse("lo"))
    assert r.work.deadline == 3.5 + 120.0  # the idle timeout; no keep-alive once answering
    r.feed(sse(None, "stop"), b"data: [DONE]\n\n")
    assert r.work.step is Step.DONE and r.ended
    text = bytes(r.received)
    assert text.count(b": keep-alive") == 3 and text.rstrip().endswith(b"data: [DONE]")
    assert b'"content":"Hel"' in text and b'"content":"lo"' in text


def test_a_stream_starts_after_the_head_hold_when_the_model_says_nothing() -> None:
    r = rig({**CHAT, "stream": True}, timing=Timing(keepalive_interval=1.0, head_hold=0.5))
    called(r)
    r.at(0.4)
    assert r.status is None
    r.at(0.5)  # Ollama: no head before the first token; the hold is over
    assert r.status == 200 and bytes(r.received).startswith(b":")
    r.at(2.6)
    assert bytes(r.received).count(b": keep-alive") == 2  # at 1.5 and 2.5 s
    r.feed(SSE_HEAD, sse("Hi"), sse(None, "stop"), b"data: [DONE]\n\n")
    assert r.ended and bytes(r.received).count(b"data: {") == 3


def test_an_ollama_native_stream_is_labelled_ndjson() -> None:
    r = rig({**CHAT, "stream": True}, path="/api/chat", backend=BackendKind.OLLAMA)
    called(r)
    r.feed(ResponseHead(200, "OK", [("content-type", "application/x-ndjson")]))
    assert r.status == 200 and r.headers["content-type"] == "application/x-ndjson"


def test_a_5xx_before_the_stream_started_is_a_whole_retryable_error() -> None:
    r = rig({**CHAT, "stream": True})
    called(r)
    r.feed(ResponseHead(503, "Service Unavailable", []),
           b'{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}',
           Received.END)
    assert r.work.step is Step.DONE and r.status == 503
    assert r.headers[RETRYABLE] == "1"  # for the gateway: another connector may serve it
    assert "Loading model" in r.json()["error"]["message"]  # the model server's own message


def test_a_4xx_before_the_stream_started_is_a_whole_error_not_retried() -> None:
    r = rig({**CHAT, "stream": True})
    called(r)
    r.feed(ResponseHead(404, "Not Found", []),
           b'{"error":{"code":404,"message":"model m not found","type":"not_found_error"}}',
           Received.END)
    assert r.status == 404 and RETRYABLE not in r.headers


def test_an_error_status_after_the_stream_started_is_the_formats_in_stream_error() -> None:
    r = rig({**CHAT, "stream": True}, timing=Timing(head_hold=0.5))
    called(r)
    r.at(0.5)
    assert r.status == 200
    r.feed(ResponseHead(503, "Service Unavailable", []),
           b'{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}',
           Received.END)
    assert r.work.step is Step.DONE and r.status == 200
    error = next(line for line in bytes(r.received).split(b"\n\n") if b'"error"' in line)
    assert b"Loading model" in error
    assert bytes(r.received).rstrip().endswith(b"data: [DONE]")


@pytest.mark.parametrize("failure", [Failure.CONNECT, Failure.WRITE, Failure.CLOSED])
def test_failing_before_the_models_head_is_a_whole_retryable_502(failure: Failure) -> None:
    for body in (CHAT, {**CHAT, "stream": True}):
        r = rig(body)
        if failure is not Failure.CONNECT:
            called(r)
        r.work.upstream_failed(UpstreamError("upstream failed", failure), r.now)
        r.pump()
        assert r.work.step is Step.DONE and r.status == 502 and r.headers[RETRYABLE] == "1"
        assert r.json()["error"]["message"] == "the model server could not be reached"


def test_failing_after_the_stream_started_is_in_stream_and_not_retryable() -> None:
    held = rig({**CHAT, "stream": True}, timing=Timing(head_hold=0.2))
    called(held)
    held.at(0.2)  # the head went out; the model server has said nothing yet
    held.work.upstream_failed(UpstreamError("upstream failed", Failure.CLOSED), held.now)
    held.pump()
    assert held.status == 200 and b"the model server could not be reached" in held.received
    after = rig({**CHAT, "stream": True})
    called(after)
    after.feed(SSE_HEAD, sse("Hel"))
    after.work.upstream_failed(UpstreamError("upstream read failed", Failure.CLOSED), after.now)
    after.pump()
    assert after.work.step is Step.DONE and b"upstream connection lost" in after.received


def test_no_first_byte_in_time_is_a_retryable_504_or_an_in_stream_timeout() -> None:
    whole = rig(CHAT, timing=Timing(first_byte_timeout=100.0))
    called(whole)
    whole.feed(JSON_HEAD)  # a head alone is not the answer: the first byte of the body is
    whole.at(100.0)
    assert whole.status == 504 and whole.headers[RETRYABLE] == "1"
    assert "did not start answering within 100 s" in whole.json()["error"]["message"]
    streamed = rig({**CHAT, "stream": True},
                   timing=Timing(keepalive_interval=40.0, first_byte_timeout=100.0))
    called(streamed)
    streamed.feed(SSE_HEAD)
    streamed.at(99.0)
    assert streamed.work.step is Step.RECEIVE and bytes(streamed.received).count(
        b": keep-alive") == 2
    streamed.at(100.0)
    assert streamed.work.step is Step.DONE and streamed.status == 200
    assert b"did not start answering within 100 s" in streamed.received


def test_a_silence_mid_answer_and_a_too_long_answer_end_with_timeouts() -> None:
    silent = rig({**CHAT, "stream": True}, timing=Timing(idle_timeout=10.0))
    called(silent)
    silent.feed(SSE_HEAD, sse("Hel"))
    silent.at(9.9)
    assert silent.work.step is Step.RECEIVE
    silent.at(10.0)
    assert b"sent nothing for 10 s" in silent.received and silent.ended
    slow = rig({**CHAT, "stream": True}, timing=Timing(idle_timeout=10.0, request_timeout=30.0))
    called(slow)
    slow.feed(SSE_HEAD)
    for second in range(1, 40):  # a token every second: never idle, but too long in all
        slow.at(float(second))
        if slow.work.step is Step.DONE:
            break
        slow.feed(sse("x"))
    assert slow.pair.now == 30.0 and b"took longer than 30 s" in slow.received


def test_a_slow_reader_stops_the_upstream_reads_until_credit_returns() -> None:
    r = rig({**CHAT, "stream": True}, window=1024)
    called(r)
    r.feed(SSE_HEAD)
    big = sse("x" * 3000)
    r.work.received(big, r.now)
    assert r.work.step is Step.CREDIT  # the shell must not read the upstream now
    r.pump(acknowledge=False)
    r.work.credit(r.now)
    assert r.work.step is Step.CREDIT  # the gateway has not read anything yet
    for _ in range(20):
        r.pump()  # the gateway reads (acknowledges): credit comes back
        r.work.credit(r.now)
        if r.work.step is not Step.CREDIT:
            break
    assert r.work.step is Step.RECEIVE
    r.pump()
    assert b"x" * 3000 in r.received  # all of it, in order


def test_a_whole_answer_over_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    r = rig(CHAT)
    monkeypatch.setattr(r.work._whole, "limit", 100)
    called(r)
    r.feed(JSON_HEAD, WHOLE_CHAT)
    assert r.work.step is Step.DONE and r.status == 502 and RETRYABLE not in r.headers
    assert "answer exceeds" in r.json()["error"]["message"]
