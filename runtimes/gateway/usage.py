"""Token usage per key: counted in memory as reports arrive, written to the store in batches.

    recorder = UsageRecorder(store)            # then recorder.start() on the event loop
    accounting = Accounting(recorder, metrics, limiter)
    accounting.usage_reported(account, input_tokens, output_tokens, estimated)  # per stream
    await recorder.close()                     # at shutdown: the last flush

Where the counts come from: after each stream (a cancelled one too) the connector reports the
tokens the model read and generated, estimated and marked so when the backend gave none; the
gateway's tunnel passes that on with the stream's :class:`Account` (tenant, key, deployment).

:meth:`Accounting.usage_reported` runs on the event loop and only adds to a dict (about a
microsecond): the tokens go to the metrics, to the key's and tenant's tokens-per-minute
limits, and to the recorder's buffer, one entry per (tenant, key, deployment, hour). The
recorder writes the buffer with one store transaction in a worker thread every
``flush_interval`` seconds (and as soon as it holds ``max_entries`` entries), so the loop never
waits on SQLite; a failed write keeps the counts for the next try; :meth:`UsageRecorder.close`
writes what is left when the gateway stops. Only counts are kept, never content.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runtimes.store import USAGE_BUCKET_SECONDS, Store, StoreError, UsageRow

if TYPE_CHECKING:
    from runtimes.gateway.limits import Limit, Limiter
    from runtimes.gateway.metrics import GatewayMetrics

__all__ = ["DEFAULT_FLUSH_INTERVAL", "Account", "Accounting", "UsageRecorder"]

logger = logging.getLogger("tokios.gateway")

#: Seconds between writes of the buffered counts.
DEFAULT_FLUSH_INTERVAL = 10.0
#: Buffered entries that trigger a write before the interval is over.
DEFAULT_MAX_ENTRIES = 10_000
#: The most tokens one report may add (a connector's report is bounded, not trusted blindly).
MAX_TOKENS_PER_REPORT = 10**10


@dataclass(frozen=True, slots=True)
class Account:
    """Whom a stream's tokens are counted for."""

    tenant_id: str
    tenant_name: str
    key_id: str
    deployment: str
    #: The tokens-per-minute limits of the key and its tenant, charged with the tokens.
    token_limits: tuple[Limit, ...] = ()


