"""The connector end: says HELLO, accepts streams, sends responses."""

from __future__ import annotations

from typing import ClassVar

from ._codes import ErrorCode, FrameType, ResetCode
from ._config import Config
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
from ._state import (
    CONNECTION_TRANSITIONS,
    STREAM_TRANSITIONS,
    ConnectionInput,
    ConnectionState,
    StreamInput,
)

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
    }

    def __init__(self, config: Config | None = None, *, hello: Hello) -> None:
        super().__init__(config)
        if not isinstance(hello, Hello):
            raise LocalProtocolError("hello must be a Hello")
        if not set(hello.versions) <= set(self.config.versions):
            raise LocalProtocolError("hello.versions must be versions this end speaks")
        self._hello = hello
        #: Streams we take at once (WELCOME value, lowered or raised by update_settings).
        self._local_max_streams = 0

    def start(self, now: float) -> None:
        """Queue HELLO and arm the handshake deadline; then send ``data_to_send()``."""
        new = self._command(ConnectionInput.START)
        payload = encode_hello(self._hello, self.config.settings)
        self._control.append(encode_frame(FrameType.HELLO, 0, 0, payload))
        self._deadline = now + self.config.handshake_timeout
        self._state = new

    def _on_unexpected(self, flags: int, stream_id: int, payload: memoryview) -> None:
        raise RemoteProtocolError("a gateway must not send HELLO, RESPONSE or SETTINGS")

    def _handshake_input(self, inp: ConnectionInput, stream_id: int) -> ConnectionState:
        new = CONNECTION_TRANSITIONS.get((self._state, inp))
        if new is None or stream_id != 0:
            raise RemoteProtocolError(f"{inp.value} in state {self._state.name} "
                                      f"on stream {stream_id}")
        return new

    def _on_welcome(self, flags: int, stream_id: int, payload: memoryview) -> None:
        new = self._handshake_input(ConnectionInput.RECV_WELCOME, stream_id)
        welcome = decode_welcome(payload)
        if welcome.version not in self._hello.versions:
            raise RemoteProtocolError(f"WELCOME chose version {welcome.version}, not offered")
        if not set(welcome.deployments) <= {d.name for d in self._hello.deployments}:
            raise RemoteProtocolError("WELCOME granted a deployment that was not offered")
        if not welcome.settings.within(self.config.settings):
            raise RemoteProtocolError("WELCOME settings exceed what HELLO proposed")
        self._state = new
        self._local_max_streams = welcome.settings.max_concurrent_streams
        self._apply_settings(welcome.settings, self._now)
        self._events.append(Accepted(session_id=welcome.session_id, version=welcome.version,
                                     deployments=welcome.deployments,
                                     settings=welcome.settings))

    def _on_reject(self, flags: int, stream_id: int, payload: memoryview) -> None:
        self._handshake_input(ConnectionInput.RECV_REJECT, stream_id)
        reject = decode_reject(payload)
        self._events.append(Rejected(reason=reject.reason, retryable=reject.retryable,
                                     message=reject.message, retry_after=reject.retry_after))
        self._close(ErrorCode.REJECTED, reject.reason.value, remote=True, send_goaway=False)

    def _on_open(self, flags: int, stream_id: int, payload: memoryview) -> None:
        self._require_live(FrameType.OPEN)
        if stream_id & 1 == 0 or stream_id <= self._highest_stream_id:
            raise RemoteProtocolError(f"OPEN on stream {stream_id}: ids must be odd and rise")
        self._new_stream(stream_id)
        assert self._settings is not None
        code: ResetCode | None = None
        if len(payload) > self._settings.max_header_block_size:
            code = ResetCode.HEADER_TOO_LARGE
        elif (self._goaway_sent or self._goaway_received
              or len(self._streams) > self._local_max_streams):
            code = ResetCode.REFUSED
        else:
            try:
                head = decode_request_head(payload)
            except LocalProtocolError:
                code = ResetCode.PROTOCOL_ERROR
        if code is not None:  # the shell never saw this stream: no event
            del self._streams[stream_id]
            self._queue_reply(encode_frame(FrameType.RESET, 0, stream_id, encode_u32(code)))
            return
        self._events.append(StreamOpened(stream_id=stream_id, head=head))

    def send_response(self, stream_id: int, status: int, headers: Headers = ()) -> None:
        """Queue the response head of a stream; then ``send_data`` the body."""
        stream = self._live_stream(stream_id)
        new = STREAM_TRANSITIONS.get((stream.state, StreamInput.RESPONSE_HEAD))
        if new is None:
            raise LocalProtocolError(f"cannot send a response on stream {stream_id} in state "
                                     f"{stream.state.name}")
        payload = encode_response_head(ResponseHead(status=status, headers=headers))
        assert self._settings is not None
        if len(payload) > self._settings.max_header_block_size:
            raise LocalProtocolError(f"response head of {len(payload)} bytes exceeds "
                                     "max_header_block_size")
        self._control.append(encode_frame(FrameType.RESPONSE, 0, stream_id, payload))
        self._set_stream_state(stream, new)

    def update_settings(self, *, max_concurrent_streams: int) -> None:
        """Change how many streams the gateway may have open at once (SETTINGS), up to the
        value agreed in WELCOME. OPENs over the limit that cross it are refused."""
        self._command()
        assert self._settings is not None
        if (type(max_concurrent_streams) is not int
                or not 1 <= max_concurrent_streams <= self._settings.max_concurrent_streams):
            raise LocalProtocolError("max_concurrent_streams must be in 1..the WELCOME value")
        self._local_max_streams = max_concurrent_streams
        self._control.append(encode_frame(FrameType.SETTINGS, 0, 0,
                                          encode_settings_update(max_concurrent_streams)))
