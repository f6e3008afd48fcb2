"""Streams, flow control and the fair scheduler, through the public API."""

from __future__ import annotations

import pytest

from tests.proto.pair import Pair
from tokios_proto import (
    Config,
    ConnectionState,
    DataReceived,
    ErrorCode,
    FlowControlError,
    FrameFlag,
    FrameType,
    GatewayConnection,
    LocalProtocolError,
    RemoteProtocolError,
    RequestHead,
    ResetCode,
    ResponseReceived,
    Settings,
    SettingsChanged,
    StreamEnded,
    StreamOpened,
    StreamReset,
    StreamState,
    UsageReport,
    WindowUpdated,
    decode_frames,
    encode_frame,
)
from tokios_proto import _payloads as payloads
from tokios_proto._reports import decode_report

HEAD = RequestHead(method="POST", path="/v1/chat/completions", headers=(("a", "b"),),
                   deployment="llama", request_id="req-1")
SMALL = Settings(initial_stream_window=4096, initial_connection_window=8192,
                 max_frame_size=1024, max_concurrent_streams=4)


def small_pair() -> Pair:
    pair = Pair(gateway_config=Config(settings=SMALL), connector_config=Config(settings=SMALL))
    pair.handshake()
    return pair


def body(pair: Pair, side: str, stream_id: int) -> bytes:
    return b"".join(e.data for e in pair.events_of(side, DataReceived)
                    if isinstance(e, DataReceived) and e.stream_id == stream_id)


def test_request_and_response_round_trip() -> None:
    pair = Pair()
    pair.handshake()
    sid = pair.gateway.open_stream(HEAD)
    assert sid == 1
    assert pair.gateway.stream_state(sid) is StreamState.OPEN
    pair.gateway.send_data(sid, b"request", end_stream=True)
    assert pair.gateway.stream_state(sid) is StreamState.REQUEST_DONE
    pair.flush()
    assert pair.connector_events[-3:] == [
        StreamOpened(stream_id=1, head=HEAD),
        DataReceived(stream_id=1, data=b"request", flow_controlled_length=7),
        StreamEnded(stream_id=1)]
    pair.connector.send_response(sid, 200, (("content-type", "text/event-stream"),))
    pair.connector.send_data(sid, bytearray(b"data: 1\n\n"))
    pair.connector.send_data(sid, memoryview(b"data: 2\n\n"), end_stream=True)
    assert pair.connector.stream_state(sid) is StreamState.CLOSED
    pair.flush()
    assert ResponseReceived(stream_id=1, status=200,
                            headers=(("content-type", "text/event-stream"),)) in pair.gateway_events
    assert body(pair, "gateway", 1) == b"data: 1\n\ndata: 2\n\n"
    assert isinstance(pair.gateway_events[-1], StreamEnded)
    assert pair.gateway.open_stream_ids == () == pair.connector.open_stream_ids
    assert pair.gateway.stream_state(1) is StreamState.CLOSED
    assert pair.gateway.open_stream(HEAD) == 3


def test_response_may_end_before_the_request() -> None:
    pair = Pair()
    pair.handshake()
    sid = pair.gateway.open_stream(HEAD)
    pair.flush()
    pair.connector.send_response(sid, 413)
    pair.connector.end_stream(sid)
    pair.flush()
    assert pair.gateway.stream_state(sid) is StreamState.RESPONSE_DONE
    pair.gateway.send_data(sid, b"rest")
    pair.gateway.end_stream(sid)
    pair.flush()
    assert pair.gateway.open_stream_ids == () == pair.connector.open_stream_ids


