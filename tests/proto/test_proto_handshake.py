"""Handshake: HELLO, verdict, WELCOME / REJECT, version negotiation, deadlines, secrets."""

from __future__ import annotations

import orjson
import pytest

from tests.proto.pair import CREDENTIAL, Pair, make_hello
from tokios_proto import (
    Accepted,
    Config,
    ConnectionState,
    ConnectionTerminated,
    ConnectorConnection,
    ErrorCode,
    FrameType,
    GatewayConnection,
    GoAwayReceived,
    HelloReceived,
    LocalProtocolError,
    ProtocolError,
    Rejected,
    RejectReason,
    RemoteProtocolError,
    Settings,
    decode_frames,
    encode_frame,
)
from tokios_proto import _payloads as payloads


def test_full_handshake_negotiates_minimum_settings() -> None:
    gateway_settings = Settings(max_concurrent_streams=10, initial_stream_window=2**20,
                                heartbeat_interval=20.0, idle_timeout=60.0)
    connector_settings = Settings(max_concurrent_streams=50, max_frame_size=16384,
                                  heartbeat_interval=10.0, idle_timeout=30.0)
    pair = Pair(gateway_config=Config(settings=gateway_settings),
                connector_config=Config(settings=connector_settings))
    pair.handshake(deployments=("llama", "qwen"))
    (hello_event,) = pair.events_of("gateway", HelloReceived)
    assert isinstance(hello_event, HelloReceived)
    assert hello_event.hello.credential.reveal() == CREDENTIAL
    assert hello_event.version == 2
    (accepted,) = pair.events_of("connector", Accepted)
    assert isinstance(accepted, Accepted)
    assert accepted.session_id == "sess-1" and accepted.deployments == ("llama", "qwen")
    expected = Settings(max_concurrent_streams=10, initial_stream_window=2**20,
                        max_frame_size=16384, heartbeat_interval=10.0, idle_timeout=30.0)
    assert accepted.settings == expected
    assert pair.gateway.settings == pair.connector.settings == expected
    assert pair.gateway.state is pair.connector.state is ConnectionState.OPEN


def test_a_gateway_node_names_itself_in_welcome() -> None:
    pair = Pair()
    pair.handshake(node_id="node-a")
    (accepted,) = pair.events_of("connector", Accepted)
    assert isinstance(accepted, Accepted) and accepted.node_id == "node-a"
    lone = Pair()
    lone.handshake()
    (accepted,) = lone.events_of("connector", Accepted)
    assert isinstance(accepted, Accepted) and accepted.node_id == ""


def test_accept_refuses_a_node_id_too_long_and_stays_undecided() -> None:
    pair = Pair()
    pair.connector.start(0.0)
    pair.flush()
    with pytest.raises(LocalProtocolError, match="node_id"):
        pair.gateway.accept("s", ("llama",), 0.0, node_id="n" * 65)
    assert pair.gateway.state is ConnectionState.AWAITING_VERDICT


def test_heartbeat_is_capped_at_half_the_idle_timeout() -> None:
    caps = Settings(heartbeat_interval=30.0, idle_timeout=40.0)
    assert caps.negotiate(Settings(heartbeat_interval=25.0, idle_timeout=35.0)) == Settings(
        heartbeat_interval=17.5, idle_timeout=35.0)


def test_secret_never_appears_in_events_or_errors() -> None:
    pair = Pair()
    pair.handshake()
    for event in pair.gateway_events + pair.connector_events:
        assert CREDENTIAL not in repr(event) and CREDENTIAL not in str(event)
    assert CREDENTIAL not in repr(pair.gateway) + repr(pair.connector)
    gateway = GatewayConnection()
    obj = orjson.loads(payloads.encode_hello(make_hello(), Settings()))
    obj["versions"] = "bad"
    with pytest.raises(RemoteProtocolError) as info:
        gateway.receive_data(encode_frame(FrameType.HELLO, 0, 0, orjson.dumps(obj)), 0.0)
    assert CREDENTIAL not in str(info.value) + repr(info.value)
    event = gateway.next_event()
    assert isinstance(event, ConnectionTerminated)
    assert CREDENTIAL not in repr(event)


