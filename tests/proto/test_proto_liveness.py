"""Liveness (ping, pong, heartbeat, idle timeout) and GOAWAY drain."""

from __future__ import annotations

import pytest

from tests.proto.pair import Pair, make_hello
from tokios_proto import (
    Config,
    ConnectionState,
    ConnectionTerminated,
    DataReceived,
    ErrorCode,
    FrameType,
    GoAwayReceived,
    LocalProtocolError,
    PongReceived,
    RemoteProtocolError,
    RequestHead,
    ResetCode,
    Settings,
    StreamOpened,
    StreamReset,
    UsageReport,
    UsageReported,
    decode_frames,
    encode_frame,
)
from tokios_proto import _payloads as payloads
from tokios_proto._reports import decode_report

HEAD = RequestHead(method="GET", path="/v1/models")
FAST = Config(settings=Settings(heartbeat_interval=10.0, idle_timeout=30.0))


def test_ping_measures_rtt() -> None:
    pair = Pair()
    pair.handshake()
    assert pair.gateway.rtt is None
    pair.gateway.ping(1.0)
    pair.gateway.ping(1.5)
    raw = pair.gateway.data_to_send()
    pair.connector.receive_data(raw, 2.0)
    pair.gateway.receive_data(pair.connector.data_to_send(), 2.25)
    assert pair.gateway.next_event() == PongReceived(rtt=1.25)
    assert pair.gateway.next_event() == PongReceived(rtt=0.75)
    assert pair.gateway.rtt == 0.75
    # an unsolicited PONG is ignored
    pair.gateway.receive_data(encode_frame(FrameType.PONG, 0, 0, b"12345678"), 3.0)
    assert pair.gateway.next_event() is None


def test_outstanding_pings_are_bounded() -> None:
    pair = Pair(gateway_config=Config(max_outstanding_pings=2))
    pair.handshake()
    for i in range(5):
        pair.gateway.ping(float(i))
    pair.flush()
    assert len(pair.events_of("gateway", PongReceived)) == 2


def test_heartbeat_pings_when_idle_and_keeps_the_connection_alive() -> None:
    pair = Pair(gateway_config=FAST, connector_config=FAST)
    pair.handshake()
    assert pair.gateway.get_timer() == 10.0
    pair.gateway.handle_timer(9.0)  # early: no-op
    assert pair.gateway.data_to_send() == b""
    for _ in range(20):
        pair.advance()
    assert pair.now >= 100.0
    assert pair.gateway.state is pair.connector.state is ConnectionState.OPEN
    assert pair.events_of("gateway", PongReceived) and pair.events_of("connector", PongReceived)


def test_silent_peer_is_declared_dead() -> None:
    pair = Pair(gateway_config=FAST, connector_config=FAST)
    pair.handshake()
    gateway = pair.gateway
    gateway.handle_timer(10.0)  # heartbeat PING, never answered
    (ping,) = decode_frames(gateway.data_to_send())
    assert ping.type is FrameType.PING
    assert gateway.get_timer() == 20.0
    gateway.handle_timer(20.0)
    gateway.data_to_send()
    assert gateway.get_timer() == 30.0
    gateway.handle_timer(30.0)
    assert gateway.state is ConnectionState.CLOSED
    assert gateway.next_event() == ConnectionTerminated(
        code=ErrorCode.TIMEOUT, reason="peer silent for idle_timeout", remote=False)
    assert decode_frames(gateway.data_to_send())[-1].type is FrameType.GOAWAY
    assert gateway.get_timer() is None
    with pytest.raises(LocalProtocolError):
        gateway.ping(31.0)


def test_ping_flood_is_excessive_load() -> None:
    pair = Pair(connector_config=Config(max_pending_control_frames=10))
    pair.handshake()
    flood = encode_frame(FrameType.PING, 0, 0, bytes(8)) * 11
    with pytest.raises(RemoteProtocolError) as info:
        pair.connector.receive_data(flood, 0.0)
    assert info.value.code == ErrorCode.EXCESSIVE_LOAD
    assert pair.connector.state is ConnectionState.CLOSED


