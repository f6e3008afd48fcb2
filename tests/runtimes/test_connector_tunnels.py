"""The connector's several tunnels (runtimes/connector/tunnels.py): where each dials, which
tunnels it keeps (distinct gateway nodes), how long each waits, and the session bookkeeping
both shells share, on real cores joined in memory."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest

from runtimes.connector.session import SessionEvents, StreamRequest
from runtimes.connector.settings import ConnectorSettings, PermanentRejection
from runtimes.connector.tunnels import (
    MAX_SAME_NODE_DIALS,
    SAME_NODE_CAP,
    TunnelPlan,
    Verdict,
)
from tests.proto.pair import Pair
from tokios_proto import (
    ConnectionState,
    ErrorCode,
    GoAwayReceived,
    Rejected,
    RejectReason,
    RequestHead,
)
from tokios_translate import BackendKind

URLS = ("wss://a/v1/tunnel", "wss://b/v1/tunnel", "wss://c/v1/tunnel")


def plan(count: int = 2, urls: tuple[str, ...] = URLS, draw: float = 0.5) -> TunnelPlan:
    return TunnelPlan(count, urls, rng=lambda: draw)


@dataclass
class Ended:
    """How a session ended, as TunnelPlan.after_session reads it."""

    rejected: Rejected | None = None
    revoked: bool = False
    same_node: bool = False
    drained: bool = False


def test_each_tunnel_starts_at_its_own_address_and_moves_on_at_each_dial() -> None:
    tunnels = plan(2)
    first, second = tunnels.slots
    assert [tunnels.url_for(first) for _ in range(4)] == [URLS[0], URLS[1], URLS[2], URLS[0]]
    assert tunnels.url_for(second) == URLS[1]
    lone = plan(3, urls=URLS[:1])
    assert {lone.url_for(slot) for slot in lone.slots} == {URLS[0]}


def test_bounds() -> None:
    for count in (0, 9):
        with pytest.raises(ValueError, match="tunnels"):
            plan(count)
    with pytest.raises(ValueError, match="gateway addresses"):
        plan(2, urls=())
    with pytest.raises(ValueError, match="gateway addresses"):
        plan(2, urls=tuple(f"wss://g{i}" for i in range(17)))


def test_a_tunnel_on_a_held_node_is_refused_a_few_times_then_kept() -> None:
    tunnels = plan(2)
    first, second = tunnels.slots
    assert tunnels.accepted(first, "s1", "node-a") is Verdict.KEEP
    verdicts = [tunnels.accepted(second, f"t{i}", "node-a")
                for i in range(MAX_SAME_NODE_DIALS + 1)]
    assert verdicts == [Verdict.SAME_NODE] * MAX_SAME_NODE_DIALS + [Verdict.KEEP]
    assert tunnels.held_nodes() == {"node-a"}
    # a distinct node is kept at once, and the count in a row starts again
    tunnels.ended(f"t{MAX_SAME_NODE_DIALS}")
    assert tunnels.accepted(second, "u", "node-b") is Verdict.KEEP
    assert second.same_node == 0 and tunnels.held_nodes() == {"node-a", "node-b"}


def test_a_gateway_of_one_process_names_no_node_and_every_tunnel_is_kept() -> None:
    tunnels = plan(3, urls=URLS[:1])
    assert all(tunnels.accepted(slot, slot, "") is Verdict.KEEP for slot in tunnels.slots)
    assert tunnels.held_nodes() == set()


def test_a_draining_session_holds_its_node_until_it_ends() -> None:
    """Make before break: the replacement of a tunnel whose node drains must not land on that
    node while the old session still finishes its streams there."""
    tunnels = plan(2)
    first, second = tunnels.slots
    tunnels.accepted(first, "old", "node-a")
    tunnels.accepted(second, "other", "node-b")
    # node-a drains: the old session goes on; its replacement lands on node-a, then node-c
    assert tunnels.accepted(first, "new", "node-a") is Verdict.SAME_NODE
    assert tunnels.accepted(first, "new2", "node-c") is Verdict.KEEP
    tunnels.ended("old")
    assert tunnels.held_nodes() == {"node-b", "node-c"}


def test_waits_after_a_held_node_a_drain_and_a_failure() -> None:
    tunnels = plan(2, draw=0.5)
    slot = tunnels.slots[0]
    tunnels.accepted(tunnels.slots[1], "x", "node-a")
    waits = []
    for i in range(MAX_SAME_NODE_DIALS):
        assert tunnels.accepted(slot, f"s{i}", "node-a") is Verdict.SAME_NODE
        waits.append(tunnels.after_session(slot, Ended(same_node=True), 0.0))
    assert waits == sorted(waits) and waits[0] > 0 and waits[-1] <= SAME_NODE_CAP
    # a drain after a stable session: a replacement at once; again soon after: the back-off
    slot.backoff.connected(0.0)
    assert tunnels.after_session(slot, Ended(drained=True), 100.0) == 0.0
    slot.backoff.connected(101.0)
    assert 0.0 < tunnels.after_session(slot, Ended(drained=True), 102.0) <= 1.0
    # a rejection's retry_after is a minimum; a refusal for good stops
    busy = Rejected(reason=RejectReason.OVERLOADED, message="", retryable=True,
                    retry_after=3.0)
    assert tunnels.after_session(slot, Ended(rejected=busy), 103.0) > 3.0
    with pytest.raises(PermanentRejection, match="revoked"):
        tunnels.after_session(slot, Ended(revoked=True), 104.0)


# ---- the session bookkeeping both shells share, on a real core ------------------------------

@dataclass
class FakeConnector:
    plan: TunnelPlan
    settings: ConnectorSettings = field(default_factory=lambda: ConnectorSettings(
        tunnel_url=URLS[0], token="t", upstream="http://u:1", backend=BackendKind.OLLAMA,
        models={"llama": "llama3"}))
    backend: BackendKind = BackendKind.OLLAMA
    sessions: int = 0
    metrics: None = None
    health: None = None


class Recorded(SessionEvents[StreamRequest]):
    def __init__(self, connector: FakeConnector, pair: Pair, index: int) -> None:
        super().__init__(connector, pair.connector, connector.plan.slots[index])  # type: ignore[arg-type]
        self.pair = pair
        self.released = 0
        self._seen = 0

    def _open(self, stream_id: int, head: RequestHead) -> StreamRequest:
        return StreamRequest(head)

    def _body_complete(self, stream: StreamRequest) -> None:
        pass

    def _cancel(self, stream: StreamRequest) -> None:
        pass

    def _credit(self, stream_id: int) -> None:
        pass

    def _release(self) -> None:
        self.released += 1

    def pump(self) -> None:
        """Hand the connector's new events to the session, then move the output."""
        for _ in range(10):
            events = self.pair.connector_events[self._seen:]
            self._seen = len(self.pair.connector_events)
            for event in events:
                self.on_event(event, self.pair.now)
            self.pair.flush()
            if self._seen == len(self.pair.connector_events):
                return


