"""Property-based tests: frame round-trips, split invariance, a stateful gateway+connector model."""

from __future__ import annotations

import itertools
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.proto.pair import Pair
from tokios_proto import (
    Config,
    ConnectionState,
    ConnectionTerminated,
    ConnectorConnection,
    DataReceived,
    DeploymentHealth,
    DeploymentOffer,
    ErrorCode,
    Event,
    Frame,
    FrameType,
    GatewayConnection,
    GoAway,
    HealthReport,
    Hello,
    LocalProtocolError,
    Reject,
    RejectReason,
    RequestHead,
    ResetCode,
    ResponseHead,
    Secret,
    Settings,
    StreamEnded,
    StreamReset,
    StreamState,
    UsageReport,
    UsageReported,
    Welcome,
    decode_frames,
)
from tokios_proto import _payloads as payloads
from tokios_proto import _reports as reports

PROPS = settings(max_examples=150, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])

text = st.text(max_size=40)
names = st.text(alphabet=string.ascii_letters + string.digits + "-_.:", min_size=1, max_size=30)
headers = st.lists(st.tuples(text, text), max_size=5).map(tuple)
u32 = st.integers(0, 2**32 - 1)
settings_st = st.builds(
    Settings,
    heartbeat_interval=st.floats(0.5, 60.0),
    idle_timeout=st.just(120.0),
    max_concurrent_streams=st.integers(1, 2**31 - 1),
    initial_stream_window=st.integers(1024, 2**31 - 1),
    initial_connection_window=st.integers(1024, 2**31 - 1),
    max_frame_size=st.integers(1024, 2**24),
    max_header_block_size=st.integers(1024, 2**20),
)
hellos = st.builds(
    Hello, credential=text.map(Secret), connector_id=text, software_version=text,
    deployments=st.lists(names, max_size=4, unique=True).map(
        lambda ns: tuple(DeploymentOffer(name=n, upstream_model=n[::-1]) for n in ns)),
    versions=st.lists(st.integers(1, 2**31 - 1), min_size=1, max_size=4).map(tuple))
request_heads = st.builds(RequestHead, method=names, path=text, query=text, headers=headers,
                          deployment=text, request_id=text)
response_heads = st.builds(ResponseHead, status=st.integers(100, 999), headers=headers)
tokens = st.integers(0, 2**53 - 1)
usage_reports = st.builds(UsageReport, stream_id=st.integers(0, 2**30 - 1).map(lambda n: 2 * n + 1),
                          input_tokens=tokens, output_tokens=tokens, estimated=st.booleans())
health_reports = st.builds(HealthReport, deployments=st.lists(
    st.builds(DeploymentHealth, name=names, healthy=st.booleans(),
              models=st.none() | st.lists(text, max_size=5).map(tuple)),
    max_size=4, unique_by=lambda d: d.name).map(tuple))


@st.composite
def frames(draw: st.DrawFn) -> tuple[Frame, object]:
    """A frame of any type with a valid typed payload, and that typed value."""
    kind = draw(st.sampled_from(list(FrameType)))
    stream_id = draw(u32)
    value: object
    if kind is FrameType.HELLO:
        value = (draw(hellos), draw(settings_st))
        payload = payloads.encode_hello(*value)  # type: ignore[misc]
    elif kind is FrameType.WELCOME:
        value = Welcome(version=draw(st.integers(1, 9)), session_id=draw(names),
                        deployments=tuple(draw(st.lists(names, max_size=3))),
                        settings=draw(settings_st),
                        node_id=draw(st.text(max_size=64)))
        payload = payloads.encode_welcome(value)  # type: ignore[arg-type]
    elif kind is FrameType.REJECT:
        value = Reject(reason=draw(st.sampled_from(list(RejectReason))),
                       retryable=draw(st.booleans()), message=draw(text),
                       retry_after=draw(st.none() | st.floats(0, 1e6)))
        payload = payloads.encode_reject(value)  # type: ignore[arg-type]
    elif kind is FrameType.SETTINGS:
        value = draw(st.integers(1, 2**31 - 1))
        payload = payloads.encode_settings_update(value)  # type: ignore[arg-type]
    elif kind is FrameType.OPEN:
        value = draw(request_heads)
        payload = payloads.encode_request_head(value)  # type: ignore[arg-type]
    elif kind is FrameType.RESPONSE:
        value = draw(response_heads)
        payload = payloads.encode_response_head(value)  # type: ignore[arg-type]
    elif kind is FrameType.GOAWAY:
        value = GoAway(last_stream_id=draw(u32), code=draw(st.sampled_from(list(ErrorCode))),
                       reason=draw(text))
        payload = payloads.encode_goaway(value)  # type: ignore[arg-type]
    elif kind in (FrameType.RESET, FrameType.WINDOW_UPDATE):
        value = draw(u32)
        payload = payloads.encode_u32(value)  # type: ignore[arg-type]
    elif kind is FrameType.REPORT:
        value = draw(usage_reports | health_reports)
        payload = reports.encode_report(value)  # type: ignore[arg-type]
    elif kind in (FrameType.PING, FrameType.PONG):
        value = payload = draw(st.binary(min_size=8, max_size=8))
    else:
        value = payload = draw(st.binary(max_size=300))
    flags = draw(st.integers(0, 0xFFFF))
    return Frame(kind, flags, stream_id, payload), value


