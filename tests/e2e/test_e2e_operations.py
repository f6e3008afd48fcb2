"""Operating the gateway through the real processes: Prometheus metrics scraped and parsed,
per-minute limits, the deployment queue under concurrent load (fair between keys), key expiry
and rotation - with the official SDKs as clients and the admin CLI as the operator."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.e2e.stack import Stack, admin, wait_for

CACHE_TTL = 1.2  # the gateway sees a change made by the CLI within its 1 s auth cache
CHAT = {"model": "coder", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    built = Stack(workdir=tmp_path_factory.mktemp("ops"), backend="llamacpp")
    with built.running():
        yield built


def value(families: dict[str, Any], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 if none)."""
    family_name = name.removesuffix("_total")
    for suffix in ("_count", "_sum", "_bucket"):
        family_name = family_name.removesuffix(suffix)
    family = families.get(family_name)
    if family is None:
        return 0.0
    return sum(s.value for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def chat(stack: Stack, key: str, **extra: Any) -> httpx.Response:
    with stack.http() as client:
        return client.post(f"{stack.base_url}/v1/chat/completions",
                           headers={"authorization": f"Bearer {key}"}, json={**CHAT, **extra})


# ---- metrics -------------------------------------------------------------------------------


def test_metrics_count_requests_tokens_and_tunnels_and_carry_no_secret(ops: Stack) -> None:
    before = ops.metrics()
    ok_before = value(before, "tokios_requests_total", tenant="acme", deployment="coder",
                      endpoint="/v1/chat/completions", status="200")
    with ops.openai() as client:
        for _ in range(3):
            client.chat.completions.create(model="coder", max_tokens=8,
                                           messages=[{"role": "user", "content": "canary-p"}])
    with ops.anthropic() as client, pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="no-such-model-canary", max_tokens=8,
                               messages=[{"role": "user", "content": "hi"}])
    with ops.openai(api_key="sk-tokios-aaaaaaaaaaaa_" + "B" * 43) as client, \
            pytest.raises(openai.AuthenticationError):
        client.models.list()
    with ops.http() as client:
        raw = client.get(f"{ops.base_url}/metrics", headers={"accept": "text/plain"})
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/plain")
    for secret in (ops.key, ops.token, "canary-p", "no-such-model-canary", "B" * 43):
        assert secret not in raw.text
    after = ops.metrics()
    assert value(after, "tokios_requests_total", tenant="acme", deployment="coder",
                 endpoint="/v1/chat/completions", status="200") == ok_before + 3
    assert value(after, "tokios_requests_total", tenant="acme", deployment="-",
                 endpoint="/v1/messages", status="404") >= 1
    assert value(after, "tokios_requests_total", tenant="-", endpoint="/v1/models",
                 status="401") >= 1
    count = value(after, "tokios_request_duration_seconds_count", tenant="acme",
                  deployment="coder")
    assert count >= 3
    assert value(after, "tokios_time_to_first_byte_seconds_count", tenant="acme",
                 deployment="coder") == count
    assert value(after, "tokios_request_duration_seconds_sum", tenant="acme",
                 deployment="coder") > 0
    assert value(after, "tokios_tunnels", tenant="acme") == 1
    for family in ("tokios_streams_in_flight", "tokios_queue_depth", "tokios_tunnel_rtt_seconds",
                   "tokios_tokens", "tokios_rate_limited", "process_cpu_seconds"):
        assert family in after, family


def test_metrics_on_their_own_port_behind_a_token(tmp_path: Path) -> None:
    token = "metrics-token-0123456789"
    built = Stack(workdir=tmp_path, backend="llamacpp",
                  gateway_args=["--metrics-listen", "127.0.0.1:0"],
                  gateway_env={"TOKIOS_METRICS_TOKEN": token})
    with built.running() as stack:
        assert stack.metrics_port != stack.port
        assert chat(stack, stack.key).status_code == 200
        families = stack.metrics(token)
        assert value(families, "tokios_requests_total", tenant="acme", status="200") >= 1
        with stack.http() as client:
            url = f"https://127.0.0.1:{stack.metrics_port}/metrics"
            assert client.get(url).status_code == 401
            assert client.get(url, headers={"authorization": "Bearer wrong-token-000000000"}
                              ).status_code == 401
            assert client.get(f"https://127.0.0.1:{stack.metrics_port}/v1/models",
                              headers={"authorization": f"Bearer {stack.key}"}
                              ).status_code == 404
            assert client.get(f"https://127.0.0.1:{stack.metrics_port}/healthz"
                              ).status_code == 200
            # not on the API port when it has its own
            assert client.get(f"{stack.base_url}/metrics").status_code == 404


