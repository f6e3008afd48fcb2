"""The connector's HTTP/1.1 exchange with the local model, without I/O.

Both upstream pools, asyncio (``runtimes.netio.upstream``) and threaded
(``runtimes.blocking.upstream``), parse the base URL, serialise the request, read the answer
and decide whether a failed request may go again here; they only move bytes and wait. A pool
does, per exchange::

    out = encode_request(conn, origin, method, path, headers=h, body=b)  # write it
    reader = AnswerReader(conn)
    while (event := reader.next_event()) is None:
        reader.feed(...bytes read; b"" at end of file...)
    # event: a ResponseHead, then body bytes, then Received.END
    ...on UpstreamError: may_resend(error, reused=..., received=reader.received)?

Errors are :class:`UpstreamError`, the one class both pools raise; its :attr:`failure` says
what failed (:class:`Failure`), which is what the connector's decisions need (may the request
go again on a fresh connection, did it fail before any byte of the answer).
"""

from __future__ import annotations

import enum
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import h11

__all__ = ["OWN_HEADERS", "AnswerReader", "Exchange", "Failure", "Origin", "Received",
           "ResponseHead",
           "UpstreamError", "UpstreamEvent", "WholeAnswer", "decode_head", "encode_request",
           "may_resend", "next_body", "next_head", "parse_origin"]

#: Request headers the pool writes itself (a caller's are dropped).
OWN_HEADERS = ("host", "content-length", "transfer-encoding", "connection")


class Failure(enum.Enum):
    """What went wrong with an upstream exchange."""

    #: No connection: refused, unreachable, connect timed out, TLS failed.
    CONNECT = "connect"
    #: The request could not be written (the upstream had closed the connection).
    WRITE = "write"
    #: The upstream closed (end of file) or reset the connection before the answer ended.
    CLOSED = "closed"
    #: The answer broke HTTP/1.1, or it is larger than the reader accepts.
    PROTOCOL = "protocol"
    #: A pool closed or a request aborted on our side.
    LOCAL = "local"


class UpstreamError(Exception):
    """The upstream could not be reached, broke the protocol or closed early."""

    def __init__(self, message: str, failure: Failure = Failure.PROTOCOL) -> None:
        super().__init__(message)
        self.failure = failure


@dataclass(frozen=True, slots=True)
class Origin:
    """Where the upstream is: ``http(s)://host:port/prefix``."""

    secure: bool
    host: str
    port: int
    #: The base URL's path without its trailing slash, put before every request path.
    prefix: str
    host_header: bytes