class UsageRecorder:
    """The buffer of counts per (tenant, key, deployment, hour), and its writer."""

    def __init__(self, store: Store, *, flush_interval: float = DEFAULT_FLUSH_INTERVAL,
                 max_entries: int = DEFAULT_MAX_ENTRIES,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._flush_interval = flush_interval
        self._max_entries = max_entries
        self._clock = clock
        #: (tenant_id, key_id, deployment, bucket) -> [requests, input, output,
        #: estimated requests, estimated input, estimated output]
        self._buffer: dict[tuple[str, str, str, int], list[int]] = {}
        #: The start of the hour being counted (recomputed when the clock leaves it).
        self._bucket = -USAGE_BUCKET_SECONDS
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None

    def __len__(self) -> int:
        return len(self._buffer)

    def record(self, tenant_id: str, key_id: str, deployment: str, input_tokens: int,
               output_tokens: int, *, estimated: bool) -> None:
        """Count one request's tokens in the current hour (counts out of range are clamped:
        negative to 0, huge to MAX_TOKENS_PER_REPORT)."""
        if not 0 <= input_tokens <= MAX_TOKENS_PER_REPORT:
            input_tokens = 0 if input_tokens < 0 else MAX_TOKENS_PER_REPORT
        if not 0 <= output_tokens <= MAX_TOKENS_PER_REPORT:
            output_tokens = 0 if output_tokens < 0 else MAX_TOKENS_PER_REPORT
        now = self._clock()
        if not self._bucket <= now < self._bucket + USAGE_BUCKET_SECONDS:
            self._bucket = int(now) // USAGE_BUCKET_SECONDS * USAGE_BUCKET_SECONDS
        where = (tenant_id, key_id, deployment, self._bucket)
        counts = self._buffer.get(where)
        if counts is None:
            counts = self._buffer[where] = [0, 0, 0, 0, 0, 0]
            if len(self._buffer) >= self._max_entries and self._wake is not None:
                self._wake.set()
        counts[0] += 1
        counts[1] += input_tokens
        counts[2] += output_tokens
        if estimated:
            counts[3] += 1
            counts[4] += input_tokens
            counts[5] += output_tokens

    def take(self) -> list[UsageRow]:
        """Empty the buffer into rows (for a write; :meth:`put_back` if it fails)."""
        buffer, self._buffer = self._buffer, {}
        return [UsageRow(tenant_id=t, key_id=k, deployment=d, bucket=b, requests=c[0],
                         input_tokens=c[1], output_tokens=c[2], estimated_requests=c[3],
                         estimated_input_tokens=c[4], estimated_output_tokens=c[5])
                for (t, k, d, b), c in buffer.items()]

    def put_back(self, rows: Sequence[UsageRow]) -> None:
        """Merge rows that could not be written back into the buffer."""
        for row in rows:
            counts = self._buffer.setdefault(
                (row.tenant_id, row.key_id, row.deployment, row.bucket), [0, 0, 0, 0, 0, 0])
            for i, value in enumerate((row.requests, row.input_tokens, row.output_tokens,
                                       row.estimated_requests, row.estimated_input_tokens,
                                       row.estimated_output_tokens)):
                counts[i] += value

    async def flush(self) -> None:
        """Write the buffer in a worker thread; if that fails, the counts go back into the
        buffer for the next try (writes of separate flushes add up, so they may overlap)."""
        rows = self.take()
        if not rows:
            return
        write = asyncio.ensure_future(asyncio.to_thread(self._write, rows))
        write.add_done_callback(functools.partial(self._written, rows))
        await asyncio.shield(write)

    def _write(self, rows: list[UsageRow]) -> bool:
        try:
            self._store.record_usage(rows)
        except StoreError as exc:
            logger.warning("usage not written yet (kept for the next try): %s",
                           type(exc).__name__)
            return False
        return True

    def _written(self, rows: list[UsageRow], write: asyncio.Future[bool]) -> None:
        if write.cancelled() or write.exception() is not None or not write.result():
            self.put_back(rows)

    def start(self) -> None:
        """Flush every ``flush_interval`` seconds from now on (call on the event loop)."""
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:  # never let the writer die
                logger.error("usage flush failed: %s", type(exc).__name__)

    async def close(self) -> None:
        """Stop the periodic writer and write what is left."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        if self._buffer:  # the last write failed: one more try, then say what is lost
            await self.flush()
            if self._buffer:
                logger.error("usage of %d key/deployment/hour entries could not be written",
                             len(self._buffer))


class Accounting:
    """What a usage report sets off: metrics, tokens-per-minute limits, stored usage."""

    def __init__(self, recorder: UsageRecorder, metrics: GatewayMetrics | None = None,
                 limiter: Limiter | None = None) -> None:
        self.recorder = recorder
        self.metrics = metrics
        self.limiter = limiter

    def usage_reported(self, account: Account, input_tokens: int, output_tokens: int,
                       estimated: bool) -> None:
        """One stream's tokens are known (from the event loop)."""
        input_tokens = max(0, input_tokens)
        output_tokens = max(0, output_tokens)
        self.recorder.record(account.tenant_id, account.key_id, account.deployment,
                             input_tokens, output_tokens, estimated=estimated)
        if self.metrics is not None:
            self.metrics.tokens_used(account.tenant_name, account.deployment, input_tokens,
                                     output_tokens)
        if account.token_limits and self.limiter is not None:
            self.limiter.charge_tokens(account.token_limits, input_tokens + output_tokens)
