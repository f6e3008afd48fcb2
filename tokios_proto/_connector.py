"""The connector end: says HELLO, accepts streams, sends responses."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from ._codes import ErrorCode, FrameType, ResetCode
from ._config import MAX_STREAM_ID, REPORTS_VERSION, Config
from ._connection import Connection
from ._errors import LocalProtocolError, RemoteProtocolError
from ._events import Accepted, Rejected, StreamOpened
from ._frames import encode_frame
from ._payloads import (
    Headers,
    Hello,
    ResponseHead,
    decode_reject,
    decode_request_head,
    decode_welcome,
    encode_hello,
    encode_response_head,
    encode_settings_update,
    encode_u32,
)
from ._reports import DeploymentHealth, HealthReport, Report, UsageReport, encode_report
from ._state import ConnectionInput, ConnectionState, StreamInput, StreamState

__all__ = ["ConnectorConnection"]


class ConnectorConnection(Connection):
    """The connector's end of one tunnel connection.

    Call :meth:`start` once the transport is up (queues HELLO), send the output, then feed
    bytes: :class:`Accepted` or :class:`Rejected` follows. Once OPEN, each
    :class:`StreamOpened` is a request: answer with :meth:`send_response`, ``send_data``,
    ``end_stream`` (or ``reset_stream``).
    """

    _INITIAL_STATE = ConnectionState.IDLE
    _DATA_SENT = StreamInput.RESPONSE_DATA
    _END_SENT = StreamInput.RESPONSE_END
    _DATA_RECEIVED = StreamInput.REQUEST_DATA
    _END_RECEIVED = StreamInput.REQUEST_END
    _FRAME_METHODS: ClassVar[dict[int, str]] = {
        **Connection._FRAME_METHODS,
        FrameType.WELCOME: "_on_welcome",
        FrameType.REJECT: "_on_reject",
        FrameType.OPEN: "_on_open",
        FrameType.HELLO: "_on_unexpected",
        FrameType.RESPONSE: "_on_unexpected",
        FrameType.SETTINGS: "_on_unexpected",
        FrameType.REPORT: "_on_unexpected",
    }

    def __init__(self, config: Config | None = None, *, hello: Hello) -> None:
        super().__init__(config)
        if not isinstance(hello, Hello):
            raise LocalProtocolError("hello must be a Hello")
        if not set(hello.versions) <= set(self.config.versions):
            raise LocalProtocolError("hello.versions must be versions this end speaks")
        self._hello = hello

    def start(self, now: float) -> None:
        """Queue HELLO and arm the handshake deadline; then send ``data_to_send()``."""
        self._transition(ConnectionInput.START)
        payload = encode_hello(self._hello, self.config.settings)
        self._control.append(encode_frame(FrameType.HELLO, 0, 0, payload))
        self._deadline = now + self.config.handshake_timeout

    def _on_unexpected(self, flags: int, stream_id: int, payload: memoryview) -> None:
        raise RemoteProtocolError("a gateway must not send HELLO, RESPONSE, SETTINGS or REPORT")

    def _on_welcome(self, flags: int, stream_id: int, payload: memoryview) -> None:
        self._handshake_frame(ConnectionInput.RECV_WELCOME, stream_id)
        welcome = decode_welcome(payload)
        if welcome.version not in self._hello.versions:
            raise RemoteProtocolError(f"WELCOME chose version {welcome.version}, not offered")
        if not set(welcome.deployments) <= {d.name for d in self._hello.deployments}:
            raise RemoteProtocolError("WELCOME granted a deployment that was not offered")
        if not welcome.settings.within(self.config.settings):
            raise RemoteProtocolError("WELCOME settings exceed what HELLO proposed")
        self._transition(ConnectionInput.RECV_WELCOME)
        self._version = welcome.version
        self._granted = welcome.deployments
        self._max_streams = welcome.settings.max_concurrent_streams
        self._apply_settings(welcome.settings, self._now)
        self._events.append(Accepted(session_id=welcome.session_id, version=welcome.version,
                                     deployments=welcome.deployments,
                                     settings=welcome.settings, node_id=welcome.node_id))

    def _on_reject(self, flags: int, stream_id: int, payload: memoryview) -> None:
        self._handshake_frame(ConnectionInput.RECV_REJECT, stream_id)
        reject = decode_reject(payload)
        self._events.append(Rejected(reason=reject.reason, retryable=reject.retryable,
                                     message=reject.message, retry_after=reject.retry_after))
        self._close(ConnectionInput.RECV_REJECT, ErrorCode.REJECTED, reject.reason.value,
                    remote=True, send_goaway=False)

    def _on_open(self, flags: int, stream_id: int, payload: memoryview) -> None:
        self._require_live(FrameType.OPEN)
        if (stream_id & 1 == 0 or stream_id <= self._highest_stream_id
                or stream_id > MAX_STREAM_ID):
            raise RemoteProtocolError(f"OPEN on stream {stream_id}: ids must be odd, rise and "
                                      "stay at most 2**31-1")
        stream = self._new_stream(stream_id)
        assert self._settings is not None
        code: ResetCode | None = None
        if len(payload) > self._settings.max_header_block_size:
            code = ResetCode.HEADER_TOO_LARGE
        elif self._state is not ConnectionState.OPEN or len(self._streams) > self._max_streams:
            code = ResetCode.REFUSED
        else:
            try:
                head = decode_request_head(payload)
            except LocalProtocolError:
                code = ResetCode.PROTOCOL_ERROR
        if code is not None:  # the shell never saw this stream: no event, nothing generated
            self._stream_transition(stream, StreamInput.RESET)
            self._queue_reply(encode_frame(FrameType.RESET, 0, stream_id, encode_u32(code)))
            if self._version >= REPORTS_VERSION:
                self._queue_reply(self._report_frame(UsageReport(
                    stream_id=stream_id, input_tokens=0, output_tokens=0)))
            return
        stream.report_owed = self._version >= REPORTS_VERSION
        self._events.append(StreamOpened(stream_id=stream_id, head=head))

    def send_response(self, stream_id: int, status: int, headers: Headers = ()) -> None:
        """Queue the response head of a stream; then ``send_data`` the body."""
        stream = self._live_stream(stream_id)
        payload = encode_response_head(ResponseHead(status=status, headers=headers))
        assert self._settings is not None
        if len(payload) > self._settings.max_header_block_size:
            raise LocalProtocolError(f"response head of {len(payload)} bytes exceeds "
                                     "max_header_block_size")
        state = stream.state
        if not self._stream_transition(stream, StreamInput.RESPONSE_HEAD):
            raise LocalProtocolError(f"cannot send a response on stream {stream_id} in state "
                                     f"{state.name}")
        self._control.append(encode_frame(FrameType.RESPONSE, 0, stream_id, payload))

    def update_settings(self, *, max_concurrent_streams: int) -> None:
        """Change how many streams the gateway may have open at once (SETTINGS), up to the
        value agreed in WELCOME. OPENs over the limit that cross it are refused."""
        self._next_state()
        assert self._settings is not None
        if (type(max_concurrent_streams) is not int
                or not 1 <= max_concurrent_streams <= self._settings.max_concurrent_streams):
            raise LocalProtocolError("max_concurrent_streams must be in 1..the WELCOME value")
        self._max_streams = max_concurrent_streams
        self._control.append(encode_frame(FrameType.SETTINGS, 0, 0,
                                          encode_settings_update(max_concurrent_streams)))

    # ------------------------------------------------------------------ reports (version 2)

    def _report_frame(self, report: Report) -> bytes:
        payload = encode_report(report)
        assert self._settings is not None
        if len(payload) > self._settings.max_header_block_size:
            raise LocalProtocolError(f"report of {len(payload)} bytes exceeds "
                                     "max_header_block_size")
        return encode_frame(FrameType.REPORT, 0, 0, payload)

    def _require_reports(self) -> None:
        self._next_state()
        if self._version < REPORTS_VERSION:
            raise LocalProtocolError(f"the gateway speaks protocol version {self._version}, "
                                     "which has no REPORT (check reports_supported first)")

    def report_usage(self, stream_id: int, *, input_tokens: int, output_tokens: int,
                     estimated: bool = False) -> None:
        """Queue the usage report of a stream whose response ended (``end_stream`` sent) or
        that was reset either way, including by the gateway because its client left: count
        what was generated, with ``estimated=True`` when the backend gave no count. Send one
        per stream; a draining connection closes only once every stream has its report.

        Raises :class:`LocalProtocolError` before WELCOME, after the close, when the
        negotiated version is 1 (see :attr:`reports_supported`), or while the stream's
        response can still be sent. Then send the output.
        """
        self._require_reports()
        report = UsageReport(stream_id=stream_id, input_tokens=input_tokens,
                             output_tokens=output_tokens, estimated=estimated)
        stream = self._streams.get(stream_id)
        if stream is not None and stream.state is not StreamState.RESPONSE_DONE:
            raise LocalProtocolError(f"stream {stream_id} has not ended: report its usage "
                                     "after end_stream or a reset")
        if stream is None:
            self.stream_state(stream_id)  # raises if it was never opened
        frame = self._report_frame(report)
        self._report_settled(stream_id)
        self._control.append(frame)
        self._maybe_drained()

    def report_health(self, deployments: Iterable[DeploymentHealth]) -> None:
        """Queue a health report: whether each deployment's upstream is healthy, and
        optionally the upstream's own model list. Entries for deployments the gateway did not
        grant are left out. Send one after :class:`Accepted` and whenever something changes.

        Raises :class:`LocalProtocolError` as :meth:`report_usage` does, on duplicate names,
        or if the report exceeds ``max_header_block_size``. Then send the output.
        """
        self._require_reports()
        report = HealthReport(deployments=tuple(deployments))
        granted = [d for d in report.deployments if d.name in self._granted]
        self._control.append(self._report_frame(HealthReport(deployments=tuple(granted))))
