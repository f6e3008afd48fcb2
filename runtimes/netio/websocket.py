"""A WebSocket channel over wsproto, used by the server (after an HTTP/1.1 upgrade) and by
`connect_websocket` (the connector's outbound wss:// client).

Theory of operation. `WebSocket` is the asyncio.Protocol of the transport once the handshake is
done. Incoming bytes go to the message layer shared with the threaded shell
(``runtimes.websocket_messages``: reassembly up to `max_message_size`, pings, close on a
protocol error, abnormal closure); this class only moves bytes and waits. Whole messages wait
in a queue of at most `queue_bytes` bytes, past which the socket stops being read until
`recv()` catches up, so a slow consumer pushes back on the peer. `send()` writes at once and
waits while the transport's write buffer is above its high-water mark.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable
from typing import Any, cast

import wsproto
import wsproto.connection
import wsproto.events as ws_events

from runtimes.netio._http import BufferedReads, WriteBatch
from runtimes.urls import parse_websocket_url
from runtimes.websocket_messages import (
    CLOSE_ABNORMAL,
    CLOSE_GOING_AWAY,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_NORMAL,
    CloseInfo,
    MessageLayer,
    WebSocketClosed,
    WebSocketHandshakeError,
)

__all__ = [
    "CLOSE_ABNORMAL",
    "CLOSE_GOING_AWAY",
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_NORMAL",
    "CloseInfo",
    "WebSocket",
    "WebSocketClosed",
    "WebSocketHandshakeError",
    "connect_websocket",
]

#: Queued outgoing bytes above which frames are written without waiting for the loop.
_FLUSH_AT = 64 * 1024


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
        self._layer = MessageLayer(connection, max_message_size=max_message_size)
        self._loop = asyncio.get_running_loop()
        self.max_message_size = max_message_size
        self._queue_bytes = queue_bytes if queue_bytes is not None else max_message_size
        self.subprotocol = subprotocol
        self._transport: asyncio.Transport | None = None
        self._recv_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        # a list, not a deque: it is empty unless the peer is slow, and an empty deque
        # costs ~600 bytes per connection (idle tunnels)
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._reading_paused = False
        self._out = WriteBatch(self._loop, self._write_out, _FLUSH_AT)
        self._closed: CloseInfo | None = None
        #: Resolved with the CloseInfo once the connection is over (close handshake or drop).
        self.closed_future: asyncio.Future[CloseInfo] = self._loop.create_future()
        #: Client side only: resolved when the server accepted the upgrade.
        self._handshake: asyncio.Future[None] | None = None

    # ---- public API ---------------------------------------------------------------------

    @property
    def closed(self) -> CloseInfo | None:
        """None while open; the close code and reason once closed."""
        return self._closed

    async def recv(self) -> bytes:
        """Return the next whole message (text is returned UTF-8 encoded).

        Raises WebSocketClosed once the peer closed (or the link dropped) and the queue is empty.
        """
        layer = self._layer
        while (message := layer.next_message()) is None:
            if self._closed is not None:
                raise WebSocketClosed(self._closed)
            self._recv_waiter = self._loop.create_future()
            try:
                await self._recv_waiter
            finally:
                self._recv_waiter = None
        if self._reading_paused and layer.queued <= self._queue_bytes // 2:
            self._reading_paused = False
            if self._transport is not None:
                self._transport.resume_reading()
        return message

    async def send(self, data: bytes) -> None:
        """Send one binary message; waits while the peer is slow. WebSocketClosed if closed."""
        self._write(self._layer.send(data))
        await self.drain()
        self._check_open()

    def send_nowait(self, data: bytes) -> None:
        """Frame one binary message into the output buffer without waiting (WebSocketClosed
        if closed). Call :meth:`flush` after a batch; check :attr:`write_paused` first and
        ``await drain()`` while it is true, or the transport's buffer grows."""
        self._out.add_unscheduled(self._layer.send(data))

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
        self._write(self._layer.ping(payload))

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "", timeout: float = 5.0) -> None:
        """Start (or finish) the close handshake and wait up to `timeout` for the peer."""
        self._write(self._layer.close(code, reason))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed_future), timeout)
        if self._transport is not None:
            self._close_transport()
        self._layer.finish(code, reason)
        self._finish()

    async def wait_closed(self) -> CloseInfo:
        return await asyncio.shield(self.closed_future)

    def abort(self) -> None:
        """Drop the connection without a close handshake."""
        if self._transport is not None:
            self._transport.abort()
        self._layer.abort("aborted")
        self._finish()

    # ---- asyncio.Protocol ---------------------------------------------------------------

    def adopt_transport(self, transport: asyncio.Transport, *, write_paused: bool) -> None:
        """Take over a transport whose handshake is done (server side, after the 101)."""
        self._transport = transport
        self._write_paused = write_paused

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._received(data)

    def eof_received(self) -> bool | None:
        self._received(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._layer.abort("connection lost")
        self._settle_handshake()
        self._finish()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    # ---- internals ----------------------------------------------------------------------

    def _received(self, data: bytes | None) -> None:
        if self._closed is not None:
            return  # closed on our side: whatever still arrives is dropped
        layer = self._layer
        layer.receive(data)
        self._write(layer.data_to_send())
        if self._handshake is not None:
            self._settle_handshake()
        if layer.closed is not None:
            self._finish()
            if self._transport is not None:
                self._close_transport()
        elif layer.has_messages:
            self._wake_recv()
            if not self._reading_paused and layer.queued > self._queue_bytes:
                self._reading_paused = True
                if self._transport is not None:
                    self._transport.pause_reading()

    def _settle_handshake(self) -> None:
        """Client side: resolve the upgrade once the layer knows its outcome."""
        handshake, layer = self._handshake, self._layer
        if handshake is None or handshake.done():
            return
        if layer.accepted:
            self.subprotocol = layer.subprotocol
            handshake.set_result(None)
        elif layer.closed is not None:
            reason = layer.closed.reason
            if layer.refused is None:
                reason = "connection lost during the handshake"
            handshake.set_exception(WebSocketHandshakeError(reason, layer.refused or 0))
            if self._transport is not None:
                self._close_transport()

    def _finish(self) -> None:
        """The layer says the WebSocket is over: wake every waiter with its CloseInfo."""
        if self._closed is None:
            self._closed = self._layer.closed
        if self._closed is None:
            return
        if not self.closed_future.done():
            self.closed_future.set_result(self._closed)
        self._wake_recv()
        self._wake_drain()

    def _check_open(self) -> None:
        if self._layer.closing:
            raise WebSocketClosed(self._closed or CloseInfo(code=CLOSE_NORMAL,
                                                            reason="closing"))

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
