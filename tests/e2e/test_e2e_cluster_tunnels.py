"""A connector holding several tunnels to distinct gateway nodes (``--tunnels 2``, one
``--gateway`` per node), all real processes: three gateway nodes on one store and a real Redis,
the connector on either runtime, steady load from the official openai SDK through the nodes.
A node killed under load costs only the streams it carried, and the connector holds two
tunnels on the survivors again; a rolling restart of every node fails no request."""

from __future__ import annotations

import contextlib
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import openai
import pytest

from tests.e2e.stack import Stack, wait_for
from tests.e2e.test_e2e_cluster import Cluster, Node, _cluster
from tests.services import RedisServer

_OPENED = re.compile(r"tunnel open: session (\w+)")
_CLOSED = re.compile(r"tunnel closed: session (\w+)")
#: What a client of a surviving node gets for a stream the dead node carried.
_NODE_LOST = "failed before the answer ended"


def live_tunnels(node: Node) -> int:
    """Tunnels the node holds now, from its log (opened and not closed)."""
    log = node.proc.log()
    return len(set(_OPENED.findall(log)) - set(_CLOSED.findall(log)))


def spread(cluster: Cluster, nodes: list[Node]) -> list[int]:
    return [live_tunnels(node) if node.proc.alive() else 0 for node in nodes]


def wait_spread(cluster: Cluster, nodes: list[Node], timeout: float = 30) -> None:
    """Wait until the connector holds 2 tunnels on 2 distinct nodes among ``nodes``."""
    wait_for(lambda: sorted(spread(cluster, nodes))[-2:] == [1, 1]
             and sum(spread(cluster, nodes)) == 2, timeout,
             f"two tunnels on distinct nodes (now {spread(cluster, nodes)})")


