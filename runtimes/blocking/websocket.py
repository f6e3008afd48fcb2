"""A WebSocket client on wsproto over a (TLS) socket and threads, for the threaded connector.

    ws = connect_websocket("wss://gw.example.com/v1/tunnel", ssl_context=ctx)
    message = ws.recv(timeout=1.5)    # one thread only: bytes, or None on timeout / wake()
    ws.send(b"...")                   # any thread: serialised by the send lock
    ws.wake()                         # any thread: make a pending recv() return None now
    ws.close()                        # any thread: close handshake (best effort), then the socket

Theory of operation. One thread reads (``recv``); any thread writes (``send``) under one send
lock, so frames never interleave. The socket is non-blocking once upgraded: every call into it
(so into OpenSSL, whose objects must not be used from two threads at once) holds a short I/O
lock, and waiting (for bytes, for room) happens in ``select`` outside it. wsproto's state is
guarded by a small lock held only while it encodes or decodes, never across a socket call.
``recv`` waits with ``select`` on the socket and on a wake-up socket pair, so a reader that
also drives timers can be woken when its next deadline moves. What arrives is decoded by the
message layer shared with the asyncio WebSocket (``runtimes.websocket_messages``: reassembly
up to ``max_message_size``, pings, close on a protocol error, abnormal closure), so both
shells follow the same rules. A slow reader
pushes back on the peer through TCP: nothing is read ahead beyond one socket read. A write
that makes no progress for ``write_timeout`` seconds (a peer gone without FIN or RST) closes
the WebSocket.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterable

import wsproto
import wsproto.events as ws_events

from runtimes.urls import parse_websocket_url
from runtimes.websocket_messages import (
    CLOSE_NORMAL,
    CloseInfo,
    MessageLayer,
    WebSocketClosed,
    WebSocketHandshakeError,
)

__all__ = ["WebSocket", "WebSocketClosed", "WebSocketHandshakeError", "connect_websocket"]

_READ_SIZE = 64 * 1024
#: Largest handshake answer read before giving up.
_MAX_HANDSHAKE = 64 * 1024


class WebSocket:
    """A message channel over one connected socket whose upgrade is done."""

    def __init__(self, sock: socket.socket, layer: MessageLayer, *,
                 write_timeout: float = 60.0) -> None:
        self._sock = sock
        sock.setblocking(False)
        self._layer = layer
        self._write_timeout = write_timeout
        #: Guards the message layer (wsproto's state): held only while it decodes or
        #: encodes, never across a socket call.
        self._state_lock = threading.Lock()
        self._send_lock = threading.Lock()
        #: Held around every call into the socket (and so into OpenSSL, whose SSL objects
        #: must not be used by two threads at once); never held while waiting.
        self._io_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    @property
    def closed(self) -> CloseInfo | None:
        """None while open; the close code and reason once closed."""
        return self._layer.closed

    def fileno(self) -> int:
        return self._sock.fileno()

    # ---- reading (one thread) --------------------------------------------------------------

    def recv(self, timeout: float | None = None) -> bytes | None:
        """The next whole message; None when ``timeout`` passed or :meth:`wake` was called.

        Raises :class:`WebSocketClosed` once the connection is closed and the queue is empty.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        layer = self._layer
        while True:
            with self._state_lock:
                message = layer.next_message()
            if message is not None:
                return message
            if layer.closed is not None:
                raise WebSocketClosed(layer.closed)
            if not self._pending():
                remaining = None if deadline is None else deadline - time.monotonic()
                if not self._wait_readable(remaining):
                    return None
            data = self._read()
            if data is not None:  # None: only part of a TLS record came; wait for the rest
                self._feed(data)

    def _read(self) -> bytes | None:
        with self._io_lock:
            try:
                return self._sock.recv(_READ_SIZE)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError,
                    InterruptedError):
                return None
            except (OSError, ValueError):
                return b""

    def _pending(self) -> bool:
        if not isinstance(self._sock, ssl.SSLSocket):
            return False
        with self._io_lock, contextlib.suppress(OSError, ValueError):
            return self._sock.pending() > 0
        return False

    def _wait_readable(self, timeout: float | None) -> bool:
        try:
            readable, _, _ = select.select([self._sock, self._wake_r], [], [],
                                           None if timeout is None else max(0.0, timeout))
        except (OSError, ValueError):  # the socket was closed under us
            return True
        if self._wake_r in readable:
            with contextlib.suppress(OSError):
                while self._wake_r.recv(4096):
                    pass
        return self._sock in readable

    def _feed(self, data: bytes) -> None:
        """Decode ``data`` (b"": end of stream), write the replies, end the link once over."""
        with self._state_lock:
            self._layer.receive(data or None)
            replies = self._layer.data_to_send()
            closed = self._layer.closed is not None
        if replies:
            self._write(replies)
        if closed:
            self._shutdown()

    # ---- writing (any thread) --------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Send one binary message; raises :class:`WebSocketClosed` if the link is gone."""
        self.send_many((data,))

    def send_many(self, messages: Iterable[bytes]) -> None:
        """Send binary messages in one socket write (one TLS record when they fit)."""
        with self._send_lock:
            with self._state_lock:
                frame = b"".join([self._layer.send(data) for data in messages])
            try:
                self._sendall(frame, self._write_timeout)
            except (OSError, ValueError) as exc:
                with self._state_lock:
                    self._layer.abort("write failed")
                    closed = self._layer.closed
                assert closed is not None
                raise WebSocketClosed(closed) from exc

    def _write(self, frame: bytes) -> None:
        with self._send_lock, contextlib.suppress(OSError, ValueError):
            self._sendall(frame, self._write_timeout)

    def _sendall(self, data: bytes, timeout: float) -> None:
        """Write all of ``data`` (under the send lock); TimeoutError after ``timeout`` s of no
        progress. Each attempt holds the I/O lock, waiting for room does not."""
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        while view:
            with self._io_lock:
                try:
                    sent = self._sock.send(view)
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError,
                        InterruptedError):
                    sent = 0  # TLS: retry with the same bytes once there is room
            if sent:
                view = view[sent:]
                deadline = time.monotonic() + timeout
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("websocket write timed out")
            select.select([], [self._sock], [], remaining)

    def wake(self) -> None:
        """Make a pending or the next :meth:`recv` return None at once."""
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Send a close frame (best effort: skipped if another write holds the socket for a
        second) and drop the link without waiting for the peer's close."""
        with self._state_lock:
            frame = self._layer.close(code, reason)
        if frame and self._send_lock.acquire(timeout=1.0):
            try:
                with contextlib.suppress(OSError, ValueError):
                    self._sendall(frame, 1.0)
            finally:
                self._send_lock.release()
        with self._state_lock:
            self._layer.finish(code, reason)
        self._shutdown()
        self.wake()

    def abort(self) -> None:
        """Drop the link without a close handshake (unblocks a reader at once)."""
        with self._state_lock:
            self._layer.abort("aborted")
        self._shutdown()
        self.wake()

    def _shutdown(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def release(self) -> None:
        """Free the file descriptors (call once no thread uses this WebSocket any more)."""
        for sock in (self._sock, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                sock.close()


def connect_websocket(url: str, *, ssl_context: ssl.SSLContext | None = None,
                      headers: Iterable[tuple[str, str]] = (), connect_timeout: float = 10.0,
                      write_timeout: float = 60.0,
                      max_message_size: int = 1024 * 1024) -> WebSocket:
    """Dial ``ws://`` or ``wss://`` and complete the upgrade (all within ``connect_timeout``);
    raise WebSocketHandshakeError, OSError or TimeoutError. A write blocked for
    ``write_timeout`` seconds closes the WebSocket."""
    dial = parse_websocket_url(url)
    secure, host, port, target, host_header = (
        dial.secure, dial.host, dial.port, dial.target, dial.host_header)
    raw = socket.create_connection((host, port), timeout=connect_timeout)
    sock: socket.socket = raw
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if secure:
            context = ssl_context or ssl.create_default_context()
            sock = context.wrap_socket(raw, server_hostname=host)
        connection = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        layer = MessageLayer(connection, max_message_size=max_message_size)
        extra = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        sock.sendall(connection.send(ws_events.Request(host=host_header, target=target,
                                                       extra_headers=extra)))
        received = 0
        while not layer.accepted:
            data = sock.recv(_READ_SIZE)
            received += len(data)
            if not data or received > _MAX_HANDSHAKE:
                raise WebSocketHandshakeError("the server closed during the upgrade")
            layer.receive(data)  # frames that came with the 101 are decoded too
            if layer.refused is not None:
                raise WebSocketHandshakeError("the server refused the upgrade", layer.refused)
        ws = WebSocket(sock, layer, write_timeout=write_timeout)
        replies = layer.data_to_send()  # e.g. a pong for a ping that came with the 101
        if replies:
            ws._write(replies)
        return ws
    except BaseException:
        sock.close()
        raise
