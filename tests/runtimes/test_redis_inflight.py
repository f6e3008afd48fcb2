"""Deployment in-flight slots shared by every node, on the session's real Redis: the cap holds
across two nodes (two clients) even when they race; a dead holder's slot comes back when its
lease expires, while a live holder's renewals keep it; a slot is released exactly once; a
Redis that stops answering makes a node count locally. Then Admission with the shared slots:
two nodes' queues never run more than the cap together, keep their order, time out, and leave
nothing behind in Redis on any path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import redis

from runtimes.gateway.queue import Admission, QueuePolicy, QueueRefused, Ticket
from runtimes.gateway.redis_inflight import UNSHARED, Lease, RedisInFlight
from tests.services import RedisServer


def _prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))


async def eventually(check: Callable[[], bool], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


class Nodes:
    """Two nodes' slots on one Redis (same prefix), and a control client to look inside."""

    def __init__(self, url: str, **options: float) -> None:
        prefix = _prefix()
        self.a = RedisInFlight(url, prefix=prefix, **options)
        self.b = RedisInFlight(url, prefix=prefix, **options)
        self.control = redis.Redis.from_url(url)
        self.key = self.a.key("ten", "dep")

    def taken(self) -> int:
        return int(self.control.zcard(self.key))

    async def aclose(self) -> None:
        self.control.close()
        await self.a.aclose()
        await self.b.aclose()


def test_the_cap_holds_across_two_nodes_even_when_they_race(redis_server: RedisServer) -> None:
    async def main() -> None:
        nodes = Nodes(redis_server.url)
        try:
            leases = await asyncio.gather(*(node.acquire("ten", "dep", 3)
                                            for _ in range(8) for node in (nodes.a, nodes.b)))
            taken = [lease for lease in leases if lease is not None]
            assert len(taken) == 3 and UNSHARED not in taken  # 3 in all, not 3 per node
            assert nodes.taken() == 3
            assert await nodes.b.acquire("ten", "dep", 3) is None
            assert await nodes.b.acquire("ten", "other", 3) is not None  # per deployment
            first = taken[0]
            owner = nodes.a if first in nodes.a.held else nodes.b
            owner.release(first)
            owner.release(first)  # a second release gives back nothing more
            await eventually(lambda: nodes.taken() == 2)
            again = await nodes.b.acquire("ten", "dep", 3)
            assert again is not None and nodes.taken() == 3
            assert await nodes.a.acquire("ten", "dep", 3) is None
            await asyncio.sleep(0.1)
            assert nodes.taken() == 3  # the double release freed no one else's slot
        finally:
            await nodes.aclose()

    run(main())


def test_a_dead_holders_slot_comes_back_when_its_lease_expires(
        redis_server: RedisServer) -> None:
    async def main() -> None:
        nodes = Nodes(redis_server.url, lease=0.5, renew_every=60)  # A never renews: "dead"
        try:
            assert await nodes.a.acquire("ten", "dep", 1) is not None
            assert await nodes.b.acquire("ten", "dep", 1) is None
            assert 0 < nodes.control.pttl(nodes.key) <= 500  # the set goes with its leases
            await asyncio.sleep(0.6)
            assert await nodes.b.acquire("ten", "dep", 1) is not None
        finally:
            await nodes.aclose()

    run(main())


def test_a_live_holder_keeps_its_slot_by_renewing_it(redis_server: RedisServer) -> None:
    async def main() -> None:
        nodes = Nodes(redis_server.url, lease=0.5, renew_every=0.1)
        try:
            lease = await nodes.a.acquire("ten", "dep", 1)
            assert lease is not None
            for _ in range(6):  # 1.5 s: three leases long
                await asyncio.sleep(0.25)
                assert await nodes.b.acquire("ten", "dep", 1) is None
            nodes.a.release(lease)
            await eventually(lambda: nodes.taken() == 0, within=1.0)
            assert await nodes.b.acquire("ten", "dep", 1) is not None
            await asyncio.sleep(0.3)  # A renews nothing it gave back
            assert nodes.taken() == 1
        finally:
            await nodes.aclose()

    run(main())


