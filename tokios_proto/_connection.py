"""The role-independent connection core: receive path, stream commands, flow control,
liveness and drain. :class:`GatewayConnection` and :class:`ConnectorConnection` add the
handshake and the role-specific frames.

Shell loop (aioquic style)::

    conn.receive_data(message, now)          # or handle_timer(now) when the timer fires
    while (event := conn.next_event()) is not None:
        dispatch(event)                      # may call commands (send_data, reset_stream)
    for message in conn.messages_to_send():
        websocket.send(message)
    arm_timer(conn.get_timer())
    if conn.state is ConnectionState.CLOSED: close the transport (after the writes)
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

from ._codes import ErrorCode, FrameFlag, FrameType, ResetCode
from ._config import MAX_WINDOW, REPORTS_VERSION, Config, Settings
from ._errors import FlowControlError, LocalProtocolError, ProtocolError, RemoteProtocolError
from ._events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    GoAwayReceived,
    HealthReported,
    PongReceived,
    StreamEnded,
    StreamReset,
    UsageReported,
    WindowUpdated,
)
from ._flow import ReceiveWindow
from ._frames import FrameReader, encode_frame
from ._payloads import GoAway, decode_goaway, decode_u32, encode_goaway, encode_u32
from ._state import (
    CONNECTION_TRANSITIONS,
    STREAM_TRANSITIONS,
    ConnectionInput,
    ConnectionState,
    StreamInput,
    StreamState,
)
from ._streams import Piece, Stream, produce_frames

__all__ = ["Connection"]

CS, CI, SI = ConnectionState, ConnectionInput, StreamInput
_PING = struct.Struct(">Q")
_HANDSHAKING = frozenset({CS.HELLO_SENT, CS.AWAITING_HELLO, CS.AWAITING_VERDICT})
_LIVE = frozenset({CS.OPEN, CS.DRAINING})
_REPORT_EVENTS = (UsageReported, HealthReported)

Handler = Callable[["Connection", int, int, memoryview], None]
_END_STREAM = int(FrameFlag.END_STREAM)  # plain ints: IntFlag operators are slow
_IGNORABLE = int(FrameFlag.IGNORABLE)


class _StreamError(Exception):
    """Internal: a peer broke a rule of one stream; reset only that stream."""

    def __init__(self, stream: Stream, code: ResetCode) -> None:
        super().__init__(code.name)
        self.stream = stream
        self.code = code


class Connection:
    """State shared by both roles. Do not instantiate: use a role subclass."""

    #: Stream inputs this role sends: OPEN/REQUEST_* (gateway) or RESPONSE_* (connector).
    _DATA_SENT: ClassVar[StreamInput]
    _END_SENT: ClassVar[StreamInput]
    _DATA_RECEIVED: ClassVar[StreamInput]
    _END_RECEIVED: ClassVar[StreamInput]
    _INITIAL_STATE: ClassVar[ConnectionState]
    #: Frame type -> name of the method that handles it (each role adds its own frames).
    _FRAME_METHODS: ClassVar[dict[int, str]] = {
        FrameType.DATA: "_on_data",
        FrameType.WINDOW_UPDATE: "_on_window_update",
        FrameType.RESET: "_on_reset",
        FrameType.PING: "_on_ping",
        FrameType.PONG: "_on_pong",
        FrameType.GOAWAY: "_on_goaway",
    }
    #: The same table resolved to functions once per class (not a dict of bound methods
    #: per connection: ~1.5 KB less per tunnel). Called as ``handler(self, flags, id, payload)``.
    _HANDLERS: ClassVar[dict[int, Handler]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._HANDLERS = {frame_type: getattr(cls, name)
                         for frame_type, name in cls._FRAME_METHODS.items()}

    def __init__(self, config: Config | None = None) -> None:
        if type(self) is Connection:
            raise TypeError("Connection is abstract: use GatewayConnection or ConnectorConnection")
        if config is not None and not isinstance(config, Config):
            raise LocalProtocolError("config must be a Config")
        self.config = config if config is not None else Config()
        self._state = self._INITIAL_STATE
        #: Negotiated settings (None until the handshake completes).
        self._settings: Settings | None = None
        self._reader = FrameReader(self.config.max_handshake_size)
        # Lists, not deques: an empty deque keeps a ~700-byte block, and a tunnel is idle
        # most of its life. next_event() reads from _events_head; produce_frames() takes all
        # of _control's front at once.
        self._events: list[Event] = []
        self._events_head = 0
        self._control: list[bytes] = []
        self._ready: deque[Stream] = deque()
        self._streams: dict[int, Stream] = {}
        self._highest_stream_id = 0
        self._send_window = 0
        self._recv = ReceiveWindow(MAX_WINDOW)
        self._now = 0.0
        self._deadline: float | None = None
        self._last_received = 0.0
        self._last_ping = float("-inf")
        self._pings: dict[bytes, float] = {}
        self._ping_counter = 0
        self._rtt: float | None = None
        self._goaway_sent = False
        self._goaway_received = False
        self._error: RemoteProtocolError | None = None
        #: Streams that may be open at once (WELCOME value, then SETTINGS; 0 before).
        self._max_streams = 0
        #: The negotiated protocol version (0 until the handshake chose one).
        self._version = 0
        #: Deployments granted in WELCOME.
        self._granted: tuple[str, ...] = ()
        #: Version 2: closed streams whose usage report is still awaited (oldest first).
        self._unreported: dict[int, None] = {}
        #: Bytes of REPORT payloads whose events are not yet taken, and each one's size.
        self._report_bytes = 0
        self._report_sizes: list[int] = []

    # ------------------------------------------------------------------ properties

    @property
    def state(self) -> ConnectionState:
        """The :class:`ConnectionState`; ``CLOSED`` means flush output and close."""
        return self._state

    @property
    def settings(self) -> Settings | None:
        """The negotiated :class:`Settings`, or None before the handshake completes."""
        return self._settings

    @property
    def rtt(self) -> float | None:
        """The last round-trip time measured by PING/PONG, in seconds."""
        return self._rtt

    @property
    def version(self) -> int | None:
        """The protocol version chosen in the handshake, or None before."""
        return self._version or None

    @property
    def reports_supported(self) -> bool:
        """True while REPORT frames may flow: the connection is OPEN or DRAINING and the
        negotiated version is 2 or later (a version 1 peer knows no REPORT)."""
        return self._version >= REPORTS_VERSION and self._state in _LIVE

    @property
    def open_stream_ids(self) -> tuple[int, ...]:
        """Ids of the streams that are not CLOSED, in opening order."""
        return tuple(self._streams)

    @property
    def outbound_buffered(self) -> int:
        """Body bytes accepted by ``send_data`` but not yet returned by ``data_to_send``."""
        return sum(s.queued for s in self._ready)

    @property
    def connection_send_window(self) -> int:
        """Connection credit left for new ``send_data`` calls (queued bytes deducted)."""
        return self._send_window

    @property
    def max_concurrent_streams(self) -> int:
        """How many streams may be open at once on this connection now: the connector's
        limit (WELCOME value, then its SETTINGS updates); 0 before the handshake."""
        return self._max_streams

    def stream_state(self, stream_id: int) -> StreamState:
        """The :class:`StreamState` of a stream this connection has seen (CLOSED once gone)."""
        stream = self._streams.get(stream_id)
        if stream is not None:
            return stream.state
        if self._known(stream_id):
            return StreamState.CLOSED
        raise LocalProtocolError(f"stream {stream_id} was never opened")

    def available_to_send(self, stream_id: int) -> int:
        """How many body bytes ``send_data(stream_id, ...)`` accepts right now.

        The minimum of the stream's and the connection's credit, minus what is queued. 0 once
        this end's half is ended. If 0, wait for :class:`WindowUpdated`.
        """
        stream = self._streams.get(stream_id)
        if stream is None:
            self.stream_state(stream_id)
            return 0
        if (stream.state, self._DATA_SENT) not in STREAM_TRANSITIONS:
            return 0
        return min(stream.send_window, self._send_window)

    # ------------------------------------------------------------------ receive path

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Feed bytes from the peer (any split; a whole WebSocket message is typical).

        Then drain :meth:`next_event` and send :meth:`data_to_send`. Raises
        :class:`RemoteProtocolError` if the peer broke the protocol: a GOAWAY is already queued
        and the state is CLOSED, so flush the output and close. Input after a clean close is
        ignored; input after a protocol error raises again.
        """
        if self._error is not None:
            raise RemoteProtocolError(self._error.msg, code=self._error.code)
        state = self._state
        if state is CS.CLOSED:
            return
        if state is CS.IDLE:
            raise LocalProtocolError("call start() before receive_data()")
        self._now = now
        self._last_received = now
        if self._deadline is None and state in _HANDSHAKING:
            self._deadline = now + self.config.handshake_timeout
        max_events = self.config.max_pending_events
        reader = self._reader
        try:
            for frame_type, flags, stream_id, payload in reader.feed(data):
                handler = self._HANDLERS.get(frame_type)
                if handler is not None:
                    handler(self, flags, stream_id, payload)
                elif not flags & _IGNORABLE:
                    raise RemoteProtocolError(f"unknown frame type {frame_type:#x}")
                if self._state is not CS.OPEN:
                    self._maybe_drained()  # drained after this frame: later bytes are moot
                    if self._state is CS.CLOSED:
                        return
                if len(self._events) - self._events_head > max_events:
                    raise RemoteProtocolError("too many events pending",
                                              code=ErrorCode.EXCESSIVE_LOAD)
            if reader.error is not None:
                raise reader.error
        except ProtocolError as exc:  # a LocalProtocolError from a decoder counts as remote
            error = RemoteProtocolError(exc.msg, code=exc.code)
            self._error = error
            self._close(CI.ERROR, exc.code, exc.msg, remote=False, send_goaway=True)
            raise error from None
        self._maybe_drained()

    def next_event(self) -> Event | None:
        """The next :class:`Event`, or None when there is none (feed more data then)."""
        events = self._events
        head = self._events_head
        if head >= len(events):
            return None
        event = events[head]
        if self._report_bytes and type(event) in _REPORT_EVENTS:
            self._report_bytes -= self._report_sizes.pop(0)
        head += 1
        if head == len(events):
            events.clear()  # drained (the usual case): the list frees its storage
            head = 0
        elif head >= 1024 and head * 2 >= len(events):
            del events[:head]  # a shell that never drains fully: stay bounded
            head = 0
        self._events_head = head
        return event

    def _require_live(self, what: FrameType) -> None:
        if (self._state, CI.RECV_FRAME) not in CONNECTION_TRANSITIONS:
            raise RemoteProtocolError(f"{what.name} frame in state {self._state.name}")

    def _queue_reply(self, frame: bytes) -> None:
        """Queue a control frame the peer caused (PONG, RESET), bounded against floods."""
        if len(self._control) >= self.config.max_pending_control_frames:
            raise RemoteProtocolError("too many control frames pending",
                                      code=ErrorCode.EXCESSIVE_LOAD)
        self._control.append(frame)

    def _known(self, stream_id: int) -> bool:
        return stream_id & 1 == 1 and 0 < stream_id <= self._highest_stream_id

    def _peer_stream(self, stream_id: int, what: FrameType) -> Stream | None:
        """The live stream for a received frame; None if it is closed (discard the frame)."""
        stream = self._streams.get(stream_id)
        if stream is None and not self._known(stream_id):
            raise RemoteProtocolError(f"{what.name} frame on unopened stream {stream_id}")
        return stream

    @staticmethod
    def _stream_error(stream: Stream) -> _StreamError:
        """The stream error for a received frame the stream table forbids."""
        return _StreamError(stream, ResetCode.STREAM_CLOSED if stream.state in (
            StreamState.RESPONSE_DONE, StreamState.REQUEST_DONE) else ResetCode.PROTOCOL_ERROR)

    def _await_report(self, stream_id: int) -> None:
        """Version 2: remember a closed stream whose usage report has not been sent / received
        (a drain waits for it); bounded, the oldest is forgotten first."""
        unreported = self._unreported
        unreported[stream_id] = None
        if len(unreported) > self.config.max_unreported_streams:
            del unreported[next(iter(unreported))]

    def _report_settled(self, stream_id: int) -> bool:
        """Version 2: the usage report of ``stream_id`` is sent / received now. False if none
        was awaited (already reported, never delivered to the shell, or forgotten)."""
        stream = self._streams.get(stream_id)
        if stream is not None and stream.report_owed:
            stream.report_owed = False
            return True
        return self._unreported.pop(stream_id, 0) is None

    def _reset_locally(self, stream: Stream, code: ResetCode) -> None:
        """Reset one stream because the peer broke one of its rules (connection survives)."""
        self._send_window += stream.drop_output()
        self._stream_transition(stream, SI.RESET)
        self._queue_reply(encode_frame(FrameType.RESET, 0, stream.stream_id, encode_u32(code)))
        self._events.append(StreamReset(stream_id=stream.stream_id, code=code, remote=False))

    def _refund(self, n: int) -> None:
        """Return connection credit for bytes that never reach the shell."""
        if n:
            increment = self._recv.acknowledge(n)
            if increment:
                self._control.append(encode_frame(FrameType.WINDOW_UPDATE, 0, 0,
                                                  encode_u32(increment)))

    def _on_data(self, flags: int, stream_id: int, payload: memoryview) -> None:
        # The hot path: look-ups are inlined; the slow cases call the shared helpers.
        state = self._state
        if state is not CS.OPEN and state is not CS.DRAINING:
            self._require_live(FrameType.DATA)
        n = len(payload)
        settings = self._settings
        assert settings is not None
        if n > settings.max_frame_size:
            raise RemoteProtocolError(f"DATA of {n} bytes exceeds max_frame_size",
                                      code=ErrorCode.FRAME_SIZE_ERROR)
        if not self._recv.consume(n):
            raise RemoteProtocolError("peer overran the connection window",
                                      code=ErrorCode.FLOW_CONTROL_ERROR)
        stream = self._streams.get(stream_id)
        if stream is None:
            self._peer_stream(stream_id, FrameType.DATA)  # raises if never opened
            self._refund(n)
            return
        try:
            if (stream.state, self._DATA_RECEIVED) not in STREAM_TRANSITIONS:
                raise self._stream_error(stream)
            if not stream.recv.consume(n):
                raise _StreamError(stream, ResetCode.FLOW_CONTROL_ERROR)
        except _StreamError as exc:
            self._refund(n)
            self._reset_locally(exc.stream, exc.code)
            return
        if n:
            self._events.append(DataReceived(stream_id=stream_id, data=bytes(payload),
                                             flow_controlled_length=n))
        if flags & _END_STREAM:  # allowed wherever DATA is: the table has both edges
            self._stream_transition(stream, self._END_RECEIVED)
            self._events.append(StreamEnded(stream_id=stream_id))

    def _on_window_update(self, flags: int, stream_id: int, payload: memoryview) -> None:
        self._require_live(FrameType.WINDOW_UPDATE)
        increment = decode_u32(payload, "WINDOW_UPDATE")
        if stream_id == 0:
            if not 0 < increment <= MAX_WINDOW:
                raise RemoteProtocolError("connection WINDOW_UPDATE increment out of range")
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise RemoteProtocolError("connection window overflow",
                                          code=ErrorCode.FLOW_CONTROL_ERROR)
        else:
            stream = self._peer_stream(stream_id, FrameType.WINDOW_UPDATE)
            if stream is None:
                return
            if not 0 < increment <= MAX_WINDOW:
                self._reset_locally(stream, ResetCode.PROTOCOL_ERROR)
                return
            stream.send_window += increment
            if stream.send_window > MAX_WINDOW:
                self._reset_locally(stream, ResetCode.FLOW_CONTROL_ERROR)
                return
        self._events.append(WindowUpdated(stream_id=stream_id, delta=increment))

    def _on_reset(self, flags: int, stream_id: int, payload: memoryview) -> None:
        self._require_live(FrameType.RESET)
        value = decode_u32(payload, "RESET")
        stream = self._peer_stream(stream_id, FrameType.RESET)
        if stream is None:
            return
        try:
            code = ResetCode(value)
        except ValueError:
            code = ResetCode.INTERNAL_ERROR
        self._send_window += stream.drop_output()
        self._stream_transition(stream, SI.RESET)
        self._events.append(StreamReset(stream_id=stream_id, code=code, remote=True))

    def _on_ping(self, flags: int, stream_id: int, payload: memoryview) -> None:
        self._require_live(FrameType.PING)
        if stream_id != 0 or len(payload) != 8:
            raise RemoteProtocolError("PING must be on stream 0 with 8 bytes")
        self._queue_reply(encode_frame(FrameType.PONG, 0, 0, payload))

    def _on_pong(self, flags: int, stream_id: int, payload: memoryview) -> None:
        self._require_live(FrameType.PONG)
        if stream_id != 0 or len(payload) != 8:
            raise RemoteProtocolError("PONG must be on stream 0 with 8 bytes")
        sent = self._pings.pop(bytes(payload), None)
        if sent is not None:  # an unknown or forgotten PONG is ignored
            self._rtt = max(0.0, self._now - sent)
            self._events.append(PongReceived(rtt=self._rtt))

    def _on_goaway(self, flags: int, stream_id: int, payload: memoryview) -> None:
        if stream_id != 0:
            raise RemoteProtocolError("GOAWAY must be on stream 0")
        goaway = decode_goaway(payload, self.config.max_goaway_reason)
        self._goaway_received = True
        self._events.append(GoAwayReceived(last_stream_id=goaway.last_stream_id,
                                           code=goaway.code, reason=goaway.reason))
        if goaway.code != ErrorCode.NO_ERROR:
            self._close(CI.ERROR, goaway.code, goaway.reason, remote=True, send_goaway=False)
        elif self._next_state(CI.RECV_GOAWAY, remote=True) is CS.CLOSED:  # during the handshake
            self._close(CI.RECV_GOAWAY, goaway.code, goaway.reason, remote=True,
                        send_goaway=False)
        else:
            self._transition(CI.RECV_GOAWAY)
            self._on_goaway_streams(goaway.last_stream_id)

    def _on_goaway_streams(self, last_stream_id: int) -> None:
        """Role hook: the gateway refuses its streams above ``last_stream_id``."""

    # ------------------------------------------------------------------ transitions
    # The only two places that change a state; both follow the tables of _state.py.

    def _next_state(self, inp: ConnectionInput = CI.SEND_FRAME, *,
                    remote: bool = False) -> ConnectionState:
        """Where ``inp`` leads from the current state. An input the table does not allow
        raises :class:`LocalProtocolError` (a command) or :class:`RemoteProtocolError` (a frame
        received, ``remote``); nothing changes."""
        new = CONNECTION_TRANSITIONS.get((self._state, inp))
        if new is None:
            error = RemoteProtocolError if remote else LocalProtocolError
            raise error(f"cannot {inp.value} in state {self._state.name}")
        return new

    def _transition(self, inp: ConnectionInput) -> None:
        """Move the connection along ``inp`` (raises as :meth:`_next_state` does)."""
        self._state = self._next_state(inp)

    def _stream_transition(self, stream: Stream, inp: StreamInput) -> bool:
        """Move a stream along ``inp``; False, and no change, if the table has no such edge.
        A stream that reaches CLOSED leaves the open streams (in version 2 its usage report is
        then awaited, if it owes one)."""
        new = STREAM_TRANSITIONS.get((stream.state, inp))
        if new is None:
            return False
        stream.state = new
        if new is StreamState.CLOSED:
            del self._streams[stream.stream_id]
            if stream.report_owed:
                self._await_report(stream.stream_id)
        return True

    # ------------------------------------------------------------------ stream commands

    def _live_stream(self, stream_id: int) -> Stream:
        self._next_state()
        stream = self._streams.get(stream_id)
        if stream is None:
            self.stream_state(stream_id)
            raise LocalProtocolError(f"stream {stream_id} is closed")
        return stream

    def _schedule(self, stream: Stream) -> None:
        if not stream.scheduled:
            stream.scheduled = True
            self._ready.append(stream)

    def send_data(self, stream_id: int, data: bytes | bytearray | memoryview,
                  end_stream: bool = False) -> None:
        """Queue body bytes (and optionally end this end's half), then call ``data_to_send``.

        Raises :class:`FlowControlError` if ``len(data) > available_to_send(stream_id)``:
        split the body into chunks and wait for :class:`WindowUpdated`.
        """
        stream = self._live_stream(stream_id)
        if (stream.state, self._DATA_SENT) not in STREAM_TRANSITIONS:
            raise LocalProtocolError(f"cannot send data on stream {stream_id} in state "
                                     f"{stream.state.name}")
        n = len(data)
        if n > stream.send_window or n > self._send_window:
            raise FlowControlError(f"{n} bytes exceed the {self.available_to_send(stream_id)} "
                                   f"bytes of credit on stream {stream_id}")
        if n:
            stream.send_window -= n
            self._send_window -= n
            stream.queue.append(memoryview(data if isinstance(data, bytes) else bytes(data)))
            stream.queued += n
            self._schedule(stream)
        if end_stream:
            self.end_stream(stream_id)

    def end_stream(self, stream_id: int) -> None:
        """End this end's half of the stream (an empty DATA with END_STREAM after the queue)."""
        stream = self._live_stream(stream_id)
        state = stream.state
        if not self._stream_transition(stream, self._END_SENT):
            raise LocalProtocolError(f"cannot end stream {stream_id} in state {state.name}")
        stream.end_pending = True
        self._schedule(stream)
        self._maybe_drained()

    def reset_stream(self, stream_id: int, code: ResetCode = ResetCode.CANCELLED) -> None:
        """Abort a stream: queued body bytes are dropped and a RESET is queued.

        A no-op on a stream that is already closed (resetting is idempotent).
        """
        self._next_state()
        if not isinstance(code, ResetCode):
            raise LocalProtocolError("code must be a ResetCode")
        stream = self._streams.get(stream_id)
        if stream is None:
            self.stream_state(stream_id)
            return
        self._send_window += stream.drop_output()
        self._stream_transition(stream, SI.RESET)
        self._control.append(encode_frame(FrameType.RESET, 0, stream_id, encode_u32(code)))
        self._maybe_drained()

    def acknowledge_received_data(self, *, acknowledged_size: int, stream_id: int) -> None:
        """Say the shell consumed ``acknowledged_size`` bytes (the ``flow_controlled_length``)
        of a :class:`DataReceived` on ``stream_id``. The arguments are keyword-only, so a call
        written in h2's order or this method's former order cannot swap them silently.

        Credit goes back to the peer in WINDOW_UPDATEs once half a window is consumed. Call it
        for every DataReceived, even after the stream ended or was reset; then send the output.
        """
        n = acknowledged_size
        if type(n) is not int or n < 0 or n > self._recv.unacknowledged:
            raise LocalProtocolError(f"cannot acknowledge {n} bytes: only "
                                     f"{self._recv.unacknowledged} are unacknowledged")
        if self._state is CS.CLOSED or n == 0:
            return
        stream = self._streams.get(stream_id)
        if stream is not None:
            if n > stream.recv.unacknowledged:
                raise LocalProtocolError(f"cannot acknowledge {n} bytes on stream {stream_id}")
            increment = stream.recv.acknowledge(n)
            if increment and (stream.state, self._DATA_RECEIVED) in STREAM_TRANSITIONS:
                self._control.append(encode_frame(FrameType.WINDOW_UPDATE, 0, stream_id,
                                                  encode_u32(increment)))
        else:
            self.stream_state(stream_id)
        self._refund(n)

    # ------------------------------------------------------------------ liveness, drain

    def ping(self, now: float) -> None:
        """Queue a PING; its PONG gives :class:`PongReceived` and updates :attr:`rtt`."""
        self._next_state()
        self._ping_counter += 1
        payload = _PING.pack(self._ping_counter)
        self._pings[payload] = now
        if len(self._pings) > self.config.max_outstanding_pings:
            del self._pings[next(iter(self._pings))]
        self._last_ping = now
        self._control.append(encode_frame(FrameType.PING, 0, 0, payload))

    def goaway(self, code: ErrorCode = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """Stop taking new streams. With NO_ERROR, existing streams finish and the state goes
        DRAINING, then CLOSED when none is left; any other code closes at once. Either way,
        a :class:`ConnectionTerminated` marks the end. May be sent again (to update the id)."""
        new = self._next_state(CI.SEND_GOAWAY)
        if not isinstance(code, ErrorCode) or not isinstance(reason, str):
            raise LocalProtocolError("code must be an ErrorCode and reason a str")
        reason = reason.encode()[: self.config.max_goaway_reason].decode(errors="ignore")
        if self._state is CS.IDLE:  # nothing was sent yet: close without a word
            self._close(CI.SEND_GOAWAY, code, reason, remote=False, send_goaway=False)
        elif code != ErrorCode.NO_ERROR:
            self._close(CI.ERROR, code, reason, remote=False, send_goaway=True)
        elif new is CS.CLOSED:  # during the handshake
            self._close(CI.SEND_GOAWAY, code, reason, remote=False, send_goaway=True)
        else:
            self._goaway_sent = True
            self._control.append(self._goaway_frame(code, reason))
            self._transition(CI.SEND_GOAWAY)
            self._maybe_drained()

    def _goaway_frame(self, code: ErrorCode | int, reason: str) -> bytes:
        payload = encode_goaway(GoAway(last_stream_id=self._highest_stream_id, code=code,
                                       reason=reason))
        return encode_frame(FrameType.GOAWAY, 0, 0, payload)

    def _maybe_drained(self) -> None:
        if self._state is CS.DRAINING and not self._streams and not self._unreported:
            self._close(CI.DRAINED, ErrorCode.NO_ERROR, "drained", remote=self._goaway_received
                        and not self._goaway_sent, send_goaway=False)

    def _close(self, inp: ConnectionInput, code: ErrorCode | int, reason: str, *, remote: bool,
               send_goaway: bool) -> None:
        """Move to CLOSED along ``inp`` and say so with :class:`ConnectionTerminated`; with an
        error code, queued body bytes are dropped; ``send_goaway`` queues a GOAWAY first."""
        self._transition(inp)
        if code != ErrorCode.NO_ERROR:
            for stream in self._ready:
                stream.drop_output()
            self._ready.clear()
        if send_goaway:
            self._control.append(self._goaway_frame(code, reason))
        self._streams.clear()
        self._events.append(ConnectionTerminated(code=code, reason=reason, remote=remote))

    # ------------------------------------------------------------------ timers

    def get_timer(self) -> float | None:
        """When to call :meth:`handle_timer` next (same clock as ``now``), or None."""
        state = self._state
        if state in _HANDSHAKING:
            return self._deadline
        if state in _LIVE:
            assert self._settings is not None
            settings = self._settings
            ping_at = max(self._last_received, self._last_ping) + settings.heartbeat_interval
            return min(self._last_received + settings.idle_timeout, ping_at)
        return None

    def handle_timer(self, now: float) -> None:
        """Act on a due timer (handshake deadline, idle timeout, heartbeat PING); a no-op when
        called early. Then drain events and send output as after ``receive_data``."""
        state = self._state
        if state in _HANDSHAKING:
            if self._deadline is not None and now >= self._deadline:
                self._close(CI.TIMEOUT, ErrorCode.TIMEOUT, "handshake timed out", remote=False,
                            send_goaway=True)
        elif state in _LIVE:
            assert self._settings is not None
            settings = self._settings
            if now >= self._last_received + settings.idle_timeout:
                self._close(CI.TIMEOUT, ErrorCode.TIMEOUT, "peer silent for idle_timeout",
                            remote=False, send_goaway=True)
            elif now >= max(self._last_received, self._last_ping) + settings.heartbeat_interval:
                self.ping(now)

    # ------------------------------------------------------------------ output

    def _frames(self, max_bytes: int | None) -> list[list[Piece]]:
        if max_bytes is not None and (type(max_bytes) is not int or max_bytes < 1):
            raise LocalProtocolError("max_bytes must be a positive int or None")
        max_frame = self._settings.max_frame_size if self._settings else 1
        return produce_frames(self._control, self._ready, max_frame, max_bytes)

    def data_to_send(self, max_bytes: int | None = None) -> bytes:
        """Frames to write, as one byte string (b"" when idle). Control frames come first,
        then DATA round-robin across streams. ``max_bytes`` caps the size, except that one
        whole frame is always returned if any is pending."""
        return b"".join(piece for frame in self._frames(max_bytes) for piece in frame)

    def messages_to_send(self, max_bytes: int | None = None) -> list[bytes]:
        """Like :meth:`data_to_send`, but split into WebSocket messages of whole frames, each
        at most ``config.max_message_size`` bytes (one larger frame goes alone)."""
        limit = self.config.max_message_size
        messages: list[bytes] = []
        current: list[Piece] = []
        size = 0
        for frame in self._frames(max_bytes):
            frame_size = sum(len(piece) for piece in frame)
            if current and size + frame_size > limit:
                messages.append(b"".join(current))
                current, size = [], 0
            current.extend(frame)
            size += frame_size
        if current:
            messages.append(b"".join(current))
        return messages

    # ------------------------------------------------------------------ handshake helpers

    def _apply_settings(self, settings: Settings, now: float) -> None:
        self._settings = settings
        self._send_window = settings.initial_connection_window
        self._recv = ReceiveWindow(settings.initial_connection_window)
        self._reader.max_payload = max(settings.max_frame_size, settings.max_header_block_size,
                                       self.config.max_handshake_size)
        self._last_received = now
        self._last_ping = float("-inf")

    def _new_stream(self, stream_id: int) -> Stream:
        assert self._settings is not None
        window = self._settings.initial_stream_window
        stream = Stream(stream_id, window, window)
        self._stream_transition(stream, SI.OPEN)
        self._streams[stream_id] = stream
        self._highest_stream_id = stream_id
        return stream

    def _handshake_frame(self, inp: ConnectionInput, stream_id: int) -> None:
        """Check a received handshake frame (HELLO, WELCOME, REJECT) against the table."""
        if stream_id != 0:
            raise RemoteProtocolError(f"{inp.value} on stream {stream_id}")
        self._next_state(inp, remote=True)

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} state={self._state.name} "
                f"streams={len(self._streams)}>")