# ---- limits --------------------------------------------------------------------------------


def test_requests_per_minute_per_key_and_per_tenant(ops: Stack) -> None:
    key = admin(ops.data, "key", "add", "acme", "--rpm", "2")
    time.sleep(CACHE_TTL)
    with ops.openai(api_key=key["key"]) as client:
        for _ in range(2):
            client.chat.completions.create(model="coder", max_tokens=4,
                                           messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="coder", max_tokens=4,
                                           messages=[{"role": "user", "content": "x"}])
    assert int(limited.value.response.headers["retry-after"]) >= 1
    assert "2 requests per minute for this key" in str(limited.value)
    with ops.anthropic(api_key=key["key"]) as client, \
            pytest.raises(anthropic.RateLimitError) as messages_limited:
        client.messages.create(model="coder", max_tokens=4,
                               messages=[{"role": "user", "content": "x"}])
    assert messages_limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert chat(ops, ops.key).status_code == 200  # another key is not affected
    # the tenant's limit covers all its keys together
    second_key = admin(ops.data, "key", "add", "acme")["key"]
    admin(ops.data, "tenant", "set", "acme", "--rpm", "1")
    time.sleep(CACHE_TTL)
    try:
        first, second = chat(ops, ops.key), chat(ops, second_key)
        assert first.status_code == 200 and second.status_code == 429
        assert "for this tenant" in second.json()["error"]["message"]
    finally:
        admin(ops.data, "tenant", "set", "acme", "--rpm", "none")
    families = ops.metrics()
    assert value(families, "tokios_rate_limited_total", tenant="acme", reason="key_rpm") >= 2
    assert value(families, "tokios_rate_limited_total", tenant="acme", reason="tenant_rpm") >= 1
    time.sleep(CACHE_TTL)


# ---- the queue -------------------------------------------------------------------------------


def test_a_busy_deployment_queues_fairly_between_two_keys(ops: Stack) -> None:
    assert ops.upstream is not None
    admin(ops.data, "deployment", "set", "acme", "coder", "--max-in-flight", "1",
          "--queue", "10", "--queue-timeout", "60s")
    greedy = admin(ops.data, "key", "add", "acme", "--name", "greedy")["key"]
    polite = admin(ops.data, "key", "add", "acme", "--name", "polite")["key"]
    time.sleep(CACHE_TTL)
    ops.upstream.first_delay = 0.4  # per answer
    done: list[str] = []
    lock = threading.Lock()

    def call(who: str, key: str) -> int:
        status = chat(ops, key).status_code
        with lock:
            done.append(who)
        return status

    try:
        with ThreadPoolExecutor(8) as pool:
            greedy_calls = [pool.submit(call, "greedy", greedy) for _ in range(6)]
            wait_for(lambda: value(ops.metrics(), "tokios_queue_depth", deployment="coder")
                     == 5, 20, "greedy's requests to queue")
            polite_calls = [pool.submit(call, "polite", polite) for _ in range(2)]
            statuses = [f.result(60) for f in greedy_calls + polite_calls]
    finally:
        ops.upstream.first_delay = 0.0
        admin(ops.data, "deployment", "set", "acme", "coder", "--max-in-flight", "none",
              "--queue", "default", "--queue-timeout", "default")
        time.sleep(CACHE_TTL)
    assert statuses == [200] * 8
    # one at a time, keys in turn: greedy's first (already running), then greedy, polite, ...
    # so polite is done long before greedy's last ones (first come, first served would put
    # polite's two last)
    assert done.index("polite") <= 3 and len(done) - 1 - done[::-1].index("polite") <= 5, done


