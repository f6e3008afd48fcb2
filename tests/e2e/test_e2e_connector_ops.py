"""The connector's side of operations through the real processes, on both connector runtimes:
the tokens of every request reach ``tokios-gateway usage`` (streamed, whole, and a client that
leaves mid-stream: counted, estimated), the model server's health reaches the gateway (routed
around while down, ``/readyz`` says so, back when it answers again; ``/v1/models`` shows its
own list), the connector's ``--metrics-listen`` endpoint counts what it did, and its log lines
carry the gateway's request id (JSON logs). See docs/operations.md."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.stack import Proc, Stack, admin, wait_for
from tests.e2e.test_e2e_operations import value
from tests.services import PostgresServer
from tests.store_backends import postgres_database
from tests.upstreams.model_servers import OpenAICompatServer

pytestmark = pytest.mark.timeout(180)

RUNTIMES = ["asyncio", "threaded"]
CONNECTOR_METRICS = re.compile(r"metrics: http://127\.0\.0\.1:(\d+)/metrics")
OPS_ARGS = ["--health-interval", "0.3", "--metrics-listen", "127.0.0.1:0",
            "--log-format", "json"]


@pytest.fixture(scope="module", params=RUNTIMES)
def ops(request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp(f"connops-{request.param}")
    built = Stack(workdir=workdir, backend="llamacpp", runtime=request.param,
                  connector_args=OPS_ARGS,
                  gateway_args=["--usage-flush-interval", "0.2", "--log-format", "json"])
    with built.running():
        yield built


def usage(stack: Stack) -> dict[str, Any]:
    """``tokios-gateway usage acme --json``, in its own process, from the store (SQLite or
    PostgreSQL)."""
    total: dict[str, Any] = admin(stack.store, "usage", "acme")["total"]
    return total


def usage_after(stack: Stack, requests: int, timeout: float = 15) -> dict[str, Any]:
    """The usage total once it counts ``requests`` requests."""
    found: dict[str, Any] = {}

    def counted() -> bool:
        found.update(usage(stack))
        return int(found.get("requests", 0)) >= requests

    wait_for(counted, timeout, f"{requests} requests in the usage")
    return found


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_usage_through_ollama_on_postgresql(runtime: str, postgres_server: PostgresServer,
                                            tmp_path: Path) -> None:
    with postgres_database(postgres_server) as url:
        built = Stack(workdir=tmp_path, backend="ollama", runtime=runtime, store_url=url,
                      gateway_args=["--usage-flush-interval", "0.2"])
        with built.running() as stack:
            before = usage(stack)  # the bring-up's own requests
            with stack.openai() as client:
                whole = client.chat.completions.create(
                    model="coder", messages=[{"role": "user", "content": "on postgres"}])
            with stack.anthropic() as client, client.messages.stream(
                    model="coder", max_tokens=50,
                    messages=[{"role": "user", "content": "streamed on postgres"}]) as stream:
                final = stream.get_final_message()
            assert whole.usage is not None and final.usage.output_tokens > 0
            after = usage_after(stack, int(before.get("requests", 0)) + 2)
            # Ollama's prompt_eval_count and eval_count, as each client saw them
            assert after["input_tokens"] - before.get("input_tokens", 0) == (
                whole.usage.prompt_tokens + final.usage.input_tokens)
            assert after["output_tokens"] - before.get("output_tokens", 0) == (
                whole.usage.completion_tokens + final.usage.output_tokens)
            assert after["estimated_requests"] == before.get("estimated_requests", 0)


def connector_metrics(log: str) -> dict[str, Any]:
    match = CONNECTOR_METRICS.search(log)
    assert match, log
    text = httpx.get(f"http://127.0.0.1:{match.group(1)}/metrics", timeout=5).text
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_usage_of_whole_and_streamed_requests_is_the_model_servers_count(ops: Stack) -> None:
    before = usage(ops)
    requests = int(before.get("requests", 0))
    with ops.openai() as client:
        whole = client.chat.completions.create(
            model="coder", messages=[{"role": "user", "content": "count me"}])
        stream = client.chat.completions.create(
            model="coder", messages=[{"role": "user", "content": "count me too"}],
            stream=True, stream_options={"include_usage": True})
        streamed = [chunk.usage for chunk in stream if chunk.usage is not None][-1]
    assert whole.usage is not None and whole.usage.completion_tokens > 0
    after = usage_after(ops, requests + 2)
    assert after["input_tokens"] - before.get("input_tokens", 0) == (
        whole.usage.prompt_tokens + streamed.prompt_tokens)
    assert after["output_tokens"] - before.get("output_tokens", 0) == (
        whole.usage.completion_tokens + streamed.completion_tokens)
    assert after["estimated_requests"] == before.get("estimated_requests", 0)


def test_a_client_that_leaves_mid_stream_is_counted_estimated(ops: Stack) -> None:
    assert ops.upstream is not None
    before = usage(ops)
    ops.upstream.slow, ops.upstream.events = 0.05, 400  # a long answer, slowly
    try:
        with ops.http() as client, client.stream(
                "POST", f"{ops.base_url}/v1/chat/completions",
                headers={"authorization": f"Bearer {ops.key}"},
                json={"model": "coder", "stream": True,
                      "messages": [{"role": "user", "content": "a long one"}]}) as resp:
            seen = 0
            for chunk in resp.iter_bytes():
                seen += chunk.count(b'"content"')
                if seen >= 5:
                    break  # the client leaves
        wait_for(lambda: bool(ops.upstream and ops.upstream.disconnects), 10,
                 "the model server to see the client leave")
    finally:
        ops.upstream.slow, ops.upstream.events = 0.0, 0
    after = usage_after(ops, int(before.get("requests", 0)) + 1)
    assert after["estimated_requests"] == before.get("estimated_requests", 0) + 1
    generated = after["estimated_output_tokens"] - before.get("estimated_output_tokens", 0)
    assert 0 < generated < 400  # what was generated until it stopped, not the whole answer
    assert after["estimated_input_tokens"] > before.get("estimated_input_tokens", 0)


def test_connector_metrics_count_calls_errors_and_carry_no_content(ops: Stack) -> None:
    assert ops.connector is not None and ops.upstream is not None
    with ops.openai() as client:
        client.chat.completions.create(
            model="coder", messages=[{"role": "user", "content": "metrics-canary"}])
    ops.upstream.error_status = 503
    try:
        with ops.openai() as client, pytest.raises(openai.APIStatusError):
            client.chat.completions.create(
                model="coder", messages=[{"role": "user", "content": "metrics-canary"}])
    finally:
        ops.upstream.error_status = None
    families = connector_metrics(ops.connector.log())
    assert value(families, "tokios_connector_upstream_request_duration_seconds_count",
                 deployment="coder") >= 2
    assert value(families, "tokios_connector_upstream_time_to_first_byte_seconds_count",
                 deployment="coder") >= 2
    assert value(families, "tokios_connector_upstream_errors_total", deployment="coder",
                 kind="status") >= 1
    assert value(families, "tokios_connector_streams_in_flight") == 0
    assert value(families, "tokios_connector_tunnel_connected") == 1
    assert value(families, "tokios_connector_upstream_healthy", deployment="coder") == 1
    match = CONNECTOR_METRICS.search(ops.connector.log())
    assert match
    raw = httpx.get(f"http://127.0.0.1:{match.group(1)}/metrics", timeout=5).text
    for secret in ("metrics-canary", ops.token, ops.key):
        assert secret not in raw


def test_the_gateways_request_id_is_in_the_connectors_log(ops: Stack) -> None:
    assert ops.gateway is not None and ops.connector is not None
    with ops.openai() as client:
        client.chat.completions.create(
            model="coder", messages=[{"role": "user", "content": "log-canary-prompt"}])

    def ids(log: str, word: str) -> set[str]:
        """The request ids of the JSON lines about ``word``, in the field and the message."""
        found = set()
        for line in log.splitlines():
            if line.startswith("{"):
                entry = orjson.loads(line)
                rid = entry.get("request_id")
                if rid and word in entry["message"] and entry["message"].endswith(rid):
                    found.add(rid)
        return found

    answered = "/v1/chat/completions 200"
    wait_for(lambda: bool(ids(ops.gateway.log() if ops.gateway else "", answered)), 5,
             "the gateway's log line")
    gateway_ids = ids(ops.gateway.log(), answered)
    wait_for(lambda: bool(gateway_ids & ids(ops.connector.log() if ops.connector else "",
                                            "done in")), 5, "the connector's log line")
    assert "log-canary-prompt" not in ops.logs()


def models_view(stack: Stack) -> dict[str, Any]:
    with stack.http(timeout=5) as client:
        listed = client.get(f"{stack.base_url}/v1/models",
                            headers={"authorization": f"Bearer {stack.key}"}).json()
    return {m["id"]: m.get("tokios", {}) for m in listed["data"]}


def readyz(stack: Stack) -> dict[str, int]:
    with stack.http(timeout=5) as client:
        deployments: dict[str, int] = client.get(f"{stack.base_url}/readyz").json()[
            "deployments"]
        return deployments


def test_an_unhealthy_model_server_is_routed_around_and_comes_back(ops: Stack) -> None:
    assert ops.upstream is not None and ops.connector is not None
    wait_for(lambda: models_view(ops).get("coder", {}).get("upstream_models")
             == [ops.upstream_model], 10, "the upstream's model list in /v1/models")
    assert models_view(ops)["coder"]["healthy"] is True
    second = OpenAICompatServer(model_names=(ops.upstream_model,))
    ops.bg.run(second.__aenter__())
    argv = ops.connector_argv()
    argv[argv.index("--upstream") + 1] = second.base_url
    other = Proc("second", argv, ops.workdir / f"second-{time.monotonic_ns()}.log")
    other.start()
    try:
        wait_for(lambda: value(ops.metrics(), "tokios_deployment_tunnels", deployment="coder",
                               health="healthy") == 2, 20, "two healthy tunnels")
        ops.bg.run(ops.upstream.stop_listening())
        wait_for(lambda: value(ops.metrics(), "tokios_deployment_tunnels", deployment="coder",
                               health="unhealthy") == 1, 10, "the first reported unhealthy")
        errors_before = value(connector_metrics(ops.connector.log()),
                              "tokios_connector_upstream_errors_total")
        before = len(second.paths)
        with ops.openai() as client:
            for i in range(6):
                answer = client.chat.completions.create(
                    model="coder", messages=[{"role": "user", "content": f"around {i}"}])
                assert answer.choices[0].message.content == f"Echo: around {i}"
        assert len(second.paths) - before == 6
        # routed around, not failed over: the unhealthy connector was not even tried
        assert value(connector_metrics(ops.connector.log()),
                     "tokios_connector_upstream_errors_total") == errors_before
        assert readyz(ops) == {"served": 1, "healthy": 1, "unhealthy": 0}
        other.stop()
        wait_for(lambda: readyz(ops) == {"served": 1, "healthy": 0, "unhealthy": 1}, 10,
                 "/readyz to say nothing healthy serves the deployment")
        ops.bg.run(ops.upstream.listen_again())
        wait_for(lambda: readyz(ops) == {"served": 1, "healthy": 1, "unhealthy": 0}, 10,
                 "the model server healthy again")
        assert ops.served()
    finally:
        other.stop()
        ops.bg.run(second.__aexit__(None, None, None))