@pytest.mark.parametrize("version", [1, 2])
def test_graceful_goaway_from_the_gateway_drains(version: int) -> None:
    pair = Pair(hello=make_hello(versions=tuple(range(1, version + 1))))
    pair.handshake()
    sid = pair.gateway.open_stream(HEAD)
    pair.gateway.end_stream(sid)
    pair.flush()
    pair.gateway.goaway(reason="deploy")
    assert pair.gateway.state is ConnectionState.DRAINING
    with pytest.raises(LocalProtocolError, match="GOAWAY"):
        pair.gateway.open_stream(HEAD)
    pair.gateway.goaway(reason="deploy")  # may be repeated
    pair.flush()
    assert GoAwayReceived(last_stream_id=sid, code=ErrorCode.NO_ERROR,
                          reason="deploy") in pair.connector_events
    assert pair.connector.state is ConnectionState.DRAINING
    pair.connector.send_response(sid, 200)
    pair.connector.send_data(sid, b"still served", end_stream=True)
    pair.flush()
    assert pair.events_of("gateway", DataReceived)
    if version == 2:  # the drain waits for the usage report of the stream, then ends
        assert pair.gateway.state is pair.connector.state is ConnectionState.DRAINING
        pair.connector.report_usage(sid, input_tokens=5, output_tokens=2)
        assert pair.connector.state is ConnectionState.CLOSED
        pair.flush()
        assert pair.events_of("gateway", UsageReported) == [UsageReported(
            stream_id=sid, input_tokens=5, output_tokens=2, estimated=False)]
    assert pair.gateway.state is pair.connector.state is ConnectionState.CLOSED
    assert pair.gateway_events[-1] == ConnectionTerminated(code=ErrorCode.NO_ERROR,
                                                           reason="drained", remote=False)
    assert pair.connector_events[-1] == ConnectionTerminated(code=ErrorCode.NO_ERROR,
                                                             reason="drained", remote=True)


def test_connector_goaway_refuses_streams_above_last_id() -> None:
    pair = Pair()
    pair.handshake()
    a = pair.gateway.open_stream(HEAD)
    pair.flush()
    pair.connector.goaway(reason="restarting")
    b = pair.gateway.open_stream(HEAD)  # crosses the GOAWAY in flight
    pair.gateway.send_data(b, b"body")
    pair.flush()
    assert [e.stream_id for e in pair.events_of("connector", StreamOpened)] == [a]  # type: ignore[attr-defined]
    assert GoAwayReceived(last_stream_id=a, code=ErrorCode.NO_ERROR,
                          reason="restarting") in pair.gateway_events
    assert StreamReset(stream_id=b, code=ResetCode.REFUSED) in pair.gateway_events
    assert pair.gateway.open_stream_ids == (a,)
    pair.connector.send_response(a, 204)
    pair.connector.end_stream(a)
    pair.gateway.end_stream(a)
    pair.flush()
    # b's zero report (the core refused it) is not awaited; a's is
    assert pair.gateway.state is pair.connector.state is ConnectionState.DRAINING
    assert not pair.events_of("gateway", UsageReported)
    pair.connector.report_usage(a, input_tokens=1, output_tokens=0)
    pair.flush()
    assert pair.gateway.state is pair.connector.state is ConnectionState.CLOSED
    assert [e.stream_id for e in pair.events_of("gateway", UsageReported)] == [a]  # type: ignore[attr-defined]


def test_goaway_with_an_error_code_closes_at_once() -> None:
    pair = Pair()
    pair.handshake()
    sid = pair.gateway.open_stream(HEAD)
    pair.gateway.send_data(sid, b"dropped")
    pair.gateway.goaway(ErrorCode.INTERNAL_ERROR, "x" * 5000)
    assert pair.gateway.state is ConnectionState.CLOSED
    frames = decode_frames(pair.gateway.data_to_send())
    assert [f.type for f in frames] == [FrameType.OPEN, FrameType.GOAWAY]
    assert len(frames[-1].payload) == 8 + 1024
    pair.connector.receive_data(b"".join(f.encode() for f in frames), 0.0)
    pair.drain_events()
    assert pair.connector.state is ConnectionState.CLOSED
    terminated = pair.connector_events[-1]
    assert isinstance(terminated, ConnectionTerminated)
    assert terminated.code == ErrorCode.INTERNAL_ERROR and terminated.remote
    pair.connector.receive_data(b"anything", 1.0)  # ignored after a clean close
    with pytest.raises(LocalProtocolError):
        pair.gateway.goaway(ErrorCode.NO_ERROR, 5)  # type: ignore[arg-type]


def test_goaway_argument_validation() -> None:
    pair = Pair()
    pair.handshake()
    with pytest.raises(LocalProtocolError):
        pair.gateway.goaway(0, "x")  # type: ignore[arg-type]
    assert pair.gateway.state is ConnectionState.OPEN


