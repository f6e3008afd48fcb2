"""The asyncio connector: dial the gateway, serve granted deployments, reconnect.

    connector = Connector(settings)      # ConnectorSettings (built by cli.py)
    code = await connector.run()         # returns an exit code (see EXIT_* below)

One loop per tunnel (``settings.tunnels``, see ``runtimes.connector.tunnels``), each one
session at a time: connect_websocket -> ConnectorConnection.start (HELLO) -> Accepted -> for
each StreamOpened a task that waits for the body, then drives the stream's
:class:`~runtimes.connector.serving.StreamWork` (the per-stream algorithm, shared with the
threaded connector): it calls the upstream through an :class:`~runtimes.netio.UpstreamPool`,
reads it until the work's deadline and waits for credit, as the work says; when the task ends
(whatever ended it) the session sends the stream's usage report. A session that lands on a
gateway node another tunnel holds is closed; one whose node drains (GOAWAY) lets its loop dial
a replacement at once while it finishes its streams in a task of its own. Between sessions the
tunnel's plan says how long to wait; a permanent rejection ends ``run``. Beside the sessions,
one task checks the model server's health
(:class:`~runtimes.connector.health.UpstreamHealth`) and every live session reports changes.
The connector's only listening socket is the optional ``--metrics-listen`` endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Callable

from runtimes.connector import handling
from runtimes.connector.health import MAX_LIST_BODY, UpstreamHealth
from runtimes.connector.metrics import ConnectorMetrics
from runtimes.connector.serving import Step, StreamWork, Timing
from runtimes.connector.session import (
    SessionEvents,
    StreamRequest,
    health_changed,
    observers_for,
    plan_for,
    start_metrics,
)
from runtimes.connector.settings import (
    EXIT_OK,
    EXIT_PERMANENT,
    EXIT_PROBE_FAILED,
    EXIT_USAGE,
    MAX_REQUEST_BODY,
    ConnectorSettings,
    PermanentRejection,
    config_for,
    hello_for,
    timing_for,
    tunnel_urls,
)
from runtimes.connector.tunnels import HoldsTunnels, TunnelPlan, TunnelSlot
from runtimes.netio import (
    UpstreamError,
    UpstreamExchange,
    UpstreamPool,
    WebSocket,
    WebSocketHandshakeError,
    client_context,
    connect_websocket,
)
from runtimes.tunnel.pump import Pump, Signal
from tokios_proto import (
    ConnectorConnection,
    Event,
    RequestHead,
    ResetCode,
)
from tokios_translate import BackendKind

__all__ = [
    "EXIT_OK",
    "EXIT_PERMANENT",
    "EXIT_PROBE_FAILED",
    "EXIT_USAGE",
    "Connector",
    "ConnectorSettings",
    "PermanentRejection",
    "probe_backend",
]

logger = logging.getLogger("tokios.connector")


async def probe_backend(pool: UpstreamPool) -> BackendKind | None:
    """``--backend auto``: GET each of handling.PROBES; the first 2xx names the backend."""
    probe = handling.BackendProbe()
    while (path := probe.next_path()) is not None:
        try:
            head, _ = await pool.fetch("GET", path, limit=handling.MAX_PROBE_BODY)
        except UpstreamError:
            probe.answered(None)
        else:
            probe.answered(head.status)
    return probe.found


class _Stream(StreamRequest):
    __slots__ = ("body_done", "task", "window")

    def __init__(self, head: RequestHead) -> None:
        super().__init__(head, limit=MAX_REQUEST_BODY)
        self.body_done = asyncio.Event()
        self.window = Signal(asyncio.get_running_loop())
        self.task: asyncio.Task[None] | None = None


class Session(SessionEvents[_Stream]):
    """One tunnel connection: the events of the core (``SessionEvents``), one task per
    stream."""

    connector: Connector

    def __init__(self, connector: Connector, ws: WebSocket, conn: ConnectorConnection,
                 slot: TunnelSlot) -> None:
        super().__init__(connector, conn, slot)
        self.pump = Pump(ws, conn, self._on_event)
        self.released = asyncio.Event()

    def _release(self) -> None:
        self.released.set()

    def _on_event(self, event: Event) -> None:
        self.on_event(event, self.pump.now())

    def _open(self, stream_id: int, head: RequestHead) -> _Stream:
        stream = _Stream(head)
        stream.task = asyncio.create_task(self._serve(stream_id, stream))
        stream.task.add_done_callback(lambda _: self._finished(stream_id, stream))
        return stream

    def _finished(self, stream_id: int, stream: _Stream) -> None:
        """The stream's task ended (even one cancelled before it ran): its usage report."""
        self.finish_stream(stream_id, stream, self.pump.now())
        self.pump.kick()

    def _body_complete(self, stream: _Stream) -> None:
        stream.body_done.set()

    def _cancel(self, stream: _Stream) -> None:
        if stream.task is not None:
            stream.task.cancel()

    def _credit(self, stream_id: int) -> None:
        if stream_id == 0:
            for stream in self.streams.values():
                stream.window.set()
        elif (one := self.streams.get(stream_id)) is not None:
            one.window.set()

    # ---- one stream ----------------------------------------------------------------------

    async def _serve(self, stream_id: int, stream: _Stream) -> None:
        try:
            await stream.body_done.wait()
            work = StreamWork(self.conn, stream_id, plan_for(self.connector, stream),
                              self.connector.timing, self.pump.now(),
                              request_id=stream.head.request_id)
            stream.work = work
            if work.wrote:
                work.wrote = False
                self.pump.kick()
            await self._drive(work, stream)
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # a bug: reset the stream, keep the tunnel
            logger.error("stream failed: %s %s", type(exc).__name__, stream.head.request_id,
                         extra={"request_id": stream.head.request_id})
            with contextlib.suppress(Exception):
                self.conn.reset_stream(stream_id, ResetCode.INTERNAL_ERROR)
                self.pump.kick()
        finally:
            self.streams.pop(stream_id, None)

    async def _drive(self, work: StreamWork, stream: _Stream) -> None:
        """Do what the work's step says until it is DONE (see runtimes.connector.serving)."""
        pump, pool = self.pump, self.connector.pool
        exchange: UpstreamExchange | None = None
        try:
            while (step := work.step) is not Step.DONE:
                try:
                    if step is Step.RECEIVE:
                        assert exchange is not None
                        work.received(await exchange.receive(work.deadline), pump.now())
                    elif step is Step.CREDIT:
                        stream.window.clear()
                        await stream.window.wait()
                        work.credit(pump.now())
                    else:
                        call = work.call
                        assert call is not None
                        exchange = await pool.open(call.method, call.path, call.headers,
                                                   call.body)
                        work.called(pump.now())
                except UpstreamError as exc:
                    work.upstream_failed(exc, pump.now())
                if work.wrote:
                    work.wrote = False
                    pump.kick()
        finally:
            if exchange is not None:  # back to the pool if complete, else aborted
                exchange.close()