def test_stream_command_misuse_raises_local_errors() -> None:
    pair = Pair()
    with pytest.raises(LocalProtocolError):
        pair.gateway.open_stream(HEAD)  # before the handshake
    pair.handshake()
    with pytest.raises(LocalProtocolError):
        pair.gateway.open_stream("GET /")  # type: ignore[arg-type]
    sid = pair.gateway.open_stream(HEAD)
    pair.flush()
    with pytest.raises(LocalProtocolError):
        pair.connector.send_data(sid, b"x")  # body before response head
    with pytest.raises(LocalProtocolError):
        pair.connector.end_stream(sid)
    with pytest.raises(LocalProtocolError):
        pair.connector.send_response(sid, 42)
    pair.connector.send_response(sid, 200)
    with pytest.raises(LocalProtocolError):
        pair.connector.send_response(sid, 200)
    pair.gateway.end_stream(sid)
    with pytest.raises(LocalProtocolError):
        pair.gateway.send_data(sid, b"late")
    with pytest.raises(LocalProtocolError):
        pair.gateway.end_stream(sid)
    for bad in (99, 2):
        with pytest.raises(LocalProtocolError):
            pair.gateway.send_data(bad, b"x")
        with pytest.raises(LocalProtocolError):
            pair.gateway.stream_state(bad)
        with pytest.raises(LocalProtocolError):
            pair.gateway.reset_stream(bad)
        with pytest.raises(LocalProtocolError):
            pair.gateway.available_to_send(bad)
    with pytest.raises(LocalProtocolError):
        pair.gateway.reset_stream(sid, 5)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        pair.connector.send_response(sid, 200, (("h", "x" * 40000),))
    with pytest.raises(LocalProtocolError):
        pair.gateway.open_stream(RequestHead(method="GET", path="/" + "x" * 40000))
    with pytest.raises(LocalProtocolError):
        pair.connector.update_settings(max_concurrent_streams=0)
    assert pair.gateway.available_to_send(sid) == 0  # request half ended
    pair.gateway.reset_stream(sid)
    assert pair.gateway.available_to_send(sid) == 0  # closed


def test_reset_both_ways_and_idempotent() -> None:
    pair = Pair()
    pair.handshake()
    a = pair.gateway.open_stream(HEAD)
    b = pair.gateway.open_stream(HEAD)
    pair.gateway.send_data(a, b"queued and dropped")
    pair.gateway.reset_stream(a, ResetCode.CLIENT_GONE)
    pair.gateway.reset_stream(a, ResetCode.CLIENT_GONE)  # no-op
    assert pair.gateway.outbound_buffered == 0
    pair.flush()
    assert StreamReset(stream_id=a, code=ResetCode.CANCELLED, remote=True) in \
        pair.connector_events
    assert not [e for e in pair.connector_events if isinstance(e, DataReceived)]
    pair.connector.send_response(b, 200)
    pair.connector.reset_stream(b, ResetCode.UPSTREAM_FAILED)
    pair.flush()
    assert StreamReset(stream_id=b, code=ResetCode.UPSTREAM_FAILED, remote=True) in \
        pair.gateway_events
    assert pair.gateway.open_stream_ids == () == pair.connector.open_stream_ids
    with pytest.raises(LocalProtocolError):
        pair.gateway.send_data(a, b"x")


def test_unknown_reset_code_maps_to_internal_error() -> None:
    pair = Pair()
    pair.handshake()
    sid = pair.gateway.open_stream(HEAD)
    pair.flush()
    pair.gateway.receive_data(encode_frame(FrameType.RESET, 0, sid, b"\0\0\1\0"), 0.0)
    assert pair.gateway.next_event() == StreamReset(stream_id=sid,
                                                    code=ResetCode.INTERNAL_ERROR)


def test_send_data_is_bounded_by_windows() -> None:
    pair = small_pair()
    sid = pair.gateway.open_stream(HEAD)
    assert pair.gateway.available_to_send(sid) == 4096
    with pytest.raises(FlowControlError) as info:
        pair.gateway.send_data(sid, b"x" * 4097)
    assert info.value.code == ErrorCode.FLOW_CONTROL_ERROR
    assert isinstance(info.value, LocalProtocolError)
    pair.gateway.send_data(sid, b"x" * 3000)
    assert pair.gateway.available_to_send(sid) == 1096
    assert pair.gateway.outbound_buffered == 3000
    sid2 = pair.gateway.open_stream(HEAD)
    pair.gateway.send_data(sid2, b"y" * 4096)
    sid3 = pair.gateway.open_stream(HEAD)
    assert pair.gateway.available_to_send(sid3) == 8192 - 3000 - 4096
    assert pair.gateway.connection_send_window == 1096
    with pytest.raises(FlowControlError):
        pair.gateway.send_data(sid3, b"z" * 1097)
    out = decode_frames(pair.gateway.data_to_send())
    assert all(len(f.payload) <= 1024 for f in out if f.type is FrameType.DATA)


