"""A gateway of several nodes (issue: a gateway that outgrows one process and one machine), all
real processes: gateway nodes sharing one store and a real Redis, a connector attached to ONE of
them, the official SDKs sending through EVERY node. A node without a tunnel forwards to the node
that has one (runtimes/cluster/), streaming and cancellation intact; a node that dies takes only
its own streams, which end with the format's error."""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.e2e.stack import LISTENING, Proc, Stack, wait_for
from tests.services import PostgresServer, RedisServer
from tests.store_backends import postgres_database

SECRET = "a-cluster-secret-for-tests-only-0123456789"
#: The tests of the forwarding path itself, which the store does not change, run on one store.
SQLITE_ONLY = pytest.mark.parametrize("cluster", ["sqlite"], indirect=True)


@dataclass
class Node:
    proc: Proc
    port: int = 0
    node_port: int = 0


@dataclass
class Cluster:
    stack: Stack
    redis: RedisServer
    nodes: list[Node] = field(default_factory=list)

    def start_node(self, index: int, port: int = 0) -> Node:
        """Start node ``index`` listening on ``port`` (0: any; give its old port to restart
        it where connectors dial it)."""
        stack = self.stack
        secret_file = stack.workdir / "cluster-secret"
        secret_file.write_text(SECRET)
        store = ["--store", stack.store_url] if stack.store_url else ["--data", str(stack.data)]
        proc = Proc(f"node{index}", [
            sys.executable, "-m", "runtimes.gateway.cli", "serve", *store,
            "--listen", f"127.0.0.1:{port}", "--tls-cert", str(stack.workdir / "cert.pem"),
            "--tls-key", str(stack.workdir / "key.pem"), "--grace-period", "3",
            "--node-listen", "127.0.0.1:0", "--node-ca", str(stack.ca_file),
            "--cluster-secret-file", str(secret_file), "--redis", self.redis.url,
        ], stack.workdir / f"node{index}-{time.monotonic_ns()}.log")
        proc.start()
        node = Node(proc)

        def bound() -> bool:
            match = LISTENING.search(proc.log())
            assert proc.alive(), proc.log()
            if match:
                node.port = int(match.group(3))
            return bool(match)

        wait_for(bound, 20, f"node {index} to listen")
        return node

    def url(self, node: Node) -> str:
        return f"https://127.0.0.1:{node.port}"

    def openai(self, node: Node) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url(node)}/v1", api_key=self.stack.key,
                             http_client=openai.DefaultHttpxClient(
                                 verify=self.stack.ssl_context()), max_retries=0)

    def anthropic(self, node: Node) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url(node), api_key=self.stack.key,
                                   http_client=anthropic.DefaultHttpxClient(
                                       verify=self.stack.ssl_context()), max_retries=0)

    def served_everywhere(self) -> None:
        """Wait until every node routes to the connector (heartbeats are 1 s apart)."""
        for node in self.nodes:
            def served(node: Node = node) -> bool:
                with httpx.Client(verify=self.stack.ssl_context(), timeout=5) as http:
                    resp = http.post(f"{self.url(node)}/v1/chat/completions",
                                     headers={"authorization": f"Bearer {self.stack.key}"},
                                     json={"model": self.stack.deployment,
                                           "messages": [{"role": "user", "content": "ping"}]})
                return resp.status_code == 200
            wait_for(served, 20, f"node on port {node.port} to serve the deployment")


