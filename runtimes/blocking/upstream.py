"""A pooled HTTP/1.1 client on h11 over blocking sockets, for the threaded connector's calls to
the local model. Same contract as ``runtimes.netio.upstream`` (its asyncio twin), and the same
sans-I/O exchange (``runtimes.upstream_http``)::

    pool = UpstreamPool("http://127.0.0.1:11434", max_connections=16)
    with pool.exchange("POST", "/api/chat", [("content-type", "application/json")],
                       body) as exchange:          # connected and written
        event = exchange.receive(deadline)          # ResponseHead, bytes, Received.END,
        ...                                         # or Received.IDLE at the deadline
    head, body = pool.fetch("GET", "/api/version", limit=1 << 20)  # a whole answer
    pool.close()

Leaving the ``with`` before the answer ended aborts that connection, so the upstream sees the
disconnect and stops generating. ``exchange.abort()`` may be called from ANOTHER thread (a
stream reset): it shuts the socket down, so the thread blocked in ``receive`` gets
UpstreamError at once. A complete answer returns the connection to the pool.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import h11

from runtimes.upstream_http import (
    Exchange,
    Failure,
    Received,
    ResponseHead,
    UpstreamError,
    UpstreamEvent,
    WholeAnswer,
    parse_origin,
)

__all__ = ["UpstreamError", "UpstreamExchange", "UpstreamPool"]

_READ_SIZE = 64 * 1024


class _PooledConnection:
    __slots__ = ("aborted", "conn", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.conn = h11.Connection(h11.CLIENT)
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def readable(self, timeout: float | None = 0.0) -> bool:
        """True if a read would not block (bytes or EOF waiting), waiting up to ``timeout``
        seconds (None: as long as it takes) for it."""
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        try:
            wait = None if timeout is None else max(0.0, timeout)
            return bool(select.select([self.sock], [], [], wait)[0])
        except (OSError, ValueError):
            return True


class UpstreamExchange(Exchange[_PooledConnection]):
    """One request, written; its answer read event by event with :meth:`receive` (by one
    thread; :meth:`abort` from any)."""

    __slots__ = ("_aborted", "_closed", "_pool")

    def __init__(self, pool: UpstreamPool, method: str, path: str,
                 headers: list[tuple[str, str]], body: bytes) -> None:
        super().__init__(pool.origin, method, path, headers, body)
        self._pool = pool
        self._aborted = False
        self._closed = False

    def _send(self) -> None:
        """Take a connection (an idle one, else a new one) and write the request."""
        connection, reused = self._pool._checkout()
        try:
            self._write_on(connection, reused=reused)
        except UpstreamError as exc:
            self._again(exc)

    def _write_on(self, connection: _PooledConnection, *, reused: bool) -> None:
        out = self.request_on(connection, reused=reused)
        if self._aborted:  # abort() came while connecting
            connection.abort()
            raise UpstreamError("upstream request aborted", Failure.LOCAL)
        try:
            connection.sock.sendall(out)
        except OSError as exc:
            raise UpstreamError(f"upstream write failed: {type(exc).__name__}",
                                Failure.WRITE) from exc

    def _again(self, error: UpstreamError) -> None:
        """Send the request again on a fresh connection if ``error`` proves it never reached
        the model (``upstream_http.may_resend``: a kept-alive connection the upstream had
        closed); else raise ``error``. A fresh connection is not reused: this happens once."""
        if self._aborted or not self.may_resend(error):
            raise error
        self._discard()
        self._write_on(self._pool._connect(), reused=False)

    def receive(self, deadline: float | None,
                before_wait: Callable[[], None] | None = None) -> UpstreamEvent:
        """The next event of the answer: its ResponseHead, body bytes, Received.END; or
        Received.IDLE once ``time.monotonic()`` reaches ``deadline`` with nothing new (None:
        no deadline). ``before_wait()`` runs each time nothing is waiting and the read would
        block (the moment to flush output held back while the upstream was faster than us).
        UpstreamError if the upstream failed or :meth:`abort` was called."""
        while True:
            reader, connection = self.reader, self.connection
            assert reader is not None and connection is not None
            try:
                event = reader.next_event()
                if event is not None:
                    return event
                if not connection.readable():
                    if before_wait is not None:
                        before_wait()
                    if not connection.readable(None if deadline is None
                                               else deadline - time.monotonic()):
                        return Received.IDLE
                try:
                    data = connection.sock.recv(_READ_SIZE)  # bytes (or EOF) are waiting
                except OSError as exc:
                    raise UpstreamError(f"upstream read failed: {type(exc).__name__}",
                                        Failure.CLOSED) from exc
                if connection.aborted:
                    raise UpstreamError("upstream request aborted", Failure.LOCAL)
                reader.feed(data)  # b"" records EOF; the reader then says what it means
            except UpstreamError as exc:
                self._again(exc)

    def abort(self) -> None:
        """From any thread: drop the connection so the upstream stops and a reader wakes up."""
        self._aborted = True
        if self.connection is not None:
            self.connection.abort()

    def _discard(self) -> None:
        if self.connection is not None:
            self.connection.abort()
            self.connection.release()

    def close(self) -> None:
        """Done: a complete answer's connection goes back to the pool, any other is aborted
        (the upstream stops) and closed; the pool's slot is given back. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.complete and not self._aborted:
            assert self.connection is not None
            self._pool._checkin(self.connection)
        else:
            self._discard()
        self._pool._slots.release()


