"""Requests and tokens per minute, per key and per tenant, behind the :class:`Limiter` interface.

    limiter = LocalLimiter()                   # this process; RedisLimiter: all the nodes
    limits = limits_of(grant)                  # the key's and its tenant's limits, () if none
    refused = await limiter.admit(limits)      # None: go on; RateLimited: answer 429
    ...                                        # the request runs; its usage report arrives
    limiter.charge_tokens(tokens_limits(limits), tokens)   # its tokens count against tpm limits

Each limit is a token bucket that holds at most one minute's allowance and refills evenly
(``per_minute / 60`` a second), so a key with ``rpm 60`` may burst 60 requests, then one a
second. A request needs one unit of every requests bucket and a tokens bucket that is not in
debt: the tokens a request uses are known only from its usage report, so they are charged
afterwards and may take a bucket below zero; the key then waits until it is paid back. The
wait is what ``RateLimited.retry_after`` says (whole seconds for ``Retry-After``).

A gateway of several nodes shares the buckets between them:
:class:`runtimes.gateway.redis_limits.RedisLimiter` (``serve --redis URL``) keeps the same
buckets per ``Limit.scope`` in Redis (one Lua script for admit: check every bucket, then take
from all; one for charge_tokens, sent in the background).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from runtimes.store import KeyGrant

__all__ = ["Limit", "LimitKind", "Limiter", "LocalLimiter", "RateLimited", "limits_of",
           "tokens_limits"]

#: How far below zero tokens may take a bucket: one hour of its allowance.
MAX_DEBT_MINUTES = 60
#: Seconds between sweeps that drop full buckets (a full bucket is the same as none).
_SWEEP_INTERVAL = 60.0


class LimitKind(StrEnum):
    REQUESTS = "rpm"
    TOKENS = "tpm"


@dataclass(frozen=True, slots=True)
class Limit:
    """One per-minute limit: ``scope`` names the bucket (``key:<key id>`` or
    ``tenant:<tenant id>``), ``holder`` says whose it is in messages (``key``, ``tenant``)."""

    scope: str
    holder: str
    kind: LimitKind
    per_minute: int

    @property
    def reason(self) -> str:
        """A metric label value: ``key_rpm``, ``tenant_tpm``, ..."""
        return f"{self.holder}_{self.kind.value}"

    def describe(self) -> str:
        what = "requests" if self.kind is LimitKind.REQUESTS else "tokens"
        return f"{self.per_minute} {what} per minute for this {self.holder}"


@dataclass(frozen=True, slots=True)
class RateLimited:
    """A refusal: the first limit that refused, and the seconds until it would admit."""

    limit: Limit
    retry_after: float

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after)))


def limits_of(grant: KeyGrant) -> tuple[Limit, ...]:
    """The limits a request with ``grant`` is held to (empty when none is set)."""
    if grant.rpm is None and grant.tpm is None and grant.tenant_rpm is None \
            and grant.tenant_tpm is None:
        return ()
    found = []
    for holder, scope, kind, value in (
            ("key", grant.key_id, LimitKind.REQUESTS, grant.rpm),
            ("key", grant.key_id, LimitKind.TOKENS, grant.tpm),
            ("tenant", grant.tenant_id, LimitKind.REQUESTS, grant.tenant_rpm),
            ("tenant", grant.tenant_id, LimitKind.TOKENS, grant.tenant_tpm)):
        if value is not None:
            found.append(Limit(f"{holder}:{scope}", holder, kind, value))
    return tuple(found)


def tokens_limits(limits: tuple[Limit, ...]) -> tuple[Limit, ...]:
    """The tokens-per-minute ones of ``limits`` (what a usage report is charged to)."""
    return tuple(limit for limit in limits if limit.kind is LimitKind.TOKENS) if limits else ()


class Limiter(Protocol):
    """Counters behind the per-minute limits. ``admit`` is checked before a request is
    forwarded; ``charge_tokens`` is called from the event loop when its usage is known (it
    must not block: a remote implementation sends it in the background)."""

    async def admit(self, limits: Sequence[Limit]) -> RateLimited | None:
        """Take one request from every requests limit and return None, or take nothing and
        return the refusal (a tokens limit in debt refuses too)."""
        ...

    def charge_tokens(self, limits: Sequence[Limit], tokens: int) -> None:
        """Count ``tokens`` against every tokens limit in ``limits``."""
        ...


class LocalLimiter:
    """Token buckets in this process's memory (one gateway). Memory: one small list per
    limited key or tenant seen in the last minute (full buckets are dropped)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        #: (scope, kind) -> [level, time of level]
        self._buckets: dict[tuple[str, LimitKind], list[float]] = {}
        self._next_sweep = clock() + _SWEEP_INTERVAL

    def __len__(self) -> int:
        return len(self._buckets)

    def _level(self, limit: Limit, now: float) -> list[float]:
        """The bucket of ``limit``, refilled up to ``now``."""
        bucket = self._buckets.get((limit.scope, limit.kind))
        capacity = float(limit.per_minute)
        if bucket is None:
            bucket = self._buckets[(limit.scope, limit.kind)] = [capacity, now]
        elif now > bucket[1]:
            bucket[0] = min(capacity, bucket[0] + (now - bucket[1]) * capacity / 60.0)
            bucket[1] = now
        elif bucket[0] > capacity:  # the limit was lowered
            bucket[0] = capacity
        return bucket

    def check(self, limits: Sequence[Limit]) -> RateLimited | None:
        """:meth:`admit`, synchronously (what the in-process limiter really does)."""
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        buckets = []
        for limit in limits:
            bucket = self._level(limit, now)
            needed = 1.0 if limit.kind is LimitKind.REQUESTS else math.ulp(0.0)
            if bucket[0] < needed:
                return RateLimited(limit, (needed - bucket[0]) * 60.0 / limit.per_minute)
            if limit.kind is LimitKind.REQUESTS:
                buckets.append(bucket)
        for bucket in buckets:
            bucket[0] -= 1.0
        return None

    async def admit(self, limits: Sequence[Limit]) -> RateLimited | None:
        return self.check(limits)

    def charge_tokens(self, limits: Sequence[Limit], tokens: int) -> None:
        if tokens <= 0:
            return
        now = self._clock()
        for limit in limits:
            if limit.kind is LimitKind.TOKENS:
                bucket = self._level(limit, now)
                bucket[0] = max(bucket[0] - tokens,
                                -float(limit.per_minute) * MAX_DEBT_MINUTES)

    def _sweep(self, now: float) -> None:
        """Drop the buckets that are full again (a bucket not in debt refills completely
        within 60 s): they are created full when next needed."""
        self._next_sweep = now + _SWEEP_INTERVAL
        stale = [scope for scope, (level, at) in self._buckets.items()
                 if level >= 0 and now - at >= 60.0]
        for scope in stale:
            del self._buckets[scope]