def test_a_redis_that_stops_answering_makes_the_node_count_locally(
        redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        nodes = Nodes(redis_server.url, timeout=0.2, retry_after_failure=0.5)
        try:
            nodes.control.execute_command("CLIENT", "PAUSE", "1000", "ALL")
            started = time.monotonic()
            answers = [await nodes.a.acquire("ten", "dep", 1) for _ in range(3)]
            assert time.monotonic() - started < 1.0  # one timeout, then no wait at all
            assert answers == [UNSHARED] * 3 and not nodes.a.available
            nodes.a.release(UNSHARED)  # nothing to give back
            await asyncio.sleep(1.2)  # the pause ends; the retry window has passed
            lease = await nodes.a.acquire("ten", "dep", 1)
            assert isinstance(lease, Lease) and lease is not UNSHARED
            # the lease that may have been added before the timeout was removed again
            await eventually(lambda: nodes.taken() == 1)
        finally:
            await nodes.aclose()

    with caplog.at_level(logging.WARNING, "tokios.gateway.queue"):
        run(main())
    warnings = [r for r in caplog.records if "redis unavailable" in r.getMessage()]
    assert len(warnings) == 1 and "in-flight caps" in warnings[0].getMessage()


# ---- Admission with shared slots ------------------------------------------------------------


def free_streams(_tenant: str, _deployment: str) -> int:
    return 100  # plenty of room in the tunnels: only the cap limits


def test_two_nodes_admissions_never_exceed_the_cap_together(redis_server: RedisServer) -> None:
    async def main() -> None:
        nodes = Nodes(redis_server.url)
        node_a = Admission(free_streams, cluster=nodes.a, cluster_retry=0.05)
        node_b = Admission(free_streams, cluster=nodes.b, cluster_retry=0.05)
        policy = QueuePolicy(max_in_flight=2, queue_size=50, queue_timeout=10)
        running = peak = 0
        order: dict[Admission, list[int]] = {node_a: [], node_b: []}

        async def request(node: Admission, n: int) -> None:
            nonlocal running, peak
            ticket = await node.enter("ten", "dep", f"k{n % 2}", policy)
            order[node].append(n)
            running += 1
            peak = max(peak, running)
            try:
                await asyncio.sleep(0.03)
            finally:
                running -= 1
                node.leave(ticket)

        try:
            tasks = []
            for n in range(12):
                for node in (node_a, node_b):
                    tasks.append(asyncio.create_task(request(node, n)))
                    await asyncio.sleep(0)  # each queue sees its requests in this order
            await asyncio.gather(*tasks)
            assert peak == 2  # not 2 per node
            for served in order.values():  # two keys served in turn, each in order
                assert sorted(served) == list(range(12))
                assert [n for n in served if n % 2 == 0] == list(range(0, 12, 2))
            await eventually(lambda: nodes.taken() == 0)
            assert list(node_a.depths()) == [] and list(node_b.depths()) == []
        finally:
            await nodes.aclose()

    run(main())


def test_a_waiter_times_out_or_leaves_and_every_path_gives_its_slot_back(
        redis_server: RedisServer) -> None:
    async def main() -> None:
        nodes = Nodes(redis_server.url)
        node_a = Admission(free_streams, cluster=nodes.a, cluster_retry=0.05)
        node_b = Admission(free_streams, cluster=nodes.b, cluster_retry=0.05)
        policy = QueuePolicy(max_in_flight=1, queue_size=5, queue_timeout=0.3)
        try:
            held = await node_a.enter("ten", "dep", "k", policy)
            assert held.lease is not None and nodes.taken() == 1
            # node B has room of its own, but the cluster is full: it waits, then times out
            with pytest.raises(QueueRefused) as late:
                await node_b.enter("ten", "dep", "k", policy)
            assert (late.value.status, late.value.reason) == (503, "queue_timeout")
            # a client that leaves while waiting takes nothing with it
            gone = asyncio.create_task(node_b.enter("ten", "dep", "k", policy))
            await asyncio.sleep(0.1)
            gone.cancel()
            with pytest.raises(asyncio.CancelledError):
                await gone
            waiting = asyncio.create_task(node_b.enter("ten", "dep", "k", policy))
            await asyncio.sleep(0.05)
            node_a.leave(held)  # node B is not told: it sees the slot on its next try
            ticket: Ticket = await waiting
            assert ticket.lease is not None and nodes.taken() == 1
            node_b.leave(ticket)
            await eventually(lambda: nodes.taken() == 0)
            assert list(node_a.depths()) == [] and list(node_b.depths()) == []
        finally:
            await nodes.aclose()

    run(main())


def test_a_client_that_leaves_while_its_node_asks_redis_leaves_nothing_behind(
        redis_server: RedisServer) -> None:
    async def main() -> None:
        nodes = Nodes(redis_server.url)
        node = Admission(free_streams, cluster=nodes.a, cluster_retry=0.05)
        policy = QueuePolicy(max_in_flight=1, queue_size=5, queue_timeout=5)
        try:
            for _ in range(5):
                asking = asyncio.create_task(node.enter("ten", "dep", "k", policy))
                await asyncio.sleep(0)  # it has sent its script and waits for the answer
                asking.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    node.leave(await asking)  # the answer came first: an ordinary end
                await eventually(lambda: nodes.taken() == 0)
                assert list(node.depths()) == [] and nodes.a.held == set()
            # and a cap of 2 with no queue still admits two at once (nobody waits in order)
            no_queue = QueuePolicy(max_in_flight=2, queue_size=0)
            both = await asyncio.gather(*(node.enter("ten", "dep", k, no_queue)
                                          for k in ("a", "b")))
            with pytest.raises(QueueRefused) as full:
                await node.enter("ten", "dep", "c", no_queue)
            assert full.value.status == 429
            for ticket in both:
                node.leave(ticket)
            await eventually(lambda: nodes.taken() == 0)
        finally:
            await nodes.aclose()

    run(main())
