"""The connector's HTTP/1.1 exchange with the local model, without I/O.

Both upstream pools, asyncio (``runtimes.netio.upstream``) and threaded
(``runtimes.blocking.upstream``), parse the base URL, serialise the request and read h11's
events here; they only move bytes and wait. A pool calls, per exchange::

    out = encode_request(conn, origin, method, path, headers=h, body=b)  # write it
    while (head := next_head(conn)) is None: ...read more into conn...
    status, reason, headers = decode_head(head)
    while (chunk := next_body(conn)) is not None:
        if isinstance(chunk, bytes): ...use the bytes...
        else: ...read more into conn...              # h11.NEED_DATA

Errors are :class:`UpstreamError`, the one class both pools raise.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

import h11

__all__ = ["OWN_HEADERS", "Origin", "UpstreamError", "decode_head", "encode_request", "next_body",
           "next_head", "parse_origin"]

#: Request headers the pool writes itself (a caller's are dropped).
OWN_HEADERS = ("host", "content-length", "transfer-encoding", "connection")


class UpstreamError(Exception):
    """The upstream could not be reached, broke the protocol, timed out or closed early."""


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
            raise UpstreamError("upstream closed before the response head")


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
