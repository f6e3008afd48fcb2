"""What every user of Redis in the gateway shares: one client with timeouts, and the failure
policy (``serve --redis``).

    class RedisThing(RedisLink):
        def __init__(self, url):
            super().__init__(url, what="per-minute limits")
        async def use(self):
            if not self.available:
                ...count in this process...
            try:
                await asyncio.wait_for(self._redis..., self._timeout * 2)
            except self._errors as exc:
                self._failed(exc)          # warns once per outage, retries later
                ...count in this process...

A call that fails or answers slower than ``timeout`` makes the node count in this process and
try Redis again after ``retry_after_failure`` seconds: requests never fail because of Redis,
and a warning says so once per outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

__all__ = ["DEFAULT_PREFIX", "DEFAULT_TIMEOUT", "RETRY_AFTER_FAILURE", "RedisLink"]

DEFAULT_PREFIX = "tokios"
#: Seconds a call to Redis may take before the node counts locally instead.
DEFAULT_TIMEOUT = 0.5
#: Seconds between attempts to reach Redis again after a failure.
RETRY_AFTER_FAILURE = 2.0


class RedisLink:
    """A Redis client and whether Redis is usable now (see module doc). ``what`` names what
    falls back to this process in the warning; ``logger`` is where it is written."""

    def __init__(self, url: str, *, what: str, logger: logging.Logger,
                 timeout: float = DEFAULT_TIMEOUT,
                 retry_after_failure: float = RETRY_AFTER_FAILURE) -> None:
        """``url``: redis://, rediss:// or unix://."""
        import redis.asyncio as aioredis  # noqa: PLC0415 (optional dependency)
        from redis.exceptions import RedisError  # noqa: PLC0415

        self._redis: Any = aioredis.Redis.from_url(url, socket_timeout=timeout,
                                                   socket_connect_timeout=timeout)
        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError,
                                                         asyncio.TimeoutError)
        self._what = what
        self._logger = logger
        self._timeout = timeout
        self._retry_after_failure = retry_after_failure
        self._down_until = 0.0

    @property
    def available(self) -> bool:
        """False while the node counts locally after a failure to reach Redis."""
        return time.monotonic() >= self._down_until

    def _failed(self, exc: BaseException) -> None:
        if self.available:
            self._logger.warning("redis unavailable (%s): %s count in this process until it "
                                 "is back", type(exc).__name__, self._what)
        self._down_until = time.monotonic() + self._retry_after_failure

    async def ping(self) -> bool:
        """Whether Redis answers now (the gateway checks once at start, to warn early)."""
        try:
            await asyncio.wait_for(self._redis.ping(), self._timeout * 2)
        except self._errors as exc:
            self._failed(exc)
            return False
        return True
