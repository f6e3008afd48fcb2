"""The protocol-independent half of the HTTP server: request, response, limits, errors.

`HttpRequest` and `HttpResponse` are what a handler sees, whether the connection speaks
HTTP/1.1 (`h1.py`) or HTTP/2 (`h2.py`). Each protocol module implements the two small channel
interfaces below (`RequestChannel`, `ResponseChannel`); the wrappers add the state checks.

A handler's life:

    async def handler(request: HttpRequest, response: HttpResponse) -> None:
        if request.headers.get("authorization") != ...:       # nothing of the body read yet
            await response.respond(401, [("content-type", "text/plain")], b"no")
            return
        body = await request.body(limit=1 << 20)              # may raise BodyTooLarge
        await response.start(200, [("content-type", "text/event-stream")])
        await response.send(b"data: 1\\n\\n")                  # written at once; may wait
        await response.end()

Requests the server answers itself (a malformed head, a broken or stalled body, a server at
its limit) are shaped by an `ErrorResponder` the application supplies (`HttpServer(...,
error_responder=...)`): it gets a `RequestProblem` and returns the status, headers and body,
so the answer can be in the client's own API format. Without one, a short text/plain answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from runtimes.netio.websocket import WebSocket

logger = logging.getLogger("tokios.netio")

__all__ = [
    "BodyTooLarge",
    "BufferedReads",
    "ClientDisconnected",
    "Disconnected",
    "ErrorAnswer",
    "ErrorResponder",
    "Handler",
    "HeadersInput",
    "HttpRequest",
    "HttpResponse",
    "RequestBodyError",
    "RequestProblem",
    "ServerConfig",
    "WebSocketUpgradeError",
    "WriteBatch",
    "WriteFlow",
    "encode_headers",
    "plain_error_answer",
]


class BodyTooLarge(Exception):  # noqa: N818 - the name the handlers read best
    """The request body is longer than the limit the handler passed to `body()`."""


class ClientDisconnected(Exception):  # noqa: N818
    """The client went away (reset, EOF, connection lost) while a request was in flight."""


class WebSocketUpgradeError(Exception):
    """`accept_websocket` was called on a request that is not a valid WebSocket upgrade."""


class RequestBodyError(Exception):
    """The request body cannot be read: malformed (a bad chunk, more or less than its
    content-length) or stalled past `ServerConfig.body_timeout`. The client is still there and
    waits for an answer: a handler may let this propagate (or return without responding), and
    the server answers ``status`` through the error responder; the connection (h1) or the
    stream (h2) is closed after that answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RequestProblem:
    """A request the server answers by itself, for the error responder to shape.

    ``reason`` says what was wrong without quoting the request (no header value, no body).
    ``method``, ``path`` (without the query) and ``headers`` (lower-cased names) are what could
    be read of the request: empty when the head itself was unreadable.
    """

    status: int
    reason: str
    method: str = ""
    path: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)


#: An answer to a problem: status, headers, body (content-length is added).
ErrorAnswer = tuple[int, Sequence[tuple[str, str]], bytes]
#: Shapes the answer to a `RequestProblem` (must not raise; it runs on the event loop).
ErrorResponder = Callable[[RequestProblem], ErrorAnswer]


def plain_error_answer(problem: RequestProblem) -> ErrorAnswer:
    """The default error responder: the reason as text/plain."""
    return (problem.status, [("content-type", "text/plain; charset=utf-8")],
            problem.reason.encode("utf-8", "replace") + b"\n")


def answer_problem(responder: ErrorResponder, problem: RequestProblem) -> ErrorAnswer:
    """``responder(problem)``; the plain answer if the responder fails (it is the
    application's code, and this runs where no handler could catch its error)."""
    try:
        return responder(problem)
    except Exception as exc:
        logger.error("error responder failed: %s", type(exc).__name__)
        return plain_error_answer(problem)


def reason_for(message: str, table: Sequence[tuple[str, str]], default: str) -> str:
    """The reason paired with the first fragment of ``table`` found in ``message`` (a parsing
    library's error, which may quote the request and so is never passed on itself)."""
    for fragment, reason in table:
        if fragment in message:
            return reason
    return default


