"""Deployment in-flight caps shared by every node, in Redis (``serve --redis``): a counting
semaphore of leases.

    slots = RedisInFlight("redis://redis.internal:6379/0")
    lease = await slots.acquire(tenant_id, deployment, cap)   # None: the cluster is full
    ...the request runs...
    slots.release(lease)                                      # returns at once; exactly once
    ...
    await slots.aclose()                                      # gives back what is held, closes

- Each deployment is a sorted set ``PREFIX:inflight:<tenant id>:<deployment>``: a member per
  request holding a slot (a token unique to this node and request), scored by when its lease
  expires (Redis's own clock, in ms). ``acquire`` is one Lua script: drop the expired members,
  then add this one if fewer than ``cap`` remain; atomic, so two nodes cannot both take the
  last slot.
- A lease lasts ``lease`` seconds (15). A background task renews every lease this node holds
  every ``renew_every`` seconds (5), so a stream of an hour keeps its slot, while the slots of
  a node that died come back when their leases expire. The set itself expires with its last
  lease: nothing grows without bound.
- ``release`` forgets the lease at once (it is not renewed again) and the same background task
  removes it from Redis (ZREM), after any renewal already under way, so a released lease is
  never renewed back into the set. A second ``release`` of the same lease does nothing.
- When Redis cannot be reached (or answers slower than ``timeout``), ``acquire`` answers
  :data:`UNSHARED` at once: the caller counts in this process only (per node, as without
  Redis), a warning says so once per outage, and Redis is tried again after
  ``retry_after_failure`` seconds. Requests never fail because of Redis.

:class:`~runtimes.gateway.queue.Admission` calls this for a deployment with a
``max_in_flight`` after its own (per node) check passed, so the local queue keeps its order.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from dataclasses import dataclass

from runtimes.gateway.redis_link import (
    DEFAULT_PREFIX,
    DEFAULT_TIMEOUT,
    RETRY_AFTER_FAILURE,
    RedisLink,
)

__all__ = ["LEASE_SECONDS", "RENEW_EVERY", "UNSHARED", "Lease", "RedisInFlight"]

logger = logging.getLogger("tokios.gateway.queue")

#: Seconds a slot stays taken without renewal (what a dead node's slots wait to come back).
LEASE_SECONDS = 15.0
#: Seconds between renewals of the leases a node holds.
RENEW_EVERY = 5.0

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

#: KEYS[1]: the deployment's set; ARGV: cap, lease ms, token. Returns 1 (taken) or 0 (full).
_ACQUIRE = _NOW_MS + """
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[3])
redis.call('PEXPIRE', KEYS[1], lease)
return 1
"""

#: KEYS: sets; ARGV: lease ms, then per set the number of its tokens and the tokens. Every
#: token gets a new expiry (one lost while Redis was away is added back: it still runs).
_RENEW = _NOW_MS + """
local lease = tonumber(ARGV[1])
local at = 2
for _, key in ipairs(KEYS) do
  local count = tonumber(ARGV[at])
  for i = 1, count do
    redis.call('ZADD', key, now + lease, ARGV[at + i])
  end
  at = at + count + 1
  redis.call('PEXPIRE', key, lease)
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Lease:
    """A slot taken in Redis (``key``, ``token``); hand it to :meth:`RedisInFlight.release`."""

    key: str
    token: str


#: Redis was out of reach: the slot is counted in this process only; releasing it is a no-op.
UNSHARED = Lease("", "")