def test_a_full_queue_is_429_a_long_wait_503_and_a_client_that_leaves_leaves_it(
        ops: Stack) -> None:
    assert ops.upstream is not None
    admin(ops.data, "deployment", "set", "acme", "coder", "--max-in-flight", "1",
          "--queue", "1", "--queue-timeout", "2s")
    time.sleep(CACHE_TTL)
    ops.upstream.slow, ops.upstream.events = 0.1, 60  # ~6 s for the one in flight
    try:
        with ThreadPoolExecutor(4) as pool:
            running = pool.submit(chat, ops, ops.key, stream=True)
            wait_for(lambda: value(ops.metrics(), "tokios_streams_in_flight",
                                   deployment="coder") == 1, 10, "a stream in flight")
            waiting = pool.submit(chat, ops, ops.key)
            wait_for(lambda: value(ops.metrics(), "tokios_queue_depth", deployment="coder")
                     == 1, 10, "one waiting")
            with ops.anthropic() as client, \
                    pytest.raises(anthropic.RateLimitError) as full:
                client.messages.create(model="coder", max_tokens=4,
                                       messages=[{"role": "user", "content": "x"}])
            assert full.value.response.headers["retry-after"] == "1"
            timed_out = waiting.result(10)
            assert timed_out.status_code == 503, timed_out.text
            assert "timed out after 2s" in timed_out.json()["error"]["message"]
            assert timed_out.headers["retry-after"] == "1"
            # a queued client that disconnects is out of the queue at once
            leaving = httpx.Client(verify=ops.ssl_context(), timeout=0.4)
            with pytest.raises(httpx.ReadTimeout):
                leaving.post(f"{ops.base_url}/v1/chat/completions", json=CHAT,
                             headers={"authorization": f"Bearer {ops.key}"})
            leaving.close()
            wait_for(lambda: value(ops.metrics(), "tokios_queue_depth", deployment="coder")
                     == 0, 1.0, "the queue to empty when the client left")
            assert running.result(10).status_code == 200
    finally:
        ops.upstream.slow, ops.upstream.events = 0.0, 0
        admin(ops.data, "deployment", "set", "acme", "coder", "--max-in-flight", "none",
              "--queue", "default", "--queue-timeout", "default")
        time.sleep(CACHE_TTL)
    families = ops.metrics()
    assert value(families, "tokios_rate_limited_total", reason="queue_full") >= 1
    assert value(families, "tokios_rate_limited_total", reason="queue_timeout") >= 1


# ---- key lifecycle ---------------------------------------------------------------------------


def test_an_expired_key_gets_401_in_each_clients_format(ops: Stack) -> None:
    key = admin(ops.data, "key", "add", "acme", "--expires-in", "3s")
    assert key["status"] == "active" and key["expires_at"]
    assert chat(ops, key["key"]).status_code == 200
    time.sleep(3.2)
    with ops.openai(api_key=key["key"]) as client, pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="coder", max_tokens=4,
                                       messages=[{"role": "user", "content": "x"}])
    with ops.anthropic(api_key=key["key"]) as client, \
            pytest.raises(anthropic.AuthenticationError) as refused:
        client.messages.create(model="coder", max_tokens=4,
                               messages=[{"role": "user", "content": "x"}])
    assert "expired" in str(refused.value)
    listed = admin(ops.data, "key", "list", "acme")["keys"]
    assert next(k for k in listed if k["id"] == key["id"])["status"] == "expired"
    admin(ops.data, "key", "set", key["id"], "--no-expiry")
    time.sleep(CACHE_TTL)
    assert chat(ops, key["key"]).status_code == 200


def test_rotation_keeps_the_old_secret_for_the_overlap_then_refuses_it(ops: Stack) -> None:
    old = admin(ops.data, "key", "add", "acme", "--name", "rotating")
    assert chat(ops, old["key"]).status_code == 200
    rotated = admin(ops.data, "key", "rotate", old["id"], "--overlap", "3s")
    new = rotated["key"]
    assert new != old["key"] and rotated["id"] == old["id"]
    assert rotated["previous_secret_valid_until"]
    time.sleep(CACHE_TTL)
    assert chat(ops, new).status_code == 200
    assert chat(ops, old["key"]).status_code == 200  # within the overlap
    time.sleep(3)
    refused = chat(ops, old["key"])
    assert refused.status_code == 401 and refused.json()["error"]["type"]
    assert chat(ops, new).status_code == 200
    admin(ops.data, "key", "revoke", old["id"])
    time.sleep(CACHE_TTL)
    assert chat(ops, new).status_code == 401
