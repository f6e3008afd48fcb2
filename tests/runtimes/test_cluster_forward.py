"""Forwarding between nodes, the parts without I/O (runtimes/cluster/forward.py): what a peer
accepts as a forwarded request, and which nodes the entry node tries and when it stops. The
whole path runs for real in tests/e2e/test_e2e_cluster.py and test_e2e_workers.py."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from runtimes.cluster.directory import NodeDirectory
from runtimes.cluster.forward import (
    ACCOUNT_HEADER,
    Forwarder,
    ForwardFailed,
    RemoteRouting,
    _account_header,
    forwarded_request,
)
from runtimes.cluster.state import LocalClusterState, NodeRecord
from runtimes.gateway.limits import Limit, LimitKind
from runtimes.gateway.usage import Account
from tokios_proto import RequestHead

SECRET = b"s" * 40
ACCOUNT = Account("ten_1", "acme", "key_1", "coder",
                  (Limit("key:key_1", "key", LimitKind.TOKENS, 1000),))


def headers(secret: bytes = SECRET, account: str | None = None) -> list[tuple[str, str]]:
    return [("content-type", "application/json"), ("authorization", "Bearer " + secret.decode()),
            (ACCOUNT_HEADER, account if account is not None
             else _account_header(ACCOUNT, "req_1"))]


def test_a_signed_request_carries_the_entry_nodes_decisions() -> None:
    found = forwarded_request(headers(), SECRET)
    assert found is not None
    assert found.request_id == "req_1" and found.account == ACCOUNT


@pytest.mark.parametrize("bad", [
    headers(secret=b"t" * 40),                        # another cluster's secret
    headers(secret=SECRET[:-1]),                       # a prefix of it
    [h for h in headers() if h[0] != "authorization"],  # none
    headers(account=""),                                # no account
    headers(account="{not json"),
    headers(account=orjson.dumps({"tenant_id": "t"}).decode()),  # fields missing
    headers(account="x" * 5000),                        # oversized
])
def test_anything_else_is_refused(bad: list[tuple[str, str]]) -> None:
    assert forwarded_request(bad, SECRET) is None


class StubForwarder:
    """Answers each node as scripted: a ForwardFailed to raise, or a stream to return."""

    def __init__(self, script: dict[str, Any]) -> None:
        self.script = script
        self.tried: list[str] = []

    async def open(self, node: NodeRecord, head: RequestHead, body: bytes, *,
                   account: Account) -> Any:
        self.tried.append(node.node_id)
        outcome = self.script[node.node_id]
        if callable(outcome):
            outcome = await outcome()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


async def routing(tmp_path: Path, script: dict[str, Any],
                  slots: dict[str, int]) -> tuple[RemoteRouting, StubForwarder]:
    db = tmp_path / "cluster.db"
    for name, free in slots.items():
        peer = NodeDirectory(LocalClusterState(db), node_id=name, forward_url=f"https://{name}",
                             serves=lambda free=free: {"ten_1": {"coder": free}})
        await peer.beat()
    me = NodeDirectory(LocalClusterState(db), node_id="me", forward_url="https://me",
                       serves=dict)
    await me.beat()
    stub = StubForwarder(script)
    return RemoteRouting(me, stub, SECRET), stub  # type: ignore[arg-type]


HEAD = RequestHead(method="POST", path="/v1/chat/completions", query="", headers=(),
                   deployment="coder", request_id="req_1")


def test_nodes_that_did_not_start_the_request_are_skipped(tmp_path: Path) -> None:
    async def main() -> None:
        remote, stub = await routing(tmp_path, {
            "a": ForwardFailed("refused", retryable=True, unreachable=True),
            "b": ForwardFailed("no tunnel after all", retryable=True),
            "c": "the stream"}, {"a": 9, "b": 5, "c": 1})
        assert await remote.open(HEAD, b"{}", account=ACCOUNT) == "the stream"
        assert stub.tried == ["a", "b", "c"]  # most free slots first
        # a refused the connection: left out now, before its record expires
        assert remote.directory.pick("ten_1", "coder").node_id == "b"  # type: ignore[union-attr]

    asyncio.run(main())


def test_a_node_that_had_the_request_is_never_followed_by_another(tmp_path: Path) -> None:
    async def main() -> None:
        remote, stub = await routing(tmp_path, {
            "a": ForwardFailed("died mid-answer", retryable=False), "b": "the stream"},
            {"a": 9, "b": 1})
        with pytest.raises(ForwardFailed, match="died mid-answer"):
            await remote.open(HEAD, b"{}", account=ACCOUNT)
        assert stub.tried == ["a"]

    asyncio.run(main())


def test_when_every_node_fails_before_starting_the_answer_is_a_retry_later(
        tmp_path: Path) -> None:
    async def main() -> None:
        remote, stub = await routing(tmp_path, {
            name: ForwardFailed("refused", retryable=True) for name in "abcd"},
            dict.fromkeys("abcd", 1))
        with pytest.raises(ForwardFailed) as caught:
            await remote.open(HEAD, b"{}", account=ACCOUNT)
        assert caught.value.retryable and "can take the request now" in str(caught.value)
        assert len(stub.tried) == 3  # MAX_NODE_ATTEMPTS
        remote2, _ = await routing(tmp_path / "x", {}, {})
        assert await remote2.open(HEAD, b"{}", account=ACCOUNT) is None  # nobody serves it

    (tmp_path / "x").mkdir()
    asyncio.run(main())


def test_a_tunnel_that_moved_since_the_last_read_is_found_when_the_known_nodes_refuse(
        tmp_path: Path) -> None:
    """The only node this node knows to serve the deployment drains (its tunnel went), and the
    connector's replacement tunnel came up on node b after this node last read the records:
    one more read finds b, rather than a 503."""

    async def main() -> None:
        async def moved() -> Exception:
            peer = NodeDirectory(LocalClusterState(tmp_path / "cluster.db"), node_id="b",
                                 forward_url="https://b",
                                 serves=lambda: {"ten_1": {"coder": 4}})
            await peer.beat()
            await asyncio.sleep(0.15)  # older than the refresh's minimum age
            return ForwardFailed("draining", retryable=True)

        remote, stub = await routing(tmp_path, {"a": moved, "b": "the stream"}, {"a": 9})
        assert await remote.open(HEAD, b"{}", account=ACCOUNT) == "the stream"
        assert stub.tried == ["a", "b"]

    asyncio.run(main())


def test_a_peer_closing_its_kept_alive_connection_as_it_shuts_down_did_not_start_it() -> None:
    """A draining node closes its listener, then its idle kept-alive connections, crossing a
    request on the wire: the pool's resend (allowed, nothing was answered) finds no listener.
    The request never reached that node, so the entry node may try another (a rolling
    restart lost requests to this before)."""

    async def main() -> None:
        seen = 0
        server: asyncio.Server | None = None

        async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal seen
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
                await reader.readexactly(length)
                seen += 1
                if seen == 1:
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    await writer.drain()
                    continue
                assert server is not None
                server.close()  # the listener first, then the connection, unanswered
                writer.close()
                return

        server = await asyncio.start_server(peer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        forwarder = Forwarder(SECRET)
        node = NodeRecord(node_id="peer", forward_url=f"http://127.0.0.1:{port}",
                          started_at=0.0)
        head = RequestHead(method="POST", path="/v1/chat/completions", request_id="req_1")
        try:
            stream = await forwarder.open(node, head, b"{}", account=ACCOUNT)
            assert stream.status == 200
            while await stream.next_data() is not None:
                pass
            with pytest.raises(ForwardFailed) as failed:
                await forwarder.open(node, head, b"{}", account=ACCOUNT)
            assert failed.value.retryable and seen == 2
        finally:
            await forwarder.aclose()
            server.close()

    asyncio.run(asyncio.wait_for(main(), 20))
