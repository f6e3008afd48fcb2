"""NodeDirectory (runtimes/cluster/directory.py): two nodes sharing one cluster state see each
other's deployments, pick the peer with the most free slots, stop routing to a draining or dead
peer, and survive an unavailable state for at most the record TTL."""

from __future__ import annotations

import asyncio
from pathlib import Path

from runtimes.cluster.directory import NodeDirectory
from runtimes.cluster.state import LocalClusterState, NodeRecord


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))  # type: ignore[arg-type]


def node(path: Path, node_id: str, serves: dict[str, dict[str, int]],
         **options: object) -> NodeDirectory:
    return NodeDirectory(LocalClusterState(path), node_id=node_id,
                         forward_url=f"https://{node_id}", serves=lambda: serves,
                         **options)  # type: ignore[arg-type]


def test_nodes_find_each_others_deployments(tmp_path: Path) -> None:
    async def main() -> None:
        db = tmp_path / "cluster.db"
        a_serves = {"ten_1": {"coder": 3}}
        a = node(db, "a", a_serves)
        b = node(db, "b", {"ten_1": {"chat": 1}, "ten_2": {"coder": 5}})
        c = node(db, "c", {"ten_1": {"coder": 7}})
        try:
            for each in (a, b, c, a, b):
                await each.beat()
            assert b.pick("ten_1", "coder").node_id == "c"  # type: ignore[union-attr]
            assert b.pick("ten_1", "coder", exclude=["c"]).node_id == "a"  # type: ignore[union-attr]
            assert b.pick("ten_2", "coder") is None  # only b itself serves it: no peer
            assert a.pick("ten_2", "coder").node_id == "b"  # type: ignore[union-attr]
            assert a.served_elsewhere("ten_1") == {"chat", "coder"}
            assert b.pick("ten_1", "nothing") is None
            # the free slots change: the next heartbeat says so
            a_serves["ten_1"]["coder"] = 9
            await a.beat()
            await b.beat()
            assert b.pick("ten_1", "coder").node_id == "a"  # type: ignore[union-attr]
            # a drains: published at once, b stops picking it
            await a.begin_drain()
            await b.beat()
            assert b.pick("ten_1", "coder").node_id == "c"  # type: ignore[union-attr]
            assert a.record().draining and a.record().serves == {}
            # c goes away
            await c.aclose()
            await b.beat()
            assert b.pick("ten_1", "coder") is None
        finally:
            await a.aclose()
            await b.aclose()

    run(main())


def test_ties_rotate(tmp_path: Path) -> None:
    async def main() -> None:
        db = tmp_path / "cluster.db"
        peers = [node(db, name, {"t": {"d": 2}}) for name in ("p1", "p2")]
        me = node(db, "me", {})
        try:
            for each in (*peers, me):
                await each.beat()
            picks = {me.pick("t", "d").node_id for _ in range(4)}  # type: ignore[union-attr]
            assert picks == {"p1", "p2"}
        finally:
            for each in (*peers, me):
                await each.aclose()

    run(main())


class FailingState(LocalClusterState):
    broken = False

    async def live_nodes(self) -> list[NodeRecord]:
        if self.broken:
            raise ConnectionError("down")
        return await super().live_nodes()


def test_an_unavailable_state_keeps_the_last_copy_for_at_most_the_ttl(tmp_path: Path) -> None:
    async def main() -> None:
        db = tmp_path / "cluster.db"
        now = [0.0]
        peer = node(db, "peer", {"t": {"d": 1}})
        state = FailingState(db)
        me = NodeDirectory(state, node_id="me", forward_url="https://me", serves=dict,
                           ttl=5.0, clock=lambda: now[0])
        try:
            await peer.beat()
            await me.beat()
            assert me.pick("t", "d") is not None
            state.broken = True
            now[0] = 4.0
            await me.beat()
            assert me.pick("t", "d") is not None  # within the ttl: the last copy serves
            now[0] = 6.0
            await me.beat()
            assert me.pick("t", "d") is None  # past it: nothing is routable
        finally:
            await peer.aclose()
            await me.aclose()

    run(main())
