"""Boundaries and exact outputs: each test here kills mutants the mutation run found alive
(docs/testing.md): windows restored when queued output is dropped, increments and windows at
their limits, exact frames and events of the closing paths, message packing at the size limit."""

from __future__ import annotations

import pytest

from tests.proto.pair import Pair, make_hello
from tokios_proto import (
    Config,
    ConnectionState,
    ConnectionTerminated,
    ConnectorConnection,
    DataReceived,
    ErrorCode,
    FlowControlError,
    Frame,
    FrameType,
    GatewayConnection,
    LocalProtocolError,
    Reject,
    RejectReason,
    RemoteProtocolError,
    RequestHead,
    ResetCode,
    Secret,
    Settings,
    SettingsChanged,
    StreamReset,
    WindowUpdated,
    decode_frames,
    encode_frame,
)
from tokios_proto import _payloads as payloads

HEAD = RequestHead(method="POST", path="/v1/chat/completions")
SMALL = Settings(initial_stream_window=4096, initial_connection_window=8192, max_frame_size=1024,
                 max_concurrent_streams=4)
MAX = 2**31 - 1


def small_pair() -> Pair:
    pair = Pair(gateway_config=Config(settings=SMALL), connector_config=Config(settings=SMALL))
    pair.handshake()
    return pair


def u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


# ---------------------------------------------------------------- windows


def test_a_local_stream_reset_returns_the_dropped_output_to_the_connection_window() -> None:
    pair = small_pair()
    sid = pair.gateway.open_stream(HEAD)
    pair.flush()
    pair.gateway.send_data(sid, b"q" * 1000)  # queued, not yet sent
    assert pair.gateway.connection_send_window == 7192
    # the connector sends body bytes before its response head: a stream error at the gateway
    pair.gateway.receive_data(encode_frame(FrameType.DATA, 0, sid, b"early"), 0.0)
    assert pair.gateway.connection_send_window == 8192
    frames = decode_frames(pair.gateway.data_to_send())
    assert frames == [Frame(FrameType.RESET, 0, sid, u32(ResetCode.PROTOCOL_ERROR))]


@pytest.mark.parametrize("how", ["reset_stream", "goaway_refusal"])
def test_dropping_queued_output_returns_it_to_the_connection_window(how: str) -> None:
    pair = small_pair()
    sid = pair.gateway.open_stream(HEAD)
    pair.flush()
    pair.gateway.send_data(sid, b"q" * 1000)
    if how == "reset_stream":
        pair.gateway.reset_stream(sid)
    else:  # the connector says it processed none: the stream is refused, its output dropped
        pair.gateway.receive_data(encode_frame(FrameType.GOAWAY, 0, 0, bytes(8)), 0.0)
    assert pair.gateway.connection_send_window == 8192


def test_window_increments_and_windows_at_their_limits() -> None:
    pair = small_pair()
    sid = pair.gateway.open_stream(HEAD)
    pair.flush()
    updates = (encode_frame(FrameType.WINDOW_UPDATE, 0, 0, u32(1))
               + encode_frame(FrameType.WINDOW_UPDATE, 0, sid, u32(1)))
    pair.gateway.receive_data(updates, 0.0)
    pair.drain_events()
    assert pair.events_of("gateway", WindowUpdated) == [WindowUpdated(stream_id=0, delta=1),
                                                        WindowUpdated(stream_id=sid, delta=1)]
    # windows may reach exactly 2**31-1
    to_max = (encode_frame(FrameType.WINDOW_UPDATE, 0, 0, u32(MAX - 8193))
              + encode_frame(FrameType.WINDOW_UPDATE, 0, sid, u32(MAX - 4097)))
    pair.gateway.receive_data(to_max, 0.0)
    assert pair.gateway.connection_send_window == MAX
    assert pair.gateway.available_to_send(sid) == MAX
    assert pair.gateway.state is ConnectionState.OPEN


def test_send_data_may_use_exactly_the_credit_left() -> None:
    pair = small_pair()
    first, second = pair.gateway.open_stream(HEAD), pair.gateway.open_stream(HEAD)
    pair.gateway.send_data(first, b"a" * 4096)
    assert pair.gateway.connection_send_window == 4096
    pair.gateway.send_data(second, b"b" * 4096)  # exactly what the connection has left
    assert pair.gateway.connection_send_window == 0
    third = pair.gateway.open_stream(HEAD)
    with pytest.raises(FlowControlError, match="bytes of credit"):
        pair.gateway.send_data(third, b"c")