async def respond_problem(responder: ErrorResponder, problem: RequestBodyError,
                          request: HttpRequest, response: HttpResponse) -> None:
    """Answer ``problem`` for ``request`` through ``responder`` (a whole response)."""
    status, headers, body = answer_problem(responder, RequestProblem(
        problem.status, problem.reason, request.method, request.path, request.headers))
    await response.respond(status, headers, body)


def lenient_head(raw: bytes) -> tuple[str, str, dict[str, str]]:
    """Method, path and headers of a request head that failed to parse, as far as they can be
    read (for choosing the format of the error answer): the request line split on spaces,
    ``name: value`` lines with the name lower-cased; anything unreadable is left out."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\n", 101)[:101]
    parts = lines[0].strip().split(b" ")
    method = parts[0].decode("latin-1") if len(parts) == 3 else ""
    path = parts[1].partition(b"?")[0].decode("latin-1") if len(parts) == 3 else ""
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if colon and name and name == name.strip():
            headers.setdefault(name.decode("latin-1").lower(), value.strip().decode("latin-1"))
    return method, path, headers


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Limits and timeouts of `HttpServer`; every input has a cap."""

    #: Largest request head (request line + headers; on HTTP/2 the decoded header list, as
    #: SETTINGS_MAX_HEADER_LIST_SIZE counts it): 431 past it.
    max_header_bytes: int = 16 * 1024
    #: Seconds a client has to send a complete request head once it began (slowloris guard):
    #: 408 past it. Also the limit on a TLS handshake.
    header_timeout: float = 10.0
    #: Seconds an idle keep-alive connection (h1) or a connection with no streams (h2) lives.
    keepalive_timeout: float = 30.0
    #: Open connections; more are closed at once.
    max_connections: int = 1024
    #: Requests being handled at once across all connections (HTTP/1.1 and HTTP/2 streams;
    #: upgraded WebSockets do not count): more get 503 from the error responder.
    max_requests: int = 4096
    #: SETTINGS_MAX_CONCURRENT_STREAMS advertised on HTTP/2 (nginx and hypercorn use 100/128).
    max_h2_streams: int = 100
    #: h2 per-stream receive window: the most request-body bytes buffered per stream.
    h2_stream_window: int = 256 * 1024
    #: h2 connection receive window.
    h2_connection_window: int = 1024 * 1024
    #: Seconds a handler waits for the next request-body bytes: past it the body read raises
    #: RequestBodyError(408) and the client gets a 408 (then the h1 connection closes, the h2
    #: stream is reset).
    body_timeout: float = 30.0
    #: Seconds `send()` may wait for a client that reads nothing (full write buffer or empty
    #: h2 window) before the client is treated as gone.
    write_timeout: float = 120.0
    #: h1: request-body bytes read ahead of the handler before the socket stops being read.
    read_high_water: int = 64 * 1024
    #: Transport write buffer above which `send()` waits (asyncio's default is 64 KiB).
    write_high_water: int = 64 * 1024
    #: h1: unread request body discarded after the response to keep the connection alive;
    #: a longer body closes the connection instead.
    discard_body_limit: int = 64 * 1024
    #: h1: seconds the unread rest of a request body is read and dropped before closing,
    #: so the client reads the response instead of a TCP reset.
    linger_timeout: float = 2.0
    #: Accept HTTP/2 prior-knowledge (h2c) on plain-text connections.
    allow_h2c: bool = True
    #: Seconds `HttpServer.shutdown` waits for in-flight requests by default.
    shutdown_grace: float = 10.0
    #: Every this many seconds, return the memory closed connections freed to the system
    #: when more than `memory_release_threshold` bytes of malloc's heap are free (see
    #: memory.py; glibc only). 0 disables it.
    memory_release_interval: float = 10.0
    memory_release_threshold: int = 8 * 1024 * 1024
    #: h2 abuse limits (CVE-2023-44487 "rapid reset" and control-frame floods), counted per
    #: connection in windows of `h2_abuse_window` seconds; past any of them the connection gets
    #: GOAWAY(ENHANCE_YOUR_CALM) and is closed. RST_STREAM frames from the client:
    h2_max_resets: int = 200
    #: Frames that carry no request (SETTINGS, PING, PRIORITY, WINDOW_UPDATE, CONTINUATION,
    #: empty DATA, unknown types), on top of 4 per request and 2 per DATA frame sent:
    h2_max_control_frames: int = 1000
    h2_abuse_window: float = 30.0
    #: Bytes of a header block (HPACK-compressed while it arrives, then decoded) past which
    #: the connection gets GOAWAY(ENHANCE_YOUR_CALM); between max_header_bytes and this, 431.
    h2_max_header_block: int = 64 * 1024
    #: Bytes of frames other than response DATA (ACKs, resets, heads...) queued for a client
    #: that stopped reading; past it the connection is aborted.
    h2_max_queued_control: int = 256 * 1024


