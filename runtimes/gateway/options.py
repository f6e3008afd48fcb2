"""What ``tokios-gateway serve`` hands to ``runtimes.gateway.server.run``.

The CLI builds a :class:`ServeOptions` after validating every argument (addresses parsed, TLS
pair complete, plain HTTP only on loopback unless insisted, the event loop resolved), so the
server can trust it as is.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

DEFAULT_GRACE_PERIOD = 30.0
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
MIN_MAX_BODY_BYTES = 1024
MAX_MAX_BODY_BYTES = 1024 * 1024 * 1024
MAX_GRACE_PERIOD = 3600.0
DEFAULT_USAGE_FLUSH_INTERVAL = 10.0
#: ``--stream-silence-timeout``: seconds a stream waits on a connector that sends nothing for
#: it before it ends with a timeout; above the connectors' own ``--first-byte-timeout``
#: (600 s by default), so that their more precise error comes first.
DEFAULT_STREAM_SILENCE_TIMEOUT = 900.0
MIN_STREAM_SILENCE_TIMEOUT, MAX_STREAM_SILENCE_TIMEOUT = 1.0, 7 * 86_400.0
MAX_USAGE_FLUSH_INTERVAL = 3600.0
#: Seconds a client has to send a whole request head (then 408), and the TLS handshake.
DEFAULT_HEADER_TIMEOUT = 10.0
#: Seconds a request body may go without a byte arriving (then 408).
DEFAULT_BODY_TIMEOUT = 30.0
#: Largest request head (request line and headers; HTTP/2: the decoded header list): 431.
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
MIN_MAX_HEADER_BYTES = 4 * 1024
MAX_MAX_HEADER_BYTES = 64 * 1024
MAX_HTTP_TIMEOUT = 3600.0

LoopName = Literal["asyncio", "uvloop"]
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?")


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenAddress:
    """A host and a TCP port (0: any free port, for tests)."""

    host: str
    port: int

    @property
    def is_loopback(self) -> bool:
        """True for localhost, 127.0.0.0/8 and ::1; a host name other than localhost is not."""
        if self.host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeOptions:
    """Validated settings for the gateway server.

    ``tls_cert``/``tls_key`` are both set unless ``insecure_http`` (then both None).
    ``tunnel_listen`` None: connectors use ``/v1/tunnel`` on ``listen``.
    The store is PostgreSQL at ``store_url`` if set, else SQLite in ``data_dir`` (one of them
    is set; ``data_dir`` may be set beside a URL).
    """

    data_dir: Path | None
    listen: ListenAddress
    tls_cert: Path | None
    tls_key: Path | None
    insecure_http: bool
    allow_insecure_non_loopback: bool
    tunnel_listen: ListenAddress | None
    loop: LoopName
    grace_period: float = DEFAULT_GRACE_PERIOD
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    log_level: str = "info"
    log_format: str = "text"
    #: A separate address serving only ``/metrics`` (and the probes); None: on ``listen``.
    metrics_listen: ListenAddress | None = None
    #: The bearer token ``/metrics`` asks for (None: none; then on ``listen`` only loopback
    #: clients are answered).
    metrics_token: str | None = None
    #: Seconds between writes of the buffered token usage to the store.
    usage_flush_interval: float = DEFAULT_USAGE_FLUSH_INTERVAL
    #: The PostgreSQL store (``postgresql://...``); None: SQLite in ``data_dir``.
    store_url: str | None = None
    #: Redis shared by the nodes (``--redis``): the per-minute limits, the deployments'
    #: in-flight slots and the cluster state live there. None: limits and caps in this
    #: process, the cluster state in a local file.
    redis_url: str | None = None
    #: Gateway processes on the same ports (runtimes/gateway/workers.py).
    workers: int = 1
    #: Where this node takes requests other nodes forward (None: not a node, or a worker on
    #: loopback), the URL peers use for it, the CA that signs the nodes' certificates, and
    #: the secret the nodes show each other.
    node_listen: ListenAddress | None = None
    node_url: str | None = None
    node_ca: Path | None = None
    cluster_secret: bytes | None = field(default=None, repr=False)

    @property
    def store_location(self) -> str:
        """What :func:`runtimes.store.open_store` takes: the URL, else the data directory."""
        if self.store_url is not None:
            return self.store_url
        assert self.data_dir is not None, "ServeOptions needs a data_dir or a store_url"
        return str(self.data_dir)
    #: Seconds a stream waits on a connector that sends nothing for it before a 504.
    stream_silence_timeout: float = DEFAULT_STREAM_SILENCE_TIMEOUT


def parse_listen_address(text: str) -> ListenAddress:
    """Parse ``HOST:PORT`` or ``[IPv6]:PORT``; raise ValueError with a readable reason."""
    if len(text) > 300:
        raise ValueError("address too long")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"expected [IPV6]:PORT, got {text!r}")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise ValueError(f"{host!r} is not an IPv6 address") from exc
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        if ":" in host:
            raise ValueError(f"write an IPv6 address in brackets: [{host}]:{port_text}")
        if _HOST.fullmatch(host) is None:
            raise ValueError(f"{host!r} is not an IP address or host name")
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number from 0 to 65535, got {port_text!r}")
    return ListenAddress(host=host, port=int(port_text))