def test_send_data_keeps_its_own_copy_of_a_mutable_buffer() -> None:
    pair = small_pair()
    sid = pair.gateway.open_stream(HEAD)
    buffer = bytearray(b"original")
    pair.gateway.send_data(sid, buffer)
    buffer[:] = b"MUTATED!"
    pair.flush()
    (event,) = pair.events_of("connector", DataReceived)
    assert isinstance(event, DataReceived) and event.data == b"original"


def test_acknowledging_byte_by_byte_returns_the_credit() -> None:
    pair = small_pair()
    sid = pair.gateway.open_stream(HEAD)
    pair.gateway.send_data(sid, b"x" * 2048)
    pair.flush()
    for _ in range(2048):
        pair.connector.acknowledge_received_data(stream_id=sid, acknowledged_size=1)
    pair.flush()
    assert WindowUpdated(stream_id=sid, delta=2048) in pair.events_of("gateway", WindowUpdated)


def test_acknowledging_after_the_close_sends_nothing() -> None:
    pair = small_pair()
    sid = pair.gateway.open_stream(HEAD)
    pair.gateway.send_data(sid, b"x" * 4096)
    pair.flush()
    pair.connector.goaway(ErrorCode.INTERNAL_ERROR)
    pair.connector.data_to_send()
    pair.connector.acknowledge_received_data(stream_id=sid, acknowledged_size=4096)
    assert pair.connector.data_to_send() == b""


# ---------------------------------------------------------------- closing paths


def test_goaway_before_start_closes_quietly_with_its_own_code_and_reason() -> None:
    connector = ConnectorConnection(hello=make_hello())
    connector.goaway(ErrorCode.INTERNAL_ERROR, "never started")
    assert connector.state is ConnectionState.CLOSED and connector.data_to_send() == b""
    assert connector.next_event() == ConnectionTerminated(code=ErrorCode.INTERNAL_ERROR,
                                                          reason="never started", remote=False)


@pytest.mark.parametrize("code", [ErrorCode.NO_ERROR, ErrorCode.INTERNAL_ERROR])
def test_goaway_during_the_handshake_closes_at_once(code: ErrorCode) -> None:
    gateway = GatewayConnection()
    gateway.start(0.0)
    gateway.goaway(code, "bye")
    assert gateway.state is ConnectionState.CLOSED
    assert gateway.next_event() == ConnectionTerminated(code=code, reason="bye", remote=False)
    (frame,) = decode_frames(gateway.data_to_send())
    assert frame == Frame(FrameType.GOAWAY, 0, 0, u32(0) + u32(code) + b"bye")


def test_an_error_goaway_is_a_local_end() -> None:
    pair = small_pair()
    pair.gateway.goaway(ErrorCode.INTERNAL_ERROR, "oops")
    pair.drain_events()
    assert pair.gateway_events[-1] == ConnectionTerminated(code=ErrorCode.INTERNAL_ERROR,
                                                           reason="oops", remote=False)


def test_a_drain_both_ends_asked_for_ends_locally_at_both() -> None:
    pair = small_pair()
    sid = pair.gateway.open_stream(HEAD)
    pair.gateway.end_stream(sid)
    pair.flush()
    pair.gateway.goaway(reason="g")
    pair.connector.goaway(reason="c")
    pair.flush()  # both sent and both received a GOAWAY; the stream keeps them draining
    pair.connector.send_response(sid, 204)
    pair.connector.end_stream(sid)
    pair.connector.report_usage(sid, input_tokens=1, output_tokens=0)
    pair.flush()
    assert pair.gateway_events[-1] == ConnectionTerminated(code=ErrorCode.NO_ERROR,
                                                           reason="drained", remote=False)
    assert pair.connector_events[-1] == ConnectionTerminated(code=ErrorCode.NO_ERROR,
                                                             reason="drained", remote=False)


def test_a_goaway_reason_cut_inside_a_character_is_cut_before_it() -> None:
    gateway = GatewayConnection(Config(max_goaway_reason=4))
    gateway.start(0.0)
    gateway.goaway(reason="abcé")  # é is 2 bytes: the 4-byte cut falls inside it
    assert gateway.next_event() == ConnectionTerminated(code=ErrorCode.NO_ERROR, reason="abc",
                                                        remote=False)


def test_reject_and_rejected_send_only_the_reject() -> None:
    gateway = GatewayConnection()
    connector = ConnectorConnection(hello=make_hello())
    connector.start(0.0)
    gateway.receive_data(connector.data_to_send(), 0.0)
    gateway.reject(RejectReason.REVOKED)
    (frame,) = decode_frames(gateway.data_to_send())
    assert frame.type is FrameType.REJECT and frame.flags == 0
    assert payloads.decode_reject(frame.payload) == Reject(reason=RejectReason.REVOKED,
                                                          retryable=False, message="")
    connector.receive_data(frame.encode(), 0.0)
    assert connector.state is ConnectionState.CLOSED
    assert connector.data_to_send() == b""  # no GOAWAY after a REJECT
    other = GatewayConnection()
    other.receive_data(encode_frame(FrameType.HELLO, 0, 0, payloads.encode_hello(
        make_hello(), Settings())), 0.0)
    with pytest.raises(LocalProtocolError, match="RejectReason"):
        other.reject("revoked")  # type: ignore[arg-type]
    assert other.state is ConnectionState.AWAITING_VERDICT


