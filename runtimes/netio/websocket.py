"""A WebSocket channel over wsproto, used by the server (after an HTTP/1.1 upgrade) and by
`connect_websocket` (the connector's outbound wss:// client).

Theory of operation. `WebSocket` is the asyncio.Protocol of the transport once the handshake is
done. Incoming bytes go to wsproto; message fragments are reassembled up to
`max_message_size` (past it: close 1009); whole messages wait in a queue of at most
`queue_bytes` bytes, past which the socket stops being read until `recv()` catches up, so a
slow consumer pushes back on the peer. Pings are answered at once. `send()` writes at once and
waits while the transport's write buffer is above its high-water mark.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import wsproto
import wsproto.connection
import wsproto.events as ws_events
import wsproto.utilities

from runtimes.netio._http import BufferedReads, WriteBatch
from runtimes.urls import parse_websocket_url

__all__ = [
    "CloseInfo",
    "WebSocket",
    "WebSocketClosed",
    "WebSocketHandshakeError",
    "connect_websocket",
]

#: Close codes used here (RFC 6455 section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_MESSAGE_TOO_BIG = 1009
#: Queued outgoing bytes above which frames are written without waiting for the loop.
_FLUSH_AT = 64 * 1024
CLOSE_ABNORMAL = 1006  # never sent: reported when the TCP connection is lost without a close


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseInfo:
    """How the WebSocket ended: the close code and reason (1006 when the link just dropped)."""

    code: int
    reason: str


class WebSocketClosed(Exception):  # noqa: N818
    """The WebSocket is closed; `.code` and `.reason` tell why."""

    def __init__(self, info: CloseInfo) -> None:
        super().__init__(f"websocket closed with code {info.code}")
        self.code = info.code
        self.reason = info.reason


class WebSocketHandshakeError(Exception):
    """The server refused the upgrade (`.status` is its HTTP status, 0 if none)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class WebSocket(BufferedReads):
    """A message channel: `recv()`, `send()`, `close()`, `closed`."""

    def __init__(
        self,
        connection: wsproto.connection.Connection | wsproto.WSConnection,
        *,
        max_message_size: int = 1024 * 1024,
        queue_bytes: int | None = None,
        subprotocol: str | None = None,
    ) -> None:
        self._ws = connection
        self._loop = asyncio.get_running_loop()
        self.max_message_size = max_message_size
        self._queue_bytes = queue_bytes if queue_bytes is not None else max_message_size
        self.subprotocol = subprotocol
        self._transport: asyncio.Transport | None = None
        # a list read from _messages_head, not a deque: an empty deque keeps a ~700-byte
        # block, and a tunnel's queue is empty nearly all the time
        self._messages: list[bytes] = []
        self._messages_head = 0
        self._queued = 0
        self._partial = bytearray()
        self._recv_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        # a list, not a deque: it is empty unless the peer is slow, and an empty deque
        # costs ~600 bytes per connection (idle tunnels)
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._reading_paused = False
        self._out = WriteBatch(self._loop, self._write_out, _FLUSH_AT)
        self._close_sent = False
        self._closed: CloseInfo | None = None
        #: Resolved with the CloseInfo once the connection is over (close handshake or drop).
        self.closed_future: asyncio.Future[CloseInfo] = self._loop.create_future()
        #: Client side only: resolved when the server accepted the upgrade.
        self._handshake: asyncio.Future[None] | None = None
        self._reject_status = 0

    # ---- public API ---------------------------------------------------------------------

    @property
    def closed(self) -> CloseInfo | None:
        """None while open; the close code and reason once closed."""
        return self._closed

    async def recv(self) -> bytes:
        """Return the next whole message (text is returned UTF-8 encoded).

        Raises WebSocketClosed once the peer closed (or the link dropped) and the queue is empty.
        """
        while self._messages_head >= len(self._messages):
            if self._closed is not None:
                raise WebSocketClosed(self._closed)
            self._recv_waiter = self._loop.create_future()
            try:
                await self._recv_waiter
            finally:
                self._recv_waiter = None
        message = self._messages[self._messages_head]
        self._messages_head += 1
        if self._messages_head == len(self._messages):
            self._messages.clear()  # drained: the list frees its storage
            self._messages_head = 0
        elif self._messages_head >= 64 and self._messages_head * 2 >= len(self._messages):
            del self._messages[:self._messages_head]  # never drained: let read ones go
            self._messages_head = 0
        self._queued -= len(message)
        if self._reading_paused and self._queued <= self._queue_bytes // 2:
            self._reading_paused = False
            if self._transport is not None:
                self._transport.resume_reading()
        return message

    async def send(self, data: bytes) -> None:
        """Send one binary message; waits while the peer is slow. WebSocketClosed if closed."""
        self._check_open()
        self._write(self._ws.send(ws_events.BytesMessage(data=data)))
        await self.drain()
        self._check_open()

    def send_nowait(self, data: bytes) -> None:
        """Frame one binary message into the output buffer without waiting (WebSocketClosed
        if closed). Call :meth:`flush` after a batch; check :attr:`write_paused` first and
        ``await drain()`` while it is true, or the transport's buffer grows."""
        self._check_open()
        self._out.add_unscheduled(self._ws.send(ws_events.BytesMessage(data=data)))

    def flush(self) -> None:
        """Write the buffered frames to the transport now (one write)."""
        self._flush()

    @property
    def write_paused(self) -> bool:
        """The transport's buffer is above its high-water mark (the peer is slow)."""
        return self._write_paused and self._closed is None

    async def drain(self) -> None:
        """Wait while the transport's buffer is above its high-water mark (returns at once
        otherwise, and once the WebSocket is closed)."""
        while self._write_paused and self._closed is None:
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    async def ping(self, payload: bytes = b"") -> None:
        """Send a ping (the peer's pong is consumed silently)."""
        self._check_open()
        self._write(self._ws.send(ws_events.Ping(payload=payload)))

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "", timeout: float = 5.0) -> None:
        """Start (or finish) the close handshake and wait up to `timeout` for the peer."""
        if self._closed is None and not self._close_sent:
            self._send_close(code, reason)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed_future), timeout)
        if self._transport is not None:
            self._close_transport()
        if self._closed is None:
            self._finish(CloseInfo(code=code, reason=reason))

    async def wait_closed(self) -> CloseInfo:
        return await asyncio.shield(self.closed_future)

    def abort(self) -> None:
        """Drop the connection without a close handshake."""
        if self._transport is not None:
            self._transport.abort()
        self._finish(CloseInfo(code=CLOSE_ABNORMAL, reason="aborted"))

    # ---- asyncio.Protocol ---------------------------------------------------------------

    def adopt_transport(self, transport: asyncio.Transport, *, write_paused: bool) -> None:
        """Take over a transport whose handshake is done (server side, after the 101)."""
        self._transport = transport
        self._write_paused = write_paused

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._closed is not None:
            return  # closed on our side: whatever still arrives is dropped
        try:
            self._ws.receive_data(data)
            events = list(self._ws.events())
        except wsproto.utilities.RemoteProtocolError:
            self._fail_handshake("invalid handshake response")
            return
        except wsproto.utilities.LocalProtocolError:
            return  # data after the close handshake
        for event in events:
            self._on_event(event)
        if self._messages_head < len(self._messages):
            self._wake_recv()
            if not self._reading_paused and self._queued > self._queue_bytes:
                self._reading_paused = True
                if self._transport is not None:
                    self._transport.pause_reading()

    def eof_received(self) -> bool | None:
        with contextlib.suppress(wsproto.utilities.LocalProtocolError):
            self._ws.receive_data(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_handshake("connection lost during the handshake")
        self._finish(CloseInfo(code=CLOSE_ABNORMAL, reason="connection lost"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    # ---- internals ----------------------------------------------------------------------

    def _on_event(self, event: ws_events.Event) -> None:
        if isinstance(event, ws_events.Message):
            if self._closed is not None or self._close_sent:
                return
            chunk = event.data.encode() if isinstance(event.data, str) else event.data
            if len(self._partial) + len(chunk) > self.max_message_size:
                self._partial.clear()
                self._send_close(CLOSE_MESSAGE_TOO_BIG, "message too big")
                self._finish(CloseInfo(code=CLOSE_MESSAGE_TOO_BIG, reason="message too big"))
                if self._transport is not None:
                    self._close_transport()
                return
            if event.message_finished:
                if self._partial:
                    self._partial += chunk
                    chunk = bytes(self._partial)
                    self._partial.clear()
                self._messages.append(chunk)
                self._queued += len(chunk)
            else:
                self._partial += chunk
        elif isinstance(event, ws_events.Ping):
            if self._ws.state is wsproto.connection.ConnectionState.OPEN:
                self._write(self._ws.send(event.response()))
        elif isinstance(event, ws_events.CloseConnection):
            state = self._ws.state
            if state is wsproto.connection.ConnectionState.REMOTE_CLOSING:
                self._write(self._ws.send(event.response()))
            elif state is wsproto.connection.ConnectionState.OPEN:
                # wsproto reports a frame the peer got wrong (1002, 1007...) this way.
                self._send_close(int(event.code), "")
            self._finish(CloseInfo(code=int(event.code), reason=event.reason or ""))
            if self._transport is not None:
                self._close_transport()
        elif isinstance(event, ws_events.AcceptConnection):
            self.subprotocol = event.subprotocol
            if self._handshake is not None and not self._handshake.done():
                self._handshake.set_result(None)
        elif isinstance(event, ws_events.RejectConnection):
            self._reject_status = event.status_code
            self._fail_handshake(f"upgrade refused with HTTP {event.status_code}")

    def _send_close(self, code: int, reason: str) -> None:
        if self._close_sent or self._ws.state is not wsproto.connection.ConnectionState.OPEN:
            return
        self._close_sent = True
        self._write(self._ws.send(ws_events.CloseConnection(code=code, reason=reason)))

    def _finish(self, info: CloseInfo) -> None:
        if self._closed is None:
            self._closed = info
            if info.code == CLOSE_MESSAGE_TOO_BIG:
                self._messages.clear()
                self._messages_head = 0
        if not self.closed_future.done():
            self.closed_future.set_result(self._closed)
        self._wake_recv()
        self._wake_drain()

    def _fail_handshake(self, message: str) -> None:
        if self._handshake is not None and not self._handshake.done():
            self._handshake.set_exception(WebSocketHandshakeError(message, self._reject_status))
            if self._transport is not None:
                self._close_transport()

    def _check_open(self) -> None:
        if self._closed is not None:
            raise WebSocketClosed(self._closed)
        if self._close_sent:
            raise WebSocketClosed(CloseInfo(code=CLOSE_NORMAL, reason="closing"))

    def _write(self, data: bytes) -> None:
        """Queue frames for the end of this loop iteration, so messages sent together leave
        in one write; more than `_FLUSH_AT` bytes are written at once."""
        if data:
            self._out.add(data)

    def _flush(self) -> None:
        self._out.flush()

    def _write_out(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _close_transport(self) -> None:
        self._flush()
        if self._transport is not None:
            self._transport.close()

    def _wake_recv(self) -> None:
        waiter = self._recv_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_drain(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


async def connect_websocket(
    url: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    headers: Iterable[tuple[str, str]] = (),
    subprotocols: Iterable[str] = (),
    connect_timeout: float = 10.0,
    max_message_size: int = 1024 * 1024,
) -> WebSocket:
    """Dial `ws://` or `wss://` (SNI and hostname checked by `ssl_context`, default: system
    roots) and complete the upgrade; raise WebSocketHandshakeError, OSError or TimeoutError.
    """
    dial = parse_websocket_url(url)
    secure, host, port, target, host_header = (
        dial.secure, dial.host, dial.port, dial.target, dial.host_header)
    if secure and ssl_context is None:
        ssl_context = ssl.create_default_context()
    loop = asyncio.get_running_loop()
    connection = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    ws = WebSocket(connection, max_message_size=max_message_size)
    ws._handshake = loop.create_future()
    extra = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    kwargs: dict[str, Any] = {}
    if secure:
        kwargs = {"ssl": ssl_context, "server_hostname": host}
    async with asyncio.timeout(connect_timeout):
        transport, _ = await loop.create_connection(lambda: ws, host, port, **kwargs)
        try:
            ws._write(
                connection.send(
                    ws_events.Request(
                        host=host_header,
                        target=target,
                        extra_headers=extra,
                        subprotocols=list(subprotocols),
                    )
                )
            )
            await ws._handshake
        except BaseException:
            transport.abort()
            raise
    return ws