@pytest.mark.parametrize(("reason", "retryable"), [
    (RejectReason.BAD_CREDENTIAL, False), (RejectReason.REVOKED, False),
    (RejectReason.DEPLOYMENT_NOT_ALLOWED, False), (RejectReason.OVERLOADED, True),
    (RejectReason.INTERNAL, True),
])
def test_reject_carries_reason_and_default_retryability(reason: RejectReason,
                                                        retryable: bool) -> None:
    pair = Pair()
    pair.gateway.start(0.0)
    pair.connector.start(0.0)
    pair.flush()
    pair.gateway.reject(reason, "no entry", retry_after=5 if retryable else None)
    assert pair.gateway.state is ConnectionState.CLOSED
    pair.flush()
    (rejected,) = pair.events_of("connector", Rejected)
    assert rejected == Rejected(reason=reason, retryable=retryable, message="no entry",
                                retry_after=5.0 if retryable else None)
    assert pair.connector.state is ConnectionState.CLOSED
    assert pair.connector_events[-1] == ConnectionTerminated(
        code=ErrorCode.REJECTED, reason=reason.value, remote=True)
    assert pair.gateway_events[-1] == ConnectionTerminated(
        code=ErrorCode.REJECTED, reason=reason.value, remote=False)


def test_reject_retryable_can_be_overridden() -> None:
    pair = Pair()
    pair.connector.start(0.0)
    pair.flush()
    pair.gateway.reject(RejectReason.OVERLOADED, retryable=False)
    pair.flush()
    (rejected,) = pair.events_of("connector", Rejected)
    assert isinstance(rejected, Rejected) and rejected.retryable is False


def test_version_negotiation_picks_the_highest_common_version() -> None:
    pair = Pair(gateway_config=Config(versions=(1, 2, 3)),
                connector_config=Config(versions=(1, 2, 4)),
                hello=make_hello(versions=(1, 2, 4)))
    pair.connector.start(0.0)
    pair.flush()
    (event,) = pair.events_of("gateway", HelloReceived)
    assert isinstance(event, HelloReceived) and event.version == 2
    pair.gateway.accept("s", (), 0.0)
    pair.flush()
    (accepted,) = pair.events_of("connector", Accepted)
    assert isinstance(accepted, Accepted) and accepted.version == 2


def test_no_common_version_is_rejected_by_the_core() -> None:
    pair = Pair(connector_config=Config(versions=(7,)), hello=make_hello(versions=(7,)))
    pair.connector.start(0.0)
    pair.flush()
    assert not pair.events_of("gateway", HelloReceived)
    (rejected,) = pair.events_of("connector", Rejected)
    assert isinstance(rejected, Rejected)
    assert rejected.reason is RejectReason.UNSUPPORTED_VERSION and not rejected.retryable
    assert pair.gateway.state is ConnectionState.CLOSED


def test_connector_hello_versions_must_be_spoken() -> None:
    with pytest.raises(LocalProtocolError):
        ConnectorConnection(hello=make_hello(versions=(9,)))
    with pytest.raises(LocalProtocolError):
        ConnectorConnection(hello="hello")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        GatewayConnection(config="x")  # type: ignore[arg-type]


def test_accept_validates_granted_deployments_and_state() -> None:
    pair = Pair()
    with pytest.raises(LocalProtocolError):
        pair.gateway.accept("s", (), 0.0)
    pair.connector.start(0.0)
    pair.flush()
    with pytest.raises(LocalProtocolError, match="offered"):
        pair.gateway.accept("s", ("not-offered",), 0.0)
    with pytest.raises(LocalProtocolError):
        pair.gateway.accept("", ("llama",), 0.0)
    assert pair.gateway.state is ConnectionState.AWAITING_VERDICT
    pair.gateway.accept("s", ("llama",), 0.0)
    with pytest.raises(LocalProtocolError):
        pair.gateway.reject(RejectReason.INTERNAL)
    with pytest.raises(LocalProtocolError):
        pair.connector.start(0.0)


def test_connector_needs_start_before_receiving() -> None:
    connector = ConnectorConnection(hello=make_hello())
    assert connector.state is ConnectionState.IDLE and connector.get_timer() is None
    with pytest.raises(LocalProtocolError):
        connector.receive_data(b"", 0.0)


