"""The tunnel-session bookkeeping both connector shells share (asyncio ``app``, ``threaded``):
what to do with each event of the core, minus how a shell waits and wakes.

A shell subclasses :class:`SessionEvents` with its own stream type (a :class:`StreamRequest`
subclass carrying its wake-up primitives) and implements four hooks:

- ``_open(stream_id, head)``: make the stream and start serving it (a task, a worker);
- ``_body_complete(stream)``: the request body is whole (or too large): wake the server;
- ``_cancel(stream)``: the stream was reset or the tunnel ended: stop serving it now;
- ``_credit(stream_id)``: send credit grew (0: the whole connection): wake the senders.

It calls :meth:`SessionEvents.on_event` for each event of the core, and, in the server,
:func:`plan_for` once the body is complete (then ``runtimes.connector.serving`` does the
stream's work). Around the sessions, :class:`Reconnect` says how long to wait before dialling
again. No event loop and no threads here.
"""

from __future__ import annotations

import logging
import random
import ssl
import time
from typing import Generic, Protocol, TypeVar

from runtimes.connector import handling
from runtimes.connector.handling import Backoff, Plan, Route
from runtimes.connector.settings import (
    MAX_REQUEST_BODY,
    ConnectorSettings,
    PermanentRejection,
    session_outcome,
)
from tokios_proto import (
    Accepted,
    ConnectionTerminated,
    ConnectorConnection,
    DataReceived,
    ErrorCode,
    Event,
    GoAwayReceived,
    Rejected,
    RequestHead,
    StreamEnded,
    StreamOpened,
    StreamReset,
    WindowUpdated,
)
from tokios_translate import BackendKind, ClientFormat, ErrorKind

__all__ = ["ConnectorState", "Reconnect", "SessionEvents", "StreamRequest", "dial_failure",
           "plan_for"]

logger = logging.getLogger("tokios.connector")

#: Response ids (``chatcmpl-…``, ``msg_…``) name an answer, they guard nothing: a PRNG seeded
#: from the OS, not ``secrets`` (a getrandom() system call per request). getrandbits is one C
#: call, so the threaded connector's workers can share it.
_response_ids = random.Random()  # noqa: S311 (ids are not secrets)


class ConnectorState(Protocol):
    """What a session needs of its connector (both shells' connectors have it)."""

    settings: ConnectorSettings
    backend: BackendKind
    backoff: Backoff
    sessions: int


class StreamRequest:
    """One stream's request: its head and its body, gathered up to ``limit`` bytes."""

    __slots__ = ("body", "head", "limit", "size", "too_large")

    def __init__(self, head: RequestHead, *, limit: int = MAX_REQUEST_BODY) -> None:
        self.head = head
        self.limit = limit
        self.body: list[bytes] = []
        self.size = 0
        self.too_large = False

    def add(self, data: bytes) -> bool:
        """Keep ``data``; True once the body turned out too large (it is dropped then)."""
        if self.too_large:
            return False
        self.size += len(data)
        if self.size > self.limit:
            self.too_large = True
            self.body.clear()
            return True
        self.body.append(data)
        return False

    def take_body(self) -> bytes:
        body = b"".join(self.body)
        self.body.clear()
        return body


S = TypeVar("S", bound=StreamRequest)