def test_credit_returns_only_when_acknowledged() -> None:
    pair = small_pair()
    sid = pair.gateway.open_stream(HEAD)
    pair.gateway.send_data(sid, b"x" * 4096)
    pair.flush()
    assert pair.gateway.available_to_send(sid) == 0
    assert body(pair, "connector", sid) == b"x" * 4096
    # below half: nothing sent yet
    pair.connector.acknowledge_received_data(stream_id=sid, acknowledged_size=1000)
    pair.flush()
    assert not pair.events_of("gateway", WindowUpdated)
    # half of the stream window
    pair.connector.acknowledge_received_data(stream_id=sid, acknowledged_size=1048)
    pair.flush()
    updates = pair.events_of("gateway", WindowUpdated)
    assert WindowUpdated(stream_id=sid, delta=2048) in updates
    assert pair.gateway.available_to_send(sid) == 2048
    with pytest.raises(LocalProtocolError):
        pair.connector.acknowledge_received_data(stream_id=sid, acknowledged_size=5000)
    with pytest.raises(LocalProtocolError):
        pair.connector.acknowledge_received_data(stream_id=sid, acknowledged_size=-1)
    pair.connector.acknowledge_received_data(stream_id=sid, acknowledged_size=0)
    pair.connector.acknowledge_received_data(stream_id=sid, acknowledged_size=2048)
    pair.flush()
    assert WindowUpdated(stream_id=0, delta=4096) in pair.events_of("gateway", WindowUpdated)
    assert pair.gateway.connection_send_window == 8192
    other = pair.gateway.open_stream(HEAD)
    pair.gateway.send_data(other, b"y" * 100)
    pair.gateway.send_data(sid, b"z" * 50)
    pair.flush()  # the connection holds 150 unacknowledged bytes, the first stream 50
    with pytest.raises(LocalProtocolError, match=f"on stream {sid}"):
        pair.connector.acknowledge_received_data(stream_id=sid, acknowledged_size=150)


def test_ack_after_stream_closed_only_returns_connection_credit() -> None:
    pair = small_pair()
    sid = pair.gateway.open_stream(HEAD)
    pair.gateway.send_data(sid, b"x" * 4096, end_stream=True)
    pair.flush()
    pair.connector.send_response(sid, 200)
    pair.connector.end_stream(sid)
    pair.flush()
    assert pair.connector.stream_state(sid) is StreamState.CLOSED
    pair.connector.acknowledge_received_data(stream_id=sid, acknowledged_size=4096)
    pair.flush()
    assert list(pair.events_of("gateway", WindowUpdated)) == [
        WindowUpdated(stream_id=0, delta=4096)]
    with pytest.raises(LocalProtocolError):
        pair.connector.acknowledge_received_data(stream_id=77, acknowledged_size=1)


def test_scheduler_is_fair_round_robin() -> None:
    pair = Pair(gateway_config=Config(settings=Settings(max_frame_size=1024)),
                connector_config=Config(settings=Settings(max_frame_size=1024)))
    pair.handshake()
    long_id = pair.gateway.open_stream(HEAD)
    short_id = pair.gateway.open_stream(HEAD)
    pair.gateway.data_to_send()
    pair.gateway.send_data(long_id, b"L" * 10 * 1024, end_stream=True)
    pair.gateway.send_data(short_id, b"S" * 1500, end_stream=True)
    pair.gateway.reset_stream(pair.gateway.open_stream(HEAD))  # control frames go first
    frames = decode_frames(pair.gateway.data_to_send())
    assert [f.type for f in frames[:2]] == [FrameType.OPEN, FrameType.RESET]
    order = [(f.stream_id, len(f.payload), f.flags) for f in frames[2:]]
    assert order[:4] == [(long_id, 1024, 0), (short_id, 1024, 0), (long_id, 1024, 0),
                         (short_id, 476, FrameFlag.END_STREAM)]
    assert order[-1] == (long_id, 1024, FrameFlag.END_STREAM)
    assert pair.gateway.data_to_send() == b""