def test_goaway_reason_must_be_utf8_and_bounded() -> None:
    pair = Pair()
    pair.handshake()
    bad = encode_frame(FrameType.GOAWAY, 0, 0, bytes(8) + b"\xff")
    with pytest.raises(RemoteProtocolError):
        pair.gateway.receive_data(bad, 0.0)


def test_drain_when_no_streams_closes_immediately() -> None:
    pair = Pair()
    pair.handshake()
    pair.connector.goaway()
    assert pair.connector.state is ConnectionState.CLOSED
    pair.flush()
    assert pair.gateway.state is ConnectionState.CLOSED
    last = payloads.decode_goaway(b"\0\0\0\0\0\0\0\0", 8)
    assert last.last_stream_id == 0


def test_time_reaching_idle_timeout_in_draining_state() -> None:
    pair = Pair(gateway_config=FAST, connector_config=FAST)
    pair.handshake()
    pair.gateway.open_stream(HEAD)
    pair.gateway.goaway()
    pair.gateway.handle_timer(10.0)
    pair.gateway.handle_timer(30.0)
    assert pair.gateway.state is ConnectionState.CLOSED


def test_frames_before_a_bad_header_take_effect_first() -> None:
    pair = Pair()
    pair.handshake()
    goaway = encode_frame(FrameType.GOAWAY, 0, 0, b"\0\0\0\0\0\0\0\2boom")
    pair.gateway.receive_data(goaway + b"\xff" * 12, 0.0)  # the junk after it is never parsed
    pair.drain_events()
    assert pair.gateway.state is ConnectionState.CLOSED
    assert pair.gateway_events[-1] == ConnectionTerminated(code=ErrorCode.INTERNAL_ERROR,
                                                           reason="boom", remote=True)
    pair2 = Pair()
    pair2.handshake()
    ping = encode_frame(FrameType.PING, 0, 0, bytes(8))
    with pytest.raises(RemoteProtocolError, match="version"):
        pair2.gateway.receive_data(ping + b"\xff" * 12, 0.0)
    frames = decode_frames(pair2.gateway.data_to_send())
    assert [f.type for f in frames] == [FrameType.PONG, FrameType.GOAWAY]


def test_drain_completes_at_the_frame_that_ends_it_not_at_the_end_of_the_chunk() -> None:
    pair = Pair()
    pair.handshake()
    pair.gateway.open_stream(HEAD)
    pair.flush()
    goaway = encode_frame(FrameType.GOAWAY, 0, 0, bytes(8))  # last_stream_id 0: 1 is refused
    pair.gateway.receive_data(goaway + b"\0" * 12, 0.0)  # trailing junk is never parsed
    pair.drain_events()
    assert pair.gateway.state is ConnectionState.CLOSED
    assert pair.gateway_events[-1] == ConnectionTerminated(code=ErrorCode.NO_ERROR,
                                                           reason="drained", remote=True)


def test_an_open_after_the_gateways_own_goaway_is_refused() -> None:
    pair = Pair()
    pair.handshake()
    sid = pair.gateway.open_stream(HEAD)
    pair.gateway.goaway()
    pair.flush()
    assert pair.connector.state is ConnectionState.DRAINING
    late = encode_frame(FrameType.OPEN, 0, sid + 2, b'{"method": "GET"}')
    pair.connector.receive_data(late, 0.0)
    pair.drain_events()
    assert not [e for e in pair.connector_events
                if isinstance(e, StreamOpened) and e.stream_id == sid + 2]
    reset, report = decode_frames(pair.connector.data_to_send())
    assert (reset.type, reset.stream_id, reset.payload) == (FrameType.RESET, sid + 2,
                                                            b"\0\0\0\x04")
    assert report.type is FrameType.REPORT and decode_report(report.payload) == UsageReport(
        stream_id=sid + 2, input_tokens=0, output_tokens=0)


def test_timers_do_nothing_before_start_and_after_the_close() -> None:
    pair = Pair()
    assert pair.connector.get_timer() is None
    pair.connector.handle_timer(1e9)  # IDLE: nothing armed, nothing happens
    assert pair.connector.state is ConnectionState.IDLE
    assert pair.connector.data_to_send() == b"" and pair.connector.next_event() is None
    pair.handshake()
    pair.gateway.goaway(ErrorCode.INTERNAL_ERROR)
    pair.gateway.data_to_send()
    pair.drain_events()
    assert pair.gateway.get_timer() is None
    pair.gateway.handle_timer(1e9)
    assert pair.gateway.data_to_send() == b"" and pair.gateway.next_event() is None