def connect(connector: FakeConnector, index: int, node_id: str) -> Recorded:
    pair = Pair()
    session = Recorded(connector, pair, index)
    pair.handshake(deployments=("llama",), node_id=node_id)
    session.pump()
    return session


def test_a_session_on_a_held_node_says_goaway_and_lets_its_loop_dial_again() -> None:
    connector = FakeConnector(plan(2))
    first = connect(connector, 0, "node-a")
    assert first.released == 0 and connector.sessions == 1
    second = connect(connector, 1, "node-a")
    assert second.same_node and second.released >= 1 and connector.sessions == 1
    (goaway,) = second.pair.events_of("gateway", GoAwayReceived)
    assert isinstance(goaway, GoAwayReceived) and goaway.code == ErrorCode.NO_ERROR
    assert second.pair.connector.state is ConnectionState.CLOSED
    assert second.ended  # its node was never recorded, and it is over
    assert connector.plan.held_nodes() == {"node-a"}
    third = connect(connector, 1, "node-b")
    assert not third.same_node and connector.sessions == 2
    assert connector.plan.held_nodes() == {"node-a", "node-b"}


def test_a_draining_node_releases_the_loop_at_once_and_frees_the_node_at_the_end() -> None:
    connector = FakeConnector(plan(2))
    session = connect(connector, 0, "node-a")
    stream_id = session.pair.gateway.open_stream(RequestHead(method="POST", path="/v1/x",
                                                             deployment="llama"))
    session.pair.gateway.end_stream(stream_id)
    session.pair.flush()
    session.pair.gateway.goaway(ErrorCode.NO_ERROR, "gateway shutting down")
    session.pump()
    assert session.drained and session.released == 1
    assert connector.plan.held_nodes() == {"node-a"}  # still finishing its stream there
    session.pair.connector.send_response(stream_id, 200)
    session.pair.connector.end_stream(stream_id)
    session.pair.connector.report_usage(stream_id, input_tokens=0, output_tokens=0)
    session.pump()
    assert session.pair.connector.state is ConnectionState.CLOSED
    assert session.ended and connector.plan.held_nodes() == set()


def test_a_revocation_is_no_drain() -> None:
    connector = FakeConnector(plan(1))
    session = connect(connector, 0, "node-a")
    session.pair.gateway.goaway(ErrorCode.REJECTED, "revoked")
    session.pump()
    assert not session.drained and session.revoked and session.ended
    with pytest.raises(PermanentRejection):
        connector.plan.after_session(connector.plan.slots[0], session, 1.0)


def test_the_same_node_verdicts_of_many_tunnels_share_one_view() -> None:
    """Eight tunnels against three nodes: at most three distinct nodes, the rest kept after
    their bounded tries."""
    tunnels = plan(8)
    nodes = itertools.cycle(["a", "b", "c"])
    kept = {}
    for slot in tunnels.slots:
        for attempt in itertools.count():
            node = next(nodes)
            if tunnels.accepted(slot, (slot.index, attempt), node) is Verdict.KEEP:
                kept[slot.index] = node
                break
    assert set(kept.values()) == {"a", "b", "c"} and len(kept) == 8