class UpstreamPool:
    """Keep-alive connections to one upstream origin, at most ``max_connections`` at once."""

    def __init__(self, base_url: str, *, max_connections: int = 32,
                 connect_timeout: float = 5.0, read_timeout: float = 300.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.origin = origin = parse_origin(base_url)
        self._secure, self._host, self._port = origin.secure, origin.host, origin.port
        self._ssl = ssl_context
        if self._secure and self._ssl is None:
            self._ssl = ssl.create_default_context()
        self.connect_timeout = connect_timeout
        #: Per read of :meth:`fetch` (exchanges take a deadline instead).
        self.read_timeout = read_timeout
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
                                            timeout=self.connect_timeout)
        except TimeoutError as exc:
            raise UpstreamError("upstream connect timed out", Failure.CONNECT) from exc
        except OSError as exc:
            raise UpstreamError(f"upstream connect failed: {type(exc).__name__}",
                                Failure.CONNECT) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(sock, server_hostname=self._host)
            # bounds a write to an upstream that stopped reading; reads wait in select()
            sock.settimeout(self.read_timeout)
        except OSError as exc:
            sock.close()
            raise UpstreamError(f"upstream TLS failed: {type(exc).__name__}",
                                Failure.CONNECT) from exc
        with self._lock:
            self.connects += 1
        return _PooledConnection(sock)

    def _checkout(self) -> tuple[_PooledConnection, bool]:
        """An idle connection the upstream has not closed (reused=True), or a new one."""
        while True:
            with self._lock:
                idle = self._idle.pop() if self._idle else None
            if idle is None:
                return self._connect(), False
            if not idle.readable():  # an idle connection has nothing to say: else it is
                return idle, True    # closed (EOF) or broken
            idle.release()

    def _checkin(self, connection: _PooledConnection) -> None:
        connection.conn.start_next_cycle()
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(connection)
                return
        connection.release()

    def open(self, method: str, path: str, headers: Iterable[tuple[str, str]] = (),
             body: bytes = b"", *,
             on_start: Callable[[UpstreamExchange], None] | None = None) -> UpstreamExchange:
        """Take a slot, connect (or reuse a connection) and write the request; the exchange.
        Call its ``close()`` when done (always: it gives the slot back).

        ``on_start(exchange)`` is called before connecting, so another thread may
        :meth:`UpstreamExchange.abort` it from then on (even while it connects or writes).
        """
        if self._closed:
            raise UpstreamError("pool is closed", Failure.LOCAL)
        self._slots.acquire()
        exchange = UpstreamExchange(self, method, path, list(headers), body)
        try:
            if on_start is not None:
                on_start(exchange)
            exchange._send()
        except BaseException:
            exchange.close()
            raise
        return exchange

    @contextlib.contextmanager
    def exchange(self, method: str, path: str, headers: Iterable[tuple[str, str]] = (),
                 body: bytes = b"", *,
                 on_start: Callable[[UpstreamExchange], None] | None = None,
                 ) -> Iterator[UpstreamExchange]:
        """:meth:`open`, then ``close()`` on leaving the block."""
        exchange = self.open(method, path, headers, body, on_start=on_start)
        try:
            yield exchange
        finally:
            exchange.close()

    def fetch(self, method: str, path: str, headers: Iterable[tuple[str, str]] = (),
              body: bytes = b"", *, limit: int,
              timeout: float | None = None) -> tuple[ResponseHead, bytes]:
        """The whole answer (at most ``limit`` body bytes; each read within ``timeout``,
        default ``read_timeout``): for probes and other small calls."""
        wait = self.read_timeout if timeout is None else timeout
        whole = WholeAnswer(limit)
        with self.exchange(method, path, headers, body) as exchange:
            while not whole.add(exchange.receive(time.monotonic() + wait)):
                pass
        assert whole.head is not None
        return whole.head, whole.body

    def close(self) -> None:
        """Close idle connections; requests in flight keep theirs until they finish."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.release()