def test_handshake_deadline_on_both_sides() -> None:
    pair = Pair(gateway_config=Config(handshake_timeout=5.0),
                connector_config=Config(handshake_timeout=8.0))
    pair.gateway.start(1.0)
    pair.connector.start(1.0)
    assert pair.gateway.get_timer() == 6.0 and pair.connector.get_timer() == 9.0
    pair.gateway.handle_timer(5.9)  # early: no-op
    assert pair.gateway.state is ConnectionState.AWAITING_HELLO
    pair.now = 6.0
    pair.gateway.handle_timer(6.0)
    assert pair.gateway.state is ConnectionState.CLOSED
    assert pair.gateway.next_event() == ConnectionTerminated(
        code=ErrorCode.TIMEOUT, reason="handshake timed out", remote=False)
    (goaway,) = decode_frames(pair.gateway.data_to_send())
    assert goaway.type is FrameType.GOAWAY
    pair.connector.handle_timer(9.0)
    assert pair.connector.state is ConnectionState.CLOSED
    assert pair.gateway.get_timer() is None


def test_gateway_deadline_is_armed_by_first_data_and_covers_the_verdict() -> None:
    gateway = GatewayConnection(Config(handshake_timeout=3.0))
    connector = ConnectorConnection(hello=make_hello())
    connector.start(10.0)
    gateway.receive_data(connector.data_to_send(), 10.0)
    assert gateway.state is ConnectionState.AWAITING_VERDICT
    assert gateway.get_timer() == 13.0
    gateway.handle_timer(13.0)
    assert gateway.state is ConnectionState.CLOSED
    with pytest.raises(LocalProtocolError):
        gateway.accept("s", (), 13.0)


def test_hello_split_byte_by_byte() -> None:
    gateway = GatewayConnection()
    connector = ConnectorConnection(hello=make_hello())
    connector.start(0.0)
    raw = connector.data_to_send()
    for i in range(len(raw)):
        gateway.receive_data(raw[i:i + 1], 0.0)
    assert isinstance(gateway.next_event(), HelloReceived)


def open_gateway_with_raw_hello(payload: bytes) -> GatewayConnection:
    gateway = GatewayConnection()
    gateway.receive_data(encode_frame(FrameType.HELLO, 0, 0, payload), 0.0)
    return gateway


def hello_payload() -> bytes:
    return payloads.encode_hello(make_hello(), Settings())


@pytest.mark.parametrize("frame", [
    encode_frame(FrameType.HELLO, 0, 1, b"{}"),                    # HELLO on a stream
    encode_frame(FrameType.WELCOME, 0, 0, b"{}"),                  # wrong direction
    encode_frame(FrameType.REJECT, 0, 0, b"{}"),
    encode_frame(FrameType.OPEN, 0, 1, b"{}"),
    encode_frame(FrameType.PING, 0, 0, bytes(8)),                  # before the handshake
    encode_frame(FrameType.DATA, 0, 1, b""),
    encode_frame(FrameType.HELLO, 0, 0, b"{not json"),
    encode_frame(0x55, 0, 0, b""),                                 # unknown type
    encode_frame(FrameType.HELLO, 0, 0, b"x" * (64 * 1024 + 1)),   # oversized handshake
])
def test_gateway_rejects_bad_first_frames(frame: bytes) -> None:
    gateway = GatewayConnection()
    with pytest.raises(RemoteProtocolError) as info:
        gateway.receive_data(frame, 0.0)
    assert isinstance(info.value, ProtocolError)
    assert gateway.state is ConnectionState.CLOSED
    out = decode_frames(gateway.data_to_send())
    assert out[-1].type is FrameType.GOAWAY
    code = payloads.decode_goaway(out[-1].payload, 1024).code
    assert code == info.value.code
    with pytest.raises(RemoteProtocolError):  # sticky
        gateway.receive_data(b"", 1.0)


def test_unknown_ignorable_frame_is_skipped() -> None:
    gateway = GatewayConnection()
    gateway.receive_data(encode_frame(0x55, 0x8000, 0, b"future"), 0.0)
    assert gateway.state is ConnectionState.AWAITING_HELLO
    assert gateway.next_event() is None


