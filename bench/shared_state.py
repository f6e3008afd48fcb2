"""What the shared state of a gateway of several nodes costs per call: the Redis limiter
(``serve --redis``) beside the in-process one, and the PostgreSQL store (``--store``) beside
SQLite, each on a throwaway server on loopback (Debian's ``redis-server`` and ``postgres``,
started as the tests start them). A module that cannot start its server prints why and skips.

Run: ``.venv/bin/python -m bench shared_state``.

- limiter admit: a key with rpm and tpm and its tenant's rpm (three buckets), one request at a
  time (the latency a limited request pays) and 64 at once on one event loop (throughput);
- limiter charge_tokens: the event loop's part only (the send happens in the background);
- store: ``authenticate_key`` without the gateway's cache (what a cache miss costs; the cache
  keeps a key for 1 s), a write (``add_deployment``), ``record_usage`` of 100 rows.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from runtimes.gateway.limits import Limit, LimitKind, LocalLimiter
from runtimes.gateway.redis_limits import RedisLimiter
from runtimes.store import UsageRow, open_store
from tests.services import PostgresServer, RedisServer, ServiceUnavailable

LIMITS = [[Limit(f"key:key_{k}", "key", LimitKind.REQUESTS, 10**9),
           Limit(f"key:key_{k}", "key", LimitKind.TOKENS, 10**9),
           Limit(f"tenant:ten_{k % 20}", "tenant", LimitKind.REQUESTS, 10**9)]
          for k in range(200)]


async def _timed(call: Callable[[int], Awaitable[object]], rounds: int,
                 concurrency: int = 1) -> float:
    """µs per call, ``concurrency`` calls in flight at once."""
    async def worker(offset: int) -> None:
        for i in range(offset, rounds, concurrency):
            await call(i)

    await asyncio.gather(*(worker(o) for o in range(min(concurrency, 200))))  # warm up
    start = time.perf_counter()
    await asyncio.gather(*(worker(o) for o in range(concurrency)))
    return (time.perf_counter() - start) / rounds * 1e6


async def _limiters(url: str) -> list[tuple[str, float]]:
    redis_limiter, local = RedisLimiter(url), LocalLimiter()
    rows: list[tuple[str, float]] = []
    try:
        for name, limiter in (("local", local), ("redis", redis_limiter)):
            admit = lambda i, lim=limiter: lim.admit(LIMITS[i % len(LIMITS)])  # noqa: E731
            rows.append((f"{name}: admit, one at a time (µs)", await _timed(admit, 5000)))
            rows.append((f"{name}: admit, 64 at once (µs per request)",
                         await _timed(admit, 20000, concurrency=64)))
            start = time.perf_counter()
            for i in range(20000):
                limiter.charge_tokens(LIMITS[i % len(LIMITS)], 1500)
            rows.append((f"{name}: charge_tokens on the event loop (µs)",
                         (time.perf_counter() - start) / 20000 * 1e6))
            if limiter is redis_limiter:
                start = time.perf_counter()
                await redis_limiter.flush()
                rows.append(("redis: sending those charges in the background (ms in all)",
                             (time.perf_counter() - start) * 1e3))
        assert redis_limiter.available, "Redis stopped answering during the bench"
    finally:
        await redis_limiter.aclose()
    return rows


def _store(location: str, name: str) -> list[tuple[str, float]]:
    with open_store(location) as store:
        tenant = store.add_tenant("bench")
        keys = [store.add_key("bench")[1] for _ in range(20)]

        def per_call(fn: Callable[[int], Any], rounds: int) -> float:
            start = time.perf_counter()
            for i in range(rounds):
                fn(i)
            return (time.perf_counter() - start) / rounds * 1e3

        rows = [(f"{name}: authenticate_key, uncached (ms)",
                 per_call(lambda i: store.authenticate_key(keys[i % 20]), 1000)),
                (f"{name}: add_deployment (ms)",
                 per_call(lambda i: store.add_deployment("bench", f"d{i}"), 200))]
        batch = [UsageRow(tenant_id=tenant.id, key_id=f"key_{k}", deployment="d0", bucket=3600,
                          requests=1, input_tokens=100, output_tokens=10) for k in range(100)]
        rows.append((f"{name}: record_usage, 100 rows (ms)",
                     per_call(lambda i: store.record_usage(batch), 50)))
    return rows


def main() -> None:
    rows: list[tuple[str, float]] = []
    try:
        with RedisServer() as redis_server:
            rows += asyncio.run(_limiters(redis_server.url))
    except (ServiceUnavailable, RuntimeError, OSError) as exc:
        print(f"limiter: skipped ({exc})")
    with tempfile.TemporaryDirectory() as directory:
        rows += _store(directory, "sqlite")
    try:
        with PostgresServer() as postgres:
            rows += _store(postgres.create_database("bench"), "postgresql")
    except (ServiceUnavailable, RuntimeError, OSError) as exc:
        print(f"postgresql store: skipped ({exc})")
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}} {value:9.2f}")


if __name__ == "__main__":
    main()
