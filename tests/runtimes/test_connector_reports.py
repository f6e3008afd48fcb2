"""What the connector reports to the gateway, without I/O: each stream's usage as its work
counts it (runtimes/connector/serving.py ``StreamWork.usage``, over the rig of
test_connector_serving.py), the REPORT the session sends once per stream, and the model
server's health (runtimes/connector/health.py) from its model-list answer."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from runtimes.connector.cli import build_parser, parse_arguments, settings_from_args
from runtimes.connector.health import UpstreamHealth
from runtimes.connector.session import SessionEvents, StreamRequest
from runtimes.connector.tunnels import TunnelPlan
from runtimes.upstream_http import Failure, Received, ResponseHead, UpstreamError
from tests.runtimes.test_connector_serving import (
    CHAT,
    JSON_HEAD,
    SSE_HEAD,
    WHOLE_CHAT,
    called,
    rig,
    sse,
)
from tokios_proto import RequestHead, UsageReported
from tokios_translate import BackendKind
from tokios_translate.models import upstream_model_names

USAGE_CHUNK = b"data: " + orjson.dumps({
    "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
    "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}) + b"\n\n"
OLLAMA_HEAD = ResponseHead(200, "OK", [("content-type", "application/x-ndjson")])


def test_a_streamed_answer_reports_the_backends_own_count() -> None:
    r = rig({**CHAT, "stream": True})
    called(r)
    r.feed(SSE_HEAD, sse("Hello"), sse(" there", finish="stop"), USAGE_CHUNK, b"data: [DONE]\n\n")
    assert r.work.usage() == (11, 7, False)


def test_an_ollama_stream_reports_prompt_eval_count_and_eval_count() -> None:
    r = rig({**CHAT, "stream": True}, path="/api/chat", backend=BackendKind.OLLAMA)
    called(r)
    r.feed(OLLAMA_HEAD, orjson.dumps({"message": {"role": "assistant", "content": "Hi"},
                                      "done": False}) + b"\n",
           orjson.dumps({"message": {"role": "assistant", "content": ""}, "done": True,
                         "done_reason": "stop", "prompt_eval_count": 21,
                         "eval_count": 4}) + b"\n")
    assert r.work.usage() == (21, 4, False)


def test_a_stream_cut_short_counts_what_was_generated_estimated() -> None:
    r = rig({**CHAT, "stream": True})
    called(r)
    prompt = r.work.plan.context.estimated_input_tokens  # type: ignore[union-attr]
    assert prompt > 0
    r.feed(SSE_HEAD, sse("x" * 40))  # then the client leaves: the stream is reset
    assert r.work.usage() == (prompt, 10, True)
    r.feed(sse("y" * 4))
    assert r.work.usage() == (prompt, 11, True)


def test_a_whole_answer_reports_its_usage_or_an_estimate_when_it_has_none() -> None:
    r = rig(CHAT)
    called(r)
    r.feed(JSON_HEAD, WHOLE_CHAT, Received.END)
    assert r.work.usage() == (3, 2, False)
    bare = orjson.loads(WHOLE_CHAT)
    del bare["usage"]
    r = rig(CHAT)
    called(r)
    r.feed(JSON_HEAD, orjson.dumps(bare), Received.END)
    prompt = r.work.plan.context.estimated_input_tokens  # type: ignore[union-attr]
    assert r.work.usage() == (prompt, 2, True)  # "Hello." is 6 characters: 2 tokens


def test_no_tokens_when_the_model_was_not_asked_or_refused() -> None:
    refused = rig({"model": "llama"}, path="/v1/messages")  # answered at once, a 400
    assert refused.work.usage() == (0, 0, False)
    unreachable = rig({**CHAT, "stream": True})
    unreachable.work.upstream_failed(UpstreamError("refused", Failure.CONNECT), 0.0)
    assert unreachable.work.usage() == (0, 0, False)
    loading = rig(CHAT)
    called(loading)
    loading.feed(ResponseHead(503, "Service Unavailable", []), b'{"error":"loading"}',
                 Received.END)
    assert loading.work.usage() == (0, 0, False)
    assert loading.work.failure == "status" and unreachable.work.failure == "connect"


#: The one tunnel of these sessions (its plan is not consulted: no handshake here).
SLOT = TunnelPlan(1, ("wss://gw/v1/tunnel",), rng=lambda: 0.5).slots[0]


class _Connector:
    settings = None
    backend = BackendKind.LLAMACPP
    plan = None
    sessions = 0
    metrics = None
    health = None


class _Session(SessionEvents[StreamRequest]):
    pass


def test_the_session_reports_each_streams_usage_once() -> None:
    r = rig({**CHAT, "stream": True})
    called(r)
    r.feed(SSE_HEAD, sse("Hello", finish="stop"), USAGE_CHUNK, b"data: [DONE]\n\n")
    session = _Session(_Connector(), r.pair.connector, SLOT)  # type: ignore[arg-type]
    stream = StreamRequest(RequestHead(method="POST", path="/v1/chat/completions",
                                       deployment="llama", request_id="rid-1"))
    stream.work = r.work
    session.finish_stream(r.stream_id, stream, r.now)
    session.finish_stream(r.stream_id, stream, r.now)  # once only
    r.pair.flush()
    reports = [e for e in r.pair.gateway_events if isinstance(e, UsageReported)]
    assert [(e.stream_id, e.input_tokens, e.output_tokens, e.estimated) for e in reports] == [
        (r.stream_id, 11, 7, False)]


# ---- health --------------------------------------------------------------------------------


def test_upstream_model_names_of_each_backend_bounded() -> None:
    ollama = orjson.dumps({"models": [{"name": "qwen3:8b"}, {"name": "llama3:latest"},
                                      {"name": "qwen3:8b"}, {"nom": "x"}, "junk"]})
    assert upstream_model_names(BackendKind.OLLAMA, ollama) == ("qwen3:8b", "llama3:latest")
    openai = orjson.dumps({"object": "list", "data": [{"id": f"m{i}"} for i in range(1500)]
                           + [{"id": "x" * 300}]})
    names = upstream_model_names(BackendKind.VLLM, openai)
    assert names is not None and len(names) == 1000 and names[0] == "m0"
    for junk in (b"not json", b"[]", b'{"data": 3}'):
        assert upstream_model_names(BackendKind.LLAMACPP, junk) is None


def test_health_reports_changes_only_and_every_deployment_alike() -> None:
    health = UpstreamHealth(BackendKind.OLLAMA, ["a", "b"], interval=10.0)
    assert health.path == "/api/tags" and health.report() is None and health.due_in(0) == 0
    health.started(0.0)
    with pytest.raises(RuntimeError):
        health.started(0.0)  # one check at a time
    tags = orjson.dumps({"models": [{"name": "qwen3:8b"}]})
    assert health.answered(200, tags, 0.1) is True
    assert [(d.name, d.healthy, d.models) for d in health.report() or ()] == [
        ("a", True, ("qwen3:8b",)), ("b", True, ("qwen3:8b",))]
    assert health.due_in(5.0) == 5.0
    health.started(10.0)
    assert health.answered(200, tags, 10.1) is False  # nothing changed: no report
    health.started(20.0)
    assert health.failed(20.5) is True
    assert [(d.healthy, d.models) for d in health.report() or ()] == [
        (False, ("qwen3:8b",))] * 2  # the last known list stays
    health.started(30.0)
    assert health.answered(503, b"loading", 30.1) is False  # still unhealthy
    health.started(40.0)
    assert health.answered(200, orjson.dumps({"models": []}), 40.1) is True
    assert health.healthy is True and health.models == ()


def test_openai_compatible_servers_are_checked_on_v1_models() -> None:
    for backend in (BackendKind.LLAMACPP, BackendKind.VLLM, BackendKind.OPENAI):
        assert UpstreamHealth(backend, ["a"]).path == "/v1/models"
    with pytest.raises(ValueError):
        UpstreamHealth(BackendKind.OPENAI, ["a"], interval=0)


# ---- the options ---------------------------------------------------------------------------

BASE = ["--gateway", "https://gw.example", "--token", "tkct-x", "--upstream",
        "http://127.0.0.1:11434", "--backend", "ollama", "--model", "coder=qwen3:8b"]


def test_health_and_metrics_options_flags_environment_and_file(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("TOKIOS_HEALTH_INTERVAL", "TOKIOS_CONNECTOR_METRICS_LISTEN"):
        monkeypatch.delenv(name, raising=False)
    settings = settings_from_args(build_parser().parse_args(BASE))
    assert (settings.health_interval, settings.metrics_listen) == (10.0, None)  # no listener
    args = build_parser().parse_args([*BASE, "--health-interval", "0", "--metrics-listen",
                                      "9464"])
    assert (settings_from_args(args).health_interval,
            settings_from_args(args).metrics_listen) == (0.0, ("127.0.0.1", 9464))
    monkeypatch.setenv("TOKIOS_HEALTH_INTERVAL", "2.5")
    monkeypatch.setenv("TOKIOS_CONNECTOR_METRICS_LISTEN", "[::1]:9000")
    settings = settings_from_args(build_parser().parse_args(BASE))
    assert (settings.health_interval, settings.metrics_listen) == (2.5, ("::1", 9000))
    monkeypatch.delenv("TOKIOS_HEALTH_INTERVAL")
    monkeypatch.delenv("TOKIOS_CONNECTOR_METRICS_LISTEN")
    config = tmp_path / "connector.toml"
    config.write_text('health-interval = 30\nmetrics-listen = "0.0.0.0:9464"\n')
    args = parse_arguments([*BASE, "--config", str(config)])
    settings = settings_from_args(args)
    assert (settings.health_interval, settings.metrics_listen) == (30.0, ("0.0.0.0", 9464))


@pytest.mark.parametrize(("flag", "value"), [
    ("--health-interval", "-1"), ("--health-interval", "0.01"), ("--health-interval", "4000"),
    ("--metrics-listen", "host:http"), ("--metrics-listen", "127.0.0.1:70000"),
    ("--metrics-listen", "")])
def test_bad_values_are_usage_errors(flag: str, value: str) -> None:
    args = build_parser().parse_args([*BASE, flag, value])
    if flag == "--metrics-listen" and not value:
        assert settings_from_args(args).metrics_listen is None  # empty: off
        return
    with pytest.raises(ValueError, match=flag):
        settings_from_args(args)


def test_help_explains_health_usage_and_metrics() -> None:
    text = build_parser().format_help()
    for words in ("--health-interval SECONDS", "TOKIOS_HEALTH_INTERVAL", "/api/tags",
                  "--metrics-listen HOST:PORT", "TOKIOS_CONNECTOR_METRICS_LISTEN",
                  "tokios-gateway usage"):
        assert words in text, words