# ---------------------------------------------------------------- limits and values


def test_settings_may_be_set_back_to_the_welcome_value() -> None:
    pair = small_pair()
    pair.connector.update_settings(max_concurrent_streams=4)  # the WELCOME value itself
    pair.flush()
    (changed,) = pair.events_of("gateway", SettingsChanged)
    assert isinstance(changed, SettingsChanged) and changed.settings.max_concurrent_streams == 4


def test_streams_at_the_connectors_last_stream_id_still_owe_their_report() -> None:
    pair = small_pair()
    first = pair.gateway.open_stream(HEAD)
    pair.flush()
    pair.gateway.reset_stream(first, ResetCode.CLIENT_GONE)
    pair.gateway.data_to_send()
    goaway = encode_frame(FrameType.GOAWAY, 0, 0, u32(first) + u32(0))  # it processed `first`
    pair.gateway.receive_data(goaway, 0.0)
    assert pair.gateway.state is ConnectionState.DRAINING  # waits for the usage of `first`


def test_reject_values_at_their_limits() -> None:
    Reject(reason=RejectReason.OVERLOADED, retryable=True, message="m" * 1024, retry_after=0.0)
    Reject(reason=RejectReason.OVERLOADED, retryable=True, retry_after=0.5)
    with pytest.raises(LocalProtocolError):
        Reject(reason=RejectReason.OVERLOADED, retryable=True, message="m" * 1025)
    decoded = payloads.decode_reject(b'{"reason": "overloaded", "message": "' + b"m" * 1024
                                     + b'"}')
    assert decoded.retryable is True and len(decoded.message) == 1024  # missing: retryable
    with pytest.raises(LocalProtocolError):
        payloads.decode_reject(b'{"reason": "overloaded", "message": "' + b"m" * 1025 + b'"}')


def test_reprs_name_their_class_and_secrets_hash_by_value() -> None:
    assert repr(GatewayConnection()).startswith("<GatewayConnection state=AWAITING_HELLO")
    assert repr(RemoteProtocolError("m", code=ErrorCode.TIMEOUT)) == (
        "RemoteProtocolError('m', code=TIMEOUT)")
    assert str(FlowControlError("too many bytes")) == "too many bytes"
    assert hash(Secret("a")) == hash(Secret("a")) != hash(Secret("b"))


def test_a_stream_reset_by_goaway_refusal_is_reported_as_remote() -> None:
    pair = small_pair()
    sid = pair.gateway.open_stream(HEAD)
    pair.gateway.receive_data(encode_frame(FrameType.GOAWAY, 0, 0, bytes(8)), 0.0)
    pair.drain_events()
    assert StreamReset(stream_id=sid, code=ResetCode.REFUSED, remote=True) in \
        pair.gateway_events


# ---------------------------------------------------------------- message packing


def test_messages_pack_whole_frames_up_to_exactly_the_limit() -> None:
    ping = encode_frame(FrameType.PING, 0, 0, bytes(8))  # 20 bytes; PONG answers are 20 too
    pair = Pair(gateway_config=Config(max_message_size=64))
    pair.handshake()
    pair.gateway.receive_data(ping * 5, 0.0)
    messages = pair.gateway.messages_to_send()
    assert [len(m) for m in messages] == [60, 40]  # 3 frames fit in 64, the rest follow
    pair2 = Pair(gateway_config=Config(max_message_size=80))
    pair2.handshake()
    pair2.gateway.receive_data(ping * 5, 0.0)
    assert [len(m) for m in pair2.gateway.messages_to_send()] == [80, 20]  # exactly the limit
    pair3 = Pair(gateway_config=Config(max_message_size=64))
    pair3.handshake()
    pair3.gateway.receive_data(ping * 6, 0.0)
    assert [len(m) for m in pair3.gateway.messages_to_send()] == [60, 60]  # each starts empty


def test_a_report_sent_while_the_request_still_flows_is_not_awaited_again() -> None:
    pair = small_pair()
    sid = pair.gateway.open_stream(HEAD)
    pair.flush()
    pair.connector.send_response(sid, 200)
    pair.connector.end_stream(sid)
    pair.connector.report_usage(sid, input_tokens=1, output_tokens=1)  # the stream is still open
    pair.flush()
    pair.gateway.goaway()
    pair.gateway.end_stream(sid)
    pair.flush()
    assert pair.gateway.state is pair.connector.state is ConnectionState.CLOSED


