"""The connector's I/O-free decisions (handling.py), its CLI validation, the back-off schedule
and ``--backend auto`` probing against the real test model servers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtimes.connector import handling
from runtimes.connector.app import probe_backend
from runtimes.connector.cli import build_parser, main, settings_from_args, tunnel_url
from runtimes.connector.handling import Backoff, Route
from runtimes.connector.session import Reconnect
from runtimes.connector.settings import PermanentRejection
from runtimes.netio import UpstreamPool
from tests.upstreams.model_servers import OllamaServer, OpenAICompatServer
from tokios_proto import Rejected, RejectReason
from tokios_translate import BackendKind, ClientFormat


def test_tunnel_url_accepts_every_documented_form() -> None:
    assert tunnel_url("https://gw.example.com") == "wss://gw.example.com/v1/tunnel"
    assert tunnel_url("https://gw.example.com:8443/") == "wss://gw.example.com:8443/v1/tunnel"
    assert tunnel_url("wss://gw:9/v1/tunnel") == "wss://gw:9/v1/tunnel"
    assert tunnel_url("http://127.0.0.1:8080") == "ws://127.0.0.1:8080/v1/tunnel"
    assert tunnel_url("ws://127.0.0.1:8080/v1/tunnel") == "ws://127.0.0.1:8080/v1/tunnel"
    with pytest.raises(ValueError):
        tunnel_url("ftp://gw")
    with pytest.raises(ValueError):
        tunnel_url("gw.example.com")


def test_model_map_and_bare_names() -> None:
    assert handling.parse_model_map(["coder=qwen3:8b", "llama3"]) == {
        "coder": "qwen3:8b", "llama3": "llama3"}
    with pytest.raises(ValueError):
        handling.parse_model_map(["a=x", "a=y"])
    with pytest.raises(ValueError):
        handling.parse_model_map(["=x"])


def test_cli_env_fallbacks_and_usage_errors(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TOKIOS_GATEWAY", "https://gw.example.com")
    monkeypatch.setenv("TOKIOS_CONNECTOR_TOKEN", "tkct-abc")
    monkeypatch.setenv("TOKIOS_UPSTREAM", "http://127.0.0.1:11434")
    args = build_parser().parse_args(["--model", "coder=qwen3:8b", "--backend", "ollama"])
    settings_ = settings_from_args(args)
    assert settings_.tunnel_url == "wss://gw.example.com/v1/tunnel"
    assert settings_.token == "tkct-abc"
    assert settings_.backend is BackendKind.OLLAMA
    assert settings_.models == {"coder": "qwen3:8b"}
    assert main([]) == 2  # no --model
    assert "--model" in capsys.readouterr().err
    monkeypatch.delenv("TOKIOS_CONNECTOR_TOKEN")
    assert main(["--model", "x"]) == 2
    assert "--token" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "never" in help_text and "exit codes" in help_text


def test_backoff_is_full_jitter_exponential_capped_and_resets_after_stable() -> None:
    draws = iter([0.0, 0.5, 0.999, 0.5, 0.5, 0.5, 0.5, 0.25])
    backoff = Backoff(lambda: next(draws), base=0.5, cap=4.0, stable_after=10.0)
    delays = [backoff.next_delay() for _ in range(7)]
    # ceilings 0.5, 1, 2, 4, 4, 4, 4 (capped)
    assert delays == pytest.approx([0.0, 0.5, 1.998, 2.0, 2.0, 2.0, 2.0])
    backoff.connected(100.0)
    backoff.disconnected(105.0)  # not stable: keeps growing
    assert backoff.ceiling() == 4.0
    backoff.connected(200.0)
    backoff.disconnected(215.0)  # stable: starts over
    assert backoff.attempt == 0
    assert backoff.next_delay() == pytest.approx(0.25 * 0.5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=0.999999), min_size=1, max_size=40))
def test_backoff_delays_stay_in_range(draws: list[float]) -> None:
    values = iter(draws)
    backoff = Backoff(lambda: next(values), base=0.5, cap=15.0)
    for n in range(len(draws)):
        delay = backoff.next_delay()
        assert 0 <= delay < min(15.0, 0.5 * 2**n)


def test_plans_per_path() -> None:
    chat = orjson.dumps({"model": "coder", "stream": True,
                         "messages": [{"role": "user", "content": "hi"}]})
    plan = handling.plan_request("/v1/chat/completions", chat, backend=BackendKind.OLLAMA,
                                 deployment="coder", upstream_model="q:1", response_id="r1",
                                 created=1)
    assert plan.route is Route.GENERATE and plan.stream and plan.call is not None
    assert plan.call.path == "/api/chat"
    assert orjson.loads(plan.call.body)["model"] == "q:1"
    assert plan.context is not None and plan.context.model == "coder"

    bad = handling.plan_request("/v1/messages", b"{}", backend=BackendKind.OLLAMA,
                                deployment="coder", upstream_model="q:1", response_id="r",
                                created=1)
    assert bad.immediate is not None and bad.immediate.status == 400
    assert orjson.loads(bad.immediate.body)["type"] == "error"

    count = handling.plan_request(
        "/v1/messages/count_tokens",
        orjson.dumps({"model": "coder", "messages": [{"role": "user", "content": "abcd" * 10}]}),
        backend=BackendKind.OLLAMA, deployment="coder", upstream_model="q", response_id="r",
        created=1)
    assert count.route is Route.COUNT_TOKENS
    answer = count.immediate or handling.upstream_unreachable(count)
    assert orjson.loads(answer.body)["input_tokens"] > 0

    emb = handling.plan_request("/v1/embeddings", b'{"model":"coder","input":"x"}',
                                backend=BackendKind.VLLM, deployment="coder",
                                upstream_model="e", response_id="r", created=1)
    assert emb.route is Route.EMBEDDINGS and emb.call is not None
    assert emb.call.path == "/v1/embeddings"

    nowhere = handling.plan_request("/v1/other", b"{}", backend=BackendKind.OLLAMA,
                                    deployment="c", upstream_model="c", response_id="r",
                                    created=1)
    assert nowhere.immediate is not None and nowhere.immediate.status == 404
    down = handling.upstream_unreachable(plan)
    assert down.status == 502
    assert "content-length" in dict(handling.response_headers(down))
    assert handling.route_for("/v1/messages/") == (Route.GENERATE, ClientFormat.MESSAGES)


def test_auto_probe_recognises_each_backend(tmp_path: Path) -> None:
    async def main() -> None:
        async with OllamaServer() as ollama, OpenAICompatServer() as llamacpp:
            for server, expected in ((ollama, BackendKind.OLLAMA),
                                     (llamacpp, BackendKind.LLAMACPP)):
                pool = UpstreamPool(server.base_url)
                assert await probe_backend(pool) is expected
                await pool.aclose()
        # nothing listening there any more
        pool = UpstreamPool(ollama.base_url, connect_timeout=1)
        assert await probe_backend(pool) is None
        await pool.aclose()
        assert handling.backend_from_probe("/v1/models", 200) is BackendKind.OPENAI
        assert handling.backend_from_probe("/props", 404) is None

    asyncio.run(asyncio.wait_for(main(), 20))


def test_reconnect_waits_retry_after_plus_the_jittered_backoff_and_stops_on_refusals() -> None:
    draws = iter([0.5, 0.5, 0.5])
    reconnect = Reconnect(Backoff(lambda: next(draws), base=1.0, cap=8.0))

    class Ended:
        def __init__(self, rejected: Rejected | None = None, revoked: bool = False) -> None:
            self.rejected, self.revoked = rejected, revoked

    busy = Rejected(reason=RejectReason.OVERLOADED, message="draining", retryable=True,
                    retry_after=2.0)
    # the gateway's minimum, plus the jitter on top (ceiling 1 s on the first attempt)
    assert reconnect.after_session(Ended(busy), 0.0) == pytest.approx(2.0 + 0.5)  # type: ignore[arg-type]
    assert reconnect.after_session(Ended(), 1.0) == pytest.approx(0.5 * 2.0)  # type: ignore[arg-type]
    assert reconnect.after_dial_failure(ConnectionRefusedError(), 2.0) == \
        pytest.approx(0.5 * 4.0)
    with pytest.raises(PermanentRejection, match="revoked"):
        reconnect.after_session(Ended(revoked=True), 3.0)  # type: ignore[arg-type]
    refused = Rejected(reason=RejectReason.BAD_CREDENTIAL, message="", retryable=False,
                       retry_after=None)
    with pytest.raises(PermanentRejection, match="not valid"):
        reconnect.after_session(Ended(refused), 3.0)  # type: ignore[arg-type]


def test_backend_probe_asks_each_path_until_one_answers_2xx() -> None:
    probe = handling.BackendProbe()
    asked = []
    answers = {"/api/version": None, "/props": 404, "/v1/models": 200}
    while (path := probe.next_path()) is not None:
        asked.append(path)
        probe.answered(answers[path])
    assert asked == ["/api/version", "/props", "/v1/models"]
    assert probe.found is BackendKind.OPENAI
    first = handling.BackendProbe()
    assert first.next_path() == "/api/version"
    first.answered(200)
    assert first.next_path() is None and first.found is BackendKind.OLLAMA
    nothing = handling.BackendProbe()
    while nothing.next_path() is not None:
        nothing.answered(None)
    assert nothing.found is None