def test_max_bytes_caps_output_but_always_makes_progress() -> None:
    pair = Pair(gateway_config=Config(settings=Settings(max_frame_size=1024)))
    pair.handshake()
    sid = pair.gateway.open_stream(HEAD)
    pair.gateway.data_to_send()
    pair.gateway.send_data(sid, b"x" * 3000, end_stream=True)
    first = pair.gateway.data_to_send(max_bytes=100)
    assert len(first) == 100
    assert pair.gateway.data_to_send(max_bytes=5) == encode_frame(FrameType.DATA, 0, sid, b"x")
    messages = pair.gateway.messages_to_send(max_bytes=2000)
    assert sum(map(len, messages)) <= 2000
    rest = pair.gateway.data_to_send()
    frames = decode_frames(first) + decode_frames(b"".join(messages)) + decode_frames(rest)
    sizes = [len(f.payload) for f in frames]
    assert sum(sizes) == 2999 and frames[-1].flags == FrameFlag.END_STREAM
    pair.gateway.ping(0.0)
    pair.gateway.ping(0.0)
    assert len(pair.gateway.data_to_send(max_bytes=1)) == 20  # one whole control frame
    assert len(pair.gateway.data_to_send(max_bytes=1)) == 20
    with pytest.raises(LocalProtocolError):
        pair.gateway.data_to_send(max_bytes=0)


def test_messages_hold_whole_frames_within_the_message_size() -> None:
    config = Config(settings=Settings(max_frame_size=1024), max_message_size=3000)
    pair = Pair(gateway_config=config, connector_config=config)
    pair.handshake()
    sids = [pair.gateway.open_stream(HEAD) for _ in range(3)]
    for sid in sids:
        pair.gateway.send_data(sid, b"x" * 5000)
    messages = pair.gateway.messages_to_send()
    assert all(len(m) <= 3000 for m in messages) and len(messages) > 5
    for message in messages:
        decode_frames(message)  # each message is whole frames


def opens(gateway: GatewayConnection) -> bool:
    """Whether open_stream succeeds, checked against the may_open_stream query first."""
    predicted = gateway.may_open_stream
    try:
        gateway.open_stream(HEAD)
    except LocalProtocolError:
        assert not predicted, "may_open_stream said yes, open_stream refused"
        return False
    assert predicted, "may_open_stream said no, open_stream opened"
    return True


def test_max_concurrent_streams_and_settings_update() -> None:
    pair = Pair(gateway_config=Config(settings=SMALL), connector_config=Config(settings=SMALL))
    assert pair.gateway.max_concurrent_streams == 0 and not opens(pair.gateway)
    pair.handshake()
    assert pair.gateway.max_concurrent_streams == pair.connector.max_concurrent_streams == 4
    assert [opens(pair.gateway) for _ in range(5)] == [True] * 4 + [False]
    pair.flush()
    pair.gateway.reset_stream(1)
    pair.flush()
    assert opens(pair.gateway)
    pair.connector.update_settings(max_concurrent_streams=2)
    assert pair.connector.max_concurrent_streams == 2
    pair.flush()
    (changed,) = pair.events_of("gateway", SettingsChanged)
    assert isinstance(changed, SettingsChanged) and changed.settings.max_concurrent_streams == 2
    assert pair.gateway.max_concurrent_streams == 2
    assert not opens(pair.gateway)
    for sid in pair.gateway.open_stream_ids[:3]:
        pair.gateway.reset_stream(sid)
    assert opens(pair.gateway)  # 1 open, below the new limit of 2
    pair.gateway.goaway()
    assert not opens(pair.gateway)  # draining
    pair.gateway.goaway(ErrorCode.INTERNAL_ERROR)
    assert not opens(pair.gateway)  # closed


def test_connector_refuses_streams_over_its_limit() -> None:
    pair = small_pair()
    pair.connector.update_settings(max_concurrent_streams=1)  # not yet seen by the gateway
    a = pair.gateway.open_stream(HEAD)
    b = pair.gateway.open_stream(HEAD)
    pair.gateway.send_data(b, b"body")
    pair.flush()
    assert [e.stream_id for e in pair.events_of("connector", StreamOpened)] == [a]  # type: ignore[attr-defined]
    assert StreamReset(stream_id=b, code=ResetCode.REFUSED) in pair.gateway_events
    assert pair.connector.connection_send_window == 8192