def decode_typed(frame: Frame) -> object:
    payload = frame.payload
    return {
        FrameType.HELLO: lambda: payloads.decode_hello(payload),
        FrameType.WELCOME: lambda: payloads.decode_welcome(payload),
        FrameType.REJECT: lambda: payloads.decode_reject(payload),
        FrameType.SETTINGS: lambda: payloads.decode_settings_update(payload),
        FrameType.OPEN: lambda: payloads.decode_request_head(payload),
        FrameType.RESPONSE: lambda: payloads.decode_response_head(payload),
        FrameType.GOAWAY: lambda: payloads.decode_goaway(payload, 2**20),
        FrameType.RESET: lambda: payloads.decode_u32(payload, "RESET"),
        FrameType.WINDOW_UPDATE: lambda: payloads.decode_u32(payload, "WINDOW_UPDATE"),
        FrameType.REPORT: lambda: reports.decode_report(payload),
    }.get(frame.type, lambda: payload)()  # type: ignore[call-overload]


@PROPS
@given(st.lists(frames(), min_size=1, max_size=5))
def test_every_frame_type_round_trips(items: list[tuple[Frame, object]]) -> None:
    raw = b"".join(frame.encode() for frame, _ in items)
    decoded = decode_frames(raw)
    assert decoded == [frame for frame, _ in items]
    for frame, (_, value) in zip(decoded, items, strict=True):
        assert decode_typed(frame) == value


# ---------------------------------------------------------------- split invariance

HEAD = RequestHead(method="POST", path="/v1/messages", headers=(("x", "y"),), deployment="llama")
SMALL = Settings(initial_stream_window=4096, initial_connection_window=8192, max_frame_size=1024,
                 max_concurrent_streams=4)


def scripted_session() -> tuple[bytes, bytes, list[Event], list[Event]]:
    """A session with every post-handshake frame type; returns the bytes each side sent after
    the handshake and the events each side saw for them."""
    pair = Pair(gateway_config=Config(settings=SMALL), connector_config=Config(settings=SMALL),
                use_messages=False)
    pair.handshake()
    g, c = pair.gateway, pair.connector
    g_before, c_before = len(pair.gateway_events), len(pair.connector_events)
    to_connector, to_gateway = [], []

    def pump() -> None:
        for _ in range(50):
            out_g, out_c = g.data_to_send(), c.data_to_send()
            if not out_g and not out_c:
                return
            to_connector.append(out_g)
            to_gateway.append(out_c)
            c.receive_data(out_g, 0.0)
            g.receive_data(out_c, 0.0)
            pair.drain_events()

    a, b, d = (g.open_stream(HEAD) for _ in range(3))
    g.send_data(a, b"A" * 3000, end_stream=True)
    g.send_data(b, b"B" * 2000)
    g.ping(0.0)
    pump()
    c.send_response(a, 200, (("content-type", "text/event-stream"),))
    c.send_data(a, b"tok " * 500)
    c.acknowledge_received_data(stream_id=a, acknowledged_size=3000)
    c.reset_stream(b, ResetCode.UPSTREAM_FAILED)
    c.report_usage(b, input_tokens=12, output_tokens=0)
    c.acknowledge_received_data(stream_id=b, acknowledged_size=2000)
    c.update_settings(max_concurrent_streams=3)
    c.report_health([DeploymentHealth(name="llama", healthy=True, models=("llama3:8b",))])
    c.ping(0.0)
    g.reset_stream(d, ResetCode.CLIENT_GONE)
    pump()
    c.report_usage(d, input_tokens=7, output_tokens=3, estimated=True)
    g.acknowledge_received_data(stream_id=a, acknowledged_size=2000)
    c.end_stream(a)
    c.report_usage(a, input_tokens=40, output_tokens=500)
    g.goaway(reason="bye")
    pump()
    assert g.state is c.state is ConnectionState.CLOSED
    return (b"".join(to_connector), b"".join(to_gateway), pair.connector_events[c_before:],
            pair.gateway_events[g_before:])


