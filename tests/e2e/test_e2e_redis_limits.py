"""Two real gateway processes on one store and one Redis (``serve --redis URL``): a key's
requests-per-minute budget is one budget whichever gateway its requests reach, answered with 429
and Retry-After in the client's format; without Redis each gateway would count on its own. And
a deployment's --max-in-flight holds across both gateways, each with its own connector: the
model server never sees more than the cap at once."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import httpx
import openai
import pytest
import redis

from tests.e2e.stack import Stack, admin, wait_for
from tests.services import RedisServer

CHAT = {"model": "coder", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}


def _post(stack: Stack, port: int, key: str) -> httpx.Response:
    with stack.http(timeout=10) as client:
        return client.post(f"https://127.0.0.1:{port}/v1/chat/completions",
                           headers={"authorization": f"Bearer {key}"}, json=CHAT)


def test_two_gateways_share_one_budget_through_redis(redis_server: RedisServer,
                                                     tmp_path: Path) -> None:
    stack = Stack(workdir=tmp_path, backend="llamacpp",
                  gateway_args=["--redis", redis_server.url])
    with stack.running():
        first, first_port = stack.gateway, stack.port
        assert first is not None
        try:
            log = first.log()
            where = f"redis://127.0.0.1:{redis_server.port}/0"
            assert f"limits and in-flight caps: shared in {where}" in log
            limited = admin(stack.store, "key", "add", "acme", "--rpm", "3")
            stack.start_gateway()  # a second node: same store, same Redis, no connector
            second_port = stack.port
            assert second_port != first_port
            with stack.openai(api_key=limited["key"]) as client:
                client.base_url = f"https://127.0.0.1:{first_port}/v1"
                for _ in range(2):
                    assert client.chat.completions.create(**CHAT).choices  # type: ignore[call-overload]
            # the third request of the minute goes to the other node: admitted there (503:
            # no connector on that node), so the budget is spent
            assert _post(stack, second_port, limited["key"]).status_code == 503
            for port in (first_port, second_port):
                refused = _post(stack, port, limited["key"])
                assert refused.status_code == 429, refused.text
                assert refused.json()["error"]["type"] == "rate_limit_error"
                assert "3 requests per minute for this key" in refused.json()["error"]["message"]
                assert 1 <= int(refused.headers["retry-after"]) <= 20
            with stack.openai(api_key=limited["key"]) as client, \
                    pytest.raises(openai.RateLimitError):
                client.base_url = f"https://127.0.0.1:{first_port}/v1"
                client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
            # another key is not affected
            assert _post(stack, first_port, stack.key).status_code == 200
        finally:
            first.stop()


def test_two_gateways_share_a_deployments_max_in_flight_through_redis(
        redis_server: RedisServer, tmp_path: Path) -> None:
    stack = Stack(workdir=tmp_path, backend="llamacpp",
                  gateway_args=["--redis", redis_server.url])
    with stack.running():
        first, first_connector, first_port = stack.gateway, stack.connector, stack.port
        assert first is not None and first_connector is not None
        assert stack.upstream is not None
        try:
            admin(stack.store, "deployment", "set", "acme", "coder", "--max-in-flight", "1")
            stack.start_gateway()  # a second node with a connector of its own: two tunnels
            second_port = stack.port
            stack.start_connector()  # (to the same model server) on two nodes
            stack.wait_served()
            time.sleep(1.5)  # both nodes see the new cap (their store caches last 1 s)
            stack.upstream.max_in_flight = stack.upstream.in_flight = 0
            stack.upstream.first_delay = 0.3
            ports = [first_port, second_port] * 3
            with concurrent.futures.ThreadPoolExecutor(len(ports)) as pool:
                answers = list(pool.map(lambda port: _post(stack, port, stack.key), ports))
            assert [answer.status_code for answer in answers] == [200] * len(ports)
            assert len(stack.upstream.requests) >= len(ports)
            assert stack.upstream.max_in_flight == 1  # not 1 per node
            # a client that gives up mid-request gives its slot back, as every request did
            with stack.http(timeout=0.1) as client, pytest.raises(httpx.TimeoutException):
                client.post(f"https://127.0.0.1:{second_port}/v1/chat/completions",
                            headers={"authorization": f"Bearer {stack.key}"}, json=CHAT)
            with redis.Redis.from_url(redis_server.url) as control:
                def slots_taken() -> int:
                    return sum(int(control.zcard(key))
                               for key in control.scan_iter("tokios:inflight:*"))
                wait_for(lambda: slots_taken() == 0, 10, "every slot to be given back")
            assert _post(stack, first_port, stack.key).status_code == 200
        finally:
            first_connector.stop()
            first.stop()