def gateway_with_stream() -> tuple[Pair, int]:
    pair = small_pair()
    sid = pair.gateway.open_stream(HEAD)
    pair.flush()
    return pair, sid


def inject(pair: Pair, side: str, frame: bytes) -> None:
    conn = pair.gateway if side == "gateway" else pair.connector
    conn.receive_data(frame, pair.now)
    pair.drain_events()


def test_data_before_response_resets_only_that_stream() -> None:
    pair, sid = gateway_with_stream()
    other = pair.gateway.open_stream(HEAD)
    inject(pair, "gateway", encode_frame(FrameType.DATA, 0, sid, b"early"))
    assert pair.gateway_events[-1] == StreamReset(stream_id=sid, code=ResetCode.PROTOCOL_ERROR,
                                                  remote=False)
    assert pair.gateway.state is ConnectionState.OPEN and pair.gateway.open_stream_ids == (other,)
    out = decode_frames(pair.gateway.data_to_send())
    assert (out[-1].type, out[-1].stream_id) == (FrameType.RESET, sid)
    # bytes on the reset stream still count and are refunded at once
    for _ in range(4):  # 4101 bytes refunded: over half the connection window
        inject(pair, "gateway", encode_frame(FrameType.DATA, 0, sid, b"z" * 1024))
    inject(pair, "gateway", encode_frame(FrameType.RESET, 0, sid, b"\0\0\0\1"))
    inject(pair, "gateway", encode_frame(FrameType.WINDOW_UPDATE, 0, sid, b"\0\0\0\1"))
    assert len(pair.gateway_events) == 2  # hello, the reset; nothing more for a closed id
    assert any(f.type is FrameType.WINDOW_UPDATE and f.stream_id == 0
               for f in decode_frames(pair.gateway.data_to_send()))


def test_data_after_end_is_stream_closed() -> None:
    pair, sid = gateway_with_stream()
    pair.connector.send_response(sid, 200)
    pair.connector.end_stream(sid)
    pair.flush()
    inject(pair, "gateway", encode_frame(FrameType.DATA, 0, sid, b"late"))
    assert pair.gateway_events[-1] == StreamReset(stream_id=sid, code=ResetCode.STREAM_CLOSED,
                                                  remote=False)
    assert pair.gateway.state is ConnectionState.OPEN


def test_second_response_head_and_bad_heads_reset_the_stream() -> None:
    pair, sid = gateway_with_stream()
    pair.connector.send_response(sid, 200)
    pair.flush()
    inject(pair, "gateway", encode_frame(FrameType.RESPONSE, 0, sid, b'{"status": 200}'))
    assert pair.gateway_events[-1] == StreamReset(stream_id=sid, code=ResetCode.PROTOCOL_ERROR,
                                                  remote=False)
    sid2 = pair.gateway.open_stream(HEAD)
    inject(pair, "gateway", encode_frame(FrameType.RESPONSE, 0, sid2, b'{"status": "ok"}'))
    assert pair.gateway_events[-1] == StreamReset(stream_id=sid2, code=ResetCode.PROTOCOL_ERROR,
                                                  remote=False)
    sid3 = pair.gateway.open_stream(HEAD)
    big = b'{"status": 200, "headers": [["x", "' + b"y" * 33000 + b'"]]}'
    inject(pair, "gateway", encode_frame(FrameType.RESPONSE, 0, sid3, big))
    assert pair.gateway_events[-1] == StreamReset(stream_id=sid3,
                                                  code=ResetCode.HEADER_TOO_LARGE, remote=False)
    inject(pair, "gateway", encode_frame(FrameType.RESPONSE, 0, sid3, b'{"status": 200}'))
    assert pair.gateway.state is ConnectionState.OPEN


