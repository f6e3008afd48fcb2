"""HTTP/2 server connection: an asyncio.Protocol driving h2.

Theory of operation. Every `data_received` feeds h2 and dispatches its events; every h2 call
is followed by a write of `data_to_send()`, so frames leave at once. Each request stream runs
the handler in its own task. Request body DATA stays queued on its stream and is acknowledged
(`acknowledge_received_data`) only when the handler takes it, so the client's flow-control
window is the bound on buffered body. Response DATA is sent in slices of
`min(stream window, connection window, max frame size)`; with no window `send()` waits for a
WINDOW_UPDATE, and it also waits while the transport's write buffer is above the high-water
mark. RST_STREAM or the connection closing sets the stream's `disconnected` at once.

Requests the server answers by itself run the same way, with the error responder as their
handler: malformed headers (400, validated here rather than by h2, which would end the whole
connection), a header list over `max_header_bytes` (431), a body longer or shorter than its
content-length (400) or stalled (408), the server at `max_requests` (503).

Abuse ends the connection with GOAWAY(ENHANCE_YOUR_CALM) (see h2_guard.py): too many resets or
control frames in a window, a header block over `h2_max_header_block`, more handlers still
running than twice `max_h2_streams` (streams reset faster than their handlers end). A client
that stops reading while its frames keep producing answers (PING ACKs, resets...) is cut once
`h2_max_queued_control` bytes of them wait in the write buffer. After a GOAWAY for an error the
connection stops reading and is aborted `linger_timeout` later; a connection closed otherwise is
aborted if its client has not taken the last bytes within `write_timeout`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
from typing import TYPE_CHECKING, Any, cast

import h2.config
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import h2.utilities

from runtimes.netio._http import (
    BufferedReads,
    ClientDisconnected,
    Disconnected,
    Handler,
    HttpRequest,
    HttpResponse,
    RequestBodyError,
    ServerConfig,
    WebSocketUpgradeError,
    WriteFlow,
    decode_header_list,
    reason_for,
    respond_problem,
)
from runtimes.netio.h2_guard import BodyLengthInvalid, FloodGuard, GuardedH2Connection

if TYPE_CHECKING:
    from runtimes.netio.http_server import ServerState
    from runtimes.netio.websocket import WebSocket

__all__ = ["H2Connection"]

logger = logging.getLogger("tokios.netio.h2")

#: Hop-by-hop headers HTTP/2 forbids (RFC 9113 section 8.2.2); dropped from responses.
_CONNECTION_HEADERS = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
_PSEUDO_HEADERS = ("the pseudo-headers (:method, :scheme, :path, :authority) are missing, "
                   "repeated, unknown or after a regular header")
_CONNECTION_SPECIFIC = ("connection-specific headers (connection, keep-alive, upgrade, te other "
                        "than trailers) are not allowed in HTTP/2")
#: What h2's header validation found wrong, by a fragment of its message (which quotes the
#: header, so it is not passed on).
_H2_PROBLEMS = (
    ("header name", "a header name is malformed (HTTP/2 names are lower-case ASCII tokens)"),
    ("header value", "a header value is malformed (no NUL, CR or LF, no surrounding spaces)"),
    ("seudo-header", _PSEUDO_HEADERS),
    ("mandatory", _PSEUDO_HEADERS),
    ("onnection-specific", _CONNECTION_SPECIFIC),
    ("TE header", _CONNECTION_SPECIFIC),
)
#: How inbound request headers are validated (RFC 9113 8.2 and 8.3), by us: see _on_request.
_REQUEST_HEADERS = h2.utilities.HeaderValidationFlags(
    is_client=False, is_trailer=False, is_response_header=False, is_push_promise=False)


class _Stream:
    """Per-stream state: the unread body and the wake-ups of the handler's task."""

    __slots__ = (
        "body",
        "body_ended",
        "declared_length",
        "disconnected",
        "flow_waiter",
        "problem",
        "read_waiter",
        "reset",
        "stream_id",
    )

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id
        self.body: collections.deque[tuple[bytes, int]] = collections.deque()
        self.body_ended = False
        self.declared_length: int | None = None
        #: Why the body cannot be read (raised by the next read; the stream is reset after
        #: the answer).
        self.problem: RequestBodyError | None = None
        self.reset = False
        self.disconnected = Disconnected()
        self.read_waiter: asyncio.Future[None] | None = None
        self.flow_waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        for waiter in (self.read_waiter, self.flow_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)


