"""Network plumbing for the threaded shell, on blocking sockets: no asyncio, no Tokios logic.

- `WebSocket`, `connect_websocket` (websocket.py): a wsproto client over a (TLS) socket.
- `UpstreamPool` (upstream.py): pooled HTTP/1.1 client (h11) for the local model.
- `client_context`: the TLS client context (system roots or a CA file, hostname checked).

The asyncio twins live in ``runtimes.netio``; importing this package never loads asyncio.
"""

from __future__ import annotations

import ssl

from runtimes.blocking.upstream import UpstreamError, UpstreamExchange, UpstreamPool
from runtimes.blocking.websocket import (
    WebSocket,
    WebSocketClosed,
    WebSocketHandshakeError,
    connect_websocket,
)

__all__ = [
    "UpstreamError",
    "UpstreamExchange",
    "UpstreamPool",
    "WebSocket",
    "WebSocketClosed",
    "WebSocketHandshakeError",
    "client_context",
    "connect_websocket",
]


def client_context(*, ca_file: str | None = None) -> ssl.SSLContext:
    """System roots (or ``ca_file`` only), hostname checked, TLS >= 1.2 (as netio's twin)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
