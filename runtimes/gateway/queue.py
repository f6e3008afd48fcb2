"""A cap on requests in flight per deployment, and a bounded, fair queue in front of it.

    admission = Admission(free_streams=tunnels.free_streams)
    ticket = await admission.enter(tenant_id, deployment, key_id, policy)   # may wait
    try:
        ...forward the request...
    finally:
        admission.leave(ticket)
    admission.capacity_changed(tenant_id)   # a tunnel joined, or its stream limit rose

A request goes ahead at once when nobody waits for its deployment, the deployment is under its
``max_in_flight`` and some tunnel serving it has a free stream. Otherwise it waits in the
deployment's queue, in order, until a request ends or a tunnel gains room; it fails with
:class:`QueueFull` (429) when the queue is full, :class:`QueueTimeout` (503) when it waited
``queue_timeout`` seconds, and leaves at once when its task is cancelled (the client went
away). A deployment that no connector serves at all is not queued for: the request goes on and
gets the usual 503.

Fair between keys: each key has its own line, and the lines are served in turn (round robin),
so a key with many requests waiting does not delay another key's first one. When the queue is
full, a key with fewer requests waiting than the key with the most takes the place of that
key's newest request (which gets 429); so one key can never hold the whole queue against
others. :class:`FairQueue` is that logic alone, without asyncio.

The queue is per gateway process (a multi-node gateway keeps a queue per node). The cap is
too, unless Admission is given ``cluster`` slots (:class:`~runtimes.gateway.redis_inflight.
RedisInFlight`, ``serve --redis``): then a request that fits here also takes one of the
deployment's ``max_in_flight`` slots shared by every node before it goes ahead. The next waiter
of a gate (in the queue's own order) is served only once a cluster slot is taken for it: a
task per busy gate asks again whenever a request ends here or a tunnel gains room, and every
``cluster_retry`` seconds (other nodes' releases are not seen here), until the waiter's
queue timeout. The slot is given back in :meth:`Admission.leave`, with the local one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from runtimes.store import Deployment

__all__ = ["CLUSTER_RETRY", "DEFAULT_QUEUE_SIZE", "DEFAULT_QUEUE_TIMEOUT", "Admission",
           "ClusterSlots", "FairQueue", "QueuePolicy", "QueueRefused", "Ticket", "policy_of"]

#: Requests that may wait per deployment, and for how long, unless the deployment says else.
DEFAULT_QUEUE_SIZE = 32
DEFAULT_QUEUE_TIMEOUT = 30.0

#: Seconds between asking the cluster again for a slot while a gate's next waiter waits.
CLUSTER_RETRY = 0.25

T = TypeVar("T")


class ClusterSlots(Protocol):
    """In-flight slots shared by every node (see :mod:`runtimes.gateway.redis_inflight`)."""

    def acquire(self, tenant_id: str, deployment: str, cap: int) -> Awaitable[Any]:
        """A lease on one of ``cap`` slots, or None when every slot is taken."""

    def release(self, lease: Any) -> None:
        """Give the slot of ``lease`` back (once; a second call does nothing)."""


class FairQueue(Generic[T]):
    """Items waiting per key: FIFO within a key, round robin between keys, at most ``size``
    in all. ``push`` may push out another key's newest item to make room (see module doc)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._lines: collections.OrderedDict[Hashable, collections.deque[T]] = \
            collections.OrderedDict()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[T]:
        for line in self._lines.values():
            yield from line

    def push(self, key: Hashable, item: T, *, first: bool = False) -> tuple[bool, T | None]:
        """Add ``item`` for ``key``: (accepted, the item pushed out to make room or None).
        ``first``: it came before every item waiting (it goes first, and its key's turn is
        next)."""
        pushed_out = None
        if self._count >= self.size:
            longest_key, longest = max(self._lines.items(), key=lambda kv: len(kv[1]),
                                       default=(None, None))
            mine = self._lines.get(key)
            if longest is None or len(mine or ()) + 1 >= len(longest):
                return False, None
            pushed_out = longest.pop()
            self._count -= 1
            if not longest:
                del self._lines[longest_key]
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = collections.deque()
        if first:
            line.appendleft(item)
            self._lines.move_to_end(key, last=False)
        else:
            line.append(item)
        self._count += 1
        return True, pushed_out

    def pop(self) -> T | None:
        """The next item: the oldest of the key whose turn it is; that key goes to the back."""
        if not self._lines:
            return None
        key, line = next(iter(self._lines.items()))
        item = line.popleft()
        self._count -= 1
        if line:
            self._lines.move_to_end(key)
        else:
            del self._lines[key]
        return item

    def remove(self, key: Hashable, item: T) -> bool:
        """Take ``item`` out wherever it is (a timeout, a client gone); False if absent."""
        line = self._lines.get(key)
        if line is None:
            return False
        try:
            line.remove(item)
        except ValueError:
            return False
        self._count -= 1
        if not line:
            del self._lines[key]
        return True


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """A deployment's cap (None: the connectors' limits only) and queue."""

    max_in_flight: int | None = None
    queue_size: int = DEFAULT_QUEUE_SIZE
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT


