"""A pooled HTTP/1.1 client on h11, for the connector's calls to the local model. The
exchange itself (URL, request bytes, reading h11's events) is ``runtimes.upstream_http``,
shared with the threaded twin; this module moves the bytes on asyncio.

    pool = UpstreamPool("http://127.0.0.1:11434", max_connections=16)
    async with pool.request("POST", "/api/chat", [("content-type", "application/json")], body) as r:
        r.status, r.headers
        async for chunk in r.iter_bytes():    # as the bytes arrive; our pace is the read pace
            ...
    await pool.aclose()

Leaving the `async with` before the body ended aborts that connection, so the upstream sees
the disconnect and stops generating. A complete response returns the connection to the pool.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

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
    __slots__ = ("conn", "reader", "received", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(h11.CLIENT)
        #: Bytes received during the current exchange (0: the upstream sent nothing yet).
        self.received = 0

    def reusable(self) -> bool:
        return not self.writer.transport.is_closing() and not self.reader.at_eof()

    def abort(self) -> None:
        self.writer.transport.abort()


class UpstreamResponse:
    """A response head plus its body, read on demand."""

    __slots__ = ("_connection", "_done", "_read_timeout", "headers", "reason", "status")

    def __init__(
        self,
        connection: _PooledConnection,
        head: h11.Response,
        read_timeout: float,
    ) -> None:
        self._connection = connection
        self._read_timeout = read_timeout
        self._done = False
        #: Headers as (lower-cased name, value) pairs, in order.
        self.status, self.reason, self.headers = decode_head(head)

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None

    @property
    def complete(self) -> bool:
        return self._done

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """Yield body bytes as soon as they arrive (no buffering beyond one socket read)."""
        connection = self._connection
        while not self._done:
            chunk = next_body(connection.conn)
            if chunk is None:
                self._done = True
            elif isinstance(chunk, bytes):
                yield chunk
            else:  # h11.NEED_DATA
                await _receive(connection, self._read_timeout)

    async def read(self, limit: int) -> bytes:
        """Read the whole body; UpstreamError past `limit` bytes."""
        parts: list[bytes] = []
        total = 0
        async for chunk in self.iter_bytes():
            total += len(chunk)
            if total > limit:
                raise UpstreamError(f"upstream body exceeds {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)


async def _receive(connection: _PooledConnection, timeout: float) -> None:
    try:
        async with asyncio.timeout(timeout):
            data = await connection.reader.read(_READ_SIZE)
    except TimeoutError as exc:
        raise UpstreamError("upstream read timed out") from exc
    except OSError as exc:
        raise UpstreamError(f"upstream read failed: {type(exc).__name__}") from exc
    connection.received += len(data)
    connection.conn.receive_data(data)  # b"" records EOF; h11 then reports the error


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
        self._origin = origin = parse_origin(base_url)
        self._secure, self._host, self._port = origin.secure, origin.host, origin.port
        self._ssl = ssl_context if ssl_context is not None or not self._secure else None
        if self._secure and self._ssl is None:
            self._ssl = ssl.create_default_context()
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._slots = asyncio.Semaphore(max_connections)
        self._max_idle = max_idle if max_idle is not None else max_connections
        self._idle: collections.deque[_PooledConnection] = collections.deque()
        self._closed = False
        #: Connections opened so far (for tests and metrics).
        self.connects = 0

    async def _connect(self) -> _PooledConnection:
        try:
            async with asyncio.timeout(self._connect_timeout):
                reader, writer = await asyncio.open_connection(
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._secure else None,
                    limit=_READ_SIZE,
                )
        except TimeoutError as exc:
            raise UpstreamError("upstream connect timed out") from exc
        except OSError as exc:
            raise UpstreamError(f"upstream connect failed: {type(exc).__name__}") from exc
        self.connects += 1
        return _PooledConnection(reader, writer)

    async def _checkout(self) -> tuple[_PooledConnection, bool]:
        """An idle connection (reused=True) or a new one."""
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable():
                return connection, True
            connection.abort()
        return await self._connect(), False

    def _checkin(self, connection: _PooledConnection) -> None:
        conn = connection.conn
        if (
            not self._closed
            and conn.our_state is h11.DONE
            and conn.their_state is h11.DONE
            and len(self._idle) < self._max_idle
        ):
            conn.start_next_cycle()
            if connection.reusable():
                self._idle.append(connection)
                return
        connection.abort()

    @asynccontextmanager
    async def request(
        self,
        method: str,
        path: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> AsyncIterator[UpstreamResponse]:
        """Send a request and yield the response once its head arrived (see module doc)."""
        if self._closed:
            raise UpstreamError("pool is closed")
        header_list = list(headers)
        async with self._slots:
            connection, reused = await self._checkout()
            try:
                try:
                    head = await self._exchange(connection, method, path, header_list, body)
                except UpstreamError:
                    if not reused or connection.received:
                        raise
                    # A kept-alive connection the upstream closed meanwhile (nothing came
                    # back): retry once on a fresh connection, as browsers and Go do.
                    connection.abort()
                    connection = await self._connect()
                    head = await self._exchange(connection, method, path, header_list, body)
                response = UpstreamResponse(connection, head, self._read_timeout)
                yield response
            except BaseException:
                connection.abort()
                raise
            self._checkin(connection)

    async def _exchange(
        self,
        connection: _PooledConnection,
        method: str,
        path: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
    ) -> h11.Response:
        conn = connection.conn
        connection.received = 0
        out = encode_request(conn, self._origin, method, path, headers=headers, body=body)
        try:
            connection.writer.write(out)
            async with asyncio.timeout(self._read_timeout):
                await connection.writer.drain()
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"upstream write failed: {type(exc).__name__}") from exc
        while (head := next_head(conn)) is None:
            await _receive(connection, self._read_timeout)
        return head

    async def aclose(self) -> None:
        """Close idle connections; requests in flight keep theirs until they finish."""
        self._closed = True
        while self._idle:
            self._idle.pop().abort()
        await asyncio.sleep(0)