TO_CONNECTOR, TO_GATEWAY, CONNECTOR_EVENTS, GATEWAY_EVENTS = scripted_session()


def opened_pair() -> Pair:
    pair = Pair(gateway_config=Config(settings=SMALL), connector_config=Config(settings=SMALL))
    pair.handshake()
    for _ in range(3):  # the streams the script opens
        pair.gateway.open_stream(HEAD)
    for conn in (pair.gateway, pair.connector):  # the same first PING as in the script, so
        conn.ping(0.0)                           # that the recorded PONG matches it
        conn.data_to_send()
    pair.gateway_events.clear()
    pair.connector_events.clear()
    return pair


def feed_split(conn: GatewayConnection | ConnectorConnection, blob: bytes,
               cuts: list[int]) -> list[Event]:
    events: list[Event] = []
    points = [0, *sorted(cuts), len(blob)]
    for start, stop in itertools.pairwise(points):
        conn.receive_data(blob[start:stop], 0.0)
        while (event := conn.next_event()) is not None:
            events.append(event)
    return events


def peer_caused(events: list[Event]) -> list[Event]:
    """Drop the final drain, which depends on the replaying side's own commands."""
    return [e for e in events if not isinstance(e, ConnectionTerminated)]


@PROPS
@given(st.data())
def test_events_do_not_depend_on_how_bytes_are_split(data: st.DataObject) -> None:
    for side, blob, expected in (("connector", TO_CONNECTOR, CONNECTOR_EVENTS),
                                 ("gateway", TO_GATEWAY, GATEWAY_EVENTS)):
        cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=30), label=side)
        pair = opened_pair()
        conn = pair.gateway if side == "gateway" else pair.connector
        assert peer_caused(feed_split(conn, blob, cuts)) == peer_caused(expected)


def test_events_identical_when_fed_byte_by_byte() -> None:
    pair = opened_pair()
    events = feed_split(pair.connector, TO_CONNECTOR, list(range(len(TO_CONNECTOR))))
    assert peer_caused(events) == peer_caused(CONNECTOR_EVENTS)
    assert any(isinstance(e, DataReceived) for e in CONNECTOR_EVENTS)
    kinds = {type(e).__name__ for e in GATEWAY_EVENTS + CONNECTOR_EVENTS}
    assert {"StreamOpened", "ResponseReceived", "DataReceived", "StreamEnded", "StreamReset",
            "WindowUpdated", "PongReceived", "GoAwayReceived", "SettingsChanged",
            "UsageReported", "HealthReported", "ConnectionTerminated"} <= kinds


# ---------------------------------------------------------------- stateful model

def pattern(stream_id: int, offset: int, n: int) -> bytes:
    """Deterministic body bytes, so any reordering or loss shows up."""
    return bytes((stream_id * 31 + i) % 251 for i in range(offset, offset + n))