@pytest.fixture(params=["asyncio", "threaded"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path,
            redis_server: RedisServer) -> Iterator[Cluster]:
    """Three nodes; the connector is given every node's address and holds 2 tunnels."""
    redis_server.flush()
    yield from _cluster(Stack(workdir=tmp_path, backend="ollama", runtime=request.param,
                              tunnels=2), redis_server, dial_every_node=True,
                        ready=lambda built: wait_spread(built, built.nodes))


@dataclass
class Load:
    """Client threads sending chat requests (streamed and not, in turn) through the nodes of
    ``up``; every outcome is recorded."""

    cluster: Cluster
    up: list[Node]
    clients: int = 4
    ok: int = 0
    #: (started, what): started means the client had seen part of the answer, or was told
    #: in the format's error that the node carrying it failed.
    failed: list[tuple[bool, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True)
                        for i in range(self.clients)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def _client(self, index: int) -> None:
        clients: dict[int, openai.OpenAI] = {}
        turn = 0
        with contextlib.ExitStack() as closing:
            while not self.stop.is_set():
                turn += 1
                with self.lock:
                    node = self.up[(index + turn) % len(self.up)]
                if node.port not in clients:
                    clients[node.port] = closing.enter_context(self.cluster.openai(node))
                self._one(clients[node.port], stream=turn % 2 == 0, text=f"c{index} t{turn}")

    def _one(self, client: openai.OpenAI, *, stream: bool, text: str) -> None:
        deployment = self.cluster.stack.deployment
        got = ""
        try:
            if stream:
                for chunk in client.chat.completions.create(
                        model=deployment, stream=True,
                        messages=[{"role": "user", "content": text}]):
                    got += chunk.choices[0].delta.content or "" if chunk.choices else ""
            else:
                answer = client.chat.completions.create(
                    model=deployment, messages=[{"role": "user", "content": text}])
                got = answer.choices[0].message.content or ""
            assert got.startswith(f"Echo: {text}"), got
        except Exception as exc:  # recorded: the test decides what may fail
            what = f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"
            started = bool(got) or _NODE_LOST in what
            with self.lock:
                self.failed.append((started, what))
            return
        with self.lock:
            self.ok += 1

    def settle(self, seconds: float) -> None:
        time.sleep(seconds)

    def not_started_failures(self) -> list[str]:
        with self.lock:
            return [what for started, what in self.failed if not started]


def holders(cluster: Cluster) -> list[Node]:
    return [node for node in cluster.nodes if node.proc.alive() and live_tunnels(node)]


def test_a_node_killed_under_load_costs_only_its_streams_and_the_tunnel_moves(
        cluster: Cluster) -> None:
    upstream = cluster.stack.upstream
    assert upstream is not None
    upstream.slow, upstream.events = 0.02, 15  # streams in flight at any moment
    victim = holders(cluster)[0]
    survivors = [node for node in cluster.nodes if node is not victim]
    with Load(cluster, up=list(survivors)) as load:
        load.settle(2.0)
        before = load.ok
        carried = victim.proc.log().count("200 (forwarded)")
        victim.proc.stop(signal.SIGKILL)
        load.settle(1.0)
        # the connector holds two tunnels again, on the two survivors
        wait_spread(cluster, survivors)
        load.settle(2.0)
    assert load.ok > before + 10, (before, load.ok)
    assert carried > 0  # its tunnel had its share of the load
    assert load.not_started_failures() == [], load.failed
    # a stream the dead node carried ended with the format's error (if one was cut)
    assert all(_NODE_LOST in what for _, what in load.failed), load.failed
    assert spread(cluster, survivors) == [1, 1]


def test_a_rolling_restart_of_every_node_fails_no_request(cluster: Cluster) -> None:
    if cluster.stack.runtime != "asyncio":
        pytest.skip("the rolling restart runs on the asyncio connector (the kill test on both)")
    upstream = cluster.stack.upstream
    assert upstream is not None
    upstream.slow, upstream.events = 0.01, 10
    restarted = []
    with Load(cluster, up=list(cluster.nodes)) as load:
        load.settle(1.0)
        for index in range(3):
            node = cluster.nodes[index]
            with load.lock:  # the load balancer stops sending it clients
                load.up.remove(node)
            load.settle(0.5)
            node.proc.stop(signal.SIGTERM)
            # the tunnel it held has a replacement elsewhere already: two on live nodes
            others = [n for n in cluster.nodes if n is not node]
            wait_spread(cluster, others)
            fresh = cluster.start_node(index, port=node.port)
            cluster.nodes[index] = fresh
            restarted.append(fresh)
            with load.lock:
                load.up.append(fresh)
            load.settle(1.5)
        ok_during = load.ok
    assert len(restarted) == 3 and all(node.proc.alive() for node in restarted)
    assert ok_during > 30, ok_during
    assert load.failed == [], load.failed
    assert sum(spread(cluster, cluster.nodes)) == 2


@pytest.fixture(params=["asyncio", "threaded"])
def one_tunnel(request: pytest.FixtureRequest, tmp_path: Path,
               redis_server: RedisServer) -> Iterator[Cluster]:
    """Three nodes; the connector is given every node's address and holds ONE tunnel."""
    redis_server.flush()
    yield from _cluster(Stack(workdir=tmp_path, backend="ollama", runtime=request.param,
                              tunnels=1), redis_server, dial_every_node=True)


def test_a_draining_nodes_tunnel_is_replaced_before_it_closes(one_tunnel: Cluster) -> None:
    """Make before break, with a single tunnel: while the draining node still finishes a long
    stream on it, the replacement on another node already serves new requests."""
    cluster = one_tunnel
    upstream = cluster.stack.upstream
    assert upstream is not None
    (holder,) = holders(cluster)
    others = [node for node in cluster.nodes if node is not holder]
    upstream.slow, upstream.events = 0.1, 25  # 2.5 s, within the node's 3 s grace period
    # (``slow`` paces every answer's events as they go; ``events`` is read once per request)
    text, first = [], threading.Event()

    def long_stream() -> None:
        with cluster.openai(holder) as client:
            for chunk in client.chat.completions.create(
                    model=cluster.stack.deployment, stream=True,
                    messages=[{"role": "user", "content": "long"}]):
                text.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
                first.set()

    reader = threading.Thread(target=long_stream, daemon=True)
    reader.start()
    assert first.wait(10)
    assert holder.proc.popen is not None
    holder.proc.popen.send_signal(signal.SIGTERM)  # it drains: its stream goes on
    # the replacement tunnel opens on another node while the old one still carries the stream
    wait_for(lambda: any(live_tunnels(node) for node in others), 2.0,
             "a replacement tunnel on another node")
    upstream.events = 0  # the next answers are short ("Echo: meanwhile N"), the stream is not
    (fresh,) = [node for node in others if live_tunnels(node)]
    for index, node in enumerate([fresh, *others]):
        with cluster.openai(node) as client:
            answer = client.chat.completions.create(
                model=cluster.stack.deployment,
                messages=[{"role": "user", "content": f"meanwhile {index}"}])
        assert answer.choices[0].message.content == f"Echo: meanwhile {index}"
        if index == 0:
            assert reader.is_alive()  # served while the old tunnel was still finishing
    reader.join(10)
    assert "".join(text).rstrip().endswith("w22")  # the whole answer (25 words)