def policy_of(deployment: Deployment | None) -> QueuePolicy:
    """The policy of a deployment record (its unset fields take the defaults)."""
    if deployment is None:
        return _DEFAULT_POLICY
    return QueuePolicy(
        max_in_flight=deployment.max_in_flight,
        queue_size=DEFAULT_QUEUE_SIZE if deployment.queue_size is None
        else deployment.queue_size,
        queue_timeout=DEFAULT_QUEUE_TIMEOUT if deployment.queue_timeout is None
        else deployment.queue_timeout)


_DEFAULT_POLICY = QueuePolicy()


class QueueRefused(Exception):  # noqa: N818
    """The request cannot wait: answer ``status`` with ``Retry-After: retry_after``.
    ``reason`` is a metric label (``queue_full``, ``queue_timeout``, ``shutting_down``)."""

    def __init__(self, message: str, *, status: int, reason: str, retry_after: str = "1"):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


def _full(deployment: str) -> QueueRefused:
    return QueueRefused(f"too many requests are waiting for {deployment}; retry later",
                        status=429, reason="queue_full")


class _Waiter:
    __slots__ = ("future", "key_id")

    def __init__(self, key_id: str, future: asyncio.Future[object | None]) -> None:
        self.key_id = key_id
        self.future = future


class _Gate:
    """One deployment: requests holding a slot and requests waiting for one."""

    __slots__ = ("asking", "deployment", "in_flight", "policy", "pump", "queue", "tenant_id",
                 "wake")

    def __init__(self, tenant_id: str, deployment: str, policy: QueuePolicy) -> None:
        self.tenant_id = tenant_id
        self.deployment = deployment
        self.policy = policy
        self.in_flight = 0
        self.queue: FairQueue[_Waiter] = FairQueue(policy.queue_size)
        #: With cluster slots: the task serving the queue, and what wakes it early.
        self.pump: asyncio.Task[None] | None = None
        #: A request is asking the cluster for a slot now (later ones queue behind it).
        self.asking = False
        self.wake: asyncio.Event | None = None


@dataclass(frozen=True, slots=True)
class Ticket:
    """A request's place at its deployment; hand it back to :meth:`Admission.leave`.
    ``lease``: its cluster slot (None: counted in this process only)."""

    gate: _Gate | None
    lease: object | None = None


_BYPASS = Ticket(None)