HeadersInput = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]


def encode_headers(headers: HeadersInput) -> list[tuple[bytes, bytes]]:
    """Return headers as lower-cased byte pairs, accepting a mapping or pairs of str/bytes."""
    items: Iterable[tuple[str | bytes, str | bytes]]
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: list[tuple[bytes, bytes]] = []
    for name, value in items:
        raw_name = name.encode("latin-1") if isinstance(name, str) else name
        raw_value = value.encode("latin-1") if isinstance(value, str) else value
        out.append((raw_name.lower(), raw_value))
    return out


#: The receive buffer of every connection of the process (see BufferedReads). The loop fills
#: it and calls buffer_updated() at once, which copies the bytes out before anything else
#: runs, so one buffer serves all connections.
_READ_BUFFER = memoryview(bytearray(256 * 1024))


class BufferedReads(asyncio.BufferedProtocol):
    """A protocol that receives through one shared buffer and hands ``data_received`` the
    bytes, as ``asyncio.Protocol`` would. Why: for a plain protocol, uvloop's TLS transport
    allocates a 256 KiB bytes object for every read and shrinks it, and while glibc's mmap
    threshold is low that is an mmap, an mremap and a munmap per read (measured: ~45 µs of
    connector CPU per request at c=1). Subclasses implement ``data_received``."""

    def get_buffer(self, sizehint: int) -> memoryview:
        return _READ_BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(_READ_BUFFER[:nbytes]))

    def data_received(self, data: bytes) -> None:
        raise NotImplementedError


class WriteBatch:
    """Bytes queued for one transport write at the end of this loop iteration: the parts a
    connection produces together (a response head and body, several WebSocket frames) leave
    in one write, one TLS record and one system call. Past ``flush_at`` queued bytes they are
    written at once. ``write`` gets the joined bytes; it decides whether the transport can
    still take them. Used by the HTTP/1.1 connection and the WebSocket."""

    __slots__ = ("_flush_at", "_loop", "_parts", "_scheduled", "_size", "_write")

    def __init__(self, loop: asyncio.AbstractEventLoop, write: Callable[[bytes], None],
                 flush_at: int) -> None:
        self._loop = loop
        self._write = write
        self._flush_at = flush_at
        self._parts: list[bytes] = []
        self._size = 0
        self._scheduled = False

    def add(self, data: bytes) -> None:
        """Queue ``data`` and make sure a flush runs at the end of this loop iteration."""
        self.add_unscheduled(data)
        if self._parts and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush_scheduled)

    def add_unscheduled(self, data: bytes) -> None:
        """Queue ``data`` for a :meth:`flush` the caller makes itself (written at once past
        ``flush_at``)."""
        self._parts.append(data)
        self._size += len(data)
        if self._size > self._flush_at:
            self.flush()

    def flush(self) -> None:
        """Write everything queued now (nothing if the queue is empty)."""
        parts = self._parts
        if not parts:
            return
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        self._size = 0
        self._write(data)

    def clear(self) -> None:
        """Drop what is queued (the connection is being aborted)."""
        self._parts.clear()
        self._size = 0

    def detach(self) -> None:
        """The connection is gone: drop what is queued and the write callback (which refers
        back to the connection), so nothing keeps the connection alive."""
        self.clear()
        self._write = _drop

    def _flush_scheduled(self) -> None:
        self._scheduled = False
        self.flush()