def test_connector_resets_bad_open_frames_without_events() -> None:
    pair = small_pair()
    big = payloads.encode_request_head(RequestHead(method="GET", path="/" + "p" * 40000))
    inject(pair, "connector", encode_frame(FrameType.OPEN, 0, 1, big))
    inject(pair, "connector", encode_frame(FrameType.OPEN, 0, 3, b'{"method": 5}'))
    assert not pair.events_of("connector", StreamOpened)
    frames = decode_frames(pair.connector.data_to_send())
    resets = [(f.stream_id, payloads.decode_u32(f.payload, "r"))
              for f in frames if f.type is FrameType.RESET]
    assert resets == [(1, ResetCode.HEADER_TOO_LARGE), (3, ResetCode.PROTOCOL_ERROR)]
    # version 2: the core reports that nothing was generated for each stream it refused
    reports = [decode_report(f.payload) for f in frames if f.type is FrameType.REPORT]
    assert reports == [UsageReport(stream_id=n, input_tokens=0, output_tokens=0)
                       for n in (1, 3)]
    with pytest.raises(RemoteProtocolError, match="odd, rise"):
        inject(pair, "connector", encode_frame(FrameType.OPEN, 0, 3, b"{}"))


def test_an_open_above_the_largest_stream_id_is_a_connection_error() -> None:
    pair = small_pair()
    with pytest.raises(RemoteProtocolError, match="2\\*\\*31-1") as info:
        inject(pair, "connector", encode_frame(FrameType.OPEN, 0, 2**31 + 1, b'{"method":"GET"}'))
    assert info.value.code == ErrorCode.PROTOCOL_ERROR
    pair = small_pair()
    inject(pair, "connector", encode_frame(FrameType.OPEN, 0, 2**31 - 1, b'{"method":"GET"}'))
    assert [e.stream_id for e in pair.events_of("connector", StreamOpened)] == [2**31 - 1]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("side", "frame", "code"), [
    ("connector", encode_frame(FrameType.OPEN, 0, 2, b"{}"), ErrorCode.PROTOCOL_ERROR),
    ("gateway", encode_frame(FrameType.DATA, 0, 9, b"x"), ErrorCode.PROTOCOL_ERROR),
    ("gateway", encode_frame(FrameType.DATA, 0, 0, b"x"), ErrorCode.PROTOCOL_ERROR),
    ("gateway", encode_frame(FrameType.RESET, 0, 9, b"\0\0\0\1"), ErrorCode.PROTOCOL_ERROR),
    ("gateway", encode_frame(FrameType.RESET, 0, 1, b"\0\0\1"), ErrorCode.PROTOCOL_ERROR),
    ("gateway", encode_frame(FrameType.RESPONSE, 0, 9, b"{}"), ErrorCode.PROTOCOL_ERROR),
    ("gateway", encode_frame(FrameType.WINDOW_UPDATE, 0, 9, b"\0\0\0\1"),
     ErrorCode.PROTOCOL_ERROR),
    ("gateway", encode_frame(FrameType.WINDOW_UPDATE, 0, 0, b"\0\0\0\0"),
     ErrorCode.PROTOCOL_ERROR),
    ("gateway", encode_frame(FrameType.WINDOW_UPDATE, 0, 0, b"\x7f\xff\xff\xff"),
     ErrorCode.FLOW_CONTROL_ERROR),
    ("gateway", encode_frame(FrameType.DATA, 0, 1, b"x" * 1025), ErrorCode.FRAME_SIZE_ERROR),
    ("gateway", encode_frame(FrameType.SETTINGS, 0, 0, b'{"max_concurrent_streams": 5}'),
     ErrorCode.PROTOCOL_ERROR),
    ("gateway", encode_frame(FrameType.SETTINGS, 0, 1, b'{"max_concurrent_streams": 1}'),
     ErrorCode.PROTOCOL_ERROR),
    ("gateway", encode_frame(FrameType.OPEN, 0, 3, b"{}"), ErrorCode.PROTOCOL_ERROR),
    ("connector", encode_frame(FrameType.RESPONSE, 0, 1, b"{}"), ErrorCode.PROTOCOL_ERROR),
    ("gateway", encode_frame(FrameType.PING, 0, 1, bytes(8)), ErrorCode.PROTOCOL_ERROR),
    ("gateway", encode_frame(FrameType.PONG, 0, 0, bytes(7)), ErrorCode.PROTOCOL_ERROR),
    ("gateway", encode_frame(FrameType.GOAWAY, 0, 1, bytes(8)), ErrorCode.PROTOCOL_ERROR),
    ("gateway", encode_frame(FrameType.WELCOME, 0, 0, b"{}"), ErrorCode.PROTOCOL_ERROR),
    ("connector", encode_frame(FrameType.WELCOME, 0, 0, b"{}"), ErrorCode.PROTOCOL_ERROR),
    ("connector", encode_frame(FrameType.REJECT, 0, 0, b"{}"), ErrorCode.PROTOCOL_ERROR),
])
def test_connection_errors_after_handshake(side: str, frame: bytes, code: ErrorCode) -> None:
    pair, _sid = gateway_with_stream()
    conn = pair.gateway if side == "gateway" else pair.connector
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(frame, 0.0)
    assert info.value.code == code
    assert conn.state is ConnectionState.CLOSED
    frames = decode_frames(conn.data_to_send())
    assert frames[-1].type is FrameType.GOAWAY
    assert payloads.decode_goaway(frames[-1].payload, 1024).code == code


