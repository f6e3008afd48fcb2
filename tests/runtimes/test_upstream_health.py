"""Routing by upstream health (protocol version 2 health reports), through the real gateway
over TLS with the official SDKs as clients.

The connectors are scripted but real: each dials the gateway over wss://, speaks the tunnel
protocol through tokios_proto's ConnectorConnection, answers every chat request whole with a
text naming itself, and sends the health reports the test asks for - as a connector checking
its model server would. Checked: a tunnel whose upstream is unhealthy gets no request while
another is healthy; with every upstream unhealthy the client gets a 503 in its own format at
once, saying so; a recovered upstream takes requests again (also queued ones); ``/v1/models``
shows the upstream's own model list; ``/readyz`` shows counts to anyone and names only to an
admin key, within its scope; the metrics and the admin API's tunnel list show the health.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runtimes.cluster.node import served_by
from runtimes.connector.settings import ConnectorSettings
from runtimes.store import open_store
from tests.runtimes.test_gateway_flow import Stack, make_stack, run
from tests.runtimes.test_stream_failures import ScriptedConnector, anthropic_client, trusting
from tokios_proto import DeploymentHealth

UNHEALTHY = "the model server behind every connector serving coder is unhealthy"


class AnsweringConnector(ScriptedConnector):
    """Answers each chat request with ``from NAME``; :meth:`report` sends a health report."""

    def __init__(self, stack: Stack, name: str, max_streams: int = 8) -> None:
        super().__init__(stack, "answer")
        self.name = name
        self.max_streams = max_streams
        self.answered = 0
        #: True: take requests and never answer them (a busy model).
        self.hold = False

    def settings(self) -> ConnectorSettings:
        return dataclasses.replace(self.stack.settings(), connector_id=f"scripted-{self.name}",
                                   max_concurrent_streams=self.max_streams)

    async def _answer(self, stream_id: int) -> None:
        if self.hold:
            await asyncio.sleep(3600)
        self.answered += 1
        body = orjson.dumps({
            "id": f"chatcmpl-{stream_id}", "object": "chat.completion", "created": 1,
            "model": "coder", "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": f"from {self.name}"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
        self.conn.send_response(stream_id, 200, (("content-type", "application/json"),))
        self.conn.send_data(stream_id, body)
        self.conn.end_stream(stream_id)
        self.conn.report_usage(stream_id, input_tokens=3, output_tokens=2)
        self.pump.kick()

    def report(self, healthy: bool, models: tuple[str, ...] | None = None) -> None:
        self.conn.report_health([DeploymentHealth(name="coder", healthy=healthy,
                                                  models=models)])
        self.pump.kick()

    async def stop(self) -> None:
        self.ws.abort()
        self.run_task.cancel()
        await asyncio.gather(self.run_task, return_exceptions=True)


async def until(predicate: Callable[[], bool], what: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def reported(stack: Stack, connector_id: str, healthy: bool) -> Callable[[], bool]:
    """True once the gateway holds the report of ``connector_id``'s tunnel."""
    def check() -> bool:
        return any(t.connector_id == connector_id and t.is_healthy("coder") is healthy
                   and "coder" in t.health for t in stack.gateway.tunnels.tunnels)
    return check


@asynccontextmanager
async def scripted(tmp_path: Path, *names: str, max_streams: int = 8,
                   ) -> AsyncIterator[tuple[Stack, list[AnsweringConnector]]]:
    """A gateway (no product connector) with an answering connector per name, stopped at
    the end."""
    async with make_stack(tmp_path, connect=False) as stack:
        started = [AnsweringConnector(stack, name, max_streams) for name in names]
        for connector in started:
            await connector.start()
        await stack.wait_served(len(started))
        try:
            yield stack, started
        finally:
            for connector in started:
                await connector.stop()


@asynccontextmanager
async def one_unhealthy(tmp_path: Path,
                        ) -> AsyncIterator[tuple[Stack, dict[str, str], AnsweringConnector]]:
    """Connectors a and b; a reports coder unhealthy with its model list. Yields the stack,
    admin keys (operator, acme, globex) and b."""
    async with scripted(tmp_path, "a", "b") as (stack, (a, b)):
        keys = admin_keys(stack)
        a.report(False, ("qwen3:8b",))
        await until(reported(stack, "scripted-a", False), "a's report")
        yield stack, keys, b


def openai_client(stack: Stack, key: str | None = None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{stack.base_url}/v1", api_key=key or stack.key,
                              http_client=trusting(stack, False), max_retries=0)


async def answers(client: openai.AsyncOpenAI, count: int) -> list[str]:
    texts = []
    for _ in range(count):
        done = await client.chat.completions.create(
            model="coder", messages=[{"role": "user", "content": "hi"}])
        texts.append(done.choices[0].message.content or "")
    return texts


