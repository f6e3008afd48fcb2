"""HTTP/1.1 server connection: an asyncio.Protocol driving h11.

Theory of operation. Bytes from the socket go into h11 (`receive_data`). While no request is
in flight the connection pulls events until a full request head arrives, then runs the handler
in a task. During the handler, body events are pulled only when the handler asks for them
(`receive_body_chunk`); meanwhile the socket keeps being read (to notice EOF at once) until
`read_high_water` unread bytes pile up, then reading pauses until the handler consumes. After
the response, an unread body is discarded up to `discard_body_limit` (else the connection
closes) and the next cycle starts. A WebSocket upgrade hands the transport to `WebSocket`.

Whatever the server answers by itself (a malformed or oversized head, a head or body that
stalls, a broken chunked body, the server at `max_requests`, a handler that failed) goes
through the error responder, then the connection closes: the first bytes of a request head
are kept (by reference, usually the one read that holds it) so the responder can tell which
API the request was for even when h11 could not parse it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import http
import logging
from typing import TYPE_CHECKING, Any, cast

import h11
import h11._readers
import wsproto
import wsproto.connection

from runtimes.netio._http import (
    BodyTooLarge,
    BufferedReads,
    ClientDisconnected,
    Disconnected,
    HttpRequest,
    HttpResponse,
    RequestBodyError,
    RequestProblem,
    ServerConfig,
    WebSocketUpgradeError,
    WriteBatch,
    WriteFlow,
    answer_problem,
    decode_header_list,
    lenient_head,
    reason_for,
    respond_problem,
)
from runtimes.netio.websocket import WebSocket

if TYPE_CHECKING:
    from runtimes.netio.http_server import ServerState

__all__ = ["H1Connection"]

logger = logging.getLogger("tokios.netio.h1")

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    503: b"Service Unavailable",
}
#: What h11 found wrong, by a fragment of its message, told without quoting the request.
_H11_PROBLEMS = (
    ("Receive buffer too long", "the request head is too large"),
    ("illegal request line", "the request line is malformed (method, target without spaces "
                             "or non-ASCII bytes, HTTP version)"),
    ("illegal header line", "a header line is malformed (names are ASCII tokens, values hold "
                            "no control characters)"),
    ("Host", "the request needs exactly one Host header"),
    ("Content-Length", "the Content-Length header is invalid or repeated"),
    ("Transfer-Encoding", "only Transfer-Encoding: chunked is supported"),
    ("chunk", "the chunked body is malformed (a chunk size is not hexadecimal or a chunk "
              "does not end with CRLF)"),
)
#: Bytes of a request head kept for the error responder when h11 rejects it.
_HEAD_KEPT = 8 * 1024


def _h11_problem(exc: h11.RemoteProtocolError) -> tuple[int, str]:
    return (exc.error_status_hint or 400,
            reason_for(str(exc), _H11_PROBLEMS, "the request is malformed"))


class H1Connection(BufferedReads):
    """One HTTP/1.1 connection. Created by the server's dispatcher after TLS/ALPN."""

    def __init__(self, state: ServerState, scheme: str) -> None:
        self._state = state
        self._config: ServerConfig = state.config
        self._scheme = scheme
        self._conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self._config.max_header_bytes
        )
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._peer: tuple[str, int] | None = None
        self._flow = WriteFlow(self._loop)
        self._task: asyncio.Task[None] | None = None
        self._data_waiter: asyncio.Future[None] | None = None
        self._disconnected = Disconnected()
        self._reading_paused = False
        self._eof = False
        self._closed = False
        self._closing_after_response = False
        self._timer: asyncio.TimerHandle | None = None
        self._awaiting_first_byte = True
        self._switched = False
        self._declared_length: int | None = None
        self._lingering = False
        #: The start of the request head being received (see module doc).
        self._head_seen = b""
        #: Why the request's body became unreadable (then the connection closes after the
        #: answer, which is this problem if the handler sent none).
        self._body_problem: RequestBodyError | None = None
        #: body() was called with this limit; the body received so far.
        self._body_limit: int | None = None
        self._body_received = 0
        self._counted = False
        self._out = WriteBatch(self._loop, self._write_out, self._config.write_high_water)

    # ---- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._transport.set_write_buffer_limits(high=self._config.write_high_water)
        peer = transport.get_extra_info("peername")
        self._peer = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        self._state.connections.add(self)
        self._arm_timer(self._config.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # the response is out; the unread request body is dropped
        self._conn.receive_data(data)
        if self._task is None:
            if self._awaiting_first_byte:
                self._awaiting_first_byte = False
                self._head_seen = data
                self._arm_timer(self._config.header_timeout)
            elif len(self._head_seen) < _HEAD_KEPT:
                self._head_seen += data[:_HEAD_KEPT]
            self._process_idle()
            if self._task is None:
                return
        else:
            self._wake_reader()
        if not self._reading_paused and len(self._conn.trailing_data[0]) > (
            self._config.read_high_water
        ):
            self._reading_paused = True
            assert self._transport is not None
            self._transport.pause_reading()

    def eof_received(self) -> bool | None:
        self._eof = True
        self._disconnected.set()
        self._wake_reader()
        if self._task is None or self._lingering:
            self._close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._eof = True
        self._disconnected.set()
        self._flow.close()
        self._wake_reader()
        self._cancel_timer()
        self._state.connections.discard(self)
        # Break the reference cycles through the transport (its protocol caches our bound
        # methods) and the write batch, so this connection and its TLS buffers (uvloop keeps
        # 256 KiB per TLS connection) are freed now, not at the next full GC pass.
        self._transport = None
        self._out.detach()

    def pause_writing(self) -> None:
        self._flow.pause()

    def resume_writing(self) -> None:
        self._flow.resume()

    # ---- server control ----------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._task is not None

    def begin_shutdown(self) -> None:
        """Finish the request in flight (with `connection: close`), then close."""
        self._closing_after_response = True
        if self._task is None:
            self._close()

    def abort(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._transport is not None:
            self._transport.abort()

    # ---- request cycle -----------------------------------------------------------------

    def _process_idle(self) -> None:
        """Pull events while idle: start the handler when a request head is complete."""
        if self._closed or self._switched:
            return
        try:
            event = self._conn.next_event()
        except h11.RemoteProtocolError as exc:
            self._refuse(*_h11_problem(exc))
            return
        if event is h11.NEED_DATA:
            if self._eof:
                self._close()
            return
        if isinstance(event, h11.Request):
            self._cancel_timer()
            head_size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
            if head_size > self._config.max_header_bytes:
                self._refuse(431, "the request head is too large")
                return
            if not any(
                name in (b"content-length", b"transfer-encoding") for name, _ in (event.headers)
            ):
                self._conn.next_event()  # no body: EndOfMessage, so the cycle can complete
            self._start_handler(event)
            return
        self._close()  # ConnectionClosed or anything unexpected while idle

    def _start_handler(self, event: h11.Request) -> None:
        self._disconnected = Disconnected()
        if self._eof:
            self._disconnected.set()
        self._head_seen = b""
        self._declared_length = None
        self._body_problem = None
        self._body_limit = None
        self._body_received = 0
        for name, value in event.headers:
            if name == b"content-length" and value.isdigit():
                self._declared_length = int(value)
        channel = _H1Exchange(self, head=event.method == b"HEAD")
        request = HttpRequest(
            channel=channel,
            method=event.method.decode("ascii"),
            target=event.target.decode("latin-1"),
            header_list=decode_header_list(list(event.headers)),
            http_version=event.http_version.decode("ascii"),
            peer=self._peer,
            scheme=self._scheme,
        )
        response = HttpResponse(channel)
        state = self._state
        self._counted = state.requests < self._config.max_requests
        if self._counted:
            state.requests += 1
            self._task = self._loop.create_task(self._run(request, response))
        else:
            problem = RequestBodyError(503, "the server is handling as many requests as it "
                                            "can; retry shortly")
            self._task = self._loop.create_task(self._answer_only(request, response, problem))

    async def _run(self, request: HttpRequest, response: HttpResponse) -> None:
        problem: RequestBodyError | None = None
        try:
            await self._state.handler(request, response)
        except ClientDisconnected:
            pass
        except RequestBodyError as exc:
            problem = exc
        except asyncio.CancelledError:
            self._uncount()
            self._abort_transport()
            raise
        except Exception as exc:
            logger.error("handler failed: %s", type(exc).__name__)
            problem = RequestBodyError(500, "the server failed to handle the request")
            if response.started:
                self._abort_transport()
        self._uncount()
        if self._switched:
            return
        if response.started:
            if not response.ended and not self._disconnected.is_set():
                with contextlib.suppress(ClientDisconnected):
                    await response.end()
            await self._finish_cycle()
            return
        await self._answer_only(request, response, problem or self._body_problem
                                or RequestBodyError(500, "the server sent no response"))

    async def _answer_only(self, request: HttpRequest, response: HttpResponse,
                           problem: RequestBodyError) -> None:
        """Answer ``problem`` through the error responder unless a response went out, then
        go on to the next request (or close)."""
        if not response.started and not self._disconnected.is_set():
            with contextlib.suppress(ClientDisconnected):
                await respond_problem(self._state.error_responder, problem, request, response)
        await self._finish_cycle()

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self._state.requests -= 1

    async def _finish_cycle(self) -> None:
        """After a response: discard an unread body if small, then serve the next request."""
        if self._closed or self._conn.our_state is not h11.DONE or self._body_problem:
            self._task = None
            if self._body_problem is not None and self._body_problem.status == 408:
                self._close()  # the body stalled: no bytes in flight to linger for
            else:
                self._linger_close()
            return
        if self._conn.their_state is h11.SEND_BODY and not self._closing_after_response:
            discarded = 0
            try:
                while discarded <= self._config.discard_body_limit:
                    chunk = await asyncio.wait_for(
                        self.receive_body_chunk(), self._config.header_timeout
                    )
                    if not chunk:
                        break
                    discarded += len(chunk)
            except (ClientDisconnected, TimeoutError):
                pass
        self._task = None
        if (
            self._closed
            or self._closing_after_response
            or self._conn.our_state is not h11.DONE
            or self._conn.their_state is not h11.DONE
        ):
            self._linger_close()
            return
        self._conn.start_next_cycle()
        pipelined = self._conn.trailing_data[0]
        self._awaiting_first_byte = not pipelined
        self._head_seen = pipelined[:_HEAD_KEPT]
        self._arm_timer(
            self._config.keepalive_timeout
            if self._awaiting_first_byte
            else self._config.header_timeout
        )
        if self._reading_paused:
            self._reading_paused = False
            assert self._transport is not None
            self._transport.resume_reading()
        self._process_idle()

    # ---- body ---------------------------------------------------------------------------

    async def receive_body_chunk(self) -> bytes:
        if self._body_problem is not None:
            raise self._body_problem
        while True:
            if self._conn.their_state is not h11.SEND_BODY:
                return b""
            if self._conn.client_is_waiting_for_100_continue and self._conn.our_state is (
                h11.SEND_RESPONSE
            ):
                self._write(self._conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise self._body_failed(*_h11_problem(exc)) from None
            if isinstance(event, h11.Data):
                self._maybe_resume_reading()
                data = event.data
                if self._body_limit is not None:
                    self._body_received += len(data)
                    self._check_announced()
                return data if isinstance(data, bytes) else bytes(data)
            if isinstance(event, h11.EndOfMessage):
                self._maybe_resume_reading()
                return b""
            if event is h11.NEED_DATA:
                if self._eof:
                    raise ClientDisconnected("client closed the connection")
                if self._body_limit is not None:
                    self._check_announced()
                self._maybe_resume_reading()
                self._data_waiter = self._loop.create_future()
                try:
                    async with asyncio.timeout(self._config.body_timeout):
                        await self._data_waiter
                except TimeoutError:
                    raise self._body_failed(
                        408, f"the request body stalled: nothing arrived for "
                             f"{self._config.body_timeout:g} s") from None
                finally:
                    self._data_waiter = None
                continue
            raise ClientDisconnected("unexpected event while reading the body")

    def _body_failed(self, status: int, reason: str) -> RequestBodyError:
        """Remember that the body cannot be read (the connection closes after the answer)."""
        self._body_problem = RequestBodyError(status, reason)
        return self._body_problem

    def _check_announced(self) -> None:
        """BodyTooLarge if the chunk being received announces more than the limit allows.

        h11 keeps the size of the chunk being read in its reader (``_bytes_in_chunk``, set as
        soon as the chunk-size line is parsed); its public events only carry the bytes that
        arrived, so without this a chunk size of gigabytes would be waited for byte by byte.
        """
        assert self._body_limit is not None
        reader = getattr(self._conn, "_reader", None)
        if isinstance(reader, h11._readers.ChunkedReader):
            pending = getattr(reader, "_bytes_in_chunk", 0)
            if self._body_received + pending > self._body_limit:
                self._closing_after_response = True
                raise BodyTooLarge(f"a chunk announces more than {self._body_limit} bytes")

    def limit_body(self, limit: int) -> None:
        self._body_limit = limit

    def body_complete(self) -> bool:
        return self._conn.their_state is not h11.SEND_BODY

    def _maybe_resume_reading(self) -> None:
        if self._reading_paused and len(self._conn.trailing_data[0]) <= (
            self._config.read_high_water // 2
        ):
            self._reading_paused = False
            assert self._transport is not None
            self._transport.resume_reading()

    def _wake_reader(self) -> None:
        waiter = self._data_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ---- response -----------------------------------------------------------------------

    async def start_response(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        if self._closing_after_response or self._must_close_for_unread_body():
            headers = [*headers, (b"connection", b"close")]
        reason = _REASONS.get(status)
        if reason is None:
            try:
                reason = http.HTTPStatus(status).phrase.encode("ascii")
            except ValueError:
                reason = b""
            _REASONS[status] = reason
        self._write(
            self._conn.send(h11.Response(status_code=status, headers=headers, reason=reason))
        )
        if self._flow.paused:
            await self._wait_writable()

    def _must_close_for_unread_body(self) -> bool:
        if self._body_problem is not None or self._conn.their_state is h11.ERROR:
            return True
        if self._conn.their_state is not h11.SEND_BODY:
            return False
        if self._conn.client_is_waiting_for_100_continue:
            return True
        declared = self._declared_length
        return declared is None or declared > self._config.discard_body_limit

    async def send_body(self, data: bytes) -> None:
        if self._closed:
            raise ClientDisconnected("connection closed")
        self._write(self._conn.send(h11.Data(data=data)))
        if self._flow.paused:
            await self._wait_writable()

    async def _wait_writable(self) -> None:
        try:
            async with asyncio.timeout(self._config.write_timeout):
                await self._flow.wait_writable()
        except TimeoutError:
            self._abort_transport()
            raise ClientDisconnected("client stopped reading") from None

    async def end_response(self) -> None:
        if self._closed:
            raise ClientDisconnected("connection closed")
        self._write(self._conn.send(h11.EndOfMessage()))

    # ---- WebSocket upgrade --------------------------------------------------------------

    async def upgrade_websocket(
        self,
        request: HttpRequest,
        *,
        subprotocol: str | None,
        extra_headers: list[tuple[bytes, bytes]],
        max_message_size: int,
    ) -> WebSocket:
        headers = request.headers
        key = headers.get("sec-websocket-key", "")
        if (
            request.method != "GET"
            or "websocket" not in headers.get("upgrade", "").lower()
            or "upgrade" not in headers.get("connection", "").lower()
            or headers.get("sec-websocket-version") != "13"
            or not key
        ):
            raise WebSocketUpgradeError("not a WebSocket upgrade request")
        while await self.receive_body_chunk():
            pass
        if self._closed:
            raise ClientDisconnected("connection closed before the upgrade")
        accept = base64.b64encode(hashlib.sha1(key.encode() + _WS_GUID).digest())  # noqa: S324
        response_headers = [
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-accept", accept),
        ]
        if subprotocol is not None:
            response_headers.append((b"sec-websocket-protocol", subprotocol.encode()))
        response_headers.extend(extra_headers)
        self._write(
            self._conn.send(h11.InformationalResponse(status_code=101, headers=response_headers))
        )
        self._flush()
        self._switched = True
        trailing = bytes(self._conn.trailing_data[0])
        assert self._transport is not None
        ws = WebSocket(
            wsproto.connection.Connection(wsproto.ConnectionType.SERVER),
            max_message_size=max_message_size,
            subprotocol=subprotocol,
        )
        self._state.connections.discard(self)
        self._uncount()  # a WebSocket may live for hours: it is a connection, not a request
        self._state.websockets.add(ws)
        ws.closed_future.add_done_callback(lambda _: self._state.websockets.discard(ws))
        self._transport.set_protocol(ws)
        ws.adopt_transport(self._transport, write_paused=self._flow.paused)
        if self._reading_paused:
            self._transport.resume_reading()
        if trailing:
            ws.data_received(trailing)
        if self._eof:
            ws.eof_received()
        # the h11 state machine and its buffers are dead weight from here on (nothing reads
        # it once _switched), and a tunnel lives for hours: ~1 KB per idle tunnel
        self._cancel_timer()
        del self._conn
        return ws

    # ---- plumbing -----------------------------------------------------------------------

    def _write(self, data: bytes | None) -> None:
        """Queue bytes for the end of this loop iteration (one write per response part
        produced together); large amounts are written at once."""
        if not data or self._transport is None or self._closed:
            return
        self._out.add(data)

    def _flush(self) -> None:
        self._out.flush()

    def _write_out(self, data: bytes) -> None:
        if self._transport is not None and not self._closed:
            self._transport.write(data)

    def _refuse(self, status: int, reason: str) -> None:
        """Answer a request head that cannot be served (malformed, too large, too slow) through
        the error responder, with what could be read of it, and close."""
        method, path, headers = lenient_head(self._head_seen)
        self._head_seen = b""
        status, answer_headers, body = answer_problem(
            self._state.error_responder, RequestProblem(status, reason, method, path, headers))
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error"))]
        for name, value in answer_headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                lines.append(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1")))
        lines.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self._write(b"".join(lines) + body)
        self._linger_close()

    def _arm_timer(self, delay: float) -> None:
        self._cancel_timer()
        self._timer = self._loop.call_later(delay, self._on_timeout)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timeout(self) -> None:
        self._timer = None
        if self._task is not None or self._closed:
            return
        if self._conn.trailing_data[0] or self._head_seen:
            # a request head began but did not complete in time
            self._refuse(408, f"the request head did not arrive within "
                              f"{self._config.header_timeout:g} s")
        else:
            self._close()

    def _close(self) -> None:
        self._flush()
        self._cancel_timer()
        self._state.connections.discard(self)
        if self._transport is not None and not self._closed and not self._switched:
            self._transport.close()

    def _linger_close(self) -> None:
        """Close; if the client may still be sending a body, drop its bytes for a while first.

        Closing with unread bytes in the kernel buffer sends a TCP RST, which can destroy the
        response (e.g. a 413) before the client reads it: Apache's "lingering close".
        """
        if (
            self._closed
            or self._eof
            or self._conn.their_state not in (h11.SEND_BODY, h11.ERROR)
            or self._transport is None
        ):
            self._close()
            return
        self._lingering = True
        self._flush()
        self._state.connections.discard(self)
        if self._reading_paused:
            self._reading_paused = False
            self._transport.resume_reading()
        self._cancel_timer()
        self._timer = self._loop.call_later(self._config.linger_timeout, self._close)

    def _abort_transport(self) -> None:
        self._out.clear()
        if self._transport is not None and not self._closed:
            self._transport.abort()


class _H1Exchange:
    """The request and response channel of one HTTP/1.1 exchange."""

    __slots__ = ("_head", "_owner", "disconnected")

    def __init__(self, owner: H1Connection, *, head: bool) -> None:
        self._owner = owner
        self._head = head  # a HEAD response carries the headers only
        self.disconnected = owner._disconnected

    async def receive_body_chunk(self) -> bytes:
        return await self._owner.receive_body_chunk()

    def body_complete(self) -> bool:
        return self._owner.body_complete()

    def limit_body(self, limit: int) -> None:
        self._owner.limit_body(limit)

    async def accept_websocket(self, request: HttpRequest, **options: Any) -> WebSocket:
        return await self._owner.upgrade_websocket(request, **options)

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        await self._owner.start_response(status, headers)

    async def send(self, data: bytes) -> None:
        if not self._head:
            await self._owner.send_body(data)

    async def end(self) -> None:
        await self._owner.end_response()
