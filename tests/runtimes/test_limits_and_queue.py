"""The per-minute limiters (token buckets on an injected clock; the in-process LocalLimiter and
the RedisLimiter on a real Redis run the same test bodies) and the deployment queue: order,
fairness between keys, bounds, timeouts and clients that leave."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from runtimes.gateway.limits import (
    Limit,
    Limiter,
    LimitKind,
    LocalLimiter,
    RateLimited,
    limits_of,
)
from runtimes.gateway.queue import Admission, FairQueue, QueuePolicy, QueueRefused, Ticket
from runtimes.gateway.redis_limits import RedisLimiter
from runtimes.store import KeyGrant


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Limiters:
    """Builds the limiter under test on an injected clock: LocalLimiter (``url`` None) or
    RedisLimiter on ``url`` with a key prefix of its own."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.prefix = f"test-{uuid.uuid4().hex[:12]}"

    def make(self, clock: Callable[[], float]) -> LocalLimiter | RedisLimiter:
        if self.url is None:
            return LocalLimiter(clock)
        return RedisLimiter(self.url, clock=clock, prefix=self.prefix)

    @staticmethod
    async def settle(limiter: Limiter) -> None:
        """Wait for tokens charged in the background to arrive."""
        if isinstance(limiter, RedisLimiter):
            await limiter.flush()

    def run(self, body: Callable[[Limiter, Clock], Awaitable[None]]) -> None:
        async def main() -> None:
            clock = Clock()
            limiter = self.make(clock)
            try:
                await body(limiter, clock)
                if isinstance(limiter, RedisLimiter):
                    assert limiter.available, "the test fell back to counting locally"
            finally:
                if isinstance(limiter, RedisLimiter):
                    await limiter.aclose()

        asyncio.run(main())


KEY_RPM = Limit("key:key_a", "key", LimitKind.REQUESTS, 60)
KEY_TPM = Limit("key:key_a", "key", LimitKind.TOKENS, 600)
TENANT_RPM = Limit("tenant:ten_a", "tenant", LimitKind.REQUESTS, 1000)


def test_limits_of_a_grant_are_its_keys_and_its_tenants() -> None:
    grant = KeyGrant(key_id="key_a", tenant_id="ten_a", tenant_name="acme", deployments=None)
    assert limits_of(grant) == ()
    limited = KeyGrant(key_id="key_a", tenant_id="ten_a", tenant_name="acme",
                       deployments=None, rpm=60, tenant_tpm=5000)
    assert limits_of(limited) == (
        Limit("key:key_a", "key", LimitKind.REQUESTS, 60),
        Limit("tenant:ten_a", "tenant", LimitKind.TOKENS, 5000))
    assert [limit.reason for limit in limits_of(limited)] == ["key_rpm", "tenant_tpm"]


@pytest.fixture(params=["local", "redis"])
def limiters(request: pytest.FixtureRequest) -> Limiters:
    """The limiter under test: in this process, and in the session's real Redis (a fresh key
    prefix per test); the same test body checks both."""
    if request.param == "local":
        return Limiters(None)
    server = request.getfixturevalue("redis_server")
    return Limiters(server.url)


def test_requests_per_minute_burst_then_refill_evenly(limiters: Limiters) -> None:
    async def body(limiter: Limiter, clock: Clock) -> None:
        for _ in range(60):
            assert await limiter.admit([KEY_RPM, TENANT_RPM]) is None
        refused = await limiter.admit([KEY_RPM, TENANT_RPM])
        assert isinstance(refused, RateLimited) and refused.limit == KEY_RPM
        assert refused.retry_after == pytest.approx(1.0) and refused.retry_after_header == "1"
        clock.now += 0.5
        refused = await limiter.admit([KEY_RPM])
        assert refused is not None and refused.retry_after == pytest.approx(0.5)
        assert refused.retry_after_header == "1"  # whole seconds, rounded up, at least 1
        clock.now += 0.5
        assert await limiter.admit([KEY_RPM]) is None
        assert await limiter.admit([KEY_RPM]) is not None

    limiters.run(body)


