"""The per-minute limits of keys and tenants shared by every node, in Redis (``serve --redis``).

:class:`RedisLimiter` implements :class:`runtimes.gateway.limits.Limiter` with the same token
buckets as :class:`~runtimes.gateway.limits.LocalLimiter` (one minute's allowance, refilled
evenly; tokens charged afterwards, a debt bounded to an hour's allowance), kept in Redis so that
a key limited to 60 requests a minute gets 60 whichever nodes its requests reach::

    limiter = RedisLimiter("redis://redis.internal:6379/0")
    refused = await limiter.admit(limits)          # one round trip: the ADMIT script
    limiter.charge_tokens(tokens_limits(limits), n)  # returns at once; sent in the background
    ...
    await limiter.aclose()                          # sends what is pending, closes

- Each bucket is a hash ``PREFIX:limit:<scope>:<rpm|tpm>`` (``level``, ``at``). ``admit`` runs
  one Lua script that refills and checks every bucket of the request, then takes one request
  from each requests bucket, or takes nothing and answers which limit refused and when it will
  admit: atomic, so two nodes cannot both take the last request.
- Every write sets the key to expire when the bucket would be full again (plus 10 s): an
  idle bucket vanishes, as a full one is the same as none.
- Time is Redis's own (``TIME``), the same for every node; tests inject a clock instead.
- ``charge_tokens`` adds to a small in-memory batch (one entry per bucket) and a background task
  sends it with the CHARGE script, so the event loop never waits on Redis for it.
- When Redis cannot be reached (or answers slower than ``timeout``), the node counts in a
  :class:`~runtimes.gateway.limits.LocalLimiter` of its own and tries Redis again after
  ``retry_after_failure`` seconds: limits keep holding per node, requests never fail because
  of Redis, and a warning says so once per outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from runtimes.gateway.limits import MAX_DEBT_MINUTES, Limit, LimitKind, LocalLimiter, RateLimited
from runtimes.gateway.redis_link import (
    DEFAULT_PREFIX,
    DEFAULT_TIMEOUT,
    RETRY_AFTER_FAILURE,
    RedisLink,
)

__all__ = ["RedisLimiter"]

logger = logging.getLogger("tokios.gateway.limits")

#: A bucket's key expires this long after the bucket would be full again (a full bucket is the
#: same as none; the margin keeps one that is still being used from vanishing mid-burst).
EXPIRY_MARGIN_MS = 10_000

# Shared by both scripts: ``now`` (ARGV[1], or Redis's clock when empty) and the refill of one
# bucket (``cap`` per minute) up to it. The level never exceeds the current cap (a lowered limit
# applies at once), and time never runs backwards for a bucket.
_PRELUDE = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function refilled(key, cap)
  local state = redis.call('HMGET', key, 'level', 'at')
  local level, at = tonumber(state[1]), tonumber(state[2])
  if not level or not at then
    return cap, now
  end
  if now > at then
    level = math.min(cap, level + (now - at) * cap / 60)
    at = now
  elseif level > cap then
    level = cap
  end
  return level, at
end
local function store(key, cap, level, at)
  redis.call('HSET', key, 'level', string.format('%.17g', level),
             'at', string.format('%.17g', at))
  redis.call('PEXPIRE', key, math.ceil((cap - level) * 60000 / cap) + EXPIRY_MARGIN_MS)
end
""".replace("EXPIRY_MARGIN_MS", str(EXPIRY_MARGIN_MS))

#: KEYS: the buckets; ARGV: now, then per bucket its cap and 1 (requests) or 0 (tokens).
#: Returns 0 (admitted: one request taken from every requests bucket) or
#: {index of the refusing bucket (1-based), seconds until it would admit}.
_ADMIT = _PRELUDE + """
local levels, ats = {}, {}
for i, key in ipairs(KEYS) do
  local cap, requests = tonumber(ARGV[2 * i]), ARGV[2 * i + 1] == '1'
  local level, at = refilled(key, cap)
  if requests and level < 1 then
    return {i, string.format('%.17g', (1 - level) * 60 / cap)}
  elseif not requests and level <= 0 then
    return {i, string.format('%.17g', -level * 60 / cap)}
  end
  levels[i], ats[i] = level, at
end
for i, key in ipairs(KEYS) do
  if ARGV[2 * i + 1] == '1' then
    store(key, tonumber(ARGV[2 * i]), levels[i] - 1, ats[i])
  end
end
return 0
"""