class TunnelMachine(RuleBasedStateMachine):
    """Random opens, data, ends, resets, acks, pings, goaways and partial deliveries."""

    def __init__(self) -> None:
        super().__init__()
        self.pair = Pair(gateway_config=Config(settings=SMALL),
                         connector_config=Config(settings=SMALL), use_messages=False)
        self.pair.handshake()
        self.g, self.c = self.pair.gateway, self.pair.connector
        self.opened: list[int] = []
        self.sent: dict[tuple[str, int], bytearray] = {}
        self.received: dict[tuple[str, int], bytearray] = {}
        self.unacked: dict[str, dict[int, int]] = {"gateway": {}, "connector": {}}
        self.closed: dict[str, set[int]] = {"gateway": set(), "connector": set()}
        self.ended: dict[str, set[int]] = {"gateway": set(), "connector": set()}
        self.reset: set[int] = set()
        self.seen_events = {"gateway": 0, "connector": 0}
        self.reported: dict[int, tuple[int, int]] = {}

    def conn(self, side: str) -> GatewayConnection | ConnectorConnection:
        return self.g if side == "gateway" else self.c

    def live(self) -> bool:
        return self.g.state is ConnectionState.OPEN and self.c.state is ConnectionState.OPEN

    def process_events(self) -> None:
        for side, events in (("gateway", self.pair.gateway_events),
                             ("connector", self.pair.connector_events)):
            for event in events[self.seen_events[side]:]:
                if isinstance(event, DataReceived):
                    assert event.stream_id not in self.ended[side]
                    self.received.setdefault((side, event.stream_id), bytearray()).extend(
                        event.data)
                    table = self.unacked[side]
                    table[event.stream_id] = table.get(event.stream_id, 0) + len(event.data)
                elif isinstance(event, StreamEnded):
                    self.ended[side].add(event.stream_id)
                elif isinstance(event, StreamReset):
                    self.reset.add(event.stream_id)
            self.seen_events[side] = len(events)

    def deliver(self, src: str, max_bytes: int | None) -> None:
        source, dest = self.conn(src), self.conn("connector" if src == "gateway" else "gateway")
        data = source.data_to_send(max_bytes)
        if data:
            dest.receive_data(data, self.pair.now)
        self.pair.drain_events()
        self.process_events()

    def pick(self, index: int) -> int:
        return self.opened[index % len(self.opened)]

    @precondition(lambda self: self.live())
    @rule()
    def open_stream(self) -> None:
        if len(self.g.open_stream_ids) >= 4:
            return
        self.opened.append(self.g.open_stream(HEAD))

    @precondition(lambda self: self.opened)
    @rule(side=st.sampled_from(["gateway", "connector"]), index=st.integers(0, 50),
          size=st.integers(0, 5000), end=st.booleans())
    def send(self, side: str, index: int, size: int, end: bool) -> None:
        conn, stream_id = self.conn(side), self.pick(index)
        if stream_id not in conn.open_stream_ids:
            return
        if side == "connector" and conn.stream_state(stream_id) in (StreamState.OPEN,
                                                                    StreamState.REQUEST_DONE):
            self.c.send_response(stream_id, 200)
        sending_states = ((StreamState.OPEN, StreamState.RESPONDING, StreamState.RESPONSE_DONE)
                          if side == "gateway" else
                          (StreamState.RESPONDING, StreamState.REQUEST_DONE_RESPONDING))
        if conn.stream_state(stream_id) not in sending_states:
            return
        n = min(size, conn.available_to_send(stream_id))
        if n == 0 and not end:
            return
        buf = self.sent.setdefault((side, stream_id), bytearray())
        chunk = pattern(stream_id, len(buf), n)
        conn.send_data(stream_id, chunk, end_stream=end)
        buf.extend(chunk)

    @precondition(lambda self: self.opened)
    @rule(side=st.sampled_from(["gateway", "connector"]), index=st.integers(0, 50),
          code=st.sampled_from(list(ResetCode)))
    def reset_stream(self, side: str, index: int, code: ResetCode) -> None:
        conn, stream_id = self.conn(side), self.pick(index)
        if stream_id not in conn.open_stream_ids:
            return
        conn.reset_stream(stream_id, code)
        self.reset.add(stream_id)

    @precondition(lambda self: self.opened)
    @rule(index=st.integers(0, 50), tokens=st.integers(0, 10**6))
    def report_usage(self, index: int, tokens: int) -> None:
        stream_id = self.pick(index)
        if not self.c.reports_supported or stream_id in self.reported:
            return
        try:
            state = self.c.stream_state(stream_id)
        except LocalProtocolError:  # the OPEN has not reached the connector yet
            return
        if state not in (StreamState.CLOSED, StreamState.RESPONSE_DONE):
            return
        self.c.report_usage(stream_id, input_tokens=tokens, output_tokens=stream_id)
        self.reported[stream_id] = (tokens, stream_id)

    @rule(side=st.sampled_from(["gateway", "connector"]), fraction=st.floats(0, 1))
    def acknowledge(self, side: str, fraction: float) -> None:
        conn = self.conn(side)
        for stream_id, n in list(self.unacked[side].items()):
            k = int(n * fraction)
            if k and conn.state is not ConnectionState.CLOSED:
                conn.acknowledge_received_data(stream_id=stream_id, acknowledged_size=k)
                self.unacked[side][stream_id] -= k

    @precondition(lambda self: self.live())
    @rule(side=st.sampled_from(["gateway", "connector"]))
    def ping(self, side: str) -> None:
        self.conn(side).ping(self.pair.now)

    @precondition(lambda self: self.live())
    @rule(side=st.sampled_from(["gateway", "connector"]))
    def goaway(self, side: str) -> None:
        self.conn(side).goaway(reason="drain")

    @rule(side=st.sampled_from(["gateway", "connector"]),
          max_bytes=st.none() | st.integers(1, 3000))
    def deliver_some(self, side: str, max_bytes: int | None) -> None:
        self.deliver(side, max_bytes)

    @rule()
    def flush_everything(self) -> None:
        self.pair.flush()
        self.process_events()
        for (side, stream_id), buf in self.sent.items():
            other = "connector" if side == "gateway" else "gateway"
            got = self.received.get((other, stream_id), bytearray())
            if stream_id not in self.reset:
                assert got == buf, f"stream {stream_id} {side}->{other} lost or mangled bytes"

    @invariant()
    def bytes_arrive_in_order_as_a_prefix(self) -> None:
        for (side, stream_id), got in self.received.items():
            other = "connector" if side == "gateway" else "gateway"
            sent = self.sent.get((other, stream_id), bytearray())
            assert sent[:len(got)] == got

    @invariant()
    def windows_never_negative_and_buffers_bounded(self) -> None:
        for conn in (self.g, self.c):
            assert 0 <= conn.connection_send_window <= 2**31 - 1
            assert conn.outbound_buffered <= SMALL.initial_connection_window
            for stream_id in conn.open_stream_ids:
                assert 0 <= conn.available_to_send(stream_id) <= 2**31 - 1
            window = conn._recv
            assert 0 <= window.window <= 2**31 - 1
            assert window.unacknowledged <= SMALL.initial_connection_window
            for stream in conn._streams.values():
                assert stream.send_window >= 0 and stream.recv.window >= 0
                assert stream.queued <= SMALL.initial_stream_window

    @invariant()
    def closed_streams_stay_closed(self) -> None:
        for side in ("gateway", "connector"):
            conn = self.conn(side)
            for stream_id in self.closed[side]:
                assert stream_id not in conn.open_stream_ids
            for stream_id in self.opened:
                try:
                    state = conn.stream_state(stream_id)
                except Exception:  # the connector may not have seen it yet
                    continue
                if state is StreamState.CLOSED:
                    self.closed[side].add(stream_id)

    @invariant()
    def usage_arrives_at_most_once_per_stream_as_reported(self) -> None:
        usage = [e for e in self.pair.gateway_events if isinstance(e, UsageReported)]
        assert len({e.stream_id for e in usage}) == len(usage)
        refused = {e.stream_id for e in self.pair.gateway_events
                   if isinstance(e, StreamReset) and e.code is ResetCode.REFUSED}
        for event in usage:
            if event.stream_id in self.reported:
                assert (event.input_tokens, event.output_tokens) == \
                    self.reported[event.stream_id]
            else:  # a stream the connector's core refused itself is reported empty by it
                assert event.stream_id in refused
                assert (event.input_tokens, event.output_tokens, event.estimated) == (0, 0, False)

    @invariant()
    def no_connection_errors(self) -> None:
        for events in (self.pair.gateway_events, self.pair.connector_events):
            for event in events:
                code = getattr(event, "code", ErrorCode.NO_ERROR)
                if type(event).__name__ == "ConnectionTerminated":
                    assert code == ErrorCode.NO_ERROR, event