def test_a_refusal_takes_nothing_from_the_other_limits(limiters: Limiters) -> None:
    async def body(limiter: Limiter, clock: Clock) -> None:
        tight = Limit("tenant:ten_a", "tenant", LimitKind.REQUESTS, 1)
        assert await limiter.admit([KEY_RPM, tight]) is None
        for _ in range(5):
            refused = await limiter.admit([KEY_RPM, tight])
            assert refused is not None and refused.limit == tight
        # the key's bucket paid only for the one admitted request: 59 left
        for _ in range(59):
            assert await limiter.admit([KEY_RPM]) is None
        assert await limiter.admit([KEY_RPM]) is not None

    limiters.run(body)


def test_tokens_are_charged_after_the_fact_and_a_debt_is_waited_out(
        limiters: Limiters) -> None:
    async def body(limiter: Limiter, clock: Clock) -> None:
        assert await limiter.admit([KEY_TPM]) is None  # a tokens limit takes nothing to admit
        limiter.charge_tokens([KEY_RPM, KEY_TPM], 1000)  # 600 per minute: 400 in debt
        await limiters.settle(limiter)
        refused = await limiter.admit([KEY_RPM, KEY_TPM])
        assert refused is not None and refused.limit == KEY_TPM
        assert refused.retry_after == pytest.approx(40.0, rel=1e-6)  # 400 tokens at 10 a second
        clock.now += 39.9
        assert await limiter.admit([KEY_TPM]) is not None
        clock.now += 0.2
        assert await limiter.admit([KEY_RPM, KEY_TPM]) is None
        limiter.charge_tokens([KEY_TPM], 10**12)  # a debt is bounded (an hour of allowance)
        await limiters.settle(limiter)
        refused = await limiter.admit([KEY_TPM])
        assert refused is not None and 3590 <= refused.retry_after <= 3600 + 1

    limiters.run(body)


def test_lowered_limits_apply_at_once_and_no_limits_admit(limiters: Limiters) -> None:
    async def body(limiter: Limiter, clock: Clock) -> None:
        assert await limiter.admit([KEY_RPM]) is None
        lowered = Limit("key:key_a", "key", LimitKind.REQUESTS, 2)
        assert await limiter.admit([lowered]) is None  # 59 left, clamped to 2, one taken
        assert await limiter.admit([lowered]) is None
        assert await limiter.admit([lowered]) is not None
        assert await limiter.admit([]) is None

    limiters.run(body)


def test_idle_full_buckets_are_dropped_and_debts_kept() -> None:
    clock = Clock()
    limiter = LocalLimiter(clock)
    limiter.check([KEY_RPM])
    limiter.check([Limit("key:key_b", "key", LimitKind.REQUESTS, 5)])
    limiter.charge_tokens([KEY_TPM], 100_000)
    assert len(limiter) == 3
    clock.now += 61
    limiter.check([TENANT_RPM])  # the sweep runs on a call at least a minute after the last
    assert len(limiter) == 2  # the tenant's new bucket and the key's tokens debt
    assert limiter.check([KEY_TPM]) is not None


# ---- the fair queue ------------------------------------------------------------------------


def test_fair_queue_serves_keys_in_turn_and_each_key_in_order() -> None:
    queue: FairQueue[str] = FairQueue(10)
    for item in ("a1", "a2", "a3"):
        assert queue.push("a", item) == (True, None)
    queue.push("b", "b1")
    queue.push("c", "c1")
    queue.push("b", "b2")
    assert [queue.pop() for _ in range(7)] == ["a1", "b1", "c1", "a2", "b2", "a3", None]
    assert len(queue) == 0


def test_a_full_queue_makes_room_for_a_key_with_fewer_waiting() -> None:
    queue: FairQueue[str] = FairQueue(4)
    for n in range(4):
        assert queue.push("a", f"a{n}")[0]
    assert queue.push("a", "a4") == (False, None)  # its own key full: refused
    assert queue.push("b", "b0") == (True, "a3")   # a had 4, b none: a's newest goes
    assert queue.push("b", "b1") == (True, "a2")   # a 3, b 1
    assert queue.push("b", "b2") == (False, None)  # a 2, b 2: even, nobody is pushed out
    assert queue.push("c", "c0") == (True, "a1")   # a newcomer always finds room
    assert queue.push("c", "c1") == (False, None)  # a 1, b 2, c 1: c would have 2
    assert sorted(queue) == ["a0", "b0", "b1", "c0"]
    assert queue.remove("b", "b1") and not queue.remove("b", "b1")
    assert not queue.remove("z", "a0")
    assert queue.push("c", "c1") == (True, None)
    assert [queue.pop() for _ in range(4)] == ["a0", "b0", "c0", "c1"]


