"""The cluster state (runtimes/cluster/state.py) against a real Redis and the local SQLite file:
records expire when their node stops publishing, withdraw is immediate, damaged entries are
skipped, and revocation notices reach every reader once, in order."""

from __future__ import annotations

import asyncio

import redis

from runtimes.cluster.state import (
    NodeRecord,
    RedisClusterState,
    RevocationNotice,
)
from tests.runtimes.conftest import ClusterStateFactory as Factory
from tests.services import RedisServer


def record(node: str, **serves: int) -> NodeRecord:
    return NodeRecord(node_id=node, forward_url=f"https://{node}:9443", started_at=1.0,
                      serves={"ten_a": dict(serves)})


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))  # type: ignore[arg-type]


def test_records_are_shared_and_expire(make_state: Factory) -> None:
    async def main() -> None:
        one, two = make_state(), make_state()  # two nodes, two connections
        try:
            await one.publish(record("n1", coder=3), ttl=0.5)
            await two.publish(record("n2", coder=1, chat=2), ttl=30)
            seen = {r.node_id: r for r in await two.live_nodes()}
            assert set(seen) == {"n1", "n2"}
            assert seen["n2"].serves == {"ten_a": {"coder": 1, "chat": 2}}
            assert seen["n1"].forward_url == "https://n1:9443"
            await asyncio.sleep(0.8)  # n1 stopped publishing: gone after its ttl
            assert [r.node_id for r in await one.live_nodes()] == ["n2"]
            await two.withdraw("n2")
            assert await one.live_nodes() == []
        finally:
            await one.aclose()
            await two.aclose()

    run(main())


def test_a_newer_record_replaces_the_older(make_state: Factory) -> None:
    async def main() -> None:
        state = make_state()
        try:
            await state.publish(record("n1", coder=3), ttl=30)
            await state.publish(NodeRecord(node_id="n1", forward_url="https://n1:9443",
                                           started_at=1.0, draining=True), ttl=30)
            (only,) = await state.live_nodes()
            assert only.draining and only.serves == {}
        finally:
            await state.aclose()

    run(main())


def test_revocation_notices_reach_each_reader_once_in_order(make_state: Factory) -> None:
    async def main() -> None:
        writer, reader = make_state(), make_state()
        try:
            # a reader that started before any notice existed sees the very first one
            first_cursor = (await reader.revocations_since(None))[1]
            await writer.announce_revocation(RevocationNotice("key", "key_old"))
            assert (await reader.revocations_since(first_cursor))[0] == [
                RevocationNotice("key", "key_old")]
            notices, cursor = await reader.revocations_since(None)  # from now on: not the old
            assert notices == []
            await writer.announce_revocation(RevocationNotice("key", "key_a"))
            await writer.announce_revocation(RevocationNotice("connector_token", "tct_b"))
            notices, cursor = await reader.revocations_since(cursor)
            assert notices == [RevocationNotice("key", "key_a"),
                               RevocationNotice("connector_token", "tct_b")]
            again, cursor2 = await reader.revocations_since(cursor)
            assert again == [] and cursor2 == cursor
        finally:
            await writer.aclose()
            await reader.aclose()

    run(main())


def test_a_damaged_record_is_skipped(redis_server: RedisServer) -> None:
    redis_server.flush()
    with redis.Redis.from_url(redis_server.url) as client:
        client.set("tokios:node:bad", b"{not json")
        client.sadd("tokios:nodes", "bad")

    async def main() -> None:
        state = RedisClusterState(redis_server.url)
        try:
            await state.publish(record("good", coder=1), ttl=30)
            assert [r.node_id for r in await state.live_nodes()] == ["good"]
        finally:
            await state.aclose()

    run(main())


