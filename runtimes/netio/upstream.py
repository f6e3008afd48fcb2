"""A pooled HTTP/1.1 client on h11, for the connector's calls to the local model. The exchange
itself (URL, request bytes, reading the answer, when a request may go again) is
``runtimes.upstream_http``, shared with the threaded twin; this module moves the bytes on
asyncio.

    pool = UpstreamPool("http://127.0.0.1:11434", max_connections=16)
    async with pool.exchange("POST", "/api/chat", [("content-type", "application/json")],
                             body) as exchange:          # connected and written
        event = await exchange.receive(deadline)          # ResponseHead, bytes, Received.END,
        ...                                               # or Received.IDLE at the deadline
    exchange = await pool.open(...); ...; exchange.close()  # the same, without a block
    head, body = await pool.fetch("GET", "/api/version", limit=1 << 20)  # a whole answer
    await pool.aclose()

Leaving the `async with` before the answer ended aborts that connection, so the upstream sees
the disconnect and stops generating. A complete answer returns the connection to the pool.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

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
    __slots__ = ("conn", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(h11.CLIENT)

    def reusable(self) -> bool:
        return not self.writer.transport.is_closing() and not self.reader.at_eof()

    def abort(self) -> None:
        self.writer.transport.abort()


class UpstreamExchange(Exchange[_PooledConnection]):
    """One request, written; its answer read event by event with :meth:`receive`."""

    __slots__ = ("_closed", "_pool")

    def __init__(self, pool: UpstreamPool, method: str, path: str,
                 headers: list[tuple[str, str]], body: bytes) -> None:
        super().__init__(pool.origin, method, path, headers, body)
        self._pool = pool
        self._closed = False

    async def _send(self) -> None:
        """Take a connection (an idle one, else a new one) and write the request."""
        connection, reused = await self._pool._checkout()
        try:
            await self._write_on(connection, reused=reused)
        except UpstreamError as exc:
            await self._again(exc)

    async def _write_on(self, connection: _PooledConnection, *, reused: bool) -> None:
        out = self.request_on(connection, reused=reused)
        try:
            connection.writer.write(out)
            await connection.writer.drain()
        except OSError as exc:
            raise UpstreamError(f"upstream write failed: {type(exc).__name__}",
                                Failure.WRITE) from exc

    async def _again(self, error: UpstreamError) -> None:
        """Send the request again on a fresh connection if ``error`` proves it never reached
        the model (``upstream_http.may_resend``: a kept-alive connection the upstream had
        closed); else raise ``error``. A fresh connection is not reused: this happens once."""
        if not self.may_resend(error):
            raise error
        self.abort()
        await self._write_on(await self._pool._connect(), reused=False)

    async def receive(self, deadline: float | None) -> UpstreamEvent:
        """The next event of the answer: its ResponseHead, body bytes, Received.END; or
        Received.IDLE once the loop's clock reaches ``deadline`` with nothing new (None: no
        deadline). UpstreamError if the upstream failed."""
        while True:
            reader, connection = self.reader, self.connection
            assert reader is not None and connection is not None
            try:
                event = reader.next_event()
                if event is not None:
                    return event
                try:
                    async with asyncio.timeout_at(deadline):
                        data = await connection.reader.read(_READ_SIZE)
                except TimeoutError:
                    return Received.IDLE
                except OSError as exc:
                    raise UpstreamError(f"upstream read failed: {type(exc).__name__}",
                                        Failure.CLOSED) from exc
                reader.feed(data)  # b"" records EOF; the reader then says what it means
            except UpstreamError as exc:
                await self._again(exc)

    def abort(self) -> None:
        if self.connection is not None:
            self.connection.abort()

    def close(self) -> None:
        """Done: a complete answer's connection goes back to the pool, any other is aborted
        (the upstream stops); the pool's slot is given back. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.complete:
            assert self.connection is not None
            self._pool._checkin(self.connection)
        else:
            self.abort()
        self._pool._slots.release()


class UpstreamPool:
    """Keep-alive connections to one upstream origin, at most `max_connections` at a time."""

    def __init__(
        self,
        base_url: str,
        *,
        max_connections: int = 32,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        ssl_context: ssl.SSLContext | None = None,
        max_idle: int | None = None,
    ) -> None:
        self.origin = origin = parse_origin(base_url)
        self._secure, self._host, self._port = origin.secure, origin.host, origin.port
        self._ssl = ssl_context if ssl_context is not None or not self._secure else None
        if self._secure and self._ssl is None:
            self._ssl = ssl.create_default_context()
        self.connect_timeout = connect_timeout
        #: Per read of :meth:`fetch` (exchanges take a deadline instead).
        self.read_timeout = read_timeout
        self._slots = asyncio.Semaphore(max_connections)
        self._max_idle = max_idle if max_idle is not None else max_connections
        self._idle: collections.deque[_PooledConnection] = collections.deque()
        self._closed = False
        #: Connections opened so far (for tests and metrics).
        self.connects = 0

    async def _connect(self) -> _PooledConnection:
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._secure else None,
                    limit=_READ_SIZE,
                )
        except TimeoutError as exc:
            raise UpstreamError("upstream connect timed out", Failure.CONNECT) from exc
        except OSError as exc:
            raise UpstreamError(f"upstream connect failed: {type(exc).__name__}",
                                Failure.CONNECT) from exc
        self.connects += 1
        return _PooledConnection(reader, writer)

    async def _checkout(self) -> tuple[_PooledConnection, bool]:
        """An idle connection the upstream has not closed (reused=True), or a new one."""
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable():
                return connection, True
            connection.abort()
        return await self._connect(), False

    def _checkin(self, connection: _PooledConnection) -> None:
        conn = connection.conn
        if not self._closed and len(self._idle) < self._max_idle:
            conn.start_next_cycle()
            if connection.reusable():
                self._idle.append(connection)
                return
        connection.abort()

    async def open(
        self,
        method: str,
        path: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> UpstreamExchange:
        """Take a slot, connect (or reuse a connection) and write the request; the exchange.
        Call its ``close()`` when done (always: it gives the slot back)."""
        if self._closed:
            raise UpstreamError("pool is closed", Failure.LOCAL)
        await self._slots.acquire()
        exchange = UpstreamExchange(self, method, path, list(headers), body)
        try:
            await exchange._send()
        except BaseException:
            exchange.close()
            raise
        return exchange

    @asynccontextmanager
    async def exchange(
        self,
        method: str,
        path: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> AsyncIterator[UpstreamExchange]:
        """:meth:`open`, then ``close()`` on leaving the block."""
        exchange = await self.open(method, path, headers, body)
        try:
            yield exchange
        finally:
            exchange.close()

    async def fetch(
        self,
        method: str,
        path: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        *,
        limit: int,
        timeout: float | None = None,
    ) -> tuple[ResponseHead, bytes]:
        """The whole answer (at most ``limit`` body bytes; each read within ``timeout``,
        default ``read_timeout``): for probes and other small calls."""
        loop = asyncio.get_running_loop()
        wait = self.read_timeout if timeout is None else timeout
        whole = WholeAnswer(limit)
        async with self.exchange(method, path, headers, body) as exchange:
            while not whole.add(await exchange.receive(loop.time() + wait)):
                pass
        assert whole.head is not None
        return whole.head, whole.body

    async def aclose(self) -> None:
        """Close idle connections; requests in flight keep theirs until they finish."""
        self._closed = True
        while self._idle:
            self._idle.pop().abort()
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)