def parse_origin(base_url: str) -> Origin:
    """``http://host:port[/prefix]`` or ``https://…``; ValueError otherwise."""
    parsed = urllib.parse.urlsplit(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError("base_url must be http://host:port or https://host:port")
    secure = parsed.scheme == "https"
    host = parsed.hostname
    port = parsed.port or (443 if secure else 80)
    shown = host if ":" not in host else f"[{host}]"
    default = port == (443 if secure else 80)
    return Origin(secure=secure, host=host, port=port, prefix=parsed.path.rstrip("/"),
                  host_header=(shown if default else f"{shown}:{port}").encode("ascii"))


def encode_request(conn: h11.Connection, origin: Origin, method: str, path: str, *,
                   headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    """The whole request (head, body, end) as bytes to write; the caller's host,
    content-length, transfer-encoding and connection headers are replaced by our own."""
    wire: list[tuple[bytes, bytes]] = [(b"host", origin.host_header)]
    for name, value in headers:
        lowered = name.lower()
        if lowered not in OWN_HEADERS:
            wire.append((lowered.encode("latin-1"), value.encode("latin-1")))
    if body or method.upper() in ("POST", "PUT", "PATCH"):
        wire.append((b"content-length", str(len(body)).encode("ascii")))
    target = (origin.prefix + path).encode("latin-1")
    out = conn.send(h11.Request(method=method.encode("ascii"), target=target, headers=wire))
    if body:
        out += conn.send(h11.Data(data=body))
    out += conn.send(h11.EndOfMessage())
    return out


def next_head(conn: h11.Connection) -> h11.Response | None:
    """The response head once h11 has it (1xx answers skipped); None while more bytes are
    needed; UpstreamError if the upstream broke the protocol or closed first."""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise UpstreamError("malformed response head from upstream") from exc
        if isinstance(event, h11.Response):
            return event
        if event is h11.NEED_DATA:
            return None
        if not isinstance(event, h11.InformationalResponse):
            raise UpstreamError("upstream closed before the response head", Failure.CLOSED)


def decode_head(head: h11.Response) -> tuple[int, str, list[tuple[str, str]]]:
    """Status, reason and headers (lower-cased names, in order) as str."""
    return (head.status_code, bytes(head.reason).decode("latin-1"),
            [(bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
             for name, value in head.headers])


def next_body(conn: h11.Connection) -> bytes | type[h11.NEED_DATA] | None:
    """The next body bytes; ``h11.NEED_DATA`` when more must be read first; None at the end.
    UpstreamError if the body is malformed or cut short."""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise UpstreamError("malformed response body from upstream") from exc
        if isinstance(event, h11.Data):
            if event.data:
                return bytes(event.data)
        elif event is h11.NEED_DATA:
            return h11.NEED_DATA
        elif isinstance(event, h11.EndOfMessage):
            return None
        else:
            raise UpstreamError("unexpected event in response body")


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """The upstream's response head: status, reason and headers (lower-cased names)."""

    status: int
    reason: str
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None


class Received(enum.Enum):
    """What a pool's ``receive`` returns besides a head or body bytes."""

    #: The answer is complete.
    END = "end"
    #: The caller's deadline passed with nothing new (not an error: the caller decides).
    IDLE = "idle"


#: One step of an answer: its head, body bytes, its end (or, from a pool, IDLE).
UpstreamEvent = ResponseHead | bytes | Received


class AnswerReader:
    """The events of one answer from h11: the head (1xx skipped), body bytes, then END.

    Feed it what the socket gives (:meth:`feed`, ``b""`` at end of file) until
    :meth:`next_event` returns something other than None. An answer cut short or malformed
    raises UpstreamError (``Failure.CLOSED`` when the upstream closed first).
    """

    __slots__ = ("_conn", "eof", "head", "received")

    def __init__(self, conn: h11.Connection) -> None:
        self._conn = conn
        self.head: ResponseHead | None = None
        #: Bytes of the answer read so far (0: the upstream has said nothing yet).
        self.received = 0
        self.eof = False

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if not data:
            self.eof = True
        self._conn.receive_data(data)

    def next_event(self) -> ResponseHead | bytes | Received | None:
        """The next event, or None when more bytes must be read first."""
        try:
            if self.head is None:
                raw = next_head(self._conn)
                if raw is None:
                    return None
                self.head = ResponseHead(*decode_head(raw))
                return self.head
            chunk = next_body(self._conn)
        except UpstreamError as exc:
            if self.eof:
                raise UpstreamError(str(exc), Failure.CLOSED) from exc
            raise
        if chunk is None:
            return Received.END
        return chunk if isinstance(chunk, bytes) else None  # else h11.NEED_DATA


class PooledConnection(Protocol):
    """What a pool's connection has for :class:`Exchange`: its h11 state."""

    conn: h11.Connection


C = TypeVar("C", bound=PooledConnection)


class Exchange(Generic[C]):
    """The half of one exchange both pools share: the request (kept to send it again), the
    connection it is on, that connection's answer reader. A pool's exchange class adds the
    I/O: it calls :meth:`request_on` for a connection and writes the bytes it returns, reads
    into :attr:`reader`, and on an UpstreamError asks :meth:`may_resend`."""

    __slots__ = ("_body", "_headers", "_method", "_origin", "_path", "connection", "reader",
                 "reused")

    def __init__(self, origin: Origin, method: str, path: str,
                 headers: list[tuple[str, str]], body: bytes) -> None:
        self._origin = origin
        self._method, self._path, self._headers, self._body = method, path, headers, body
        self.connection: C | None = None
        self.reader: AnswerReader | None = None
        #: The connection was kept alive from an earlier exchange.
        self.reused = False

    def request_on(self, connection: C, *, reused: bool) -> bytes:
        """Take ``connection`` for this exchange; the request bytes to write on it."""
        self.connection, self.reused = connection, reused
        self.reader = AnswerReader(connection.conn)
        return encode_request(connection.conn, self._origin, self._method, self._path,
                              headers=self._headers, body=self._body)

    @property
    def complete(self) -> bool:
        """True once the whole answer was read (the connection may be reused)."""
        connection = self.connection
        return (connection is not None and connection.conn.our_state is h11.DONE
                and connection.conn.their_state is h11.DONE)

    def may_resend(self, error: UpstreamError) -> bool:
        """See :func:`may_resend` (on a fresh connection it is never true)."""
        received = self.reader.received if self.reader is not None else 0
        return may_resend(error, reused=self.reused, received=received)


class WholeAnswer:
    """An answer read whole, up to ``limit`` body bytes: add each event of an exchange::

        whole = WholeAnswer(limit)
        while not whole.add(...the exchange's next event...):
            pass
        whole.head, whole.body

    :meth:`add` is True once the answer is complete; it raises UpstreamError past ``limit``
    bytes and on ``Received.IDLE`` (the reader's deadline passed: "timed out").
    """

    __slots__ = ("_parts", "_size", "head", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.head: ResponseHead | None = None
        self._parts: list[bytes] = []
        self._size = 0

    def add(self, event: UpstreamEvent) -> bool:
        if isinstance(event, bytes):
            self._size += len(event)
            if self._size > self.limit:
                self._parts.clear()
                raise UpstreamError(f"upstream body exceeds {self.limit} bytes")
            self._parts.append(event)
            return False
        if isinstance(event, ResponseHead):
            self.head = event
            return False
        if event is Received.IDLE:
            raise UpstreamError("upstream read timed out", Failure.LOCAL)
        return True  # Received.END

    @property
    def body(self) -> bytes:
        return b"".join(self._parts)


def may_resend(error: UpstreamError, *, reused: bool, received: int) -> bool:
    """Whether a request that failed with ``error`` may go again on a fresh connection.

    Only a request on a kept-alive (reused) connection, and only when the failure shows it
    never reached the model: the write failed (the upstream had closed the connection), or
    the upstream closed the connection before any byte of the answer - which is how a server
    closes a keep-alive connection it timed out while idle, crossing our request on the
    wire. A server that has read a request answers it (a status at least) or, if it died,
    is gone; so the request did not start generating. Never after a timeout or once any byte
    of the answer came: the model may be working on it, and a second copy would make it
    generate twice.
    """
    if not reused or received:
        return False
    return error.failure in (Failure.WRITE, Failure.CLOSED)