def test_acknowledged_credit_adds_to_what_is_left() -> None:
    pair = small_pair()  # connection window 8192, streams 4096
    first, second = pair.gateway.open_stream(HEAD), pair.gateway.open_stream(HEAD)
    pair.gateway.send_data(first, b"a" * 4096)
    pair.flush()
    pair.connector.acknowledge_received_data(stream_id=first, acknowledged_size=4096)
    pair.flush()  # the connection window had 4096 left: it is 8192 again, not 4096
    pair.gateway.send_data(first, b"b" * 4096)
    pair.gateway.send_data(second, b"c" * 4096)
    pair.flush()
    assert pair.connector.state is ConnectionState.OPEN
    assert sum(len(e.data) for e in pair.events_of("connector", DataReceived)) == 3 * 4096  # type: ignore[attr-defined]


def test_heads_and_reports_of_exactly_max_header_block_size() -> None:
    pair = Pair(gateway_config=Config(settings=Settings(max_header_block_size=1024)),
                connector_config=Config(settings=Settings(max_header_block_size=1024)))
    pair.handshake()
    sid = pair.gateway.open_stream(HEAD)
    pair.flush()
    base = len(payloads.encode_response_head(payloads.ResponseHead(status=200, headers=(
        ("x", ""),))))
    headers = (("x", "v" * (1024 - base)),)
    assert len(payloads.encode_response_head(payloads.ResponseHead(status=200,
                                                                   headers=headers))) == 1024
    pair.connector.send_response(sid, 200, headers)  # exactly the limit: sent
    pair.flush()
    assert pair.gateway.stream_state(sid).name == "RESPONDING"  # and accepted
    from tokios_proto import DeploymentHealth, HealthReport
    from tokios_proto._reports import encode_report

    def health(last: int) -> list[DeploymentHealth]:
        models = ("m" * 200,) * 4 + ("m" * last,)
        return [DeploymentHealth(name="llama", healthy=True, models=models)]

    last = next(n for n in range(257)
                if len(encode_report(HealthReport(deployments=tuple(health(n))))) == 1024)
    pair.connector.report_health(health(last))  # exactly the limit: sent and accepted
    pair.flush()
    assert pair.gateway.state is ConnectionState.OPEN


# ---------------------------------------------------------------- configuration bounds

KIB, MIB = 1024, 1024 * 1024


@pytest.mark.parametrize(("field", "lowest", "highest"), [
    ("handshake_timeout", 0.001, None),
    ("max_handshake_size", KIB, MIB),
    ("max_pending_control_frames", 1, None),
    ("max_pending_events", 16, None),
    ("max_outstanding_pings", 1, None),
    ("max_goaway_reason", 0, 64 * KIB),
    ("max_message_size", 64, None),
    ("max_unreported_streams", 1, None),
])
def test_each_limit_takes_its_bounds_and_refuses_beyond(field: str, lowest: float,
                                                        highest: int | None) -> None:
    Config(**{field: lowest})
    below = 0.0 if isinstance(lowest, float) else lowest - 1
    with pytest.raises(LocalProtocolError, match=field.split("_", 1)[1]):
        Config(**{field: below})
    if highest is not None:
        Config(**{field: highest})
        with pytest.raises(LocalProtocolError):
            Config(**{field: highest + 1})


def test_versions_and_stream_limits_span_u31() -> None:
    Config(versions=(1, 2**31 - 1))
    for bad in ((0,), (2**31,), ()):
        with pytest.raises(LocalProtocolError, match="versions"):
            Config(versions=bad)
    with pytest.raises(LocalProtocolError, match="settings"):
        Config(settings="fast")  # type: ignore[arg-type]
    assert payloads.decode_settings_update(b'{"max_concurrent_streams": 2147483647}') == MAX
    for bad in (b"0", b"2147483648", b"true", b"1.0"):
        with pytest.raises(LocalProtocolError, match="max_concurrent_streams"):
            payloads.decode_settings_update(b'{"max_concurrent_streams": ' + bad + b"}")


def test_health_names_and_the_deployments_container() -> None:
    from tokios_proto import DeploymentHealth, HealthReport

    DeploymentHealth(name="n" * 256, healthy=True)
    with pytest.raises(LocalProtocolError, match="deployment name"):
        DeploymentHealth(name="n" * 257, healthy=True)
    with pytest.raises(LocalProtocolError, match="tuple of DeploymentHealth"):
        HealthReport(deployments=[DeploymentHealth(name="a", healthy=True)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cannot be pickled"):
        Secret("s").__reduce__()
