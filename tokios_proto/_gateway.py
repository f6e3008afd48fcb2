"""The gateway end: waits for HELLO, lets the shell decide, opens streams."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from ._codes import DEFAULT_RETRYABLE, ErrorCode, FrameType, RejectReason, ResetCode
from ._config import MAX_STREAM_ID, REPORTS_VERSION, Config, Settings
from ._connection import Connection
from ._errors import LocalProtocolError, RemoteProtocolError
from ._events import (
    Event,
    HealthReported,
    HelloReceived,
    ResponseReceived,
    SettingsChanged,
    StreamReset,
    UsageReported,
)
from ._frames import encode_frame
from ._payloads import (
    Hello,
    Reject,
    RequestHead,
    Welcome,
    decode_hello,
    decode_response_head,
    decode_settings_update,
    encode_reject,
    encode_request_head,
    encode_welcome,
)
from ._reports import HealthReport, UsageReport, decode_report
from ._state import STREAM_TRANSITIONS, ConnectionInput, ConnectionState, StreamInput

__all__ = ["GatewayConnection"]


class GatewayConnection(Connection):
    """The gateway's end of one tunnel connection.

    Feed it bytes; on :class:`HelloReceived` check the credential and call :meth:`accept` or
    :meth:`reject`. Once OPEN, :meth:`open_stream` sends a request down the tunnel. Call
    :meth:`start` when the transport is up to arm the handshake deadline (the first
    ``receive_data`` arms it otherwise).
    """

    _INITIAL_STATE = ConnectionState.AWAITING_HELLO
    _DATA_SENT = StreamInput.REQUEST_DATA
    _END_SENT = StreamInput.REQUEST_END
    _DATA_RECEIVED = StreamInput.RESPONSE_DATA
    _END_RECEIVED = StreamInput.RESPONSE_END
    _FRAME_METHODS: ClassVar[dict[int, str]] = {
        **Connection._FRAME_METHODS,
        FrameType.HELLO: "_on_hello",
        FrameType.RESPONSE: "_on_response",
        FrameType.SETTINGS: "_on_settings",
        FrameType.REPORT: "_on_report",
        FrameType.WELCOME: "_on_unexpected",
        FrameType.REJECT: "_on_unexpected",
        FrameType.OPEN: "_on_unexpected",
    }

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        self._hello: Hello | None = None
        self._proposal: Settings | None = None
        self._next_stream_id = 1

    def start(self, now: float) -> None:
        """Arm the handshake deadline (``config.handshake_timeout`` from ``now``)."""
        if self._state is ConnectionState.AWAITING_HELLO and self._deadline is None:
            self._deadline = now + self.config.handshake_timeout

    def _on_unexpected(self, flags: int, stream_id: int, payload: memoryview) -> None:
        raise RemoteProtocolError("a connector must not send WELCOME, REJECT or OPEN")

    def _on_hello(self, flags: int, stream_id: int, payload: memoryview) -> None:
        self._handshake_frame(ConnectionInput.RECV_HELLO, stream_id)
        hello, proposal = decode_hello(payload)
        self._transition(ConnectionInput.RECV_HELLO)
        common = set(hello.versions) & set(self.config.versions)
        if not common:
            self.reject(RejectReason.UNSUPPORTED_VERSION,
                        f"supported versions: {sorted(self.config.versions)}")
            return
        self._hello, self._proposal, self._version = hello, proposal, max(common)
        self._events.append(HelloReceived(hello=hello, version=self._version))

    def accept(self, session_id: str, deployments: tuple[str, ...], now: float, *,
               node_id: str = "") -> Settings:
        """Accept the HELLO: queue WELCOME with the negotiated settings; the state is OPEN.

        ``deployments`` must be names the connector offered; ``node_id`` (at most 64
        characters) names this gateway node when it is one of several, so a connector can
        hold tunnels to distinct nodes. Returns the :class:`Settings`.
        """
        self._next_state(ConnectionInput.ACCEPT)
        assert self._hello is not None and self._proposal is not None
        offered = {d.name for d in self._hello.deployments}
        if not isinstance(deployments, tuple) or not set(deployments) <= offered:
            raise LocalProtocolError("granted deployments must be a tuple of offered names")
        settings = self.config.settings.negotiate(self._proposal)
        welcome = Welcome(version=self._version, session_id=session_id,
                          deployments=deployments, settings=settings, node_id=node_id)
        self._control.append(encode_frame(FrameType.WELCOME, 0, 0, encode_welcome(welcome)))
        self._transition(ConnectionInput.ACCEPT)
        self._granted = deployments
        self._max_streams = settings.max_concurrent_streams
        self._apply_settings(settings, now)
        return settings

    def reject(self, reason: RejectReason, message: str = "", retryable: bool | None = None,
               retry_after: float | None = None) -> None:
        """Refuse the HELLO: queue REJECT; the state is CLOSED (flush, then close).

        ``retryable`` defaults to what suits ``reason`` (only OVERLOADED and INTERNAL retry).
        """
        self._next_state(ConnectionInput.REJECT)
        if not isinstance(reason, RejectReason):
            raise LocalProtocolError("reason must be a RejectReason")
        if retryable is None:
            retryable = DEFAULT_RETRYABLE[reason]
        if isinstance(retry_after, int) and not isinstance(retry_after, bool):
            retry_after = float(retry_after)
        reject = Reject(reason=reason, retryable=retryable, message=message,
                        retry_after=retry_after)
        self._control.append(encode_frame(FrameType.REJECT, 0, 0, encode_reject(reject)))
        self._close(ConnectionInput.REJECT, ErrorCode.REJECTED, reason.value, remote=False,
                    send_goaway=False)

    @property
    def may_open_stream(self) -> bool:
        """True if :meth:`open_stream` can open a stream now (for a head within
        ``max_header_block_size``): the connection is OPEN, no GOAWAY was sent or received,
        fewer than :attr:`max_concurrent_streams` streams are open and ids are left."""
        return (self._state is ConnectionState.OPEN and len(self._streams) < self._max_streams
                and self._next_stream_id <= MAX_STREAM_ID)

    def open_stream(self, head: RequestHead) -> int:
        """Open a stream carrying ``head`` (queues OPEN); returns its id.

        Then ``send_data`` the request body and ``end_stream``. Raises
        :class:`LocalProtocolError` at the connector's ``max_concurrent_streams``, after a
        GOAWAY either way, before the handshake, once the stream ids are exhausted, or if the
        head is too large; :attr:`may_open_stream` says beforehand whether it can succeed.
        """
        self._next_state()
        assert self._settings is not None
        if not isinstance(head, RequestHead):
            raise LocalProtocolError("head must be a RequestHead")
        if self._state is not ConnectionState.OPEN:
            raise LocalProtocolError("no new streams after GOAWAY")
        if len(self._streams) >= self._max_streams:
            raise LocalProtocolError(f"the connector allows {self._max_streams} "
                                     "concurrent streams")
        stream_id = self._next_stream_id
        if stream_id > MAX_STREAM_ID:
            raise LocalProtocolError("stream ids are exhausted: open a new connection")
        payload = encode_request_head(head)
        if len(payload) > self._settings.max_header_block_size:
            raise LocalProtocolError(f"request head of {len(payload)} bytes exceeds "
                                     "max_header_block_size")
        self._next_stream_id += 2
        stream = self._new_stream(stream_id)
        stream.report_owed = self._version >= REPORTS_VERSION
        self._control.append(encode_frame(FrameType.OPEN, 0, stream_id, payload))
        return stream_id

    def _on_response(self, flags: int, stream_id: int, payload: memoryview) -> None:
        self._require_live(FrameType.RESPONSE)
        stream = self._peer_stream(stream_id, FrameType.RESPONSE)
        if stream is None:
            return
        assert self._settings is not None
        if (stream.state, StreamInput.RESPONSE_HEAD) not in STREAM_TRANSITIONS:
            self._reset_locally(stream, ResetCode.PROTOCOL_ERROR)
            return
        if len(payload) > self._settings.max_header_block_size:
            self._reset_locally(stream, ResetCode.HEADER_TOO_LARGE)
            return
        try:
            head = decode_response_head(payload)
        except LocalProtocolError:
            self._reset_locally(stream, ResetCode.PROTOCOL_ERROR)
            return
        self._stream_transition(stream, StreamInput.RESPONSE_HEAD)
        self._events.append(ResponseReceived(stream_id=stream_id, status=head.status,
                                             headers=head.headers))

    def _on_settings(self, flags: int, stream_id: int, payload: memoryview) -> None:
        self._require_live(FrameType.SETTINGS)
        assert self._settings is not None
        value = decode_settings_update(payload)
        if stream_id != 0 or value > self._settings.max_concurrent_streams:
            raise RemoteProtocolError("SETTINGS must be on stream 0 and within the WELCOME value")
        self._max_streams = value
        settings = dataclasses.replace(self._settings, max_concurrent_streams=value)
        self._events.append(SettingsChanged(settings=settings))

    def _on_report(self, flags: int, stream_id: int, payload: memoryview) -> None:
        self._require_live(FrameType.REPORT)
        if stream_id != 0 or self._version < REPORTS_VERSION:
            raise RemoteProtocolError("REPORT must be on stream 0, in protocol version 2")
        assert self._settings is not None
        size = len(payload)
        if size > self._settings.max_header_block_size:
            raise RemoteProtocolError(f"REPORT of {size} bytes exceeds max_header_block_size",
                                      code=ErrorCode.FRAME_SIZE_ERROR)
        if self._report_bytes + size > self.config.max_pending_report_bytes:
            raise RemoteProtocolError("too many reports pending", code=ErrorCode.EXCESSIVE_LOAD)
        report = decode_report(payload)
        event: Event
        if isinstance(report, UsageReport):
            if report.stream_id > self._highest_stream_id:
                raise RemoteProtocolError(f"usage report for stream {report.stream_id}, "
                                          "which was never opened")
            if not self._report_settled(report.stream_id):
                return  # a duplicate, or a stream that owed none: counted once already
            event = UsageReported(stream_id=report.stream_id, input_tokens=report.input_tokens,
                                  output_tokens=report.output_tokens,
                                  estimated=report.estimated)
        elif isinstance(report, HealthReport):
            event = HealthReported(deployments=tuple(
                d for d in report.deployments if d.name in self._granted))
        else:
            return  # a kind this version does not know
        self._report_bytes += size
        self._report_sizes.append(size)
        self._events.append(event)

    def _on_goaway_streams(self, last_stream_id: int) -> None:
        for stream_id in [s for s in self._unreported if s > last_stream_id]:
            del self._unreported[stream_id]  # never processed: no usage to report
        for stream_id in [s for s in self._streams if s > last_stream_id]:
            stream = self._streams[stream_id]
            stream.report_owed = False  # never processed: no usage to report
            self._send_window += stream.drop_output()
            self._stream_transition(stream, StreamInput.RESET)
            self._events.append(StreamReset(stream_id=stream_id, code=ResetCode.REFUSED,
                                            remote=True))