class Admission:
    """The gates of every deployment of one gateway process (see module doc).

    ``free_streams(tenant_id, deployment)`` says how many more streams the live tunnels
    serving the deployment take now (0: all full), or None when none serves it. ``cluster``:
    the slots every node shares (None: the cap holds per process)."""

    def __init__(self, free_streams: Callable[[str, str], int | None], *,
                 cluster: ClusterSlots | None = None,
                 cluster_retry: float = CLUSTER_RETRY) -> None:
        self._free_streams = free_streams
        self._cluster = cluster
        self._cluster_retry = cluster_retry
        self._gates: dict[tuple[str, str], _Gate] = {}
        #: Per tenant: requests given a slot from the queue whose task has not run yet (their
        #: stream is not open, so the tunnels' free streams still count their place).
        self._granted: dict[str, int] = {}
        self._closed: str | None = None

    # ---- what the metrics read -----------------------------------------------------------

    def depths(self) -> Iterator[tuple[str, str, int, int]]:
        """(tenant id, deployment, requests in flight, requests waiting) of each busy gate."""
        for gate in self._gates.values():
            yield gate.tenant_id, gate.deployment, gate.in_flight, len(gate.queue)

    # ---- entering and leaving ------------------------------------------------------------

    async def enter(self, tenant_id: str, deployment: str, key_id: str,
                    policy: QueuePolicy) -> Ticket:
        """Wait for a slot (see module doc); raises QueueRefused, or CancelledError when the
        task is cancelled (the waiter has then left the queue)."""
        if self._closed is not None:
            raise QueueRefused(self._closed, status=503, reason="shutting_down")
        free = self._free_streams(tenant_id, deployment)
        if free is None:
            return _BYPASS  # nothing serves it: no waiting, the request gets its 503
        gate = self._gates.get((tenant_id, deployment))
        if gate is None:
            gate = self._gates[(tenant_id, deployment)] = _Gate(tenant_id, deployment, policy)
        elif gate.policy != policy:
            gate.policy = policy
            gate.queue.size = policy.queue_size
        clustered = self._clustered(gate)
        if not gate.queue and self._has_room(gate, free) \
                and not (clustered and self._asking(gate) and policy.queue_size > 0):
            if not clustered:
                gate.in_flight += 1
                return Ticket(gate)
            try:
                lease = await self._cluster_slot(gate)
            except asyncio.CancelledError:
                self._forget_if_idle(gate)
                raise
            if lease is not None:
                return Ticket(gate, lease)
            if self._closed is not None:  # shutdown began while Redis was asked
                self._forget_if_idle(gate)
                raise QueueRefused(self._closed, status=503, reason="shutting_down")
            asked = True
        else:
            asked = False
        future: asyncio.Future[object | None] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(key_id, future)
        # a request refused by the cluster came before those that queued while it asked
        accepted, pushed_out = gate.queue.push(key_id, waiter, first=asked)
        if not accepted:
            self._forget_if_idle(gate)
            raise _full(deployment)
        if pushed_out is not None and not pushed_out.future.done():
            pushed_out.future.set_exception(_full(deployment))
        timer = asyncio.get_running_loop().call_later(
            policy.queue_timeout, self._expire, gate, waiter)
        if clustered:
            self._start_pump(gate)
        try:
            lease = await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                self._ungrant(tenant_id)
                self.leave(Ticket(gate, future.result()))  # the slot came as the client left
            elif gate.queue.remove(key_id, waiter):
                self._forget_if_idle(gate)
            raise
        except QueueRefused:  # timed out, pushed out or shutting down: already out of line
            self._forget_if_idle(gate)
            raise
        finally:
            timer.cancel()
        self._ungrant(tenant_id)
        return Ticket(gate, lease)

    def leave(self, ticket: Ticket) -> None:
        """The request holding ``ticket`` is done: its slot (and its cluster slot) goes to the
        next waiter. Call it exactly once per ticket."""
        gate = ticket.gate
        if gate is None:
            return
        if ticket.lease is not None and self._cluster is not None:
            self._cluster.release(ticket.lease)
        gate.in_flight -= 1
        self.capacity_changed(gate.tenant_id)
        self._forget_if_idle(gate)

    def capacity_changed(self, tenant_id: str) -> None:
        """Tunnels of ``tenant_id`` may take more streams now: serve the waiters that fit."""
        for gate in [g for g in self._gates.values() if g.tenant_id == tenant_id and g.queue]:
            if self._clustered(gate):
                self._start_pump(gate)  # the pump takes a cluster slot before it serves
                continue
            free = self._free_streams(tenant_id, gate.deployment)
            while gate.queue and free is not None and self._has_room(gate, free):
                waiter = gate.queue.pop()
                if waiter is None or waiter.future.done():
                    continue
                gate.in_flight += 1
                self._granted[tenant_id] = self._granted.get(tenant_id, 0) + 1
                waiter.future.set_result(None)

    def close(self, message: str) -> None:
        """Shutting down: every waiter and every later request is refused with 503."""
        self._closed = message
        for gate in list(self._gates.values()):
            while (waiter := gate.queue.pop()) is not None:
                if not waiter.future.done():
                    waiter.future.set_exception(
                        QueueRefused(message, status=503, reason="shutting_down"))

    # ---- the cluster's slots --------------------------------------------------------------

    def _clustered(self, gate: _Gate) -> bool:
        return self._cluster is not None and gate.policy.max_in_flight is not None

    @staticmethod
    def _asking(gate: _Gate) -> bool:
        """Someone asks the cluster for this gate now: a new request must queue, to keep
        its order (unless nobody may queue: then it asks too)."""
        return gate.asking or (gate.pump is not None and not gate.pump.done())

    async def _cluster_slot(self, gate: _Gate) -> object | None:
        """Hold a local slot (and stream) while asking the cluster for one: the lease, with the
        local slot kept, or None with the local slot given back."""
        assert self._cluster is not None and gate.policy.max_in_flight is not None
        gate.in_flight += 1
        self._granted[gate.tenant_id] = self._granted.get(gate.tenant_id, 0) + 1
        gate.asking = True
        lease: object | None = None
        try:
            lease = await self._cluster.acquire(gate.tenant_id, gate.deployment,
                                                gate.policy.max_in_flight)
        finally:
            gate.asking = False
            self._ungrant(gate.tenant_id)
            if lease is None:
                gate.in_flight -= 1
        return lease

    def _start_pump(self, gate: _Gate) -> None:
        if gate.pump is None or gate.pump.done():
            gate.wake = asyncio.Event()
            gate.pump = asyncio.get_running_loop().create_task(self._pump(gate))
        elif gate.wake is not None:
            gate.wake.set()

    async def _pump(self, gate: _Gate) -> None:
        """Serve ``gate``'s waiters in the queue's order, each once a cluster slot is taken for
        it; ends when the queue is empty."""
        assert gate.wake is not None
        try:
            await self._serve_queue(gate, gate.wake)
        finally:
            self._forget_if_idle(gate)

    async def _serve_queue(self, gate: _Gate, wake: asyncio.Event) -> None:
        while gate.queue and self._closed is None:
            if not self._clustered(gate):  # its cap was removed: served as any other gate
                self.capacity_changed(gate.tenant_id)
                return
            wake.clear()
            free = self._free_streams(gate.tenant_id, gate.deployment)
            lease = None
            # a request asking on its own (it found no queue) goes first: wait for its answer
            if not gate.asking and free is not None and self._has_room(gate, free):
                lease = await self._cluster_slot(gate)
            if lease is None:  # full here or in the cluster: wait for a change, or retry
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), self._cluster_retry)
                continue
            waiter = gate.queue.pop()
            while waiter is not None and waiter.future.done():
                waiter = gate.queue.pop()
            if waiter is None:  # every waiter left while the slot was being taken
                self.leave(Ticket(gate, lease))
                break
            self._granted[gate.tenant_id] = self._granted.get(gate.tenant_id, 0) + 1
            waiter.future.set_result(lease)

    # ---- inside --------------------------------------------------------------------------

    def _has_room(self, gate: _Gate, free: int) -> bool:
        cap = gate.policy.max_in_flight
        return (cap is None or gate.in_flight < cap) \
            and free > self._granted.get(gate.tenant_id, 0)

    def _ungrant(self, tenant_id: str) -> None:
        """A granted waiter runs now (and opens its stream before it yields): its place no
        longer needs holding, so others may fit; look again once this task yields."""
        left = self._granted.get(tenant_id, 0) - 1
        if left > 0:
            self._granted[tenant_id] = left
        else:
            self._granted.pop(tenant_id, None)
        asyncio.get_running_loop().call_soon(self.capacity_changed, tenant_id)

    def _expire(self, gate: _Gate, waiter: _Waiter) -> None:
        if not waiter.future.done() and gate.queue.remove(waiter.key_id, waiter):
            waiter.future.set_exception(QueueRefused(
                f"timed out after {gate.policy.queue_timeout:g}s waiting for a free connector "
                f"for {gate.deployment}", status=503, reason="queue_timeout"))

    def _forget_if_idle(self, gate: _Gate) -> None:
        if gate.in_flight <= 0 and not gate.queue:
            self._forget(gate)

    def _forget(self, gate: _Gate) -> None:
        if self._gates.get((gate.tenant_id, gate.deployment)) is gate:
            del self._gates[(gate.tenant_id, gate.deployment)]