@pytest.fixture(params=["sqlite", "postgresql"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path,
            redis_server: RedisServer) -> Iterator[Cluster]:
    """Three nodes on one store and one Redis: the data dir's SQLite (the nodes of one
    machine), or PostgreSQL (the reference deployment of several machines)."""
    redis_server.flush()
    with contextlib.ExitStack() as resources:
        store_url = None
        if request.param == "postgresql":
            server: PostgresServer = request.getfixturevalue("postgres_server")
            store_url = resources.enter_context(postgres_database(server))
        yield from _cluster(Stack(workdir=tmp_path, backend="ollama", store_url=store_url),
                            redis_server)


def _cluster(stack: Stack, redis_server: RedisServer, *, dial_every_node: bool = False,
             ready: Callable[[Cluster], None] | None = None) -> Iterator[Cluster]:
    """Three nodes and the stack's connector, given node 0's address (and, with
    ``dial_every_node``, the others' too); ``ready`` waits for what the test needs first."""
    with stack.running():  # gateway (node 0's place is taken by the stack's own gateway)
        assert stack.gateway is not None and stack.connector is not None
        stack.connector.stop()
        stack.gateway.stop()
        built = Cluster(stack, redis_server)
        try:
            built.nodes = [built.start_node(i) for i in range(3)]
            stack.port = built.nodes[0].port
            if dial_every_node:
                stack.connector_args = [*stack.connector_args, *(
                    arg for node in built.nodes[1:] for arg in ("--gateway", built.url(node)))]
            stack.start_connector()
            if ready is not None:
                ready(built)
            built.served_everywhere()
            yield built
        finally:
            for node in built.nodes:
                node.proc.stop()


def test_every_node_serves_the_deployment_through_the_one_that_has_the_tunnel(
        cluster: Cluster) -> None:
    for index, node in enumerate(cluster.nodes):
        with cluster.openai(node) as client:
            answer = client.chat.completions.create(
                model=cluster.stack.deployment,
                messages=[{"role": "user", "content": f"via node {index}"}])
            assert answer.choices[0].message.content == f"Echo: via node {index}"
            text = "".join(chunk.choices[0].delta.content or "" for chunk in
                           client.chat.completions.create(
                               model=cluster.stack.deployment, stream=True,
                               messages=[{"role": "user", "content": f"stream {index}"}])
                           if chunk.choices)
            assert text == f"Echo: stream {index}"
        with cluster.anthropic(node) as client, client.messages.stream(
                model=cluster.stack.deployment, max_tokens=50,
                messages=[{"role": "user", "content": f"claude {index}"}]) as stream:
            assert "".join(stream.text_stream) == f"Echo: claude {index}"
    # each forwarded request went to the model once
    assert cluster.stack.upstream is not None
    prompts = [r["messages"][-1]["content"] for r in cluster.stack.upstream.requests]
    assert prompts.count("via node 1") == 1 and prompts.count("stream 2") == 1


@SQLITE_ONLY
def test_a_client_leaving_a_forwarded_stream_stops_the_model(cluster: Cluster) -> None:
    upstream = cluster.stack.upstream
    assert upstream is not None
    upstream.slow, upstream.events = 0.05, 400
    before = len(upstream.disconnects)
    with httpx.Client(verify=cluster.stack.ssl_context(), timeout=30) as http, http.stream(
            "POST", f"{cluster.url(cluster.nodes[2])}/v1/chat/completions",
            headers={"authorization": f"Bearer {cluster.stack.key}"},
            json={"model": cluster.stack.deployment, "stream": True,
                  "messages": [{"role": "user", "content": "long"}]}) as resp:
        assert resp.status_code == 200
        for _ in resp.iter_raw():
            break
    wait_for(lambda: len(upstream.disconnects) > before, 3, "the model to see the client go")


@SQLITE_ONLY
def test_a_dead_node_ends_its_forwarded_streams_with_the_formats_error(
        cluster: Cluster) -> None:
    """The node holding the tunnel dies mid-stream: a client of another node gets the tokens
    so far, then an error event, then a proper end of the body."""
    upstream = cluster.stack.upstream
    assert upstream is not None
    upstream.slow, upstream.events = 0.05, 200
    text = ""
    with cluster.openai(cluster.nodes[1]) as client:
        chunks = client.chat.completions.create(
            model=cluster.stack.deployment, stream=True,
            messages=[{"role": "user", "content": "die"}])
        with pytest.raises(openai.APIError) as caught:
            for chunk in chunks:
                text += chunk.choices[0].delta.content or "" if chunk.choices else ""
                if "w3" in text and cluster.nodes[0].proc.alive():
                    cluster.nodes[0].proc.stop(signal.SIGKILL)
    assert text.startswith("Echo: die") and "w199" not in text
    assert "gateway node serving this deployment failed" in caught.value.message
    # the surviving nodes still answer (the deployment has no connector now: a clean 503)
    with cluster.openai(cluster.nodes[2]) as client, pytest.raises(openai.APIStatusError) as gone:
        client.chat.completions.create(model=cluster.stack.deployment,
                                       messages=[{"role": "user", "content": "x"}])
    assert gone.value.status_code == 503


@SQLITE_ONLY
def test_forwarding_needs_the_cluster_secret(cluster: Cluster) -> None:
    log = cluster.nodes[1].proc.log()
    assert SECRET not in log
    with httpx.Client(verify=cluster.stack.ssl_context(), timeout=5) as http:
        # the node listener of node 0, found from its own record in Redis
        import redis

        with redis.Redis.from_url(cluster.redis.url) as client:
            records = [client.get(k) for k in client.keys("tokios:node:*")]
        urls = [r.decode().split('"forward_url":"')[1].split('"')[0] for r in records if r]
        assert urls
        for url in urls:
            for headers in ({}, {"authorization": "Bearer wrong-secret"},
                            {"authorization": f"Bearer {cluster.stack.key}"}):
                resp = http.post(f"{url}/v1/chat/completions", headers=headers,
                                 json={"model": cluster.stack.deployment, "messages": []})
                assert resp.status_code == 401


def test_a_key_revoked_once_is_refused_by_every_node_within_a_second(cluster: Cluster) -> None:
    from tests.e2e.stack import admin

    for node in cluster.nodes:  # warm every node's cache with the key
        with cluster.openai(node) as client:
            client.models.list()
    admin(cluster.stack.store, "key", "revoke", cluster.stack.key_id)
    revoked_at = time.monotonic()
    for node in cluster.nodes:
        def refused(node: Node = node) -> bool:
            with httpx.Client(verify=cluster.stack.ssl_context(), timeout=5) as http:
                resp = http.get(f"{cluster.url(node)}/v1/models",
                                headers={"authorization": f"Bearer {cluster.stack.key}"})
            return resp.status_code == 401
        wait_for(refused, 3, f"node on port {node.port} to refuse the revoked key")
    assert time.monotonic() - revoked_at < 2.5


@SQLITE_ONLY
def test_revocations_are_announced_to_every_node(cluster: Cluster) -> None:
    """A revocation made through one node's admin API, or by the CLI given Redis, is
    announced (runtimes/cluster/revocations.py): every node says it acted on the notice, and
    the node holding a revoked connector token's tunnel closes it although the revocation was
    made elsewhere. (The store alone would also make them bite within about a second: the
    log lines show it was the notice.)"""
    from tests.e2e.stack import admin

    stack = cluster.stack
    admin(stack.store, "key", "revoke", stack.key_id, env={"TOKIOS_REDIS": cluster.redis.url})
    for node in cluster.nodes:
        wait_for(lambda node=node: f"revocation: key {stack.key_id}" in node.proc.log(), 5,
                 f"node on port {node.port} to act on the CLI's notice")

    operator = admin(stack.store, "admin-key", "add", "--operator")["key"]
    with httpx.Client(verify=stack.ssl_context(), timeout=10) as http:
        resp = http.post(f"{cluster.url(cluster.nodes[2])}/admin/v1/connector-tokens/"
                         f"{stack.token_id}/revoke",
                         headers={"authorization": f"Bearer {operator}"})
    assert resp.status_code == 200, resp.text
    holder = cluster.nodes[0]  # the connector dialled node 0
    wait_for(lambda: f"revocation: connector_token {stack.token_id}" in holder.proc.log()
             and "connector token revoked: closing session" in holder.proc.log(), 5,
             "node 0 to close the revoked token's tunnel on node 2's notice")
    wait_for(lambda: f"revocation: connector_token {stack.token_id}"
             in cluster.nodes[1].proc.log(), 5, "node 1 to act on node 2's notice")
