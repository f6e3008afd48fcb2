"""Parsing of ``ws://`` / ``wss://`` URLs, shared by the asyncio and the blocking WebSocket clients.

Pure (no I/O), so ``runtimes.netio`` and ``runtimes.blocking`` both import it without either
pulling in the other's runtime.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

__all__ = ["WebSocketTarget", "parse_websocket_url"]


@dataclass(frozen=True, slots=True)
class WebSocketTarget:
    """Where a WebSocket client dials, and what its upgrade request names."""

    #: True for ``wss://``: wrap the socket in TLS, with ``host`` as SNI and the checked name.
    secure: bool
    host: str
    port: int
    #: The request target: path plus query string.
    target: str
    #: The ``Host`` header: brackets around IPv6 literals, the port when not the default.
    host_header: str


def parse_websocket_url(url: str) -> WebSocketTarget:
    """Split ``ws://host[:port]/path?query`` or ``wss://...``; raise ValueError otherwise."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("ws", "wss") or not parsed.hostname:
        raise ValueError("url must be ws://host[:port]/path or wss://...")
    secure = parsed.scheme == "wss"
    host = parsed.hostname
    default_port = 443 if secure else 80
    port = parsed.port or default_port
    target = parsed.path or "/"
    if parsed.query:
        target = f"{target}?{parsed.query}"
    host_header = host if ":" not in host else f"[{host}]"
    if port != default_port:
        host_header = f"{host_header}:{port}"
    return WebSocketTarget(secure, host, port, target, host_header)