def test_an_item_pushed_first_is_served_next_and_its_key_goes_first() -> None:
    queue: FairQueue[str] = FairQueue(5)
    for key, item in (("a", "a1"), ("b", "b1"), ("a", "a2")):
        queue.push(key, item)
    assert queue.push("b", "b0", first=True) == (True, None)
    assert [queue.pop() for _ in range(4)] == ["b0", "a1", "b1", "a2"]


def test_a_queue_of_size_zero_takes_nobody() -> None:
    queue: FairQueue[str] = FairQueue(0)
    assert queue.push("a", "a0") == (False, None)


# ---- admission --------------------------------------------------------------------------------


class Tunnels:
    """``free_streams`` of a fake registry: per (tenant, deployment), None = not served."""

    def __init__(self) -> None:
        self.free: dict[tuple[str, str], int | None] = {}

    def __call__(self, tenant_id: str, deployment: str) -> int | None:
        return self.free.get((tenant_id, deployment))


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 10))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_capped_deployment_queues_in_order_and_hands_slots_on() -> None:
    async def main() -> None:
        tunnels = Tunnels()
        tunnels.free[("t", "d")] = 100
        admission = Admission(tunnels)
        policy = QueuePolicy(max_in_flight=1, queue_size=5, queue_timeout=5)
        first = await admission.enter("t", "d", "k", policy)
        order: list[int] = []

        async def wait(n: int) -> Ticket:
            ticket = await admission.enter("t", "d", "k", policy)
            order.append(n)
            return ticket

        waiting = [asyncio.create_task(wait(n)) for n in range(3)]
        await settle()
        assert order == [] and list(admission.depths()) == [("t", "d", 1, 3)]
        admission.leave(first)
        await settle()
        assert order == [0]
        admission.leave(await waiting[0])
        await settle()
        admission.leave(await waiting[1])
        await settle()
        admission.leave(await waiting[2])
        assert order == [0, 1, 2] and list(admission.depths()) == []

    run(main())


def test_keys_take_turns_so_one_key_cannot_hold_the_others_back() -> None:
    async def main() -> None:
        tunnels = Tunnels()
        tunnels.free[("t", "d")] = 0  # every tunnel full: all wait
        admission = Admission(tunnels)
        policy = QueuePolicy(queue_size=6, queue_timeout=5)
        served: list[str] = []
        tickets: list[Ticket] = []

        async def call(key: str, n: int) -> None:
            tickets.append(await admission.enter("t", "d", key, policy))
            served.append(f"{key}{n}")

        tasks = [asyncio.create_task(call("greedy", n)) for n in range(6)]
        await settle()
        tasks += [asyncio.create_task(call("polite", n)) for n in range(2)]
        await settle()
        # the queue was full of greedy's requests: polite's two pushed out greedy's newest two
        refused = [t for t in tasks if t.done()]
        assert len(refused) == 2
        for task in refused:
            error = task.exception()
            assert isinstance(error, QueueRefused) and error.status == 429
        for _ in range(6):  # one stream frees at a time
            tunnels.free[("t", "d")] = 1
            admission.capacity_changed("t")
            await settle()
            tunnels.free[("t", "d")] = 0
        assert served == ["greedy0", "polite0", "greedy1", "polite1", "greedy2", "greedy3"]

    run(main())


def test_a_full_queue_refuses_429_and_a_long_wait_times_out_503() -> None:
    async def main() -> None:
        tunnels = Tunnels()
        tunnels.free[("t", "d")] = 0
        admission = Admission(tunnels)
        policy = QueuePolicy(queue_size=1, queue_timeout=0.1)
        waiting = asyncio.create_task(admission.enter("t", "d", "k", policy))
        await settle()
        with pytest.raises(QueueRefused) as full:
            await admission.enter("t", "d", "k", policy)
        assert (full.value.status, full.value.reason) == (429, "queue_full")
        with pytest.raises(QueueRefused) as late:
            await waiting
        assert (late.value.status, late.value.reason) == (503, "queue_timeout")
        assert "timed out after 0.1s" in str(late.value)
        assert list(admission.depths()) == []
        with pytest.raises(QueueRefused):  # queue 0: nobody waits
            await admission.enter("t", "d", "k", QueuePolicy(queue_size=0))

    run(main())