class RedisInFlight(RedisLink):
    """The cluster's in-flight slots per deployment (see module doc)."""

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX,
                 lease: float = LEASE_SECONDS, renew_every: float = RENEW_EVERY,
                 timeout: float = DEFAULT_TIMEOUT,
                 retry_after_failure: float = RETRY_AFTER_FAILURE) -> None:
        super().__init__(url, what="deployment in-flight caps", logger=logger,
                         timeout=timeout, retry_after_failure=retry_after_failure)
        self._acquire_script = self._redis.register_script(_ACQUIRE)
        self._renew_script = self._redis.register_script(_RENEW)
        self._prefix = prefix
        self._lease_ms = max(1, int(lease * 1000))
        self._renew_every = renew_every
        self._node = secrets.token_hex(6)
        self._serial = itertools.count(1)
        #: Leases this node holds now (renewed), and leases to remove from Redis.
        self.held: set[Lease] = set()
        self._to_remove: list[Lease] = []
        self._wake: asyncio.Event | None = None
        self._keeper: asyncio.Task[None] | None = None

    def key(self, tenant_id: str, deployment: str) -> str:
        """The Redis key of the deployment's set."""
        return f"{self._prefix}:inflight:{tenant_id}:{deployment}"

    async def acquire(self, tenant_id: str, deployment: str, cap: int) -> Lease | None:
        """Take one of the deployment's ``cap`` slots: the lease, None when all are taken, or
        :data:`UNSHARED` when Redis is out of reach (count in this process)."""
        if not self.available:
            return UNSHARED
        self._start_keeper()
        lease = Lease(self.key(tenant_id, deployment), f"{self._node}:{next(self._serial)}")
        try:
            taken = await asyncio.wait_for(
                self._acquire_script(keys=[lease.key],
                                     args=[cap, self._lease_ms, lease.token]),
                self._timeout * 2)
        except self._errors as exc:
            self._failed(exc)
            self._remove_later(lease)  # it may have been added before the answer was lost
            return UNSHARED
        except asyncio.CancelledError:
            self._remove_later(lease)
            raise
        if not taken:
            return None
        self.held.add(lease)
        return lease

    def release(self, lease: Lease) -> None:
        """The request holding ``lease`` ended: its slot is given back (in the background;
        returns at once, from the event loop). Releasing twice, or UNSHARED, does nothing."""
        if lease in self.held:
            self.held.discard(lease)
            self._remove_later(lease)

    def _remove_later(self, lease: Lease) -> None:
        self._to_remove.append(lease)
        if self._wake is not None:
            self._wake.set()

    def _start_keeper(self) -> None:
        if self._keeper is None or self._keeper.done():
            self._wake = asyncio.Event()
            self._keeper = asyncio.get_running_loop().create_task(self._keep())

    async def _keep(self) -> None:
        """Remove released leases as soon as there are some; renew held ones every
        ``renew_every`` seconds. One task, so a removal never races a renewal."""
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        renew_at = loop.time() + self._renew_every
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, renew_at - loop.time()))
            self._wake.clear()
            await self._send_removals()
            if loop.time() >= renew_at:
                renew_at = loop.time() + self._renew_every
                await self.renew()

    async def _send_removals(self) -> None:
        batch, self._to_remove = self._to_remove, []
        by_key: dict[str, list[str]] = {}
        for lease in batch:
            by_key.setdefault(lease.key, []).append(lease.token)
        if not by_key or not self.available:
            return  # not reachable: the leases expire on their own
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, tokens in by_key.items():
                    pipe.zrem(key, *tokens)
                await asyncio.wait_for(pipe.execute(), self._timeout * 2)
        except self._errors as exc:
            self._failed(exc)

    async def renew(self) -> None:
        """Give every lease held a new expiry now (the background task calls this)."""
        by_key: dict[str, list[str]] = {}
        for lease in self.held:
            by_key.setdefault(lease.key, []).append(lease.token)
        if not by_key or not self.available:
            return
        args: list[str | int] = [self._lease_ms]
        for tokens in by_key.values():
            args += [len(tokens), *tokens]
        try:
            await asyncio.wait_for(self._renew_script(keys=list(by_key), args=args),
                                   self._timeout * 2)
        except self._errors as exc:
            self._failed(exc)

    async def aclose(self) -> None:
        """Give back every slot still held, then close the connection."""
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._keeper
        for lease in list(self.held):
            self.release(lease)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._send_removals(), self._timeout * 4)
        await self._redis.aclose()

    def __repr__(self) -> str:
        return f"RedisInFlight(prefix={self._prefix!r})"
