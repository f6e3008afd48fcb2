"""µs per request that metrics and usage accounting add to the gateway's request path.

Run: ``.venv/bin/python -m bench ops_accounting`` (or ``bench/ops_accounting.py``).

What one forwarded request costs, with the gateway's own objects:

- metrics: ``GatewayMetrics.request_done`` (the requests counter, the duration and
  time-to-first-byte histograms);
- usage: ``Accounting.usage_reported`` when its report arrives (the tokens counters, the usage
  buffer's hourly entry and, for a key with a tpm limit, the limiter's charge);
- limits: ``LocalLimiter.check`` for a key with rpm and tpm limits and a tenant limit;
- queue: ``Admission.enter`` + ``leave`` on the fast path (room, nobody waiting).

Requests rotate over 20 tenants × 5 deployments × 10 keys, so label children and buckets are
looked up in populated dicts. The target for metrics + usage together is under 20 µs.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

from runtimes.gateway.limits import LocalLimiter, limits_of, tokens_limits
from runtimes.gateway.metrics import GatewayMetrics
from runtimes.gateway.queue import Admission, QueuePolicy
from runtimes.gateway.usage import Account, Accounting, UsageRecorder
from runtimes.store import KeyGrant

TARGET_US = 20.0
ROUNDS = 200_000


class _NoStore:
    def record_usage(self, rows: object) -> None:  # the write happens in a thread, not here
        pass


def _per_call(fn: Callable[[int], object], rounds: int = ROUNDS) -> float:
    for i in range(2000):
        fn(i)
    start = time.perf_counter()
    for i in range(rounds):
        fn(i)
    return (time.perf_counter() - start) / rounds * 1e6


def main() -> None:
    grants = [KeyGrant(key_id=f"key_{t}_{k}", tenant_id=f"ten_{t}", tenant_name=f"tenant{t}",
                       deployments=None, rpm=10**9, tpm=10**9, tenant_rpm=10**9)
              for t in range(20) for k in range(10)]
    deployments = [f"model-{d}" for d in range(5)]
    cases = list(itertools.product(grants, deployments))
    accounts = [Account(g.tenant_id, g.tenant_name, g.key_id, d, tokens_limits(limits_of(g)))
                for g, d in cases]
    metrics = GatewayMetrics()
    limiter = LocalLimiter()
    recorder = UsageRecorder(_NoStore())  # type: ignore[arg-type]
    accounting = Accounting(recorder, metrics, limiter)
    n = len(cases)

    def metric(i: int) -> None:
        grant, deployment = cases[i % n]
        metrics.request_done(grant.tenant_name, deployment, "/v1/chat/completions", 200,
                             duration=0.8, ttfb=0.05)

    def usage(i: int) -> None:
        accounting.usage_reported(accounts[i % n], 1200, 300, False)

    limits = [limits_of(g) for g, _ in cases]

    def limit(i: int) -> None:
        limiter.check(limits[i % n])

    metrics_us = _per_call(metric)
    usage_us = _per_call(usage)
    limits_us = _per_call(limit)

    async def queue_case() -> float:
        admission = Admission(lambda tenant, deployment: 64)
        policy = QueuePolicy()

        async def run(rounds: int) -> float:
            start = time.perf_counter()
            for i in range(rounds):
                grant, deployment = cases[i % n]
                ticket = await admission.enter(grant.tenant_id, deployment, grant.key_id,
                                               policy)
                admission.leave(ticket)
            return (time.perf_counter() - start) / rounds * 1e6

        await run(2000)
        return await run(ROUNDS // 4)

    queue_us = asyncio.run(queue_case())
    together = metrics_us + usage_us
    print(f"{'per forwarded request':<52} {'µs':>7}")
    print(f"{'metrics (requests counter, 2 histograms)':<52} {metrics_us:7.2f}")
    print(f"{'usage (tokens counters, hourly buffer, tpm charge)':<52} {usage_us:7.2f}")
    print(f"{'metrics + usage':<52} {together:7.2f}  (target < {TARGET_US:g})")
    print(f"{'limits (key rpm+tpm, tenant rpm)':<52} {limits_us:7.2f}")
    print(f"{'queue fast path (enter + leave)':<52} {queue_us:7.2f}")
    print(f"{'all four':<52} {together + limits_us + queue_us:7.2f}")
    print(f"({len(recorder)} usage entries buffered, {len(limiter)} limiter buckets)")


if __name__ == "__main__":
    main()
