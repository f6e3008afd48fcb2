"""The gateway's end of the tunnels: one :class:`Tunnel` per connector WebSocket.

    manager = TunnelManager(auth_cache, store)
    await manager.serve(ws)              # from the /v1/tunnel handler, until the tunnel closes
    tunnel = manager.registry.pick(tenant_id, deployment)
    stream = tunnel.open_stream(head)    # GatewayStream; then send_body, wait_head, next_data

HELLO is checked against the store (via :class:`~runtimes.store.AuthCache`, in a thread);
the grant is the offered deployments allowed by the token. A watcher re-checks every live
tunnel's token about once a second; a revoked token closes its tunnels with
``GOAWAY(REJECTED, "revoked")``, which the connector treats as permanent.

Each tunnel keeps what its connector last reported about each deployment's upstream (protocol
version 2 health reports): healthy until told otherwise, and the upstream's own model list
when known. Routing skips a tunnel for a deployment it reports unhealthy
(:meth:`Tunnel.is_healthy`); a deployment turning healthy wakes the requests queued for it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from runtimes.gateway.options import DEFAULT_STREAM_SILENCE_TIMEOUT
from runtimes.gateway.routing import TunnelRegistry
from runtimes.netio import WebSocket
from runtimes.store import AuthCache, ConnectorGrant, Store
from runtimes.tunnel.credit import Outbox
from runtimes.tunnel.pump import Pump, Signal
from tokios_proto import (
    Config,
    ConnectionState,
    ConnectionTerminated,
    DataReceived,
    DeploymentHealth,
    ErrorCode,
    Event,
    GatewayConnection,
    HealthReported,
    HelloReceived,
    RejectReason,
    RequestHead,
    ResetCode,
    ResponseReceived,
    Settings,
    SettingsChanged,
    StreamEnded,
    StreamReset,
    UsageReported,
    WindowUpdated,
)

if TYPE_CHECKING:
    from runtimes.gateway.usage import Account

__all__ = ["REVOKED_REASON", "GatewayStream", "StreamFailed", "Tunnel", "TunnelManager"]

logger = logging.getLogger("tokios.gateway")

#: GOAWAY reason (code ErrorCode.REJECTED) when a live tunnel's token is revoked.
REVOKED_REASON = "revoked"
#: The most streams at once one tunnel may carry (the connector proposes its own limit in
#: HELLO; the lower one wins). The core's default (256) would cap a busy connector far below
#: what one gateway process can hold.
MAX_STREAMS_PER_TUNNEL = 16_384

#: Seconds between two checks of the streams' silence.
SILENCE_CHECK_INTERVAL = 1.0
#: Seconds between the checks that live tunnels' tokens are still active.
REVOCATION_CHECK_INTERVAL = 1.0


class StreamFailed(Exception):  # noqa: N818
    """The stream ended abnormally. ``retryable``: nothing was processed (tunnel lost or
    refused before the response head), so another tunnel may take it."""

    def __init__(self, message: str, *, retryable: bool, code: ResetCode | None = None,
                 shutting_down: bool = False, silent_for: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        #: The RESET code (None: the tunnel was lost).
        self.code = code
        #: The gateway ended the stream because it drained past its grace period.
        self.shutting_down = shutting_down
        #: The gateway ended the stream because its connector sent nothing for this long.
        self.silent_for = silent_for


class GatewayStream:
    """One request on one tunnel, as the HTTP handler sees it."""

    def __init__(self, tunnel: Tunnel, stream_id: int, deployment: str) -> None:
        self.tunnel = tunnel
        self.stream_id = stream_id
        self.deployment = deployment
        self.head: tuple[int, tuple[tuple[str, str], ...]] | None = None
        self.chunks: collections.deque[tuple[bytes, int]] = collections.deque()
        self.ended = False
        self.failure: StreamFailed | None = None
        self.changed = Signal(tunnel.pump.loop)
        self.window = Signal(tunnel.pump.loop)
        #: Something came from the connector for this stream since the last silence check.
        self.heard = False
        self._quiet_since: float | None = None

    def _fail(self, failure: StreamFailed) -> None:
        if self.failure is None and not self.ended:
            self.failure = failure
        self.changed.set()
        self.window.set()

    async def send_body(self, body: bytes) -> None:
        """Send the request body within the flow-control credit, then end the request half."""
        conn = self.tunnel.conn
        outbox = Outbox(conn, self.stream_id)
        outbox.add(body)
        while self.failure is None and not outbox.send():
            self.tunnel.pump.kick()
            self.window.clear()
            await self.window.wait()
        if self.failure is not None:
            raise self.failure
        conn.end_stream(self.stream_id)
        self.tunnel.pump.kick()

    async def wait_head(self) -> tuple[int, tuple[tuple[str, str], ...]]:
        """The response status and headers; StreamFailed if the stream died first."""
        while self.head is None:
            if self.failure is not None:
                raise self.failure
            self.changed.clear()
            await self.changed.wait()
        return self.head

    async def next_data(self) -> tuple[bytes, int] | None:
        """The next (bytes, flow_controlled_length), None at the end; StreamFailed on a reset.
        Call :meth:`acknowledge` once the bytes are written to the client."""
        while True:
            if self.chunks:
                return self.chunks.popleft()
            if self.failure is not None:
                raise self.failure
            if self.ended:
                return None
            self.changed.clear()
            await self.changed.wait()

    def acknowledge(self, n: int) -> None:
        if n and self.tunnel.conn.state is not ConnectionState.CLOSED:
            self.tunnel.conn.acknowledge_received_data(stream_id=self.stream_id,
                                                       acknowledged_size=n)
            self.tunnel.pump.kick()

    def check_silence(self, now: float, limit: float) -> None:
        """Called about once a second: while the handler waits on the connector (for the
        head, body bytes or credit) and nothing comes for this stream for ``limit`` seconds,
        end it with a timeout (a stuck connector must not hold a client forever)."""
        if self.heard or not (self.changed.waiting or self.window.waiting):
            self.heard = False
            self._quiet_since = None
        elif self._quiet_since is None:
            self._quiet_since = now
        elif now - self._quiet_since >= limit:
            logger.warning("stream %d: the connector sent nothing for %gs: timed out",
                           self.stream_id, limit)
            self.reset(ResetCode.TIMED_OUT, StreamFailed(
                "the connector went silent", retryable=False, code=ResetCode.TIMED_OUT,
                silent_for=limit))

    def reset(self, code: ResetCode = ResetCode.CLIENT_GONE,
              failure: StreamFailed | None = None) -> None:
        """Abort the stream (the client went away, or ``failure`` says why): the connector
        cancels the upstream; a task waiting in :meth:`next_data` gets the failure. Body
        bytes received and not yet taken are acknowledged: the tunnel keeps its credit."""
        self._fail(failure or StreamFailed("reset by the gateway", retryable=False, code=code))
        unread = sum(credit for _, credit in self.chunks)
        self.chunks.clear()
        self.acknowledge(unread)
        conn = self.tunnel.conn
        if conn.state is not ConnectionState.CLOSED:
            with contextlib.suppress(Exception):
                conn.reset_stream(self.stream_id, code)
            self.tunnel.pump.kick()
        self.tunnel.streams.pop(self.stream_id, None)


class Tunnel:
    """One connector connection: its core, its pump and its open streams."""

    def __init__(self, manager: TunnelManager, ws: WebSocket) -> None:
        self.manager = manager
        self.conn = GatewayConnection(
            Config(settings=Settings(max_concurrent_streams=MAX_STREAMS_PER_TUNNEL)))
        self.pump = Pump(ws, self.conn, self._on_event)
        self.streams: dict[int, GatewayStream] = {}
        #: Whom each stream's usage report is for, until it arrives (protocol version 2).
        self.accounts: dict[int, Account] = {}
        self.grant: ConnectorGrant | None = None
        self.deployments: tuple[str, ...] = ()
        self.session_id = ""
        #: What the connector said in HELLO about itself, and when the tunnel was accepted
        #: (Unix time): shown in the admin API's tunnel list.
        self.connector_id = ""
        self.software_version = ""
        self.connected_at = 0.0
        #: The last health report of each deployment (none yet: healthy), and since when
        #: (Unix time) each deployment has been as healthy or unhealthy as it is now.
        self.health: dict[str, DeploymentHealth] = {}
        self.health_since: dict[str, float] = {}

    # ---- RoutableTunnel ------------------------------------------------------------------

    @property
    def active_streams(self) -> int:
        return len(self.streams)

    @property
    def accepting_streams(self) -> bool:
        return self.conn.may_open_stream

    @property
    def full(self) -> bool:
        """Open, but at the connector's concurrency limit (not draining)."""
        return self.conn.state is ConnectionState.OPEN and not self.conn.may_open_stream

    def is_healthy(self, deployment: str) -> bool:
        """False while the connector reports this deployment's upstream unhealthy."""
        report = self.health.get(deployment)
        return report is None or report.healthy

    # ---- streams -------------------------------------------------------------------------

    @property
    def free_streams(self) -> int | None:
        """Streams it takes now (0: full), or None when it takes none for good (closing)."""
        if self.conn.state is not ConnectionState.OPEN:  # draining after a GOAWAY, or closed
            return None
        return max(0, self.conn.max_concurrent_streams - len(self.conn.open_stream_ids))

    def open_stream(self, head: RequestHead, account: Account | None = None) -> GatewayStream:
        """Open a stream (raises tokios_proto.LocalProtocolError when it cannot);
        ``account``: whom its usage is counted for."""
        stream_id = self.conn.open_stream(head)
        stream = GatewayStream(self, stream_id, head.deployment)
        if account is not None and self.conn.reports_supported:
            accounts = self.accounts
            accounts[stream_id] = account
            # a report may come after the stream closed; the core forgets the oldest closed
            # streams beyond max_unreported_streams, and so does this
            while len(accounts) > len(self.streams) + self.conn.config.max_unreported_streams:
                del accounts[next(iter(accounts))]
        self.streams[stream_id] = stream
        self.pump.kick()
        return stream

    def _on_event(self, event: Event) -> None:
        stream = self.streams.get(getattr(event, "stream_id", -1))
        if isinstance(event, DataReceived):
            if stream is None:
                self.conn.acknowledge_received_data(
                    stream_id=event.stream_id, acknowledged_size=event.flow_controlled_length)
            else:
                stream.chunks.append((event.data, event.flow_controlled_length))
                stream.heard = True
                stream.changed.set()
        elif isinstance(event, ResponseReceived):
            if stream is not None:
                stream.head = (event.status, event.headers)
                stream.heard = True
                stream.changed.set()
        elif isinstance(event, StreamEnded):
            if stream is not None:
                stream.ended = True
                stream.changed.set()
                self.streams.pop(event.stream_id, None)
            self._capacity_changed()
        elif isinstance(event, StreamReset):
            if stream is not None:
                refused = event.code == ResetCode.REFUSED and stream.head is None
                stream._fail(StreamFailed("stream reset by the connector", retryable=refused,
                                          code=event.code))
                self.streams.pop(event.stream_id, None)
            self._capacity_changed()
        elif isinstance(event, WindowUpdated):
            if event.stream_id == 0:
                for each in self.streams.values():
                    each.window.set()
            elif stream is not None:
                stream.heard = True
                stream.window.set()
        elif isinstance(event, HelloReceived):
            task = asyncio.create_task(self.manager.authenticate(self, event))
            self.manager.tasks.add(task)
            task.add_done_callback(self.manager.tasks.discard)
        elif isinstance(event, SettingsChanged):
            self._capacity_changed()
        elif isinstance(event, UsageReported):
            account = self.accounts.pop(event.stream_id, None)
            if account is not None and self.manager.on_usage is not None:
                self.manager.on_usage(account, event.input_tokens, event.output_tokens,
                                      event.estimated)
        elif isinstance(event, HealthReported):
            self._health_reported(event.deployments)
        elif isinstance(event, ConnectionTerminated):
            self._lost()

    def _health_reported(self, reports: tuple[DeploymentHealth, ...]) -> None:
        """Keep each deployment's report; one turning healthy may take queued requests."""
        recovered = False
        now = time.time()
        for report in reports:
            was_healthy = self.is_healthy(report.name)
            self.health[report.name] = report
            if report.healthy != was_healthy:
                self.health_since[report.name] = now
                recovered = recovered or report.healthy
                if report.healthy:
                    logger.info("tunnel %s: the upstream of %s is healthy again",
                                self.session_id, report.name)
                else:
                    logger.warning("tunnel %s: the connector reports the upstream of %s "
                                   "unhealthy; routing around it", self.session_id,
                                   report.name)
        if recovered:
            self._capacity_changed()

    def _capacity_changed(self) -> None:
        """A stream closed or the limit changed: requests queued for this tenant may fit."""
        if self.grant is not None and self.manager.on_capacity is not None:
            self.manager.on_capacity(self.grant.tenant_id)

    def _lost(self) -> None:
        self.manager.registry.remove(self)
        self.manager._served_changed()
        for stream in list(self.streams.values()):
            stream._fail(StreamFailed("tunnel lost", retryable=stream.head is None))
        self.streams.clear()
        self.accounts.clear()

    def goaway(self, code: ErrorCode = ErrorCode.NO_ERROR, reason: str = "") -> None:
        if self.conn.state in (ConnectionState.OPEN, ConnectionState.DRAINING):
            with contextlib.suppress(Exception):
                self.conn.goaway(code, reason)
            self.pump.dispatch()


