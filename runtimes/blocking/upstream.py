"""A pooled HTTP/1.1 client on h11 over blocking sockets, for the threaded connector's calls to
the local model. Same contract as ``runtimes.netio.upstream`` (its asyncio twin), and the same
sans-I/O exchange (``runtimes.upstream_http``)::

    pool = UpstreamPool("http://127.0.0.1:11434", max_connections=16)
    with pool.request("POST", "/api/chat", [("content-type", "application/json")], body) as r:
        r.status, r.headers
        for chunk in r.iter_bytes():      # as the bytes arrive; our pace is the read pace
            ...
    pool.close()

Leaving the ``with`` before the body ended aborts that connection, so the upstream sees the
disconnect and stops generating. ``r.abort()`` may be called from ANOTHER thread (a stream
reset): it shuts the socket down, so the thread blocked in ``iter_bytes`` gets UpstreamError at
once. A complete response returns the connection to the pool.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator

import h11

from runtimes.upstream_http import (
    UpstreamError,
    decode_head,
    encode_request,
    next_body,
    next_head,
    parse_origin,
)

__all__ = ["UpstreamError", "UpstreamPool", "UpstreamResponse"]

_READ_SIZE = 64 * 1024


class _PooledConnection:
    __slots__ = ("aborted", "conn", "received", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.conn = h11.Connection(h11.CLIENT)
        self.received = 0
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def readable(self) -> bool:
        """True if a read would not block (bytes or EOF waiting)."""
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        try:
            return bool(select.select([self.sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def receive(self) -> None:
        try:
            data = self.sock.recv(_READ_SIZE)
        except TimeoutError as exc:
            raise UpstreamError("upstream read timed out") from exc
        except OSError as exc:
            raise UpstreamError(f"upstream read failed: {type(exc).__name__}") from exc
        if self.aborted:
            raise UpstreamError("upstream request aborted")
        self.received += len(data)
        self.conn.receive_data(data)  # b"" records EOF; h11 then reports the error


class UpstreamResponse:
    """A response head plus its body, read on demand (by one thread)."""

    __slots__ = ("_connection", "headers", "reason", "status")

    def __init__(self, connection: _PooledConnection, head: h11.Response) -> None:
        self._connection = connection
        self.status, self.reason, self.headers = decode_head(head)

    def abort(self) -> None:
        """From any thread: drop the connection so the upstream stops and a reader wakes up."""
        self._connection.abort()

    def iter_bytes(self, before_wait: Callable[[], None] | None = None) -> Iterator[bytes]:
        """Body chunks as they arrive; UpstreamError if the body ends early.

        ``before_wait()`` is called each time no byte is waiting and the next read would block
        (the moment to flush output held back while the upstream was faster than us).
        """
        connection = self._connection
        while (chunk := next_body(connection.conn)) is not None:
            if isinstance(chunk, bytes):
                yield chunk
            else:  # h11.NEED_DATA
                if before_wait is not None and not connection.readable():
                    before_wait()
                connection.receive()

    def read(self, limit: int) -> bytes:
        """Read the whole body; UpstreamError past ``limit`` bytes."""
        parts: list[bytes] = []
        total = 0
        for chunk in self.iter_bytes():
            total += len(chunk)
            if total > limit:
                raise UpstreamError(f"upstream body exceeds {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)


class UpstreamPool:
    """Keep-alive connections to one upstream origin, at most ``max_connections`` at once."""

    def __init__(self, base_url: str, *, max_connections: int = 32,
                 connect_timeout: float = 5.0, read_timeout: float = 300.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._origin = origin = parse_origin(base_url)
        self._secure, self._host, self._port = origin.secure, origin.host, origin.port
        self._ssl = ssl_context
        if self._secure and self._ssl is None:
            self._ssl = ssl.create_default_context()
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._max_idle = max_connections
        self._idle: list[_PooledConnection] = []
        self._lock = threading.Lock()
        self._closed = False
        #: Connections opened so far (for tests and metrics).
        self.connects = 0

    def _connect(self) -> _PooledConnection:
        try:
            sock = socket.create_connection((self._host, self._port),
                                            timeout=self._connect_timeout)
        except TimeoutError as exc:
            raise UpstreamError("upstream connect timed out") from exc
        except OSError as exc:
            raise UpstreamError(f"upstream connect failed: {type(exc).__name__}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(sock, server_hostname=self._host)
            sock.settimeout(self._read_timeout)
        except OSError as exc:
            sock.close()
            raise UpstreamError(f"upstream TLS failed: {type(exc).__name__}") from exc
        with self._lock:
            self.connects += 1
        return _PooledConnection(sock)

    def _checkout(self) -> tuple[_PooledConnection, bool]:
        with self._lock:
            idle = self._idle.pop() if self._idle else None
        if idle is not None:
            return idle, True
        return self._connect(), False

    def _checkin(self, connection: _PooledConnection) -> None:
        conn = connection.conn
        if (not connection.aborted and conn.our_state is h11.DONE
                and conn.their_state is h11.DONE):
            conn.start_next_cycle()
            with self._lock:
                if not self._closed and len(self._idle) < self._max_idle:
                    self._idle.append(connection)
                    return
        connection.release()

    @contextlib.contextmanager
    def request(self, method: str, path: str, headers: Iterable[tuple[str, str]] = (),
                body: bytes = b"", *,
                on_connection: Callable[[Callable[[], None]], None] | None = None,
                ) -> Iterator[UpstreamResponse]:
        """Send a request and yield the response once its head arrived (see module doc).

        ``on_connection(abort)`` is called as soon as a connection is chosen (again if it is
        replaced): ``abort()``, from any thread, ends the call even before the head arrived.
        """
        if self._closed:
            raise UpstreamError("pool is closed")
        header_list = list(headers)
        with self._slots:
            connection, reused = self._checkout()
            if on_connection is not None:
                on_connection(connection.abort)
            try:
                try:
                    head = self._exchange(connection, method, path, header_list, body)
                except UpstreamError:
                    if not reused or connection.received or connection.aborted:
                        raise
                    # a kept-alive connection the upstream closed meanwhile: retry once
                    connection.release()
                    connection = self._connect()
                    if on_connection is not None:
                        on_connection(connection.abort)
                    head = self._exchange(connection, method, path, header_list, body)
                yield UpstreamResponse(connection, head)
            except BaseException:
                connection.abort()
                connection.release()
                raise
            self._checkin(connection)

    def _exchange(self, connection: _PooledConnection, method: str, path: str,
                  headers: Iterable[tuple[str, str]], body: bytes) -> h11.Response:
        conn = connection.conn
        connection.received = 0
        out = encode_request(conn, self._origin, method, path, headers=headers, body=body)
        try:
            connection.sock.sendall(out)
        except OSError as exc:
            raise UpstreamError(f"upstream write failed: {type(exc).__name__}") from exc
        while (head := next_head(conn)) is None:
            connection.receive()
        return head

    def close(self) -> None:
        """Close idle connections; requests in flight keep theirs until they finish."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.release()