class H2Connection(BufferedReads):
    """One HTTP/2 connection (TLS with ALPN h2, or h2c prior knowledge)."""

    def __init__(self, state: ServerState, scheme: str) -> None:
        self._state = state
        self._config: ServerConfig = state.config
        self._scheme = scheme
        self._loop = asyncio.get_running_loop()
        config = self._config
        self._guard = FloodGuard(max_resets=config.h2_max_resets,
                                 max_control=config.h2_max_control_frames,
                                 window=config.h2_abuse_window, clock=self._loop.time)
        self._conn = GuardedH2Connection(
            h2.config.H2Configuration(
                client_side=False,
                header_encoding=None,
                # Validated in _on_request instead: h2 would make a malformed request a
                # connection error, ending every other stream too (RFC 9113 8.1.1 says stream).
                validate_inbound_headers=False,
                # Outbound headers are already lower-cased bytes without hop-by-hop names.
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            ),
            guard=self._guard,
            header_block_cap=config.h2_max_header_block,
        )
        self._transport: asyncio.Transport | None = None
        self._peer: tuple[str, int] | None = None
        self._flow = WriteFlow(self._loop)
        self._streams: dict[int, _Stream] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._goaway_sent = False
        self._draining = False
        self._flush_scheduled = False
        self._pending_output = 0
        self._lost = False
        self._abort_timer: asyncio.TimerHandle | None = None
        #: Bytes other than response DATA written while the client was not reading.
        self._queued_control = 0
        self._timer: asyncio.TimerHandle | None = None

    # ---- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._transport.set_write_buffer_limits(high=self._config.write_high_water)
        peer = transport.get_extra_info("peername")
        self._peer = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        self._state.connections.add(self)
        config = self._config
        self._conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: config.max_h2_streams,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: config.h2_stream_window,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: config.max_header_bytes,
                h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 0,
            },
        )
        self._conn.initiate_connection()
        increment = config.h2_connection_window - 65535
        if increment > 0:
            self._conn.increment_flow_control_window(increment)
        self._flush()
        self._arm_idle_timer()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            events = self._conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 queued GOAWAY (ENHANCE_YOUR_CALM for a DenialOfServiceError, from h2_guard)
            if isinstance(exc, h2.exceptions.DenialOfServiceError):
                self._log_calm(str(exc))
            self._disconnect_all()
            self._close(linger=True)
            return
        for event in events:
            self._dispatch(event)
            if self._closed:
                return
        self._flush()

    def eof_received(self) -> bool | None:
        self._disconnect_all()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = self._lost = True
        self._flow.close()
        self._disconnect_all()
        self._cancel_timer()
        self._state.connections.discard(self)
        if self._abort_timer is not None:
            self._abort_timer.cancel()
            self._abort_timer = None
        # Break the reference cycle through the transport (its protocol caches our bound
        # methods), so this connection and its TLS buffers are freed now, not at the next
        # full GC pass.
        self._transport = None

    def pause_writing(self) -> None:
        self._flow.pause()

    def resume_writing(self) -> None:
        self._queued_control = 0
        self._flow.resume()

    # ---- server control ----------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return bool(self._streams)

    def begin_shutdown(self) -> None:
        """Close once the streams in flight have finished, with GOAWAY(NO_ERROR).

        The GOAWAY is sent when the connection is idle: some clients (httpcore) fail every
        open stream on any GOAWAY, so sending it early would break the requests in flight.
        """
        self._draining = True
        if not self._streams:
            self._send_goaway()
            self._close()

    def _send_goaway(self) -> None:
        if not self._goaway_sent and not self._closed:
            self._goaway_sent = True
            self._conn.close_connection(error_code=h2.errors.ErrorCodes.NO_ERROR)
            self._flush()

    def abort(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._transport is not None:
            self._transport.abort()

    # ---- events -------------------------------------------------------------------------

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._on_request(event)
        elif isinstance(event, h2.events.DataReceived):
            stream = self._streams.get(event.stream_id)
            length = event.flow_controlled_length
            if stream is None or stream.reset or stream.problem is not None:
                if length:
                    self._conn.acknowledge_received_data(length, event.stream_id)
                return
            if event.data:
                stream.body.append((event.data, length))
                stream.wake()
            elif length:
                self._conn.acknowledge_received_data(length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.body_ended = True
                stream.wake()
        elif isinstance(event, h2.events.StreamReset):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.reset = True
                stream.disconnected.set()
                stream.wake()
        elif isinstance(event, h2.events.WindowUpdated):
            if event.stream_id == 0:
                for stream in self._streams.values():
                    stream.wake()
            else:
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream.wake()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            for stream in self._streams.values():
                stream.wake()
        elif isinstance(event, BodyLengthInvalid):
            self._on_bad_body_length(event)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._disconnect_all()
            self._close()

    def _on_bad_body_length(self, event: BodyLengthInvalid) -> None:
        if event.flow_controlled_length:
            self._conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        stream = self._streams.get(event.stream_id)
        if stream is not None and stream.problem is None:
            stream.problem = RequestBodyError(
                400, "the request body is longer or shorter than its content-length")
            stream.wake()

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        raw = cast(list[tuple[bytes, bytes]], event.headers or [])
        method = path = b""
        authority = None
        regular: list[tuple[bytes, bytes]] = []
        size = 0
        for name, value in raw:
            size += len(name) + len(value) + 32  # as SETTINGS_MAX_HEADER_LIST_SIZE counts
            if name.startswith(b":"):
                if name == b":method":
                    method = value
                elif name == b":path":
                    path = value
                elif name == b":authority":
                    authority = value
            else:
                regular.append((name, value))
        if self._goaway_sent:
            self._conn.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        config = self._config
        if len(self._tasks) >= 2 * config.max_h2_streams:
            self._calm(f"more than {2 * config.max_h2_streams} handlers still running "
                       "(streams reset faster than they end)")
            return
        handler: Handler = self._state.handler
        problem = None
        try:
            for _ in h2.utilities.validate_headers(raw, _REQUEST_HEADERS):
                pass
        except h2.exceptions.ProtocolError as exc:
            problem = RequestBodyError(400, reason_for(str(exc), _H2_PROBLEMS,
                                                       "a request header is malformed"))
        else:
            if size > config.max_header_bytes:
                problem = RequestBodyError(431, "the request headers are too large")
            elif self._state.requests >= config.max_requests:
                problem = RequestBodyError(503, "the server is handling as many requests as "
                                                "it can; retry shortly")
        if problem is not None:
            handler = functools.partial(respond_problem, self._state.error_responder, problem)
        if authority is not None and not any(name == b"host" for name, _ in regular):
            regular.insert(0, (b"host", authority))
        self._cancel_timer()
        stream = _Stream(stream_id)
        stream.problem = problem
        for name, value in regular:
            if name == b"content-length" and value.isdigit():
                stream.declared_length = int(value)
        self._streams[stream_id] = stream
        channel = _H2Exchange(self, stream, head=method == b"HEAD")
        request = HttpRequest(
            channel=channel,
            method=method.decode("ascii", "replace"),
            target=path.decode("latin-1"),
            header_list=decode_header_list(regular),
            http_version="2",
            peer=self._peer,
            scheme=self._scheme,
        )
        if problem is None:
            self._state.requests += 1
        task = self._loop.create_task(
            self._run(stream, request, HttpResponse(channel), handler, counted=problem is None))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, stream: _Stream, request: HttpRequest, response: HttpResponse,
                   handler: Handler, *, counted: bool) -> None:
        failed = False
        problem = None
        try:
            await handler(request, response)
        except ClientDisconnected:
            pass
        except RequestBodyError as exc:
            problem = exc
        except asyncio.CancelledError:
            failed = True
        except Exception as exc:
            logger.error("handler failed: %s", type(exc).__name__)
            failed = True
        finally:
            if counted:
                self._state.requests -= 1
        try:
            if not stream.reset and not self._closed:
                if not response.started:
                    if failed:
                        problem = RequestBodyError(500, "the server failed to handle the request")
                    await respond_problem(
                        self._state.error_responder,
                        problem or stream.problem
                        or RequestBodyError(500, "the server sent no response"),
                        request, response)
                elif failed and not response.ended:
                    self._reset(stream, h2.errors.ErrorCodes.INTERNAL_ERROR)
                elif not response.ended:
                    await response.end()
        except ClientDisconnected:
            pass
        finally:
            self._finish_stream(stream)

    def _finish_stream(self, stream: _Stream) -> None:
        """Release the stream: return flow credit for unread body, reset if still open."""
        self._streams.pop(stream.stream_id, None)
        if self._closed:
            return
        unread = sum(length for _, length in stream.body)
        stream.body.clear()
        if not stream.body_ended and not stream.reset:
            declared = stream.declared_length
            if (stream.problem is not None or declared is None
                    or declared > self._config.discard_body_limit):
                # Responded before a long (or unusable) body: RST_STREAM(NO_ERROR) per RFC
                # 9113 8.1. A short rest is left to arrive; its DATA is acknowledged on arrival.
                self._reset(stream, h2.errors.ErrorCodes.NO_ERROR)
        if unread:
            self._conn.acknowledge_received_data(unread, stream.stream_id)
        self._schedule_flush()
        if not self._streams:
            if self._draining:
                self._send_goaway()
                self._close()
            else:
                self._arm_idle_timer()

    def _reset(self, stream: _Stream, code: h2.errors.ErrorCodes) -> None:
        stream.reset = True
        stream.disconnected.set()
        with contextlib.suppress(h2.exceptions.StreamClosedError):
            self._conn.reset_stream(stream.stream_id, code)
        self._schedule_flush()

    # ---- request body and response (called by _H2Exchange) ------------------------------

    async def receive_body_chunk(self, stream: _Stream) -> bytes:
        while True:
            if stream.problem is not None:
                raise stream.problem
            if stream.body:
                data, length = stream.body.popleft()
                if not self._closed:
                    self._conn.acknowledge_received_data(length, stream.stream_id)
                    self._schedule_flush()
                return data
            if stream.body_ended:
                return b""
            if stream.reset or self._closed:
                raise ClientDisconnected("stream reset")
            stream.read_waiter = self._loop.create_future()
            try:
                async with asyncio.timeout(self._config.body_timeout):
                    await stream.read_waiter
            except TimeoutError:
                stream.problem = RequestBodyError(
                    408, f"the request body stalled: nothing arrived for "
                         f"{self._config.body_timeout:g} s")
            finally:
                stream.read_waiter = None

    async def start_response(
        self, stream: _Stream, status: int, headers: list[tuple[bytes, bytes]]
    ) -> None:
        self._check(stream)
        block = [(b":status", str(status).encode("ascii"))]
        block.extend(pair for pair in headers if pair[0] not in _CONNECTION_HEADERS)
        self._conn.send_headers(stream.stream_id, block)
        self._schedule_flush()

    async def send_body(self, stream: _Stream, data: bytes) -> None:
        view = memoryview(data)
        while view:
            self._check(stream)
            window = min(
                self._conn.local_flow_control_window(stream.stream_id),
                self._conn.max_outbound_frame_size,
            )
            if window <= 0:
                stream.flow_waiter = self._loop.create_future()
                try:
                    async with asyncio.timeout(self._config.write_timeout):
                        await stream.flow_waiter
                except TimeoutError:
                    self._reset(stream, h2.errors.ErrorCodes.CANCEL)
                    stream.disconnected.set()
                    raise ClientDisconnected("client stopped reading") from None
                finally:
                    stream.flow_waiter = None
                continue
            chunk = view[:window]
            self._conn.send_data(stream.stream_id, chunk.tobytes())
            self._guard.allow(2)  # the client may answer each DATA with two WINDOW_UPDATEs
            self._pending_output += len(chunk)
            view = view[window:]
            self._schedule_flush()
            if self._flow.paused:
                try:
                    async with asyncio.timeout(self._config.write_timeout):
                        await self._flow.wait_writable()
                except TimeoutError:
                    # The whole connection is stuck, not only this stream.
                    if self._transport is not None:
                        self._transport.abort()
                    self._disconnect_all()
                    raise ClientDisconnected("client stopped reading") from None

    async def end_response(self, stream: _Stream) -> None:
        self._check(stream)
        self._conn.end_stream(stream.stream_id)
        self._schedule_flush()

    def _check(self, stream: _Stream) -> None:
        if stream.reset or self._closed:
            raise ClientDisconnected("stream reset")

    # ---- plumbing -----------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        """Write h2's output at the end of this loop iteration: frames produced together
        (HEADERS, DATA, END_STREAM, WINDOW_UPDATE) leave in one write, and nothing waits
        longer than the current iteration. Large outputs are written at once."""
        if self._pending_output > self._config.write_high_water:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        data_bytes, self._pending_output = self._pending_output, 0
        data = self._conn.data_to_send()
        if data and self._transport is not None and not self._closed:
            self._transport.write(data)
            if self._flow.paused:
                # the client is not reading: count what its frames made us queue besides
                # response bodies (whose senders wait), so a flood cannot grow the buffer
                self._queued_control += len(data) - data_bytes
                if self._queued_control > self._config.h2_max_queued_control:
                    self._log_calm(f"more than {self._config.h2_max_queued_control} bytes of "
                                   "answers to its frames queued while it does not read")
                    self._abort()

    def _disconnect_all(self) -> None:
        for stream in self._streams.values():
            stream.reset = True
            stream.disconnected.set()
            stream.wake()

    def _arm_idle_timer(self) -> None:
        self._cancel_timer()
        self._timer = self._loop.call_later(self._config.keepalive_timeout, self._on_idle)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_idle(self) -> None:
        self._timer = None
        if not self._streams:
            self.begin_shutdown()

    def _calm(self, reason: str) -> None:
        """End an abusive connection: GOAWAY(ENHANCE_YOUR_CALM), then close."""
        self._log_calm(reason)
        self._goaway_sent = True
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._conn.close_connection(error_code=h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
        self._disconnect_all()
        self._close(linger=True)

    def _log_calm(self, reason: str) -> None:
        host = self._peer[0] if self._peer is not None else "?"
        logger.warning("HTTP/2 client %s: %s; connection closed", host, reason)

    def _close(self, *, linger: bool = False) -> None:
        """Flush and close; nothing more is processed or sent. The transport closes at once,
        and is aborted if the client has not taken the last bytes within `write_timeout`.
        ``linger`` (after a GOAWAY for an error): stop reading and leave the connection open
        for `linger_timeout`, then abort: the client has that long to read the GOAWAY before
        the reset (which its unread bytes cause) can destroy it, and what it still sends costs
        no decryption."""
        self._flush()
        self._cancel_timer()
        self._state.connections.discard(self)
        if self._transport is not None and not self._closed:
            self._closed = True
            self._flow.close()
            if linger:
                with contextlib.suppress(RuntimeError):  # uvloop: already closing
                    self._transport.pause_reading()
                delay = self._config.linger_timeout
            else:
                self._transport.close()
                delay = self._config.write_timeout
            self._abort_timer = self._loop.call_later(delay, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if not self._lost and self._transport is not None:
            self._transport.abort()

    def _abort(self) -> None:
        self._closed = True
        self._disconnect_all()
        self._flow.close()
        self._state.connections.discard(self)
        if self._transport is not None:
            self._transport.abort()


class _H2Exchange:
    """The request and response channel of one HTTP/2 stream."""

    __slots__ = ("_head", "_owner", "_stream", "disconnected")

    def __init__(self, owner: H2Connection, stream: _Stream, *, head: bool) -> None:
        self._owner = owner
        self._stream = stream
        self._head = head  # a HEAD response carries the headers only
        self.disconnected = stream.disconnected

    async def receive_body_chunk(self) -> bytes:
        return await self._owner.receive_body_chunk(self._stream)

    def body_complete(self) -> bool:
        return self._stream.body_ended and not self._stream.body

    def limit_body(self, limit: int) -> None:
        pass  # the flow-control window bounds what arrives ahead of the handler

    async def accept_websocket(self, request: HttpRequest, **options: Any) -> WebSocket:
        raise WebSocketUpgradeError("WebSocket over HTTP/2 is not supported; use HTTP/1.1")

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        try:
            await self._owner.start_response(self._stream, status, headers)
        except h2.exceptions.ProtocolError as exc:  # the stream or connection closed meanwhile
            raise ClientDisconnected("stream closed") from exc

    async def send(self, data: bytes) -> None:
        if self._head:
            return
        try:
            await self._owner.send_body(self._stream, data)
        except h2.exceptions.ProtocolError as exc:
            raise ClientDisconnected("stream closed") from exc

    async def end(self) -> None:
        try:
            await self._owner.end_response(self._stream)
        except h2.exceptions.ProtocolError as exc:
            raise ClientDisconnected("stream closed") from exc