#: KEYS: tokens buckets; ARGV: now, the debt bound in minutes, then per bucket its cap and the
#: tokens to take (a bucket may appear twice: it is taken from twice).
_CHARGE = _PRELUDE + """
local debt_minutes = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  local cap, tokens = tonumber(ARGV[2 * i + 1]), tonumber(ARGV[2 * i + 2])
  local level, at = refilled(key, cap)
  store(key, cap, math.max(level - tokens, -cap * debt_minutes), at)
end
return 0
"""


class RedisLimiter(RedisLink):
    """Token buckets in Redis, shared by every node using the same Redis and ``prefix``."""

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX,
                 clock: Callable[[], float] | None = None, timeout: float = DEFAULT_TIMEOUT,
                 retry_after_failure: float = RETRY_AFTER_FAILURE) -> None:
        """``url``: redis://, rediss:// or unix://. ``clock``: None for Redis's own time (what
        a gateway uses), else a function of Unix seconds (tests)."""
        super().__init__(url, what="per-minute limits", logger=logger, timeout=timeout,
                         retry_after_failure=retry_after_failure)
        self._admit_script = self._redis.register_script(_ADMIT)
        self._charge_script = self._redis.register_script(_CHARGE)
        self._prefix = prefix
        self._clock = clock
        #: Where the node counts while Redis is out of reach.
        self.fallback = LocalLimiter()
        #: Tokens not yet sent, by tokens limit (one entry per bucket and cap).
        self._pending: dict[Limit, int] = {}
        self._sender: asyncio.Task[None] | None = None

    def key(self, limit: Limit) -> str:
        """The Redis key of ``limit``'s bucket."""
        return f"{self._prefix}:limit:{limit.scope}:{limit.kind.value}"

    def _now(self) -> str:
        return "" if self._clock is None else repr(self._clock())

    async def admit(self, limits: Sequence[Limit]) -> RateLimited | None:
        if not limits:
            return None
        if not self.available:
            return self.fallback.check(limits)
        args: list[str | int | float] = [self._now()]
        for limit in limits:
            args += [limit.per_minute, 1 if limit.kind is LimitKind.REQUESTS else 0]
        try:
            answer = await asyncio.wait_for(
                self._admit_script(keys=[self.key(limit) for limit in limits], args=args),
                self._timeout * 2)
        except self._errors as exc:
            self._failed(exc)
            return self.fallback.check(limits)
        if answer == 0:
            return None
        index, seconds = answer
        return RateLimited(limits[int(index) - 1], max(0.0, float(seconds)))

    def charge_tokens(self, limits: Sequence[Limit], tokens: int) -> None:
        """Queue ``tokens`` for every tokens limit of ``limits`` and return at once (call it
        from the event loop); a background task sends them."""
        if tokens <= 0:
            return
        for limit in limits:
            if limit.kind is LimitKind.TOKENS:
                self._pending[limit] = self._pending.get(limit, 0) + tokens
        if self._pending and (self._sender is None or self._sender.done()):
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            if self.available:
                args: list[str | int | float] = [self._now(), MAX_DEBT_MINUTES]
                for limit, tokens in batch.items():
                    args += [limit.per_minute, tokens]
                try:
                    await asyncio.wait_for(
                        self._charge_script(keys=[self.key(limit) for limit in batch],
                                            args=args),
                        self._timeout * 2)
                    continue
                except self._errors as exc:
                    self._failed(exc)
            for limit, tokens in batch.items():  # what Redis could not take counts here
                self.fallback.charge_tokens([limit], tokens)

    async def flush(self) -> None:
        """Wait until every token charged so far has been sent (or counted locally)."""
        while self._sender is not None and not self._sender.done():
            await asyncio.shield(self._sender)

    async def aclose(self) -> None:
        """Send what is pending, then close the connection."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), self._timeout * 4)
        await self._redis.aclose()

    def __repr__(self) -> str:
        return f"RedisLimiter(prefix={self._prefix!r})"