def admin_keys(stack: Stack) -> dict[str, str]:
    with open_store(stack.tmp / "data") as store:
        return {"operator": store.add_admin_key(None)[1],
                "acme": store.add_admin_key("acme")[1],
                "globex": store.add_admin_key("globex")[1]}


def test_an_unhealthy_upstream_is_routed_around_and_back(tmp_path: Path) -> None:
    async def main() -> None:
        async with scripted(tmp_path, "a", "b") as (stack, (a, b)):
            client = openai_client(stack)
            assert set(await answers(client, 6)) == {"from a", "from b"}  # both take requests

            a.report(False, ("qwen3:8b",))
            b.report(True, ("llama3.2:1b", "nomic-embed-text"))
            await until(reported(stack, "scripted-a", False), "a's report")
            await until(reported(stack, "scripted-b", True), "b's report")
            assert set(await answers(client, 8)) == {"from b"}

            models = await client.models.list()
            coder = next(m for m in models.data if m.id == "coder")
            assert coder.model_extra is not None
            assert coder.model_extra["tokios"] == {
                "served": True, "healthy": True,
                "upstream_models": ["llama3.2:1b", "nomic-embed-text"]}  # the healthy one's
            claude = await anthropic_client(stack, True).models.list()
            assert {m.id: (m.model_extra or {}).get("tokios", {}).get("healthy")
                    for m in claude.data} == {"coder": True, "unserved": False}
            unserved = next(m for m in models.data if m.id == "unserved")
            assert unserved.model_extra is not None
            assert unserved.model_extra["tokios"] == {
                "served": False, "healthy": False, "upstream_models": None}

            a.report(True)
            b.report(False)
            await until(reported(stack, "scripted-b", False), "b's report")
            await until(reported(stack, "scripted-a", True), "a's recovery")
            assert set(await answers(client, 8)) == {"from a"}
            one = await client.models.retrieve("coder")
            assert one.model_extra is not None
            assert one.model_extra["tokios"] == {  # the last reports carry no list
                "served": True, "healthy": True, "upstream_models": None}

    run(main())


