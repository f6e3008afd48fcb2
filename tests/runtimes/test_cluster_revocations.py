"""Revocation notices between nodes (runtimes/cluster/revocations.py) over the real cluster
states (Redis and the workers' SQLite file): a follower hands each notice on once, in order,
from the moment it started; a notice of a kind it does not know still makes it forget its
caches; the CLI's one-shot announcement reaches a follower; an unreachable Redis is a warning,
never an error."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest

from runtimes.cluster.revocations import (
    CHANGE,
    NoticeFollower,
    announce,
    announce_once,
    notice_for,
)
from runtimes.cluster.state import RedisClusterState, RevocationNotice
from tests.runtimes.conftest import ClusterStateFactory as Factory
from tests.runtimes.test_cluster_state import run
from tests.services import RedisServer


def test_a_follower_hands_on_each_notice_once_in_order_from_its_start(
        make_state: Factory) -> None:
    async def main() -> None:
        node_a, node_b = make_state(), make_state()
        seen: list[RevocationNotice] = []
        follower = NoticeFollower(node_b, seen.append, interval=0.02)
        try:
            await announce(node_a, notice_for("key", "key_before"))
            assert await follower.poll() == 0  # the first poll: from now on
            follower.start()
            assert await announce(node_a, notice_for("key", "key_1"))
            assert await announce(node_a, notice_for("connector_token", "tct_2"))
            await announce(node_a, RevocationNotice("from-a-newer-gateway", "x"))
            deadline = time.monotonic() + 10  # a loaded machine may be slow; usually 0.05 s
            while len(seen) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)  # and nothing more comes
            assert seen == [RevocationNotice("key", "key_1"),
                            RevocationNotice("connector_token", "tct_2"),
                            RevocationNotice(CHANGE, "")]
        finally:
            await follower.aclose()
            await node_a.aclose()
            await node_b.aclose()

    run(main())


def test_a_failing_handler_does_not_stop_the_notices_after_it(make_state: Factory) -> None:
    async def main() -> None:
        node_a, node_b = make_state(), make_state()
        seen: list[str] = []

        def on_notice(notice: RevocationNotice) -> None:
            if notice.credential_id == "key_bad":
                raise RuntimeError("boom")
            seen.append(notice.credential_id)

        follower = NoticeFollower(node_b, on_notice)
        try:
            await follower.poll()
            await announce(node_a, notice_for("key", "key_bad"))
            await announce(node_a, notice_for("key", "key_good"))
            assert await follower.poll() == 2
            assert seen == ["key_good"]
        finally:
            await node_a.aclose()
            await node_b.aclose()

    run(main())


def test_unknown_kinds_are_refused_when_announcing() -> None:
    with pytest.raises(ValueError, match="unknown notice kind"):
        notice_for("everything")


def test_the_clis_one_shot_announcement_reaches_a_node(redis_server: RedisServer) -> None:
    redis_server.flush()

    async def main() -> None:
        node = RedisClusterState(redis_server.url)
        seen: list[RevocationNotice] = []
        follower = NoticeFollower(node, seen.append)
        try:
            await follower.poll()
            ok = await asyncio.to_thread(announce_once, redis_server.url,
                                         notice_for("admin_key", "adk_1"))
            assert ok
            await follower.poll()
            assert seen == [RevocationNotice("admin_key", "adk_1")]
        finally:
            await node.aclose()

    run(main())


def test_an_unreachable_redis_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with caplog.at_level(logging.WARNING, logger="tokios.gateway"):
        assert not announce_once(f"redis://127.0.0.1:{port}/0",
                                 notice_for("key", "key_1"), timeout=2)
    assert "could not announce a key change" in caplog.text