class SessionEvents(Generic[S]):
    """The events of one tunnel connection, for either shell (see the module doc)."""

    def __init__(self, connector: ConnectorState, conn: ConnectorConnection) -> None:
        self.connector = connector
        self.conn = conn
        self.streams: dict[int, S] = {}
        self.accepted: Accepted | None = None
        self.rejected: Rejected | None = None
        self.revoked = False

    # ---- the shell's hooks ---------------------------------------------------------------

    def _open(self, stream_id: int, head: RequestHead) -> S:
        raise NotImplementedError

    def _body_complete(self, stream: S) -> None:
        raise NotImplementedError

    def _cancel(self, stream: S) -> None:
        raise NotImplementedError

    def _credit(self, stream_id: int) -> None:
        raise NotImplementedError

    # ---- dispatch ------------------------------------------------------------------------

    def on_event(self, event: Event, now: float) -> None:
        """Act on one event of the core (``now``: the shell's monotonic clock)."""
        stream: S | None
        if isinstance(event, StreamOpened):
            self.streams[event.stream_id] = self._open(event.stream_id, event.head)
        elif isinstance(event, DataReceived):
            self.conn.acknowledge_received_data(stream_id=event.stream_id,
                                                acknowledged_size=event.flow_controlled_length)
            stream = self.streams.get(event.stream_id)
            if stream is not None and stream.add(event.data):
                self._body_complete(stream)
        elif isinstance(event, StreamEnded):
            if (stream := self.streams.get(event.stream_id)) is not None:
                self._body_complete(stream)
        elif isinstance(event, StreamReset):
            if (stream := self.streams.pop(event.stream_id, None)) is not None:
                self._cancel(stream)
        elif isinstance(event, WindowUpdated):
            self._credit(event.stream_id)
        elif isinstance(event, Accepted):
            self.accepted = event
            logger.info("tunnel open: session %s, serving %s", event.session_id,
                        ", ".join(event.deployments) or "nothing")
            self.connector.backoff.connected(now)
            self.connector.sessions += 1
        elif isinstance(event, Rejected):
            self.rejected = event
        elif isinstance(event, GoAwayReceived):
            logger.info("gateway sent goaway (code %s): finishing streams in flight",
                        int(event.code))
        elif isinstance(event, ConnectionTerminated):
            if (event.remote and event.code == ErrorCode.REJECTED and self.rejected is None
                    and self.accepted is not None):
                self.revoked = True
            streams = list(self.streams.values())
            self.streams.clear()
            for stream in streams:
                self._cancel(stream)
            self._credit(0)


def plan_for(connector: ConnectorState, stream: StreamRequest) -> Plan:
    """What to do for a stream whose body is complete: a refusal in the client's envelope
    (413 body too large, 404 a deployment this connector does not serve) or
    ``handling.plan_request``'s plan."""
    head = stream.head
    models = connector.settings.models
    if stream.too_large:
        return _refused(head.path, ErrorKind.REQUEST_TOO_LARGE,
                        f"request body exceeds {stream.limit} bytes")
    if head.deployment not in models:
        return _refused(head.path, ErrorKind.NOT_FOUND,
                        "this connector does not serve that deployment")
    return handling.plan_request(
        head.path, stream.take_body(), backend=connector.backend, deployment=head.deployment,
        upstream_model=models[head.deployment],
        response_id=f"{_response_ids.getrandbits(96):024x}", created=int(time.time()))


def _refused(path: str, kind: ErrorKind, message: str) -> Plan:
    route, client = handling.route_for(path) or (Route.GENERATE, ClientFormat.CHAT)
    return Plan(route=route, client=client, immediate=handling.refusal(path, kind, message))


def dial_failure(exc: BaseException) -> str:
    """Why dialling the gateway failed, for the log (no secret in it)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"cannot reach the gateway: its TLS certificate is not trusted "
                f"({exc.verify_message}); check --ca-file")
    strerror = getattr(exc, "strerror", None) or ""
    return f"cannot reach the gateway: {type(exc).__name__} {strerror}".rstrip()


class Reconnect:
    """When to dial the gateway again, for both shells.

    After a session (:meth:`after_session`) or a dial that failed (:meth:`after_dial_failure`)
    the shell waits the returned number of seconds, then dials. The wait is the gateway's
    ``retry_after`` when its rejection carried one, PLUS the full-jitter back-off delay
    (:class:`~runtimes.connector.handling.Backoff`): the gateway's figure is a minimum, and
    the jitter on top spreads the connectors it turned away so they do not all come back at
    the same instant. A permanent rejection (bad or revoked token, deployments not allowed,
    another protocol version) raises PermanentRejection instead: retrying cannot help.
    """

    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff

    def after_session(self, session: SessionEvents[S], now: float) -> float:
        """Seconds to wait after ``session`` ended (PermanentRejection: stop for good)."""
        try:
            retry_after = session_outcome(session.rejected, session.revoked)
        except PermanentRejection as exc:
            logger.error("%s", exc)
            raise
        return self._delay(retry_after or 0.0, now)

    def after_dial_failure(self, exc: BaseException, now: float) -> float:
        """Seconds to wait after dialling failed with ``exc`` (logged without secrets)."""
        logger.warning("%s", dial_failure(exc))
        return self._delay(0.0, now)

    def _delay(self, retry_after: float, now: float) -> float:
        self.backoff.disconnected(now)
        delay = retry_after + self.backoff.next_delay()
        logger.info("reconnecting in %.2fs", delay)
        return delay