def test_connection_window_overrun_is_a_connection_error() -> None:
    pair = small_pair()
    sids = [pair.gateway.open_stream(HEAD) for _ in range(3)]
    pair.flush()
    for sid in sids:
        pair.connector.send_response(sid, 200)
    pair.flush()
    for sid in sids[:2]:
        for _ in range(4):
            inject(pair, "gateway", encode_frame(FrameType.DATA, 0, sid, b"x" * 1024))
    with pytest.raises(RemoteProtocolError) as info:
        inject(pair, "gateway", encode_frame(FrameType.DATA, 0, sids[2], b"x"))
    assert info.value.code == ErrorCode.FLOW_CONTROL_ERROR


def test_stream_window_overrun_resets_the_stream() -> None:
    config = Config(settings=Settings(initial_stream_window=1024, max_frame_size=1024))
    pair = Pair(gateway_config=config, connector_config=config)
    pair.handshake()
    sid = pair.gateway.open_stream(HEAD)
    pair.flush()
    pair.connector.send_response(sid, 200)
    pair.flush()
    inject(pair, "gateway", encode_frame(FrameType.DATA, 0, sid, b"x" * 1024))
    inject(pair, "gateway", encode_frame(FrameType.DATA, 0, sid, b"x"))
    assert pair.gateway_events[-1] == StreamReset(
        stream_id=sid, code=ResetCode.FLOW_CONTROL_ERROR, remote=False)
    assert pair.gateway.state is ConnectionState.OPEN


def test_stream_window_update_errors_reset_the_stream() -> None:
    pair, sid = gateway_with_stream()
    inject(pair, "gateway", encode_frame(FrameType.WINDOW_UPDATE, 0, sid, b"\0\0\0\0"))
    assert pair.gateway_events[-1] == StreamReset(stream_id=sid, code=ResetCode.PROTOCOL_ERROR,
                                                  remote=False)
    sid2 = pair.gateway.open_stream(HEAD)
    inject(pair, "gateway", encode_frame(FrameType.WINDOW_UPDATE, 0, sid2, b"\x7f\xff\xff\xff"))
    assert pair.gateway_events[-1] == StreamReset(
        stream_id=sid2, code=ResetCode.FLOW_CONTROL_ERROR, remote=False)
    sid3 = pair.gateway.open_stream(HEAD)
    inject(pair, "gateway", encode_frame(FrameType.WINDOW_UPDATE, 0, sid3, b"\0\0\0\x10"))
    assert pair.gateway_events[-1] == WindowUpdated(stream_id=sid3, delta=16)
    assert pair.gateway.available_to_send(sid3) == 4096 + 16


def test_empty_data_with_end_gives_only_stream_ended() -> None:
    pair, sid = gateway_with_stream()
    pair.gateway.end_stream(sid)
    pair.flush()
    assert pair.connector_events[-1] == StreamEnded(stream_id=sid)
    assert not pair.events_of("connector", DataReceived)