def test_a_client_that_leaves_leaves_the_queue_at_once() -> None:
    async def main() -> None:
        tunnels = Tunnels()
        tunnels.free[("t", "d")] = 0
        admission = Admission(tunnels)
        policy = QueuePolicy(queue_size=5, queue_timeout=5)
        gone = asyncio.create_task(admission.enter("t", "d", "a", policy))
        stays = asyncio.create_task(admission.enter("t", "d", "b", policy))
        await settle()
        assert list(admission.depths()) == [("t", "d", 0, 2)]
        gone.cancel()
        await settle()
        assert list(admission.depths()) == [("t", "d", 0, 1)]
        tunnels.free[("t", "d")] = 1
        admission.capacity_changed("t")
        ticket = await stays
        assert list(admission.depths()) == [("t", "d", 1, 0)]
        admission.leave(ticket)
        assert list(admission.depths()) == []

    run(main())


def test_a_slot_granted_as_the_client_leaves_is_passed_on() -> None:
    async def main() -> None:
        tunnels = Tunnels()
        tunnels.free[("t", "d")] = 0
        admission = Admission(tunnels)
        policy = QueuePolicy(queue_size=5, queue_timeout=5)
        first = asyncio.create_task(admission.enter("t", "d", "a", policy))
        second = asyncio.create_task(admission.enter("t", "d", "b", policy))
        await settle()
        tunnels.free[("t", "d")] = 1
        admission.capacity_changed("t")  # first is granted, but cancelled before it runs
        first.cancel()
        ticket = await second
        assert ticket.gate is not None
        admission.leave(ticket)
        assert list(admission.depths()) == []

    run(main())


def test_unserved_deployments_are_not_queued_for_and_shutdown_refuses_waiters() -> None:
    async def main() -> None:
        tunnels = Tunnels()
        admission = Admission(tunnels)
        bypass = await admission.enter("t", "nothing-serves-it", "k", QueuePolicy())
        assert bypass.gate is None
        admission.leave(bypass)
        tunnels.free[("t", "d")] = 0
        waiting = asyncio.create_task(admission.enter("t", "d", "k", QueuePolicy()))
        await settle()
        admission.close("the gateway is shutting down")
        with pytest.raises(QueueRefused) as refused:
            await waiting
        assert (refused.value.status, refused.value.reason) == (503, "shutting_down")
        with pytest.raises(QueueRefused):
            await admission.enter("t", "d", "k", QueuePolicy())

    run(main())


def test_deployments_sharing_a_tunnel_are_not_granted_the_same_free_stream() -> None:
    async def main() -> None:
        tunnels = Tunnels()
        tunnels.free[("t", "a")] = tunnels.free[("t", "b")] = 0  # one connector serves both
        admission = Admission(tunnels)
        policy = QueuePolicy(queue_size=5, queue_timeout=5)
        on_a = asyncio.create_task(admission.enter("t", "a", "k", policy))
        on_b = asyncio.create_task(admission.enter("t", "b", "k", policy))
        await settle()
        tunnels.free[("t", "a")] = tunnels.free[("t", "b")] = 1  # one stream frees
        admission.capacity_changed("t")
        await asyncio.sleep(0)
        assert on_a.done() != on_b.done()  # exactly one was given the stream
        winner = on_a if on_a.done() else on_b
        tunnels.free[("t", "a")] = tunnels.free[("t", "b")] = 0  # the winner opened it
        await settle()
        assert not (on_a.done() and on_b.done())
        admission.leave(await winner)
        tunnels.free[("t", "a")] = tunnels.free[("t", "b")] = 1
        admission.capacity_changed("t")
        other = on_b if winner is on_a else on_a
        admission.leave(await other)

    run(main())