class WriteFlow:
    """Write-side backpressure shared by a connection's senders (pause/resume_writing)."""

    __slots__ = ("_loop", "_paused", "_waiters", "closed")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._paused = False
        # a list, not a deque: empty unless the peer is slow (an empty deque is ~600 bytes)
        self._waiters: list[asyncio.Future[None]] = []
        self.closed = False

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._wake()

    def close(self) -> None:
        """The transport is gone: release every waiter (they re-check `closed`)."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_writable(self) -> None:
        """Return once the transport accepts more data; raise ClientDisconnected if closed."""
        while self._paused and not self.closed:
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
            await waiter
        if self.closed:
            raise ClientDisconnected("connection closed")


class RequestChannel(Protocol):
    """What a protocol module provides to read one request's body."""

    async def receive_body_chunk(self) -> bytes:
        """Return the next body chunk, b"" at the end; raise ClientDisconnected."""
        ...

    def body_complete(self) -> bool:
        """True once the whole body has been delivered."""
        ...

    def limit_body(self, limit: int) -> None:
        """Make `receive_body_chunk` raise BodyTooLarge as soon as the client announces more
        than ``limit`` bytes in all (a chunk size line), before those bytes arrive."""
        ...

    async def accept_websocket(
        self,
        request: HttpRequest,
        *,
        subprotocol: str | None,
        extra_headers: list[tuple[bytes, bytes]],
        max_message_size: int,
    ) -> WebSocket:
        """Answer 101 and hand the connection to a WebSocket."""
        ...


