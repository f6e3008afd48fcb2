"""The tunnel-session bookkeeping both connector shells share (asyncio ``app``, ``threaded``):
what to do with each event of the core, minus how a shell waits and wakes.

A shell subclasses :class:`SessionEvents` with its own stream type (a :class:`StreamRequest`
subclass carrying its wake-up primitives) and implements four hooks:

- ``_open(stream_id, head)``: make the stream and start serving it (a task, a worker);
- ``_body_complete(stream)``: the request body is whole (or too large): wake the server;
- ``_cancel(stream)``: the stream was reset or the tunnel ended: stop serving it now;
- ``_credit(stream_id)``: send credit grew (0: the whole connection): wake the senders.

- ``_release()``: the tunnel's loop may dial again now (the session landed on a node another
  tunnel holds, its node drains, or it ended); a draining session carries on by itself.

It calls :meth:`SessionEvents.on_event` for each event of the core, and, in the server,
:func:`plan_for` once the body is complete (then ``runtimes.connector.serving`` does the
stream's work, kept in ``stream.work``). When a stream's serving ends - answered, failed,
reset, or cancelled with the tunnel - the shell calls :meth:`SessionEvents.finish_stream`
once (its usage report and metrics); when the upstream's health changed,
:func:`health_changed` for each live session. After each call the shell sends the core's
output. Around the sessions, ``runtimes.connector.tunnels`` says where each of the
connector's tunnels dials, which to keep and how long to wait before dialling again. No event
loop and no threads here.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Generic, Protocol, TypeVar

from runtimes.connector import handling
from runtimes.connector.handling import Plan, Route
from runtimes.connector.health import UpstreamHealth
from runtimes.connector.metrics import ConnectorMetrics
from runtimes.connector.serving import StreamWork
from runtimes.connector.settings import MAX_REQUEST_BODY, ConnectorSettings
from runtimes.connector.tunnels import Reconnect, TunnelPlan, TunnelSlot, Verdict, dial_failure
from tokios_proto import (
    Accepted,
    ConnectionState,
    ConnectionTerminated,
    ConnectorConnection,
    DataReceived,
    ErrorCode,
    Event,
    GoAwayReceived,
    LocalProtocolError,
    Rejected,
    RequestHead,
    StreamEnded,
    StreamOpened,
    StreamReset,
    WindowUpdated,
)
from tokios_translate import BackendKind, ClientFormat, ErrorKind

__all__ = ["ConnectorState", "Reconnect", "SessionEvents", "StreamRequest", "dial_failure",
           "health_changed", "observers_for", "plan_for", "start_metrics"]
# (Reconnect and dial_failure live in runtimes.connector.tunnels)

logger = logging.getLogger("tokios.connector")

#: Response ids (``chatcmpl-…``, ``msg_…``) name an answer, they guard nothing: a PRNG seeded
#: from the OS, not ``secrets`` (a getrandom() system call per request). getrandbits is one C
#: call, so the threaded connector's workers can share it.
_response_ids = random.Random()  # noqa: S311 (ids are not secrets)


#: The states in which a session may still send REPORTs.
_LIVE = (ConnectionState.OPEN, ConnectionState.DRAINING)


class ConnectorState(Protocol):
    """What a session needs of its connector (both shells' connectors have it)."""

    settings: ConnectorSettings
    backend: BackendKind
    plan: TunnelPlan
    sessions: int
    #: The --metrics-listen series, or None when not asked for.
    metrics: ConnectorMetrics | None
    #: The upstream's health checks, or None when turned off (--health-interval 0).
    health: UpstreamHealth | None


class StreamRequest:
    """One stream's request: its head and its body, gathered up to ``limit`` bytes."""

    __slots__ = ("body", "finished", "head", "limit", "size", "too_large", "work")

    def __init__(self, head: RequestHead, *, limit: int = MAX_REQUEST_BODY) -> None:
        self.head = head
        self.limit = limit
        self.body: list[bytes] = []
        self.size = 0
        self.too_large = False
        #: The stream's work once its body is complete (the shell sets it).
        self.work: StreamWork | None = None
        #: True once SessionEvents.finish_stream ran for it.
        self.finished = False

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

    def __init__(self, connector: ConnectorState, conn: ConnectorConnection,
                 slot: TunnelSlot) -> None:
        self.connector = connector
        self.conn = conn
        self.slot = slot
        self.streams: dict[int, S] = {}
        self.accepted: Accepted | None = None
        self.rejected: Rejected | None = None
        self.revoked = False
        #: Closed because it landed on a gateway node another tunnel holds.
        self.same_node = False
        #: The gateway node drains (GOAWAY NO_ERROR after WELCOME).
        self.drained = False
        self.ended = False
        #: Accepted and kept: counted as a connected tunnel until it ends.
        self.kept = False

    # ---- the shell's hooks ---------------------------------------------------------------

    def _open(self, stream_id: int, head: RequestHead) -> S:
        raise NotImplementedError

    def _body_complete(self, stream: S) -> None:
        raise NotImplementedError

    def _cancel(self, stream: S) -> None:
        raise NotImplementedError

    def _credit(self, stream_id: int) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """The connection is over (any way): its node is free, its loop may dial again.
        Idempotent; the shells call it once the transport is closed, in case no
        ConnectionTerminated came."""
        if not self.ended:
            self.ended = True
            self.connector.plan.ended(self)
            self._release()

    # ---- dispatch ------------------------------------------------------------------------

    def on_event(self, event: Event, now: float) -> None:
        """Act on one event of the core (``now``: the shell's monotonic clock)."""
        stream: S | None
        if isinstance(event, StreamOpened):
            if (metrics := self.connector.metrics) is not None:
                metrics.stream_started()
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
            self._accepted(event, now)
        elif isinstance(event, Rejected):
            self.rejected = event
        elif isinstance(event, GoAwayReceived):
            logger.info("gateway sent goaway (code %s): finishing streams in flight",
                        int(event.code))
            if event.code == ErrorCode.NO_ERROR and self.accepted is not None:
                self.drained = True
                self._release()  # make before break: a replacement dials now
        elif isinstance(event, ConnectionTerminated):
            if (event.remote and event.code == ErrorCode.REJECTED and self.rejected is None
                    and self.accepted is not None):
                self.revoked = True
            if self.kept and (metrics := self.connector.metrics) is not None:
                metrics.tunnel_connected(False)
            streams = list(self.streams.values())
            self.streams.clear()
            for stream in streams:
                self._cancel(stream)
            self._credit(0)
            self.finish()

    def _accepted(self, event: Accepted, now: float) -> None:
        self.accepted = event
        self.slot.backoff.connected(now)
        node = event.node_id[:16] or "-"
        if self.connector.plan.accepted(self.slot, self, event.node_id) is Verdict.SAME_NODE:
            logger.info("tunnel %d reached gateway node %s, which another tunnel holds: "
                        "closing it to try another node", self.slot.index, node)
            self.same_node = True
            self.conn.goaway(ErrorCode.NO_ERROR, "this connector already holds this node")
            self._release()
            return
        logger.info("tunnel %d open: session %s on gateway node %s, serving %s",
                    self.slot.index, event.session_id, node,
                    ", ".join(event.deployments) or "nothing")
        self.connector.sessions += 1
        self.kept = True
        if (metrics := self.connector.metrics) is not None:
            metrics.tunnel_connected(True)
        self.send_health()

    # ---- after a stream, and health ------------------------------------------------------

    def finish_stream(self, stream_id: int, stream: StreamRequest, now: float) -> None:
        """A stream's serving ended (answered, failed, reset or cancelled): send its usage
        report (counted by its work, see ``StreamWork.usage``; zero tokens if it never had
        work) when the tunnel speaks REPORT and is still up, and count it in the metrics.
        Once per stream (later calls do nothing); the threaded shell calls it under its lock.
        """
        if stream.finished:
            return
        stream.finished = True
        work = stream.work
        if (metrics := self.connector.metrics) is not None:
            metrics.stream_done(stream.head.deployment, work, now)
        conn = self.conn
        if conn.state is ConnectionState.CLOSED or not conn.reports_supported:
            return
        input_tokens, output_tokens, estimated = work.usage() if work else (0, 0, False)
        try:
            conn.report_usage(stream_id, input_tokens=input_tokens,
                              output_tokens=output_tokens, estimated=estimated)
        except LocalProtocolError as exc:  # the connection closed meanwhile: nothing to count
            logger.debug("usage of stream %d not reported: %s %s", stream_id, exc,
                         stream.head.request_id, extra={"request_id": stream.head.request_id})

    def send_health(self) -> bool:
        """Report the upstream's health (``connector.health``) if this session is accepted,
        speaks REPORT and a check has answered; True if a REPORT was queued."""
        health = self.connector.health
        report = health.report() if health is not None else None
        if (report is None or self.accepted is None or self.conn.state not in _LIVE
                or not self.conn.reports_supported):
            return False
        self.conn.report_health(report)
        return True


def observers_for(settings: ConnectorSettings) -> tuple[ConnectorMetrics | None,
                                                         UpstreamHealth | None]:
    """A connector's metrics (if ``--metrics-listen`` was given) and health checks (unless
    ``--health-interval`` is 0)."""
    metrics = ConnectorMetrics() if settings.metrics_listen is not None else None
    health = None
    if settings.health_interval > 0:
        health = UpstreamHealth(settings.backend, settings.models,
                                interval=settings.health_interval)
    return metrics, health


def start_metrics(connector: ConnectorState) -> bool:
    """Serve the connector's metrics if asked; False (logged) if the address is not free."""
    listen = connector.settings.metrics_listen
    if connector.metrics is None or listen is None:
        return True
    try:
        connector.metrics.serve(*listen)
    except OSError as exc:
        logger.error("cannot serve metrics on %s:%d: %s", listen[0], listen[1],
                     exc.strerror or type(exc).__name__)
        return False
    return True


def health_changed(connector: ConnectorState, session: SessionEvents[S] | None) -> bool:
    """The health check's verdict or model list changed: log it, update the metrics, and have
    the live session (if any) report it; True if a REPORT was queued (send the output)."""
    health = connector.health
    assert health is not None
    if health.healthy:
        logger.info("the model server answers %s: healthy", health.path)
    else:
        logger.warning("the model server does not answer %s: reporting it unhealthy",
                       health.path)
    if connector.metrics is not None:
        connector.metrics.upstream_health(health)
    return session is not None and session.send_health()


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
