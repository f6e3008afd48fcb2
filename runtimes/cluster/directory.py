"""This node's view of the other nodes: which one serves a deployment it has no tunnel for.

    directory = NodeDirectory(state, node_id=..., forward_url=..., serves=manager.serves)
    directory.start()                         # a task: publish and refresh every heartbeat
    node = directory.pick(tenant_id, deployment, exclude=tried)   # a NodeRecord or None
    directory.begin_drain()                   # published at once: peers stop sending here
    await directory.aclose()                  # withdraws this node's record

Every :data:`HEARTBEAT` seconds the directory publishes this node's record (what its local
tunnels serve, by tenant, with their free stream slots: ``serves()``) with a time to live of
:data:`RECORD_TTL`, and reads every live node's record. :meth:`pick` answers from that copy in
memory, so a request never waits on the cluster state; the copy is at most one heartbeat old,
and a node that died drops out of it within ``RECORD_TTL``. A failed publish or read is logged
and retried at the next heartbeat; the last good copy stays in use meanwhile (but records older
than ``RECORD_TTL`` are dropped from it, so a lost Redis cannot keep dead nodes routable).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Mapping

from runtimes.cluster.state import ClusterState, NodeRecord

__all__ = ["HEARTBEAT", "RECORD_TTL", "NodeDirectory"]

logger = logging.getLogger("tokios.cluster")

#: Seconds between two publications of this node's record (and reads of the others').
HEARTBEAT = 1.0
#: Seconds a record lives without being published again: a dead node is forgotten by then.
RECORD_TTL = 5.0
#: A request that finds no peer re-reads the records if they are older than this.
MISS_REFRESH = 0.1

#: What this node's tunnels serve now: tenant id -> deployment -> free stream slots.
Serves = Callable[[], Mapping[str, Mapping[str, int]]]


class NodeDirectory:
    """See the module doc. ``clock`` is for tests."""

    def __init__(self, state: ClusterState, *, node_id: str, forward_url: str, serves: Serves,
                 heartbeat: float = HEARTBEAT, ttl: float = RECORD_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.state = state
        self.node_id = node_id
        self.forward_url = forward_url
        self._serves = serves
        self._heartbeat = heartbeat
        self._ttl = ttl
        self._clock = clock
        self._started_at = time.time()
        self._draining = False
        #: Peers (never this node) by tenant id -> deployment -> records, and when read.
        self._by_deployment: dict[tuple[str, str], list[NodeRecord]] = {}
        self._read_at = -1.0
        self._rotation = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self.peers: list[NodeRecord] = []
        #: Peers that refused a connection, left out until then (their record may outlive
        #: them by up to the TTL).
        self._suspects: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._closed = False

    # -- the loop ----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="node-directory")

    async def _run(self) -> None:
        while not self._closed:
            await self.beat()
            self._wake.clear()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation
            # that lands as the wake-up does (a tunnel closing during shutdown), and the
            # directory would never stop
            try:
                async with asyncio.timeout(self._heartbeat):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def changed(self) -> None:
        """What this node serves changed (a tunnel came or went): publish now, not at the
        next heartbeat, so peers that look it up on a miss see it at once."""
        self._wake.set()

    async def refresh(self, max_age: float = MISS_REFRESH) -> None:
        """Read the peers' records now unless the copy is younger than ``max_age`` (a request
        found no peer: perhaps a tunnel just came up elsewhere)."""
        if self._read_at >= 0 and self._clock() - self._read_at < max_age:
            return
        try:
            records = await self.state.live_nodes()
        except Exception as exc:
            logger.warning("cluster state unavailable: %s", type(exc).__name__)
            return
        self._use(records)

    async def beat(self) -> None:
        """Publish this node's record and read the others' (one heartbeat; the loop calls
        it, tests may too)."""
        try:
            await self.state.publish(self.record(), self._ttl)
            records = await self.state.live_nodes()
        except Exception as exc:  # Redis or the file unavailable: keep the last copy a while
            logger.warning("cluster state unavailable: %s", type(exc).__name__)
            if self._read_at >= 0 and self._clock() - self._read_at > self._ttl:
                self._use([])
            return
        self._use(records)

    def _use(self, records: Iterable[NodeRecord]) -> None:
        peers = [r for r in records if r.node_id != self.node_id]
        by_deployment: dict[tuple[str, str], list[NodeRecord]] = {}
        for record in peers:
            if record.draining:
                continue
            for tenant_id, deployments in record.serves.items():
                for name in deployments:
                    by_deployment.setdefault((tenant_id, name), []).append(record)
        self.peers = peers
        self._by_deployment = by_deployment
        self._read_at = self._clock()

    def record(self) -> NodeRecord:
        """This node's record as published now."""
        serves = {} if self._draining else {t: dict(d) for t, d in self._serves().items() if d}
        return NodeRecord(node_id=self.node_id, forward_url=self.forward_url,
                          started_at=self._started_at, draining=self._draining, serves=serves)

    # -- routing -----------------------------------------------------------------------------

    def pick(self, tenant_id: str, deployment: str,
             exclude: Iterable[str] = ()) -> NodeRecord | None:
        """The peer to forward a request for this deployment to: among live, non-draining
        peers that serve it and are not in ``exclude`` (node ids), the one with the most free
        slots (ties rotate); None when there is none."""
        excluded = set(exclude)
        if self._suspects:
            now = self._clock()
            for node_id, until in list(self._suspects.items()):
                if until <= now:
                    del self._suspects[node_id]
                else:
                    excluded.add(node_id)
        candidates = [r for r in self._by_deployment.get((tenant_id, deployment), ())
                      if r.node_id not in excluded]
        if not candidates:
            return None
        most = max(r.serves[tenant_id][deployment] for r in candidates)
        tied = [r for r in candidates if r.serves[tenant_id][deployment] == most]
        return tied[next(self._rotation) % len(tied)]

    def suspect(self, node_id: str) -> None:
        """``node_id`` refused a connection: route around it until its record would have
        expired (a node that is back publishes again and is picked after that)."""
        self._suspects[node_id] = self._clock() + self._ttl

    def served_elsewhere(self, tenant_id: str) -> set[str]:
        """Deployments of this tenant that some peer serves."""
        return {name for (tenant, name) in self._by_deployment if tenant == tenant_id}

    # -- shutdown ----------------------------------------------------------------------------

    async def begin_drain(self) -> None:
        """Tell the peers now that this node takes no more forwarded requests."""
        self._draining = True
        with contextlib.suppress(Exception):
            await self.state.publish(self.record(), self._ttl)

    async def aclose(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.state.withdraw(self.node_id)
        with contextlib.suppress(Exception):
            await self.state.aclose()