TunnelMachine.TestCase.settings = settings(max_examples=120, stateful_step_count=40,
                                           deadline=None,
                                           suppress_health_check=[HealthCheck.too_slow])
test_tunnel_state_machine = TunnelMachine.TestCase



def test_a_stream_refused_by_the_connectors_core_gets_an_empty_usage_report() -> None:
    """Found by the machine above: the gateway ends a stream's request after the connector
    ended its response and opens another at once; the OPEN overtakes the END (control frames
    go first), the connector still counts the old stream and refuses the new one with REFUSED
    (which the gateway retries elsewhere) and, in version 2, reports it empty itself."""
    machine = TunnelMachine()
    machine.open_stream()
    machine.open_stream()
    machine.flush_everything()
    machine.open_stream()
    machine.send(side="connector", index=1, size=0, end=True)
    machine.flush_everything()
    machine.open_stream()
    machine.send(side="gateway", index=1, size=0, end=True)
    machine.open_stream()
    machine.flush_everything()
    refused = [e for e in machine.pair.gateway_events
               if isinstance(e, StreamReset) and e.code is ResetCode.REFUSED]
    assert [e.stream_id for e in refused] == [9]
    assert [(e.stream_id, e.input_tokens, e.output_tokens) for e in machine.pair.gateway_events
            if isinstance(e, UsageReported)] == [(9, 0, 0)]
    machine.usage_arrives_at_most_once_per_stream_as_reported()
    machine.teardown()
