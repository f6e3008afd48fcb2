"""Network plumbing for the asyncio shells: no Tokios business logic lives here.

- `HttpServer` (http_server.py): HTTP/1.1 (h11) + HTTP/2 (h2, ALPN) with one handler API.
- `WebSocket`, `connect_websocket` (websocket.py): wsproto channels, server and client.
- `UpstreamPool` (upstream.py): pooled HTTP/1.1 client (h11) for the local model.
- `server_context`, `client_context` (tls.py); `install_loop`, `run` (loop.py).
"""

from runtimes.netio._http import (
    BodyTooLarge,
    ClientDisconnected,
    Disconnected,
    ErrorAnswer,
    ErrorResponder,
    Handler,
    HttpRequest,
    HttpResponse,
    RequestBodyError,
    RequestProblem,
    ServerConfig,
    WebSocketUpgradeError,
    plain_error_answer,
)
from runtimes.netio.http_server import HttpServer
from runtimes.netio.loop import install_loop, run
from runtimes.netio.tls import client_context, server_context
from runtimes.netio.upstream import UpstreamError, UpstreamExchange, UpstreamPool
from runtimes.netio.websocket import (
    CloseInfo,
    WebSocket,
    WebSocketClosed,
    WebSocketHandshakeError,
    connect_websocket,
)

__all__ = [
    "BodyTooLarge",
    "ClientDisconnected",
    "CloseInfo",
    "Disconnected",
    "ErrorAnswer",
    "ErrorResponder",
    "Handler",
    "HttpRequest",
    "HttpResponse",
    "HttpServer",
    "RequestBodyError",
    "RequestProblem",
    "ServerConfig",
    "UpstreamError",
    "UpstreamExchange",
    "UpstreamPool",
    "WebSocket",
    "WebSocketClosed",
    "WebSocketHandshakeError",
    "WebSocketUpgradeError",
    "client_context",
    "connect_websocket",
    "install_loop",
    "plain_error_answer",
    "run",
    "server_context",
]
