"""What both connector shells (asyncio ``app`` and ``threaded``) share besides ``handling``:
the settings, exit codes, the HELLO and Config built from the settings, and the rejection
texts. No event loop, no threads: importing this module loads neither.

A shell calls ``ConnectorConnection(config_for(settings), hello=hello_for(settings))`` for each
session, gives each stream's work ``timing_for(settings)``, and after a session ended asks
``session.Reconnect`` (which reads :func:`session_outcome`) whether and when to dial again.
"""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass, field

from runtimes.connector.handling import KEEPALIVE_INTERVAL
from runtimes.connector.health import HEALTH_INTERVAL
from runtimes.connector.serving import (
    FIRST_BYTE_TIMEOUT,
    HEAD_HOLD,
    IDLE_TIMEOUT,
    REQUEST_TIMEOUT,
    Timing,
)
from tokios_proto import Config, DeploymentOffer, Hello, Rejected, RejectReason, Secret, Settings
from tokios_translate import BackendKind

__all__ = [
    "CONNECT_TIMEOUT",
    "EXIT_OK",
    "EXIT_PERMANENT",
    "EXIT_PROBE_FAILED",
    "EXIT_USAGE",
    "MAX_REQUEST_BODY",
    "REVOKED_REASON",
    "SOFTWARE_VERSION",
    "ConnectorSettings",
    "PermanentRejection",
    "config_for",
    "hello_for",
    "rejection_text",
    "session_outcome",
    "timing_for",
    "tunnel_urls",
]

SOFTWARE_VERSION = "0.1.0"
EXIT_OK = 0
EXIT_USAGE = 2
#: The gateway refused this connector for good (bad or revoked token, deployments not
#: allowed, unsupported protocol version): retrying cannot help.
EXIT_PERMANENT = 3
#: ``--backend auto`` found no known model server at ``--upstream``.
EXIT_PROBE_FAILED = 4

#: Seconds to connect to the model server (``--connect-timeout``).
CONNECT_TIMEOUT = 5.0
#: Largest request body accepted from the gateway per stream.
MAX_REQUEST_BODY = 64 * 1024 * 1024
#: The GOAWAY reason the gateway sends when it revokes the token of a live tunnel.
REVOKED_REASON = "revoked"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectorSettings:
    """Validated options of one connector process."""

    tunnel_url: str
    token: str
    upstream: str
    backend: BackendKind
    #: deployment -> upstream model.
    models: dict[str, str]
    ca_file: str | None = None
    max_concurrent_streams: int = 64
    #: Flow-control windows proposed to the gateway (the gateway may lower them).
    stream_window: int = Settings().initial_stream_window
    connection_window: int = Settings().initial_connection_window
    #: Seconds between keep-alives while a streamed answer waits for its first token.
    keepalive_interval: float = KEEPALIVE_INTERVAL
    #: The clocks of an upstream call (seconds; see runtimes.connector.serving.Timing).
    connect_timeout: float = CONNECT_TIMEOUT
    head_hold: float = HEAD_HOLD
    first_byte_timeout: float = FIRST_BYTE_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT
    request_timeout: float = REQUEST_TIMEOUT
    #: Seconds between health checks of the model server (0: no checks, no health reports).
    health_interval: float = HEALTH_INTERVAL
    #: ``(host, port)`` to serve Prometheus metrics on, or None (``--metrics-listen``).
    metrics_listen: tuple[str, int] | None = None
    #: Tunnels held at once, to distinct gateway nodes where the gateway names its nodes
    #: (``tokios-connector --tunnels``, whose default is 2; a library connector holds 1
    #: unless told).
    tunnels: int = 1
    #: More gateway tunnel URLs after ``tunnel_url`` (``--gateway`` repeated): tunnel i dials
    #: address i first, then the next on each dial.
    other_tunnel_urls: tuple[str, ...] = ()
    connector_id: str = field(default_factory=lambda: f"{socket.gethostname()[:40]}-"
                                                       f"{secrets.token_hex(4)}")


class PermanentRejection(Exception):  # noqa: N818
    """The gateway refused the connector for a reason retrying cannot fix."""


def hello_for(settings: ConnectorSettings) -> Hello:
    """The HELLO this connector opens every session with."""
    offers = tuple(DeploymentOffer(name=name, upstream_model=model)
                   for name, model in settings.models.items())
    return Hello(credential=Secret(settings.token), connector_id=settings.connector_id,
                 software_version=SOFTWARE_VERSION, deployments=offers)


def tunnel_urls(settings: ConnectorSettings) -> tuple[str, ...]:
    """Every gateway address the connector's tunnels dial, ``tunnel_url`` first."""
    return (settings.tunnel_url, *settings.other_tunnel_urls)


def config_for(settings: ConnectorSettings) -> Config:
    """The core's Config: the stream limit and windows this connector proposes."""
    return Config(settings=Settings(
        max_concurrent_streams=settings.max_concurrent_streams,
        initial_stream_window=settings.stream_window,
        initial_connection_window=settings.connection_window))


def timing_for(settings: ConnectorSettings) -> Timing:
    """The clocks of each stream's answer (``runtimes.connector.serving``)."""
    return Timing(keepalive_interval=settings.keepalive_interval, head_hold=settings.head_hold,
                  first_byte_timeout=settings.first_byte_timeout,
                  idle_timeout=settings.idle_timeout, request_timeout=settings.request_timeout)


def session_outcome(rejected: Rejected | None, revoked: bool) -> float | None:
    """After a session: raise PermanentRejection to stop for good, else the minimum wait before
    the next attempt (the gateway's ``retry_after``), or None."""
    if rejected is not None and not rejected.retryable:
        raise PermanentRejection(rejection_text(rejected.reason, rejected.message))
    if revoked:
        raise PermanentRejection("the gateway closed the tunnel: this connector token was "
                                 "revoked; create a new one with `tokios-gateway "
                                 "connector-token add`")
    if rejected is not None and rejected.retry_after:
        return rejected.retry_after
    return None


def rejection_text(reason: RejectReason, message: str) -> str:
    """A readable reason for a rejection (no secret in it)."""
    what = {
        RejectReason.BAD_CREDENTIAL: "the connector token is not valid (check --token)",
        RejectReason.REVOKED: "the connector token was revoked",
        RejectReason.DEPLOYMENT_NOT_ALLOWED: "this token may not serve any of the --model "
                                             "deployments offered",
        RejectReason.UNSUPPORTED_VERSION: "the gateway speaks another protocol version",
    }.get(reason, f"rejected ({reason.value})")
    suffix = f": {message}" if message else ""
    return f"the gateway refused this connector: {what}{suffix}"