class Disconnected:
    """Set once the client is known to be gone. ``is_set`` / ``set`` / ``wait`` as on an
    ``asyncio.Event``, plus :meth:`on_set`, so a handler can react to the client leaving with
    a plain callback instead of a watcher task per request."""

    __slots__ = ("_callbacks", "_is_set", "_waiters")

    def __init__(self) -> None:
        self._is_set = False
        self._waiters: list[asyncio.Future[None]] | None = None
        self._callbacks: list[Callable[[], None]] | None = None

    def is_set(self) -> bool:
        return self._is_set

    def set(self) -> None:
        """Mark the client gone: run the callbacks (once each) and wake the waiters."""
        if self._is_set:
            return
        self._is_set = True
        callbacks, self._callbacks = self._callbacks, None
        for callback in callbacks or ():
            try:
                callback()
            except Exception as exc:  # a handler's bug must not stop the others or the I/O
                logger.error("disconnect callback failed: %s", type(exc).__name__)
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> None:
        if self._is_set:
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)

    def on_set(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` when the client goes (at once if it already went); returns a
        function that unregisters it (call it when the exchange is over)."""
        if self._is_set:
            callback()
            return _nothing
        if self._callbacks is None:
            self._callbacks = []
        callbacks = self._callbacks
        callbacks.append(callback)

        def remove() -> None:
            if callback in callbacks:
                callbacks.remove(callback)

        return remove


def _nothing() -> None:
    pass


def _drop(data: bytes) -> None:
    pass


class ResponseChannel(Protocol):
    """What a protocol module provides to write one response."""

    disconnected: Disconnected

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None: ...

    async def send(self, data: bytes) -> None: ...

    async def end(self) -> None: ...


class HttpRequest:
    """One request as the handler sees it; the body is read only when asked for."""

    __slots__ = (
        "_body_started",
        "_channel",
        "header_list",
        "headers",
        "http_version",
        "method",
        "path",
        "peer",
        "query",
        "scheme",
    )

    def __init__(
        self,
        *,
        channel: RequestChannel,
        method: str,
        target: str,
        header_list: list[tuple[str, str]],
        http_version: str,
        peer: tuple[str, int] | None,
        scheme: str,
    ) -> None:
        self._channel = channel
        self.method = method
        path, _, query = target.partition("?")
        self.path = path
        self.query = query
        #: Every header as received, names lower-cased, in order.
        self.header_list = header_list
        #: Headers by lower-cased name; repeated headers joined with ", " ("; " for cookie,
        #: which HTTP/2 clients split into one field per cookie).
        self.headers: dict[str, str] = {}
        for name, value in header_list:
            previous = self.headers.get(name)
            if previous is None:
                self.headers[name] = value
            else:
                separator = "; " if name == "cookie" else ", "
                self.headers[name] = f"{previous}{separator}{value}"
        self.http_version = http_version
        self.peer = peer
        self.scheme = scheme
        self._body_started = False

    @property
    def content_length(self) -> int | None:
        raw = self.headers.get("content-length")
        if raw is None or not raw.isdigit():
            return None
        return int(raw)

    async def body(self, limit: int) -> bytes:
        """Read the whole body; raise BodyTooLarge past `limit` bytes (nothing more is read)."""
        declared = self.content_length
        if declared is not None and declared > limit:
            raise BodyTooLarge(f"declared body of {declared} bytes exceeds {limit}")
        self._channel.limit_body(limit)
        parts: list[bytes] = []
        total = 0
        async for chunk in self.stream():
            total += len(chunk)
            if total > limit:
                raise BodyTooLarge(f"body exceeds {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def stream(self) -> AsyncIterator[bytes]:
        """Yield body chunks as the client sends them (with backpressure); once only."""
        if self._body_started:
            raise RuntimeError("the request body was already read")
        self._body_started = True
        while True:
            chunk = await self._channel.receive_body_chunk()
            if not chunk:
                return
            yield chunk

    async def accept_websocket(
        self,
        *,
        subprotocol: str | None = None,
        headers: HeadersInput = (),
        max_message_size: int = 1024 * 1024,
    ) -> WebSocket:
        """Complete a WebSocket upgrade (HTTP/1.1 only) and return the channel.

        Raises WebSocketUpgradeError when the request is not an upgrade; the handler then
        answers with an ordinary response (400/426). Once accepted, the request's headers are
        released (read them before): a WebSocket may live for hours, and the handler's frames
        would keep them alive (~1 KB per connection).
        """
        ws = await self._channel.accept_websocket(
            self,
            subprotocol=subprotocol,
            extra_headers=encode_headers(headers),
            max_message_size=max_message_size,
        )
        self.header_list = []
        self.headers = {}
        return ws


class HttpResponse:
    """The response of one request: start, send (flushed at once), end."""

    __slots__ = ("_channel", "ended", "started", "status")

    def __init__(self, channel: ResponseChannel) -> None:
        self._channel = channel
        self.started = False
        self.ended = False
        self.status = 0

    @property
    def disconnected(self) -> Disconnected:
        """Set as soon as the client is known to be gone (EOF, reset, connection lost)."""
        return self._channel.disconnected

    async def start(self, status: int, headers: HeadersInput = ()) -> None:
        """Send the status line and headers. Then call `send` any number of times, `end`."""
        if self.started:
            raise RuntimeError("response already started")
        if self._channel.disconnected.is_set():
            raise ClientDisconnected("client went away")
        self.started = True
        self.status = status
        await self._channel.start(status, encode_headers(headers))

    async def send(self, data: bytes) -> None:
        """Write `data` now; wait while the client is slow; ClientDisconnected once gone."""
        if not self.started or self.ended:
            raise RuntimeError("send() outside start()..end()")
        if self._channel.disconnected.is_set():
            raise ClientDisconnected("client went away")
        if data:
            await self._channel.send(data)

    async def end(self) -> None:
        """Finish the response. Nothing may be sent after it."""
        if not self.started:
            raise RuntimeError("end() before start()")
        if self.ended:
            return
        self.ended = True
        if self._channel.disconnected.is_set():
            raise ClientDisconnected("client went away")
        await self._channel.end()

    async def respond(self, status: int, headers: HeadersInput = (), body: bytes = b"") -> None:
        """Send a whole response with a content-length in one call."""
        pairs = encode_headers(headers)
        if not any(name == b"content-length" for name, _ in pairs):
            pairs.append((b"content-length", str(len(body)).encode()))
        await self.start(status, pairs)
        if body:
            await self.send(body)
        await self.end()


Handler = Callable[[HttpRequest, HttpResponse], Awaitable[None]]


def decode_header_list(raw: Sequence[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Decode wire headers (already lower-cased by h11/h2) to str pairs."""
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]