def test_reset_flood_is_excessive_load() -> None:
    config = Config(settings=SMALL, max_pending_control_frames=3)
    pair = Pair(connector_config=config)
    pair.handshake()
    with pytest.raises(RemoteProtocolError) as info:
        for sid in range(1, 20, 2):
            pair.connector.receive_data(encode_frame(FrameType.OPEN, 0, sid, b"{}"), 0.0)
    assert info.value.code == ErrorCode.EXCESSIVE_LOAD


def test_event_flood_is_excessive_load() -> None:
    config = Config(max_pending_events=16)
    pair = Pair(gateway_config=config)
    pair.handshake()
    sid = pair.gateway.open_stream(HEAD)
    pair.flush()
    pair.connector.send_response(sid, 200)
    pair.flush()
    flood = b"".join(encode_frame(FrameType.DATA, 0, sid, b"x") for _ in range(40))
    with pytest.raises(RemoteProtocolError) as info:
        pair.gateway.receive_data(flood, 0.0)
    assert info.value.code == ErrorCode.EXCESSIVE_LOAD


def test_events_stay_in_order_and_bounded_when_the_shell_drains_partially() -> None:
    pair = Pair()
    pair.handshake()
    sid = pair.gateway.open_stream(HEAD)
    pair.flush()
    pair.connector.send_response(sid, 200)
    pair.flush()
    gateway = pair.gateway
    received: list[bytes] = []
    for batch in range(100):
        chunk = b"".join(encode_frame(FrameType.DATA, 0, sid, b"%05d" % (batch * 100 + i))
                         for i in range(100))
        gateway.receive_data(chunk, 0.0)
        for _ in range(60):  # a shell that takes only some of the events each time
            event = gateway.next_event()
            assert isinstance(event, DataReceived)
            received.append(event.data)
        pending = len(gateway._events) - gateway._events_head
        assert pending == (batch + 1) * 40
        assert len(gateway._events) <= 2 * pending + 1024  # consumed events are let go
    while (event := gateway.next_event()) is not None:
        assert isinstance(event, DataReceived)
        received.append(event.data)
    assert received == [b"%05d" % n for n in range(10000)]
    assert gateway._events == [] and gateway._events_head == 0  # drained: storage freed


def test_output_is_bytes_not_bytearray() -> None:
    pair, sid = gateway_with_stream()
    pair.gateway.send_data(sid, bytearray(b"abc"))
    assert type(pair.gateway.data_to_send()) is bytes
    pair.connector.send_response(sid, 200)
    pair.connector.send_data(sid, b"abc")
    assert all(type(m) is bytes for m in pair.connector.messages_to_send())


def test_stream_ids_exhaust() -> None:
    pair = Pair()
    pair.handshake()
    pair.gateway._next_stream_id = 2**31 - 1  # white-box: skip a billion opens
    assert opens(pair.gateway)
    with pytest.raises(LocalProtocolError, match="exhausted"):
        pair.gateway.open_stream(HEAD)
    assert not pair.gateway.may_open_stream


def test_discarded_data_returns_credit_with_the_half_window_rule() -> None:
    """docs/protocol.md §6.4 and §8.3: DATA on a closed stream counts as consumed at once, and
    its connection credit goes back in the WINDOW_UPDATE sent once half the window is consumed,
    not frame by frame."""
    pair = small_pair()  # connection window 8192: an update once 4096 bytes are consumed
    sid = pair.gateway.open_stream(HEAD)
    pair.flush()
    pair.connector.send_response(sid, 200)
    pair.connector.send_data(sid, b"x" * 3000)
    pair.gateway.reset_stream(sid)  # the 3000 bytes cross the RESET: the gateway discards them
    pair.flush()
    assert not pair.events_of("gateway", DataReceived)
    assert not [e for e in pair.events_of("connector", WindowUpdated) if e.stream_id == 0]  # type: ignore[attr-defined]
    other = pair.gateway.open_stream(HEAD)
    pair.flush()
    pair.connector.send_response(other, 200)
    pair.connector.send_data(other, b"y" * 1096)  # consumed when acknowledged: 4096 in all
    pair.flush()
    pair.gateway.acknowledge_received_data(stream_id=other, acknowledged_size=1096)
    pair.flush()
    assert WindowUpdated(stream_id=0, delta=4096) in pair.events_of("connector", WindowUpdated)