class TunnelManager:
    """All live tunnels of one gateway, and the registry that routes to them."""

    def __init__(self, auth: AuthCache, store: Store, *,
                 silence_timeout: float = DEFAULT_STREAM_SILENCE_TIMEOUT) -> None:
        self.auth = auth
        self.store = store
        #: Seconds a stream may wait on a connector that sends nothing for it (head, body
        #: bytes, credit) before it ends with a timeout (``--stream-silence-timeout``).
        self.silence_timeout = silence_timeout
        self.registry: TunnelRegistry[Tunnel] = TunnelRegistry()
        self.tunnels: set[Tunnel] = set()
        self.draining = False
        #: This node's id when the gateway is one of several nodes (runtimes/cluster/node.py
        #: sets it), told to each connector in WELCOME so it can spread its tunnels.
        self.node_id = ""
        self._watcher: asyncio.Task[None] | None = None
        self._silence_watcher: asyncio.Task[None] | None = None
        #: Handshake tasks in flight (referenced so they are not collected).
        self.tasks: set[asyncio.Task[None]] = set()
        #: Called with a tenant id when its tunnels may take more streams (the queue's
        #: :meth:`~runtimes.gateway.queue.Admission.capacity_changed`).
        self.on_capacity: Callable[[str], None] | None = None
        #: Called when a tunnel starts or stops serving (the node directory republishes).
        self.on_served_changed: Callable[[], None] | None = None
        #: Called with a stream's account and its usage report (input tokens, output tokens,
        #: estimated) - :meth:`runtimes.gateway.usage.Accounting.usage_reported`.
        self.on_usage: Callable[[Account, int, int, bool], None] | None = None

    def _served_changed(self) -> None:
        if self.on_served_changed is not None:
            self.on_served_changed()

    def start(self) -> None:
        self._watcher = asyncio.create_task(self._watch_revocations())
        self._silence_watcher = asyncio.create_task(self._watch_silence())

    async def _watch_silence(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SILENCE_CHECK_INTERVAL)
            now = loop.time()
            for tunnel in list(self.tunnels):
                for stream in list(tunnel.streams.values()):
                    stream.check_silence(now, self.silence_timeout)

    async def serve(self, ws: WebSocket) -> None:
        """Run one tunnel until it closes."""
        tunnel = Tunnel(self, ws)
        self.tunnels.add(tunnel)
        tunnel.conn.start(tunnel.pump.now())
        try:
            await tunnel.pump.run()
        finally:
            self.tunnels.discard(tunnel)
            tunnel._lost()
            if tunnel.grant is not None:
                logger.info("tunnel closed: session %s", tunnel.session_id)

    async def authenticate(self, tunnel: Tunnel, event: HelloReceived) -> None:
        conn = tunnel.conn
        try:
            grant = await asyncio.to_thread(self.auth.get_connector_grant,
                                            event.hello.credential.reveal())
        except Exception as exc:
            logger.error("store error during tunnel handshake: %s", type(exc).__name__)
            grant, failed = None, True
        else:
            failed = False
        if conn.state is not ConnectionState.AWAITING_VERDICT:
            return  # the handshake timed out or the socket dropped meanwhile
        try:
            if failed:
                conn.reject(RejectReason.INTERNAL, "try again later")
            elif self.draining:
                conn.reject(RejectReason.OVERLOADED, "the gateway is shutting down",
                            retry_after=1.0)
            elif grant is None:
                conn.reject(RejectReason.BAD_CREDENTIAL, "unknown or revoked connector token")
            else:
                offered = [d.name for d in event.hello.deployments]
                granted = tuple(name for name in offered if name in grant.deployments)
                if not granted:
                    conn.reject(RejectReason.DEPLOYMENT_NOT_ALLOWED,
                                "this token may serve none of the offered deployments")
                else:
                    tunnel.session_id = secrets.token_hex(16)
                    conn.accept(tunnel.session_id, granted, tunnel.pump.now(),
                                node_id=self.node_id)
                    tunnel.grant = grant
                    tunnel.deployments = granted
                    tunnel.connector_id = event.hello.connector_id
                    tunnel.software_version = event.hello.software_version
                    tunnel.connected_at = time.time()
                    tunnel.health_since = dict.fromkeys(granted, tunnel.connected_at)
                    self.registry.add(tunnel, grant.tenant_id, granted)
                    self._served_changed()
                    tunnel._capacity_changed()
                    logger.info("tunnel open: session %s, tenant %s, serving %s",
                                tunnel.session_id, grant.tenant_name, ", ".join(granted))
        except Exception as exc:  # the connection closed meanwhile (handshake timeout)
            logger.info("handshake abandoned: %s", type(exc).__name__)
        if tunnel.grant is None:
            logger.info("tunnel refused (connector %s)", event.hello.connector_id[:80])
        tunnel.pump.dispatch()

    async def _watch_revocations(self) -> None:
        """Every REVOCATION_CHECK_INTERVAL: ask the store which tokens of the live tunnels are
        still active (a few batched queries, whatever the number of tunnels) and close the
        others' tunnels. A revocation notice (runtimes/cluster/revocations.py) closes them
        sooner; this check is what guarantees it."""
        while True:
            await asyncio.sleep(REVOCATION_CHECK_INTERVAL)
            in_use = {tunnel.grant.token_id for tunnel in self.tunnels
                      if tunnel.grant is not None
                      and tunnel.conn.state is not ConnectionState.CLOSED}
            if not in_use:
                continue
            try:
                active = await asyncio.to_thread(self.store.active_connector_tokens, in_use)
            except Exception as exc:
                logger.warning("revocation check failed: %s", type(exc).__name__)
                continue
            for token_id in in_use - active:
                self.close_token(token_id)

    def close_token(self, token_id: str) -> int:
        """GOAWAY(REJECTED, "revoked") on every live tunnel of connector token ``token_id``
        (revoked); how many."""
        closed = 0
        for tunnel in list(self.tunnels):
            if tunnel.grant is not None and tunnel.grant.token_id == token_id \
                    and tunnel.conn.state is not ConnectionState.CLOSED:
                logger.info("connector token revoked: closing session %s", tunnel.session_id)
                self.registry.remove(tunnel)
                tunnel.goaway(ErrorCode.REJECTED, REVOKED_REASON)
                closed += 1
        return closed

    def begin_drain(self) -> None:
        """Graceful shutdown: GOAWAY(NO_ERROR) to every connector; no new streams."""
        self.draining = True
        for tunnel in list(self.tunnels):
            self.registry.remove(tunnel)
            tunnel.goaway(ErrorCode.NO_ERROR, "gateway shutting down")

    @property
    def in_flight(self) -> int:
        return sum(len(t.streams) for t in self.tunnels)

    def free_streams(self, tenant_id: str, deployment: str) -> int | None:
        """How many more streams the live tunnels serving the deployment with a healthy
        upstream take now (0: all full), or None when none serves it."""
        free = None
        for tunnel in self.registry.serving(tenant_id, deployment):
            room = tunnel.free_streams if tunnel.is_healthy(deployment) else None
            if room is not None:
                free = room + (free or 0)
        return free

    def abort_streams(self) -> None:
        """The grace period is over: end every stream still open (the connector stops its
        model; each client gets the format's error for a gateway shutting down)."""
        for tunnel in list(self.tunnels):
            for stream in list(tunnel.streams.values()):
                stream.reset(ResetCode.CANCELLED, StreamFailed(
                    "the gateway is shutting down", retryable=False, shutting_down=True))

    async def close(self) -> None:
        for watcher in (self._watcher, self._silence_watcher):
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
        for tunnel in list(self.tunnels):
            tunnel.goaway(ErrorCode.NO_ERROR, "gateway shutting down")
            tunnel.pump.ws.abort()