class Connector(HoldsTunnels):
    """The tunnels' loops around :class:`Session` (``settings.tunnels`` of them)."""

    def __init__(self, settings: ConnectorSettings, *,
                 rng: Callable[[], float] = random.random,
                 sleep: Callable[[float], object] | None = None) -> None:
        self.settings = settings
        self.plan = TunnelPlan(settings.tunnels, tunnel_urls(settings), rng=rng)
        self.timing: Timing = timing_for(settings)
        self.backend = settings.backend
        self.pool: UpstreamPool = None  # type: ignore[assignment]
        self._sleep = sleep or asyncio.sleep
        #: Sessions accepted and kept so far (for tests).
        self.sessions = 0
        self.metrics: ConnectorMetrics | None
        self.health: UpstreamHealth | None
        self.metrics, self.health = observers_for(settings)
        #: Every session's pump task, live or draining.
        self._pumps: set[asyncio.Task[None]] = set()

    @property
    def current(self) -> Session | None:
        """The first tunnel's live session, if any."""
        return self.plan.slots[0].current  # type: ignore[return-value]

    def _ssl(self, url: str) -> ssl.SSLContext | None:
        if not url.startswith("wss://"):
            return None
        return client_context(ca_file=self.settings.ca_file)

    async def run(self) -> int:
        """Serve until a permanent rejection (returns EXIT_PERMANENT) or cancellation."""
        pool_size = max(4, self.settings.max_concurrent_streams * self.settings.tunnels)
        self.pool = UpstreamPool(self.settings.upstream, max_connections=pool_size,
                                 connect_timeout=self.settings.connect_timeout)
        if not start_metrics(self):
            await self.pool.aclose()
            return EXIT_USAGE
        checks = asyncio.create_task(self._check_health()) if self.health else None
        holders = [asyncio.create_task(self._hold(slot)) for slot in self.plan.slots]
        try:
            done, _ = await asyncio.wait(holders, return_when=asyncio.FIRST_COMPLETED)
            return next(iter(done)).result()
        finally:
            for task in (*holders, *self._pumps):
                task.cancel()
            await asyncio.gather(*holders, *self._pumps, return_exceptions=True)
            if checks is not None:
                checks.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await checks
            if self.metrics is not None:
                self.metrics.close()
            await self.pool.aclose()

    async def _hold(self, slot: TunnelSlot) -> int:
        """One tunnel's loop: dial, serve, wait, again (EXIT_PERMANENT ends it)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                session = await self.session(slot)
                delay = self.plan.after_session(slot, session, loop.time())
            except PermanentRejection:
                return EXIT_PERMANENT
            except (OSError, TimeoutError, WebSocketHandshakeError) as exc:
                delay = slot.reconnect.after_dial_failure(exc, loop.time())
            await self._sleep(delay)  # type: ignore[misc]

    async def _check_health(self) -> None:
        """Check the model server every ``--health-interval`` (one check at a time, each
        within the check timeout); every live session reports what changed."""
        health = self.health
        assert health is not None
        loop = asyncio.get_running_loop()
        # its own connection: requests holding every slot of the pool must not fail a check
        pool = UpstreamPool(self.settings.upstream, max_connections=1, read_timeout=health.timeout,
                            connect_timeout=min(self.settings.connect_timeout, health.timeout))
        try:
            while True:
                await asyncio.sleep(health.due_in(loop.time()))
                health.started(loop.time())
                try:
                    head, body = await asyncio.wait_for(
                        pool.fetch("GET", health.path, limit=MAX_LIST_BODY,
                                   timeout=health.timeout), health.timeout)
                except (UpstreamError, TimeoutError, OSError):
                    changed = health.failed(loop.time())
                else:
                    changed = health.answered(head.status, body, loop.time())
                if changed:
                    health_changed(self, None)
                    for slot in self.plan.slots:
                        if isinstance(slot.current, Session) and slot.current.send_health():
                            slot.current.pump.kick()
        finally:
            await pool.aclose()

    async def session(self, slot: TunnelSlot | None = None) -> Session:
        """One connection to the gateway, from dial until it lets go of its tunnel's loop:
        it ended, it landed on a node another tunnel holds, or its node drains (then it
        finishes its streams in its own task)."""
        slot = slot or self.plan.slots[0]
        url = self.plan.url_for(slot)
        ws = await connect_websocket(url, ssl_context=self._ssl(url),
                                     max_message_size=1024 * 1024)
        conn = ConnectorConnection(config_for(self.settings), hello=hello_for(self.settings))
        session = Session(self, ws, conn, slot)
        slot.current = session
        conn.start(session.pump.now())
        pump = asyncio.create_task(self._pump(session))
        self._pumps.add(pump)
        pump.add_done_callback(self._pumps.discard)
        try:
            await session.released.wait()
        finally:
            if slot.current is session:
                slot.current = None
        return session

    @staticmethod
    async def _pump(session: Session) -> None:
        try:
            await session.pump.run()
        except Exception as exc:  # the socket failed in a way the pump does not expect
            logger.warning("tunnel %d ended: %s", session.slot.index, type(exc).__name__)
        finally:
            session.finish()