def test_second_hello_is_a_protocol_error() -> None:
    gateway = open_gateway_with_raw_hello(hello_payload())
    with pytest.raises(RemoteProtocolError):
        gateway.receive_data(encode_frame(FrameType.HELLO, 0, 0, hello_payload()), 0.0)


def welcome_frame(**overrides: object) -> bytes:
    obj: dict[str, object] = {"version": 1, "session_id": "s", "deployments": ["llama"],
                              "settings": Settings().to_json()}
    obj.update(overrides)
    return encode_frame(FrameType.WELCOME, 0, 0, orjson.dumps(obj))


@pytest.mark.parametrize("frame", [
    welcome_frame(version=3),
    welcome_frame(deployments=["other"]),
    welcome_frame(settings={"max_frame_size": 2**20}),
    welcome_frame(settings={"heartbeat_interval": 1.0, "idle_timeout": 0.5}),
    encode_frame(FrameType.WELCOME, 0, 3, b"{}"),
    encode_frame(FrameType.HELLO, 0, 0, hello_payload()),
    encode_frame(FrameType.RESPONSE, 0, 1, b"{}"),
    encode_frame(FrameType.SETTINGS, 0, 0, b"{}"),
    encode_frame(FrameType.OPEN, 0, 1, b"{}"),
])
def test_connector_rejects_bad_handshake_replies(frame: bytes) -> None:
    connector = ConnectorConnection(hello=make_hello())
    connector.start(0.0)
    connector.data_to_send()
    with pytest.raises(RemoteProtocolError):
        connector.receive_data(frame, 0.0)
    assert connector.state is ConnectionState.CLOSED


def test_goaway_during_handshake_closes() -> None:
    pair = Pair()
    pair.connector.start(0.0)
    pair.flush()
    pair.gateway.goaway(reason="shutting down")
    pair.flush()
    assert pair.gateway.state is pair.connector.state is ConnectionState.CLOSED
    assert GoAwayReceived(last_stream_id=0, code=ErrorCode.NO_ERROR,
                          reason="shutting down") in pair.connector_events
    assert pair.connector_events[-1] == ConnectionTerminated(
        code=ErrorCode.NO_ERROR, reason="shutting down", remote=True)


def test_goaway_before_start_just_closes() -> None:
    connector = ConnectorConnection(hello=make_hello())
    connector.goaway()
    assert connector.state is ConnectionState.CLOSED
    assert connector.data_to_send() == b""
    connector.receive_data(b"ignored after a clean close", 0.0)
    with pytest.raises(LocalProtocolError):
        connector.goaway()


@pytest.mark.parametrize("kwargs", [
    {"heartbeat_interval": 0.0}, {"idle_timeout": 1.0, "heartbeat_interval": 2.0},
    {"max_concurrent_streams": 0}, {"initial_stream_window": 10},
    {"initial_connection_window": 2**31}, {"max_frame_size": 100},
    {"max_header_block_size": 2**21}, {"heartbeat_interval": float("nan")},
])
def test_settings_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        Settings(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [
    {"settings": {}}, {"versions": ()}, {"versions": (0,)}, {"handshake_timeout": -1.0},
    {"max_handshake_size": 10}, {"max_pending_control_frames": 0}, {"max_pending_events": 1},
    {"max_outstanding_pings": 0}, {"max_goaway_reason": -1}, {"max_message_size": 1},
])
def test_config_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        Config(**kwargs)  # type: ignore[arg-type]


def test_settings_wire_form() -> None:
    assert Settings.from_json({"heartbeat_interval": 5, "unknown": 1}).heartbeat_interval == 5.0
    with pytest.raises(LocalProtocolError):
        Settings.from_json({"max_frame_size": True})
    assert Settings().within(Settings()) and not Settings(max_frame_size=2**17).within(Settings())


def test_connection_base_is_abstract() -> None:
    from tokios_proto import Connection

    with pytest.raises(TypeError):
        Connection()


def test_protocol_error_is_abstract() -> None:
    with pytest.raises(TypeError):
        ProtocolError("x")
    assert "FRAME_SIZE_ERROR" in repr(RemoteProtocolError("m", code=ErrorCode.FRAME_SIZE_ERROR))
