"""HTTP/2 server connection: an asyncio.Protocol driving h2.

Theory of operation. Every `data_received` feeds h2 and dispatches its events; every h2 call
is followed by a write of `data_to_send()`, so frames leave at once. Each request stream runs
the handler in its own task. Request body DATA stays queued on its stream and is acknowledged
(`acknowledge_received_data`) only when the handler takes it, so the client's flow-control
window is the bound on buffered body. Response DATA is sent in slices of
`min(stream window, connection window, max frame size)`; with no window `send()` waits for a
WINDOW_UPDATE, and it also waits while the transport's write buffer is above the high-water
mark. RST_STREAM or the connection closing sets the stream's `disconnected` at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import TYPE_CHECKING, Any, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from runtimes.netio._http import (
    BufferedReads,
    ClientDisconnected,
    Disconnected,
    HttpRequest,
    HttpResponse,
    ServerConfig,
    WebSocketUpgradeError,
    WriteFlow,
    decode_header_list,
)

if TYPE_CHECKING:
    from runtimes.netio.http_server import ServerState
    from runtimes.netio.websocket import WebSocket

__all__ = ["H2Connection"]

logger = logging.getLogger("tokios.netio.h2")

#: Hop-by-hop headers HTTP/2 forbids (RFC 9113 section 8.2.2); dropped from responses.
_CONNECTION_HEADERS = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


class _Stream:
    """Per-stream state: the unread body and the wake-ups of the handler's task."""

    __slots__ = (
        "body",
        "body_ended",
        "declared_length",
        "disconnected",
        "flow_waiter",
        "read_waiter",
        "reset",
        "stream_id",
    )

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id
        self.body: collections.deque[tuple[bytes, int]] = collections.deque()
        self.body_ended = False
        self.declared_length: int | None = None
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
        self._conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(
                client_side=False,
                header_encoding=None,
                validate_inbound_headers=True,
                # Outbound headers are already lower-cased bytes without hop-by-hop names.
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
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
        try:
            events = self._conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            self._close()
            return
        for event in events:
            self._dispatch(event)
        self._flush()

    def eof_received(self) -> bool | None:
        self._disconnect_all()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._flow.close()
        self._disconnect_all()
        self._cancel_timer()
        self._state.connections.discard(self)

    def pause_writing(self) -> None:
        self._flow.pause()

    def resume_writing(self) -> None:
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
            if stream is None or stream.reset:
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
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._disconnect_all()
            self._close()

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        method = path = b""
        authority = None
        regular: list[tuple[bytes, bytes]] = []
        for name, value in cast(list[tuple[bytes, bytes]], event.headers or []):
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
        if not method or not path:
            self._conn.send_headers(
                stream_id, [(b":status", b"400"), (b"content-length", b"0")], end_stream=True
            )
            return
        if authority is not None and not any(name == b"host" for name, _ in regular):
            regular.insert(0, (b"host", authority))
        self._cancel_timer()
        stream = _Stream(stream_id)
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
        task = self._loop.create_task(self._run(stream, request, HttpResponse(channel)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, stream: _Stream, request: HttpRequest, response: HttpResponse) -> None:
        failed = False
        try:
            await self._state.handler(request, response)
        except ClientDisconnected:
            pass
        except asyncio.CancelledError:
            failed = True
        except Exception as exc:
            logger.error("handler failed: %s", type(exc).__name__)
            failed = True
        try:
            if not stream.reset and not self._closed:
                if not response.started:
                    if failed:
                        await response.respond(500, [("content-type", "text/plain")], b"error\n")
                    else:
                        await response.respond(500, [("content-type", "text/plain")], b"none\n")
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
            if declared is None or declared > self._config.discard_body_limit:
                # Responded before a long body: RST_STREAM(NO_ERROR) per RFC 9113 8.1.
                # A short rest is left to arrive; its DATA is acknowledged on arrival.
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
                self._reset(stream, h2.errors.ErrorCodes.CANCEL)
                raise ClientDisconnected("request body timed out") from None
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
        self._pending_output = 0
        data = self._conn.data_to_send()
        if data and self._transport is not None and not self._closed:
            self._transport.write(data)

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

    def _close(self) -> None:
        self._flush()
        self._cancel_timer()
        self._state.connections.discard(self)
        if self._transport is not None and not self._closed:
            self._transport.close()


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
