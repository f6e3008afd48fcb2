"""What only the Redis limiter does, on the session's real Redis: two limiters (two nodes) share
one budget, also when their requests race; tokens are charged in the background without the
caller waiting; bucket keys expire once they would be full again; and a Redis that stops
answering makes a node count locally (limits still hold) until it answers again. The
behaviour both limiters share is tested once for both in test_limits_and_queue.py."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import pytest
import redis

from runtimes.gateway.limits import Limit, LimitKind
from runtimes.gateway.redis_limits import EXPIRY_MARGIN_MS, RedisLimiter
from tests.services import RedisServer, free_port


def _prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def test_two_nodes_share_one_budget_even_when_they_race(redis_server: RedisServer) -> None:
    rpm = Limit("key:key_shared", "key", LimitKind.REQUESTS, 10)
    tpm = Limit("tenant:ten_shared", "tenant", LimitKind.TOKENS, 600)

    async def main() -> None:
        prefix = _prefix()
        node_a = RedisLimiter(redis_server.url, prefix=prefix)  # Redis's own clock
        node_b = RedisLimiter(redis_server.url, prefix=prefix)
        try:
            answers = await asyncio.gather(*(node.admit([rpm, tpm])
                                             for _ in range(12) for node in (node_a, node_b)))
            admitted = sum(answer is None for answer in answers)
            assert admitted == 10  # not 10 per node, and not one more under the race
            refused = [answer for answer in answers if answer is not None]
            assert {answer.limit for answer in refused} == {rpm}
            assert all(0 < answer.retry_after <= 6.1 for answer in refused)
            # tokens used through node A put the tenant in debt on node B too
            other = Limit("key:key_other", "key", LimitKind.REQUESTS, 100)
            assert await node_b.admit([other, tpm]) is None
            node_a.charge_tokens([tpm], 1200)
            await node_a.flush()
            refused_b = await node_b.admit([other, tpm])
            assert refused_b is not None and refused_b.limit == tpm
            assert refused_b.retry_after == pytest.approx(60.0, abs=1.0)  # 600 tokens owed
            assert node_a.available and node_b.available
        finally:
            await node_a.aclose()
            await node_b.aclose()

    asyncio.run(main())


def test_tokens_are_sent_in_the_background(redis_server: RedisServer) -> None:
    tpm = Limit("key:key_bg", "key", LimitKind.TOKENS, 6000)

    async def main() -> None:
        limiter = RedisLimiter(redis_server.url, prefix=_prefix())
        control = redis.Redis.from_url(redis_server.url)
        try:
            limiter.charge_tokens([tpm], 100)
            limiter.charge_tokens([tpm], 50)  # batched with the first
            # charge_tokens returned without touching Redis: nothing is there until the loop
            # runs the sender
            assert control.exists(limiter.key(tpm)) == 0
            await limiter.flush()
            level = float(control.hget(limiter.key(tpm), "level") or 0)
            assert level == pytest.approx(6000 - 150, abs=1.0)
        finally:
            control.close()
            await limiter.aclose()

    asyncio.run(main())


def test_bucket_keys_expire_when_they_would_be_full_again(redis_server: RedisServer) -> None:
    rpm = Limit("key:key_ttl", "key", LimitKind.REQUESTS, 60)
    tpm = Limit("key:key_ttl", "key", LimitKind.TOKENS, 600)

    async def main() -> None:
        limiter = RedisLimiter(redis_server.url, prefix=_prefix(), clock=lambda: 5000.0)
        control = redis.Redis.from_url(redis_server.url)
        try:
            assert await limiter.admit([rpm, tpm]) is None
            # one request of 60 a minute: full again in 1 s
            ttl = control.pttl(limiter.key(rpm))
            assert 1000 < ttl <= 1000 + EXPIRY_MARGIN_MS
            assert control.exists(limiter.key(tpm)) == 0  # admitting took no tokens
            limiter.charge_tokens([tpm], 1200)  # 600 in debt: full again in 120 s
            await limiter.flush()
            ttl = control.pttl(limiter.key(tpm))
            assert 119_000 < ttl <= 120_000 + EXPIRY_MARGIN_MS
            assert sorted(k.decode() for k in control.scan_iter(f"{limiter.key(rpm)[:-4]}*")) \
                == sorted([limiter.key(rpm), limiter.key(tpm)])
        finally:
            control.close()
            await limiter.aclose()

    asyncio.run(main())


def test_a_redis_that_stops_answering_makes_the_node_count_locally(
        redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    rpm = Limit("key:key_outage", "key", LimitKind.REQUESTS, 2)

    async def main() -> None:
        limiter = RedisLimiter(redis_server.url, prefix=_prefix(), timeout=0.2,
                               retry_after_failure=0.5)
        control = redis.Redis.from_url(redis_server.url)
        try:
            assert await limiter.admit([rpm]) is None  # through Redis: 1 of 2 taken there
            control.execute_command("CLIENT", "PAUSE", "1500", "ALL")  # Redis stops answering
            started = time.monotonic()
            local = [await limiter.admit([rpm]) for _ in range(3)]
            assert time.monotonic() - started < 1.0  # one timeout, then no wait at all
            assert not limiter.available
            assert [answer is None for answer in local] == [True, True, False]  # still limited
            limiter.charge_tokens([Limit("key:key_outage", "key", LimitKind.TOKENS, 60)], 500)
            await limiter.flush()  # counted locally, not lost, not waited on
            assert await limiter.fallback.admit(
                [Limit("key:key_outage", "key", LimitKind.TOKENS, 60)]) is not None
            await asyncio.sleep(1.6)  # the pause ends; the retry window has passed
            refused = await limiter.admit([rpm])  # Redis again: its bucket has 1 left
            assert refused is None and limiter.available
            assert await limiter.admit([rpm]) is not None
        finally:
            control.close()
            await limiter.aclose()

    with caplog.at_level(logging.WARNING, "tokios.gateway.limits"):
        asyncio.run(main())
    warnings = [r for r in caplog.records if "redis unavailable" in r.getMessage()]
    assert len(warnings) == 1  # once per outage, not per request


def test_an_unreachable_redis_is_reported_by_ping() -> None:
    async def main() -> None:
        limiter = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
        try:
            assert await limiter.ping() is False
            assert not limiter.available
            rpm = Limit("key:k", "key", LimitKind.REQUESTS, 1)
            assert await limiter.admit([rpm]) is None
            assert await limiter.admit([rpm]) is not None
        finally:
            await limiter.aclose()

    asyncio.run(main())
