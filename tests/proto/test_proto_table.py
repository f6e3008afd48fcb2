"""Exhaustive (state x input) tests, h2-style: every combination either follows the transition
table or ends in the documented error, never anything else."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.proto.pair import Pair, make_hello
from tokios_proto import (
    Config,
    ConnectionState,
    ConnectorConnection,
    FrameFlag,
    FrameType,
    GatewayConnection,
    LocalProtocolError,
    RejectReason,
    RemoteProtocolError,
    RequestHead,
    ResetCode,
    Settings,
    StreamReset,
    StreamState,
    UsageReport,
    encode_frame,
)
from tokios_proto import _payloads as payloads
from tokios_proto._reports import encode_report
from tokios_proto._state import (
    CONNECTION_TRANSITIONS,
    STREAM_TRANSITIONS,
    ConnectionInput,
    StreamInput,
)

HEAD = RequestHead(method="GET", path="/")
Conn = GatewayConnection | ConnectorConnection


def reach(role: str, state: ConnectionState) -> tuple[Pair, Conn]:
    """A pair whose ``role`` end is in ``state`` (with stream 1 open when OPEN/DRAINING)."""
    pair = Pair()
    conn: Conn = pair.gateway if role == "gateway" else pair.connector
    if state in (ConnectionState.IDLE, ConnectionState.AWAITING_HELLO):
        return pair, conn
    pair.connector.start(0.0)
    if state is ConnectionState.HELLO_SENT:
        pair.connector.data_to_send()
        return pair, conn
    pair.flush()
    if state is ConnectionState.AWAITING_VERDICT:
        return pair, conn
    if state is ConnectionState.CLOSED:
        pair.gateway.reject(RejectReason.INTERNAL)
        pair.flush()
        return pair, conn
    pair.gateway.accept("s", ("llama",), 0.0)
    pair.flush()
    pair.gateway.open_stream(HEAD)
    pair.flush()
    if state is ConnectionState.DRAINING:
        conn.goaway()
        pair.flush()
    return pair, conn


ROLE_STATES = [("gateway", s) for s in (ConnectionState.AWAITING_HELLO,
                                        ConnectionState.AWAITING_VERDICT, ConnectionState.OPEN,
                                        ConnectionState.DRAINING, ConnectionState.CLOSED)] + \
              [("connector", s) for s in (ConnectionState.IDLE, ConnectionState.HELLO_SENT,
                                          ConnectionState.OPEN, ConnectionState.DRAINING,
                                          ConnectionState.CLOSED)]

WELCOME = payloads.encode_welcome(payloads.Welcome(version=1, session_id="s", deployments=(),
                                                   settings=Settings()))
FRAMES: dict[FrameType, tuple[ConnectionInput, bytes]] = {
    FrameType.HELLO: (ConnectionInput.RECV_HELLO, encode_frame(
        FrameType.HELLO, 0, 0, payloads.encode_hello(make_hello(), Settings()))),
    FrameType.WELCOME: (ConnectionInput.RECV_WELCOME, encode_frame(FrameType.WELCOME, 0, 0,
                                                                   WELCOME)),
    FrameType.REJECT: (ConnectionInput.RECV_REJECT, encode_frame(
        FrameType.REJECT, 0, 0, b'{"reason": "revoked", "retryable": false}')),
    FrameType.SETTINGS: (ConnectionInput.RECV_FRAME, encode_frame(
        FrameType.SETTINGS, 0, 0, b'{"max_concurrent_streams": 1}')),
    FrameType.OPEN: (ConnectionInput.RECV_FRAME, encode_frame(FrameType.OPEN, 0, 3,
                                                              b'{"method": "GET"}')),
    FrameType.RESPONSE: (ConnectionInput.RECV_FRAME, encode_frame(FrameType.RESPONSE, 0, 1,
                                                                  b'{"status": 200}')),
    FrameType.DATA: (ConnectionInput.RECV_FRAME, encode_frame(FrameType.DATA, 0, 1, b"")),
    FrameType.RESET: (ConnectionInput.RECV_FRAME, encode_frame(FrameType.RESET, 0, 1,
                                                               b"\0\0\0\1")),
    FrameType.WINDOW_UPDATE: (ConnectionInput.RECV_FRAME, encode_frame(
        FrameType.WINDOW_UPDATE, 0, 0, b"\0\0\0\1")),
    FrameType.PING: (ConnectionInput.RECV_FRAME, encode_frame(FrameType.PING, 0, 0, bytes(8))),
    FrameType.PONG: (ConnectionInput.RECV_FRAME, encode_frame(FrameType.PONG, 0, 0, bytes(8))),
    FrameType.GOAWAY: (ConnectionInput.RECV_GOAWAY, encode_frame(FrameType.GOAWAY, 0, 0,
                                                                 bytes(8))),
    FrameType.REPORT: (ConnectionInput.RECV_FRAME, encode_frame(
        FrameType.REPORT, 0, 0,
        encode_report(UsageReport(stream_id=1, input_tokens=3, output_tokens=4)))),
}


#: The frame types each role may receive (the rest come only from it: a wrong-direction frame
#: is a connection error wherever it arrives). Every sample frame in FRAMES is well-formed and
#: valid for the streams reach() sets up, so only the table and the direction decide.
RECEIVES = {
    "gateway": {FrameType.HELLO, FrameType.SETTINGS, FrameType.RESPONSE, FrameType.REPORT},
    "connector": {FrameType.WELCOME, FrameType.REJECT, FrameType.OPEN},
}
for _role in RECEIVES.values():
    _role |= {FrameType.DATA, FrameType.RESET, FrameType.WINDOW_UPDATE, FrameType.PING,
              FrameType.PONG, FrameType.GOAWAY}


@pytest.mark.parametrize(("role", "state"), ROLE_STATES)
@pytest.mark.parametrize("frame_type", list(FrameType))
def test_every_frame_in_every_connection_state(role: str, state: ConnectionState,
                                               frame_type: FrameType) -> None:
    _pair, conn = reach(role, state)
    assert conn.state is state
    inp, frame = FRAMES[frame_type]
    if state is ConnectionState.IDLE:
        with pytest.raises(LocalProtocolError):
            conn.receive_data(frame, 0.0)
        return
    if state is ConnectionState.CLOSED:
        conn.receive_data(frame, 0.0)  # ignored after a clean close
        assert conn.next_event() is None and conn.data_to_send() == b""
        return
    expected = CONNECTION_TRANSITIONS.get((state, inp))
    allowed = expected is not None and frame_type in RECEIVES[role]
    try:
        conn.receive_data(frame, 0.0)
    except RemoteProtocolError:
        assert conn.state is ConnectionState.CLOSED
        # whatever raises must be forbidden by the table or sent in the wrong direction
        assert not allowed, f"{frame_type.name} refused in {state.name} though the table allows it"
        return
    assert allowed, f"{frame_type.name} accepted in {state.name}"
    assert conn.state in (expected, ConnectionState.CLOSED)


COMMANDS: dict[str, tuple[ConnectionInput, Callable[[Conn], object]]] = {
    "start": (ConnectionInput.START, lambda c: c.start(0.0)),
    "accept": (ConnectionInput.ACCEPT, lambda c: c.accept("s", (), 0.0)),  # type: ignore[union-attr]
    "reject": (ConnectionInput.REJECT, lambda c: c.reject(RejectReason.INTERNAL)),  # type: ignore[union-attr]
    "open_stream": (ConnectionInput.SEND_FRAME, lambda c: c.open_stream(HEAD)),  # type: ignore[union-attr]
    "send_data": (ConnectionInput.SEND_FRAME, lambda c: c.send_data(1, b"")),
    "reset_stream": (ConnectionInput.SEND_FRAME, lambda c: c.reset_stream(1)),
    "ping": (ConnectionInput.SEND_FRAME, lambda c: c.ping(0.0)),
    "update_settings": (ConnectionInput.SEND_FRAME,
                        lambda c: c.update_settings(max_concurrent_streams=1)),  # type: ignore[union-attr]
    "goaway": (ConnectionInput.SEND_GOAWAY, lambda c: c.goaway()),
    "report_health": (ConnectionInput.SEND_FRAME, lambda c: c.report_health([])),  # type: ignore[union-attr]
    "report_usage": (ConnectionInput.SEND_FRAME,
                     lambda c: c.report_usage(1, input_tokens=1, output_tokens=1)),  # type: ignore[union-attr]
}


@pytest.mark.parametrize(("role", "state"), ROLE_STATES)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_in_every_connection_state(role: str, state: ConnectionState,
                                                 command: str) -> None:
    _pair, conn = reach(role, state)
    inp, call = COMMANDS[command]
    if not hasattr(conn, command):
        return  # not this role's command
    expected = CONNECTION_TRANSITIONS.get((state, inp))
    if command == "start" and role == "gateway":
        expected = state  # the gateway's start only arms the deadline
    # the only refusals the connection table does not decide: stream rules (the connector may
    # not send body bytes before its response head, nor report the usage of a stream still
    # answering) and no new stream once draining
    stream_rule = ((role, command) in (("connector", "send_data"), ("connector", "report_usage"))
                   or (command == "open_stream" and state is ConnectionState.DRAINING))
    allowed = expected is not None and not stream_rule
    try:
        call(conn)
    except LocalProtocolError:
        assert conn.state is state, "a refused command must not change the state"
        assert not allowed, f"{command} refused in {state.name} though the table allows it"
        return
    assert allowed, f"{command} allowed in {state.name}"
    assert conn.state in (expected, ConnectionState.CLOSED)


def test_connection_table_covers_every_state() -> None:
    sources = {state for state, _ in CONNECTION_TRANSITIONS}
    assert sources == set(ConnectionState) - {ConnectionState.CLOSED}
    assert not any(state is ConnectionState.CLOSED for state, _ in CONNECTION_TRANSITIONS)


# ---------------------------------------------------------------- streams

SMALL = Config(settings=Settings(max_frame_size=1024))


def stream_in(state: StreamState) -> Pair:
    """A pair with stream 1 in ``state`` at both ends."""
    pair = Pair(gateway_config=SMALL, connector_config=SMALL)
    pair.handshake()
    sid = pair.gateway.open_stream(HEAD)
    pair.flush()
    if state in (StreamState.REQUEST_DONE, StreamState.REQUEST_DONE_RESPONDING):
        pair.gateway.end_stream(sid)
    if state in (StreamState.RESPONDING, StreamState.REQUEST_DONE_RESPONDING,
                 StreamState.RESPONSE_DONE):
        pair.connector.send_response(sid, 200)
    if state is StreamState.RESPONSE_DONE:
        pair.connector.end_stream(sid)
    if state is StreamState.CLOSED:
        pair.gateway.reset_stream(sid)
    pair.flush()
    assert pair.gateway.stream_state(sid) is pair.connector.stream_state(sid) is state
    return pair


SEND: dict[StreamInput, tuple[str, Callable[[Conn], object]]] = {
    StreamInput.REQUEST_DATA: ("gateway", lambda c: c.send_data(1, b"x")),
    StreamInput.REQUEST_END: ("gateway", lambda c: c.end_stream(1)),
    StreamInput.RESPONSE_HEAD: ("connector", lambda c: c.send_response(1, 200)),  # type: ignore[union-attr]
    StreamInput.RESPONSE_DATA: ("connector", lambda c: c.send_data(1, b"x")),
    StreamInput.RESPONSE_END: ("connector", lambda c: c.end_stream(1)),
}
RECEIVE: dict[StreamInput, tuple[str, bytes]] = {
    StreamInput.REQUEST_DATA: ("connector", encode_frame(FrameType.DATA, 0, 1, b"x")),
    StreamInput.REQUEST_END: ("connector", encode_frame(FrameType.DATA, FrameFlag.END_STREAM, 1)),
    StreamInput.RESPONSE_HEAD: ("gateway", encode_frame(FrameType.RESPONSE, 0, 1,
                                                        b'{"status": 200}')),
    StreamInput.RESPONSE_DATA: ("gateway", encode_frame(FrameType.DATA, 0, 1, b"x")),
    StreamInput.RESPONSE_END: ("gateway", encode_frame(FrameType.DATA, FrameFlag.END_STREAM, 1)),
}
LIVE_STATES = [s for s in StreamState if s is not StreamState.IDLE]


@pytest.mark.parametrize("state", LIVE_STATES)
@pytest.mark.parametrize("inp", list(SEND))
def test_every_stream_command_in_every_stream_state(state: StreamState,
                                                    inp: StreamInput) -> None:
    pair = stream_in(state)
    role, call = SEND[inp]
    conn: Conn = pair.gateway if role == "gateway" else pair.connector
    expected = STREAM_TRANSITIONS.get((state, inp))
    if expected is None:
        with pytest.raises(LocalProtocolError):
            call(conn)
        assert conn.stream_state(1) is state
        return
    call(conn)
    assert conn.stream_state(1) is expected
    pair.flush()
    other = pair.connector if role == "gateway" else pair.gateway
    assert other.stream_state(1) is expected  # the peer agrees
    assert conn.state is ConnectionState.OPEN


@pytest.mark.parametrize("state", LIVE_STATES)
@pytest.mark.parametrize("inp", list(RECEIVE))
def test_every_stream_frame_in_every_stream_state(state: StreamState, inp: StreamInput) -> None:
    pair = stream_in(state)
    role, frame = RECEIVE[inp]
    conn: Conn = pair.gateway if role == "gateway" else pair.connector
    expected = STREAM_TRANSITIONS.get((state, inp))
    conn.receive_data(frame, 0.0)
    events = []
    while (event := conn.next_event()) is not None:
        events.append(event)
    assert conn.state is ConnectionState.OPEN  # a stream problem never kills the connection
    if state is StreamState.CLOSED:
        assert events == []  # discarded
        return
    if expected is None:
        assert isinstance(events[-1], StreamReset) and not events[-1].remote
        assert events[-1].code in (ResetCode.PROTOCOL_ERROR, ResetCode.STREAM_CLOSED)
        assert conn.stream_state(1) is StreamState.CLOSED
    else:
        assert conn.stream_state(1) is expected
        assert not any(isinstance(e, StreamReset) for e in events)


@pytest.mark.parametrize("state", LIVE_STATES)
@pytest.mark.parametrize("role", ["gateway", "connector"])
def test_reset_in_every_stream_state(state: StreamState, role: str) -> None:
    pair = stream_in(state)
    conn: Conn = pair.gateway if role == "gateway" else pair.connector
    conn.reset_stream(1, ResetCode.TIMED_OUT)
    assert conn.stream_state(1) is StreamState.CLOSED
    pair.flush()
    other = pair.connector if role == "gateway" else pair.gateway
    assert other.stream_state(1) is StreamState.CLOSED
    resets = pair.events_of("connector" if role == "gateway" else "gateway", StreamReset)
    if state is StreamState.CLOSED:
        setup = [StreamReset(stream_id=1, code=ResetCode.CANCELLED)]  # the gateway's, in setup
        assert resets == (setup if role == "gateway" else [])  # and nothing new: a no-op
    else:
        assert resets == [StreamReset(stream_id=1, code=ResetCode.TIMED_OUT)]
