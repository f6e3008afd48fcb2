"""An HTTP server on asyncio: HTTP/1.1 (h11) and HTTP/2 (h2), one handler interface.

    server = HttpServer(handler, ssl_context=server_context(cert, key))
    await server.start("127.0.0.1", 8443)        # then server.port
    ...
    await server.shutdown(grace=10.0)            # stop accepting, drain, close

On TLS the protocol is chosen by ALPN ("h2" or "http/1.1"); on plain text HTTP/1.1 is served,
and HTTP/2 with prior knowledge (h2c) when `ServerConfig.allow_h2c`. The handler contract,
`HttpRequest` and `HttpResponse` are in `_http.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from typing import Protocol, cast

from runtimes.netio._http import (
    BodyTooLarge,
    BufferedReads,
    ClientDisconnected,
    ErrorResponder,
    Handler,
    HttpRequest,
    HttpResponse,
    ServerConfig,
    WebSocketUpgradeError,
    plain_error_answer,
)
from runtimes.netio.h1 import H1Connection
from runtimes.netio.h2 import H2Connection
from runtimes.netio.memory import release_periodically
from runtimes.netio.websocket import WebSocket

__all__ = [
    "BodyTooLarge",
    "ClientDisconnected",
    "Handler",
    "HttpRequest",
    "HttpResponse",
    "HttpServer",
    "ServerConfig",
    "WebSocketUpgradeError",
]

_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class _ServedConnection(Protocol):
    @property
    def busy(self) -> bool: ...

    def begin_shutdown(self) -> None: ...

    def abort(self) -> None: ...


class ServerState:
    """What every connection of one server shares."""

    __slots__ = ("accepting", "config", "connections", "error_responder", "handler", "requests",
                 "websockets")

    def __init__(self, handler: Handler, config: ServerConfig,
                 error_responder: ErrorResponder = plain_error_answer) -> None:
        self.handler = handler
        self.config = config
        self.error_responder = error_responder
        self.connections: set[_ServedConnection] = set()
        self.websockets: set[WebSocket] = set()
        #: Requests (h1) and streams (h2) whose handler is running (see max_requests).
        self.requests = 0
        self.accepting = True


class _Dispatcher(BufferedReads):
    """The first protocol of every connection: picks h1 or h2, then steps aside."""

    def __init__(self, state: ServerState, secure: bool) -> None:
        self._state = state
        self._secure = secure
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        state = self._state
        open_now = len(state.connections) + len(state.websockets)
        if not state.accepting or open_now >= state.config.max_connections:
            self._transport.abort()
            return
        if self._secure:
            ssl_object = transport.get_extra_info("ssl_object")
            alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
            self._hand_over(alpn == "h2", b"")
        elif not state.config.allow_h2c:
            self._hand_over(False, b"")
        else:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(state.config.header_timeout, self._transport.close)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) < len(_H2_PREFACE) and _H2_PREFACE.startswith(self._buffer):
            return  # could still be the h2c preface
        self._hand_over(self._buffer.startswith(_H2_PREFACE), self._buffer)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _hand_over(self, use_h2: bool, first_bytes: bytes) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        assert self._transport is not None
        scheme = "https" if self._secure else "http"
        protocol: H1Connection | H2Connection
        if use_h2:
            protocol = H2Connection(self._state, scheme)
        else:
            protocol = H1Connection(self._state, scheme)
        self._transport.set_protocol(protocol)
        protocol.connection_made(self._transport)
        if first_bytes:
            protocol.data_received(first_bytes)


class HttpServer:
    """Serve `handler` on one listening socket (several servers may share a handler).

    ``error_responder`` shapes what the server answers by itself (see `RequestProblem`):
    malformed heads and bodies, timeouts, the request limit, a handler that failed.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        ssl_context: ssl.SSLContext | None = None,
        config: ServerConfig | None = None,
        error_responder: ErrorResponder = plain_error_answer,
    ) -> None:
        self._config = config or ServerConfig()
        self._state = ServerState(handler, self._config, error_responder)
        self._ssl = ssl_context
        self._server: asyncio.Server | None = None
        self._releaser: asyncio.Task[None] | None = None

    @property
    def config(self) -> ServerConfig:
        return self._config

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        sock: socket.socket | None = None,
        backlog: int = 1024,
    ) -> None:
        """Listen on host:port (port 0 picks one; see `.port`) or on an existing socket."""
        loop = asyncio.get_running_loop()
        secure = self._ssl is not None

        def factory() -> asyncio.BaseProtocol:
            return _Dispatcher(self._state, secure)

        # A TLS handshake must finish within header_timeout too (slowloris on the handshake).
        handshake_timeout = self._config.header_timeout if self._ssl is not None else None
        if sock is not None:
            self._server = await loop.create_server(
                factory,
                sock=sock,
                ssl=self._ssl,
                backlog=backlog,
                ssl_handshake_timeout=handshake_timeout,
            )
        else:
            self._server = await loop.create_server(
                factory,
                host,
                port,
                ssl=self._ssl,
                backlog=backlog,
                reuse_address=True,
                ssl_handshake_timeout=handshake_timeout,
            )
        config = self._config
        if config.memory_release_interval > 0:
            self._releaser = loop.create_task(release_periodically(
                config.memory_release_interval, config.memory_release_threshold))

    @property
    def sockets(self) -> list[socket.socket]:
        if self._server is None:
            return []
        return list(self._server.sockets)

    @property
    def port(self) -> int:
        """The bound port of the first listening socket."""
        return int(self.sockets[0].getsockname()[1])

    @property
    def connection_count(self) -> int:
        return len(self._state.connections) + len(self._state.websockets)

    @property
    def requests_in_flight(self) -> int:
        """Requests whose handler is running (what `ServerConfig.max_requests` caps)."""
        return self._state.requests

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting; let in-flight requests finish within `grace` s; close the rest.

        HTTP/2 connections get GOAWAY, idle HTTP/1.1 connections are closed, busy ones close
        after their response (`connection: close`). WebSockets get close 1001.
        """
        grace = self._config.shutdown_grace if grace is None else grace
        self._state.accepting = False
        if self._releaser is not None:
            self._releaser.cancel()
        if self._server is not None:
            self._server.close()
        for connection in list(self._state.connections):
            connection.begin_shutdown()
        websockets = list(self._state.websockets)
        closes = [ws.close(1001, "server shutting down", timeout=grace) for ws in websockets]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if closes:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*closes, return_exceptions=True), grace)
        while self._state.connections and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for connection in list(self._state.connections):
            connection.abort()
        for ws in list(self._state.websockets):
            ws.abort()
        await asyncio.sleep(0)

    async def __aenter__(self) -> HttpServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()
