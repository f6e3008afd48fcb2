"""``tokios-gateway serve --workers N``: N processes on one port that cooperate as nodes do. The
connector's tunnel lands on one worker; requests land on any (a new connection each, so the
kernel spreads them) and every one is answered, forwarded where needed. A worker that dies is
started again; SIGTERM drains every worker and the parent exits 0. With ``--redis`` a
deployment's --max-in-flight holds across the workers."""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import time
from pathlib import Path

import httpx

from tests.e2e.stack import Stack, admin, wait_for
from tests.services import RedisServer


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_workers_share_the_port_and_forward_to_the_tunnel(tmp_path: Path) -> None:
    stack = Stack(workdir=tmp_path, backend="ollama", gateway_args=["--workers", "3"])
    with stack.running():
        assert stack.gateway is not None
        assert "(3 workers)" in stack.gateway.log()
        workers = _children(stack.gateway.pid)
        assert len(workers) == 3
        answers = []
        for i in range(24):  # a new connection each time: spread over the workers
            with httpx.Client(verify=stack.ssl_context(), timeout=30) as http:
                resp = http.post(f"{stack.base_url}/v1/chat/completions",
                                 headers={"authorization": f"Bearer {stack.key}"},
                                 json={"model": stack.deployment,
                                       "messages": [{"role": "user", "content": f"n{i}"}]})
            assert resp.status_code == 200, resp.text
            answers.append(resp.json()["choices"][0]["message"]["content"])
        assert answers == [f"Echo: n{i}" for i in range(24)]
        log = stack.gateway.log()
        assert "(forwarded)" in log  # some requests reached a worker without the tunnel
        assert stack.upstream is not None and len(stack.upstream.requests) >= 24

        # a worker that dies is replaced, and the gateway keeps serving
        os.kill(workers[0], signal.SIGKILL)
        wait_for(lambda: len(_children(stack.gateway.pid)) == 3  # type: ignore[union-attr]
                 and workers[0] not in _children(stack.gateway.pid),  # type: ignore[union-attr]
                 15, "the worker to be started again")
        stack.wait_served(30)

        started = time.monotonic()
        assert stack.gateway.stop(signal.SIGTERM, timeout=30) == 0
        assert time.monotonic() - started < 15
        assert all(not Path(f"/proc/{pid}").exists() for pid in _children(stack.gateway.pid))


def test_a_connectors_tunnels_land_on_distinct_workers(tmp_path: Path) -> None:
    """One address, the kernel spreading connections over the workers: each worker names itself
    in WELCOME, so a tunnel that lands on the worker the other holds is dialled again."""
    stack = Stack(workdir=tmp_path, backend="ollama", gateway_args=["--workers", "3"],
                  tunnels=2)
    opened = re.compile(r"tunnel (\d) open: session \w+ on gateway node (\S+),")
    with stack.running():
        assert stack.connector is not None
        connector = stack.connector

        def where() -> dict[str, str]:
            return dict(opened.findall(connector.log()))  # the last node of each tunnel

        wait_for(lambda: len(where()) == 2, 20, "both tunnels open")
        nodes = where()
        assert nodes["0"] != nodes["1"] and "-" not in nodes.values(), nodes
        stack.wait_served(10)


def test_workers_share_a_deployments_max_in_flight_through_redis(
        tmp_path: Path, redis_server: RedisServer) -> None:
    """The connector's 2 tunnels on the 2 workers, a cap of 1: with --redis the model server
    never sees two requests at once, wherever they land."""
    stack = Stack(workdir=tmp_path, backend="llamacpp", tunnels=2,
                  gateway_args=["--workers", "2", "--redis", redis_server.url])
    opened = re.compile(r"tunnel (\d) open: session \w+ on gateway node (\S+),")
    with stack.running():
        assert stack.connector is not None and stack.upstream is not None
        connector = stack.connector
        admin(stack.store, "deployment", "set", "acme", "coder", "--max-in-flight", "1")

        def where() -> dict[str, str]:
            return dict(opened.findall(connector.log()))

        wait_for(lambda: len(set(where().values())) == 2, 20, "tunnels on both workers")
        time.sleep(1.5)  # both workers see the new cap (their store caches last 1 s)
        stack.upstream.max_in_flight = stack.upstream.in_flight = 0
        stack.upstream.first_delay = 0.3

        def post(n: int) -> int:  # a new connection each: spread over the workers
            with stack.http(timeout=30) as http:
                return http.post(f"{stack.base_url}/v1/chat/completions",
                                 headers={"authorization": f"Bearer {stack.key}"},
                                 json={"model": stack.deployment, "max_tokens": 4,
                                       "messages": [{"role": "user", "content": f"n{n}"}]}
                                 ).status_code

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert list(pool.map(post, range(8))) == [200] * 8
        assert stack.upstream.max_in_flight == 1  # not 1 per worker