def test_every_upstream_unhealthy_is_a_503_in_the_clients_format(tmp_path: Path) -> None:
    async def main() -> None:
        async with scripted(tmp_path, "a") as (stack, (a,)):
            a.report(False)
            await until(reported(stack, "scripted-a", False), "a's report")
            started = time.monotonic()
            with pytest.raises(openai.APIStatusError) as caught:
                await answers(openai_client(stack), 1)
            assert time.monotonic() - started < 2  # no waiting in the queue
            assert caught.value.status_code == 503
            assert caught.value.response.headers["retry-after"] == "1"
            body = caught.value.body
            assert isinstance(body, dict) and body["message"] == UNHEALTHY  # not "no connector"

            with pytest.raises(anthropic.APIStatusError) as refused:
                await anthropic_client(stack, False).messages.create(
                    model="coder", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
            assert refused.value.status_code == 503
            error = refused.value.body
            assert isinstance(error, dict) and error["type"] == "error"
            assert error["error"] == {"type": "overloaded_error", "message": UNHEALTHY}

            async with stack.client() as http:  # Ollama's format too
                resp = await http.post("/api/chat", headers=stack.auth(), json={
                    "model": "coder", "messages": [{"role": "user", "content": "hi"}]})
            assert resp.status_code == 503 and resp.json() == {"error": UNHEALTHY}
            assert a.answered == 0
            # nor does this node offer it to its peers (a gateway of several nodes)
            acme = next(iter(stack.gateway.tunnels.tunnels)).grant.tenant_id  # type: ignore[union-attr]
            assert not served_by(stack.gateway.tunnels).get(acme)

            a.report(True)
            await until(reported(stack, "scripted-a", True), "a's recovery")
            assert await answers(openai_client(stack), 1) == ["from a"]
            assert served_by(stack.gateway.tunnels)[acme] == {"coder": 8}

    run(main())


def test_a_request_queued_for_a_full_deployment_goes_when_an_upstream_recovers(
        tmp_path: Path) -> None:
    async def main() -> None:
        # a takes one stream at a time and is busy with one it never answers; b is
        # unhealthy: a request must wait in the queue until b recovers, then go to b
        async with scripted(tmp_path, "a", "b", max_streams=1) as (stack, (a, b)):
            a.hold = True
            b.report(False)
            await until(reported(stack, "scripted-b", False), "b's report")
            tunnel_a = next(t for t in stack.gateway.tunnels.tunnels
                            if t.connector_id == "scripted-a")
            held = asyncio.ensure_future(answers(openai_client(stack), 1))
            await until(lambda: tunnel_a.active_streams == 1, "a busy")
            waiting = asyncio.ensure_future(answers(openai_client(stack), 1))
            await until(lambda: any(w for *_, w in stack.gateway.api.admission.depths()),
                        "the request queued")
            b.report(True)
            assert await asyncio.wait_for(waiting, 5) == ["from b"]
            held.cancel()
            await asyncio.gather(held, return_exceptions=True)

    run(main())


def test_readyz_counts_for_anyone_names_for_an_admin_key_in_its_scope(tmp_path: Path) -> None:
    async def main() -> None:
        async with one_unhealthy(tmp_path) as (stack, keys, b), stack.client() as http:
            anonymous = await http.get("/readyz")
            assert anonymous.status_code == 200
            assert anonymous.json() == {"status": "ready", "tunnels": 2, "deployments": {
                "served": 1, "healthy": 1, "unhealthy": 0}}
            assert "acme" not in anonymous.text and "coder" not in anonymous.text

            def bearer(name: str) -> dict[str, str]:
                return {"authorization": f"Bearer {keys[name]}"}

            operator = (await http.get("/readyz", headers=bearer("operator"))).json()
            assert operator["tenants"] == {"acme": {"coder": {
                "ready": True, "tunnels": 2, "healthy_tunnels": 1,
                "upstream_models": None}}}
            tenant = (await http.get("/readyz", headers=bearer("acme"))).json()
            assert tenant["tenants"]["acme"]["unserved"] == {
                "ready": False, "tunnels": 0, "healthy_tunnels": 0, "upstream_models": None}
            assert tenant["tenants"]["acme"]["coder"]["healthy_tunnels"] == 1
            other = (await http.get("/readyz", headers=bearer("globex"))).json()
            assert other == {"status": "ready", "tunnels": 0, "deployments": {
                "served": 0, "healthy": 0, "unhealthy": 0},
                "tenants": {"globex": {"secret-model": {
                    "ready": False, "tunnels": 0, "healthy_tunnels": 0,
                    "upstream_models": None}}}}
            for wrong in (stack.key, "tkadm-nope"):
                refused = await http.get("/readyz",
                                         headers={"authorization": f"Bearer {wrong}"})
                assert refused.status_code == 401
                assert refused.json()["error"]["code"] == "unauthenticated"

            b.report(False)
            await until(reported(stack, "scripted-b", False), "b's report")
            down = (await http.get("/readyz")).json()
            assert down["status"] == "ready"  # the gateway is: its upstreams are not
            assert down["deployments"] == {"served": 1, "healthy": 0, "unhealthy": 1}
            detail = (await http.get("/readyz", headers=bearer("operator"))).json()
            assert detail["tenants"]["acme"]["coder"] == {
                "ready": False, "tunnels": 2, "healthy_tunnels": 0,
                "upstream_models": ["qwen3:8b"]}

    run(main())


def test_tunnel_list_and_metrics_show_each_tunnels_health(tmp_path: Path) -> None:
    async def main() -> None:
        async with one_unhealthy(tmp_path) as (stack, keys, _b), stack.client() as http:
            listed = (await http.get("/admin/v1/tunnels", headers={
                "authorization": f"Bearer {keys['operator']}"})).json()["tunnels"]
            families = {f.name: f for f in text_string_to_metric_families(
                (await http.get("/metrics")).text)}
            by_id: dict[str, dict[str, Any]] = {t["connector_id"]: t for t in listed}
            assert set(by_id) == {"scripted-a", "scripted-b"}
            sick = by_id["scripted-a"]
            assert sick["healthy"] is False and sick["tenant"] == "acme"
            assert sick["deployments"] == [{
                "name": "coder", "healthy": False, "reported": True,
                "since": sick["deployments"][0]["since"], "upstream_models": ["qwen3:8b"]}]
            assert by_id["scripted-b"]["deployments"][0]["reported"] is False
            assert by_id["scripted-b"]["healthy"] is True
            assert sick["protocol_version"] == 2 and sick["software_version"]
            assert sick["streams_in_flight"] == 0 and sick["max_streams"] == 8
            assert sick["connector_token_id"] == stack.token_id
            samples = {s.labels["health"]: s.value
                       for s in families["tokios_deployment_tunnels"].samples
                       if s.labels["deployment"] == "coder"}
            assert samples == {"healthy": 1.0, "unhealthy": 1.0}

    run(main())


def test_a_connector_that_never_reports_stays_routable(tmp_path: Path) -> None:
    """Version 1 connectors and those not checking their upstream send no report: healthy."""
    async def main() -> None:
        async with make_stack(tmp_path) as stack, stack.client() as http:
            resp = await http.post("/v1/chat/completions", headers=stack.auth(), json={
                "model": "coder", "messages": [{"role": "user", "content": "x"}]})
            assert resp.status_code == 200, resp.text
            assert (await http.get("/readyz")).json()["deployments"]["healthy"] == 1

    run(main())
