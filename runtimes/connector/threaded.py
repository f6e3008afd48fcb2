"""The threaded connector: the asyncio connector's twin on blocking sockets and threads.

For hosts that cannot or will not run an event loop (an application that embeds the
connector, a frozen build, a platform without uvloop). It drives the very same sans-IO core
(``tokios_proto.ConnectorConnection``), the same per-stream work
(``runtimes.connector.serving``), the same WebSocket message layer and HTTP exchange and the
same reconnect policy (``runtimes.connector.tunnels``) with the stdlib's socket,
ssl and threading; it never imports asyncio. Library use (see docs/embedding.md)::

    connector = ThreadedConnector(settings).start()   # returns at once; serves in a thread
    ...
    code = connector.stop()                            # closes the tunnel, joins the thread

Threads. Per tunnel (``settings.tunnels``, see ``runtimes.connector.tunnels``), one thread runs
the tunnel's loop (dial, wait until the session lets go, wait, again), and each session has ONE
reader thread that reads WebSocket messages, feeds the core, handles its events and fires its
timer (``get_timer()``: the reader's read timeout); a session whose gateway node drains goes on
reading until its streams are done while its loop dials a replacement. Per stream, one worker
from a bounded pool (``max_workers``) waits for the request body, then does what the stream's
work says (call the upstream, read it until the work's deadline: keep-alives are sent from that
wait, wait for credit). One lock guards the core, the stream table and the works; ONE writer
lock serialises taking output from the core and writing it to the socket, so frames leave in
the core's order. A worker out of send credit waits on a condition of the core lock until a
WindowUpdated (or the stream's end) wakes it: a slow client stalls the worker, which stops
reading the upstream (real backpressure, bounded memory). A StreamReset aborts the worker's
upstream socket, so the model stops generating. When a worker leaves its stream (whatever
ended it) it sends the stream's usage report. One more thread checks the model server's
health (:class:`~runtimes.connector.health.UpstreamHealth`) and has every live session report
changes. Nothing listens on a socket but the optional ``--metrics-listen`` endpoint
(prometheus-client's own thread).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from runtimes.blocking import (
    UpstreamError,
    UpstreamPool,
    WebSocket,
    WebSocketClosed,
    WebSocketHandshakeError,
    client_context,
    connect_websocket,
)
from runtimes.blocking.upstream import UpstreamExchange
from runtimes.connector import handling
from runtimes.connector.health import CHECK_TIMEOUT, MAX_LIST_BODY, UpstreamHealth
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
    ConnectorSettings,
    PermanentRejection,
    config_for,
    hello_for,
    timing_for,
    tunnel_urls,
)
from runtimes.connector.tunnels import HoldsTunnels, TunnelPlan, TunnelSlot
from tokios_proto import (
    ConnectionState,
    ConnectionTerminated,
    ConnectorConnection,
    ErrorCode,
    Event,
    ProtocolError,
    RequestHead,
    ResetCode,
)
from tokios_translate import BackendKind

__all__ = ["ThreadedConnector", "TunnelSession", "probe_backend", "serve_until_signal"]

logger = logging.getLogger("tokios.connector")

#: Output taken from the core per write, so a slow gateway link holds the rest in the core.
_WRITE_CHUNK = 256 * 1024


def probe_backend(pool: UpstreamPool) -> BackendKind | None:
    """``--backend auto``: GET each of handling.PROBES; the first 2xx names the backend."""
    probe = handling.BackendProbe()
    while (path := probe.next_path()) is not None:
        try:
            head, _ = pool.fetch("GET", path, limit=handling.MAX_PROBE_BODY)
        except UpstreamError:
            probe.answered(None)
        else:
            probe.answered(head.status)
    return probe.found


class _StreamGone(Exception):  # noqa: N818
    pass


class _Stream(StreamRequest):
    __slots__ = ("abort", "body_done", "gone")

    def __init__(self, head: RequestHead) -> None:
        super().__init__(head)
        self.body_done = threading.Event()
        #: Set (under the session lock) when the stream was reset or the tunnel ended.
        self.gone = False
        #: Aborts the upstream call in flight, from any thread.
        self.abort: Callable[[], None] | None = None


class TunnelSession(SessionEvents[_Stream]):
    """One tunnel connection: :meth:`run` is the reader thread; workers serve the streams.
    Events are handled (``SessionEvents.on_event``) under :attr:`lock`."""

    def __init__(self, connector: ThreadedConnector, ws: WebSocket,
                 conn: ConnectorConnection, slot: TunnelSlot) -> None:
        super().__init__(connector, conn, slot)
        self.threaded = connector
        #: Set when the tunnel's loop may dial again (see SessionEvents._release).
        self.released = threading.Event()
        self.ws = ws
        self.lock = threading.Lock()
        self.write_lock = threading.Lock()
        self.credit = threading.Condition(self.lock)
        self.terminated: ConnectionTerminated | None = None
        self._want_flush = False

    # ---- the reader thread ---------------------------------------------------------------

    def run(self) -> None:
        """Read, feed the core, dispatch, fire timers, until the connection closed."""
        with self.lock:
            self.conn.start(time.monotonic())
        self.flush()
        try:
            while self.terminated is None:
                with self.lock:
                    when = self.conn.get_timer()
                timeout = None if when is None else when - time.monotonic()
                try:
                    message = self.ws.recv(timeout)
                except WebSocketClosed:
                    break
                with self.lock:
                    now = time.monotonic()
                    if message is not None:
                        try:
                            self.conn.receive_data(message, now)
                        except ProtocolError as exc:
                            logger.warning("tunnel protocol error: %s", type(exc).__name__)
                    if (due := self.conn.get_timer()) is not None and due <= now:
                        self.conn.handle_timer(now)
                    while (event := self.conn.next_event()) is not None:
                        self._handle(event, now)
                self.flush()
        finally:
            self.flush(wait=True)  # what the core queued last (GOAWAY, REJECT)
            self.ws.close()
            with self.lock:
                if self.terminated is None:
                    self._handle(ConnectionTerminated(
                        code=ErrorCode.INTERNAL_ERROR, reason="connection lost", remote=True),
                        time.monotonic())

    def _handle(self, event: Event, now: float) -> None:  # under self.lock
        if isinstance(event, ConnectionTerminated):
            self.terminated = event
        self.on_event(event, now)

    # SessionEvents hooks (called under self.lock)

    def _open(self, stream_id: int, head: RequestHead) -> _Stream:
        stream = _Stream(head)
        self.threaded.submit(self._serve, stream_id, stream)
        return stream

    def _body_complete(self, stream: _Stream) -> None:
        stream.body_done.set()

    def _cancel(self, stream: _Stream) -> None:
        stream.gone = True
        stream.body_done.set()
        if stream.abort is not None:
            stream.abort()
        self.credit.notify_all()

    def _credit(self, stream_id: int) -> None:
        self.credit.notify_all()

    def _release(self) -> None:
        self.released.set()

    def flush(self, *, wait: bool = False) -> None:
        """Write what the core queued, in order (any thread; serialised by the writer lock).

        If another thread is writing, return at once unless ``wait``: that writer takes this
        output too (it loops until the core has nothing left), so writes coalesce under load.
        ``wait`` waits up to 2 s, then drops the link (a write is stuck on a dead peer).
        """
        with self.lock:
            self._want_flush = True
        while True:
            if not self.write_lock.acquire(timeout=2.0 if wait else 0):
                if wait:  # a write is stuck on a dead link: drop it, unblocking the writer
                    self.ws.abort()
                return
            try:
                while True:
                    with self.lock:
                        messages = self.conn.messages_to_send(_WRITE_CHUNK)
                        closed = self.conn.state is ConnectionState.CLOSED
                        if not messages:
                            self._want_flush = False
                            break
                    try:
                        self.ws.send_many(messages)
                    except WebSocketClosed:  # the reader sees the end on its next recv()
                        return
            finally:
                self.write_lock.release()
            if closed:
                self.ws.wake()  # everything is written: let the reader notice the end
            with self.lock:
                if not self._want_flush:  # else output came while we let go of the lock
                    return

    def stop(self) -> None:
        """From any thread: drop the tunnel; the reader ends and cancels every stream."""
        self.ws.abort()

    # ---- one stream (a worker thread) ----------------------------------------------------

    def _serve(self, stream_id: int, stream: _Stream) -> None:
        try:
            stream.body_done.wait()
            with self.lock:
                if stream.gone:
                    return
                work = StreamWork(self.conn, stream_id, plan_for(self.connector, stream),
                                  self.threaded.timing, time.monotonic(),
                                  request_id=stream.head.request_id)
                stream.work = work
            self._drive(work, stream)
        except (_StreamGone, WebSocketClosed):
            pass
        except Exception as exc:  # a bug: reset the stream, keep the tunnel
            logger.error("stream failed: %s %s", type(exc).__name__, stream.head.request_id,
                         extra={"request_id": stream.head.request_id})
            with self.lock:
                if self.terminated is None:
                    with contextlib.suppress(ProtocolError):
                        self.conn.reset_stream(stream_id, ResetCode.INTERNAL_ERROR)
        finally:
            with self.lock:
                if self.streams.get(stream_id) is stream:
                    del self.streams[stream_id]
                self.finish_stream(stream_id, stream, time.monotonic())
            self.flush()

    def _drive(self, work: StreamWork, stream: _Stream) -> None:
        """Do what the work's step says until it is DONE (see runtimes.connector.serving).
        Every report to the work is made under the lock, unless the stream is gone; output
        is flushed before each wait (and, while reading the upstream, only when the upstream
        has nothing more ready, so small chunks coalesce)."""
        exchange: UpstreamExchange | None = None
        with self.lock:
            step = self._step(work, stream)
        try:
            while step is not Step.DONE:
                try:
                    if step is Step.RECEIVE:
                        assert exchange is not None
                        event = exchange.receive(  # flush before blocking, if it wrote
                            work.deadline,
                            before_wait=(lambda: self._flush_for(work)) if work.wrote else None)
                        step = self._report(work, stream, work.received, event)
                    elif step is Step.CREDIT:
                        self.flush()  # what is queued must leave before the peer grants more
                        with self.lock:
                            while (self._step(work, stream) is Step.CREDIT
                                   and self.conn.available_to_send(work.stream_id) <= 0):
                                self.credit.wait()
                        step = self._report(work, stream, work.credit)
                    else:
                        call = work.call
                        assert call is not None
                        exchange = self.threaded.pool.open(
                            call.method, call.path, call.headers, call.body,
                            on_start=lambda ex: self._on_exchange(stream, ex))
                        step = self._report(work, stream, work.called)
                except UpstreamError as exc:
                    step = self._report(work, stream, work.upstream_failed, exc)
        finally:
            if exchange is not None:  # back to the pool if complete, else aborted
                exchange.close()

    def _flush_for(self, work: StreamWork) -> None:
        work.wrote = False
        self.flush()

    @staticmethod
    def _step(work: StreamWork, stream: _Stream) -> Step:  # under self.lock
        if stream.gone:
            raise _StreamGone
        return work.step

    def _report(self, work: StreamWork, stream: _Stream, report: Callable[..., None],
                *args: object) -> Step:
        """Call one of the work's reports under the lock, with the clock (unless the stream
        is gone); the work's next step."""
        with self.lock:
            if stream.gone:
                raise _StreamGone
            report(*args, time.monotonic())
            return work.step

    def _on_exchange(self, stream: _Stream, exchange: UpstreamExchange) -> None:
        with self.lock:
            stream.abort = exchange.abort
            gone = stream.gone
        if gone:
            exchange.abort()


class ThreadedConnector(HoldsTunnels):
    """The tunnels' loops around :class:`TunnelSession`, each in a thread of its own.

    ``start()`` runs it in a daemon thread and returns ``self``; ``stop()`` ends it and returns
    the exit code; ``run()`` runs it in the calling thread instead (returns EXIT_PERMANENT on a
    permanent rejection, EXIT_OK once stopped). ``max_workers`` bounds the threads serving
    streams at once (default: the settings' ``max_concurrent_streams`` times its ``tunnels``);
    more streams wait.
    """

    def __init__(self, settings: ConnectorSettings, *, max_workers: int | None = None,
                 rng: Callable[[], float] = random.random) -> None:
        self.settings = settings
        self.backend = settings.backend
        self.plan = TunnelPlan(settings.tunnels, tunnel_urls(settings), rng=rng,
                               guard=threading.Lock())
        self.timing: Timing = timing_for(settings)
        self.max_workers = max_workers or settings.max_concurrent_streams * settings.tunnels
        if self.max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.pool = UpstreamPool(settings.upstream,
                                 max_connections=max(4, self.max_workers),
                                 connect_timeout=settings.connect_timeout)
        self._workers = ThreadPoolExecutor(self.max_workers,
                                           thread_name_prefix="tokios-stream")
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._session_lock = threading.Lock()
        #: Every session's reader thread, live or draining (under _session_lock).
        self._readers: dict[TunnelSession, threading.Thread] = {}
        #: Sessions accepted and kept so far (for tests).
        self.sessions = 0
        self.metrics: ConnectorMetrics | None
        self.health: UpstreamHealth | None
        self.metrics, self.health = observers_for(settings)
        self.exit_code: int | None = None
        self._permanent = False
        self._ran = False

    @property
    def current(self) -> TunnelSession | None:
        """The first tunnel's live session, if any."""
        return self.plan.slots[0].current  # type: ignore[return-value]

    # ---- library API ---------------------------------------------------------------------

    def start(self) -> ThreadedConnector:
        """Serve in a background thread; returns at once."""
        if self._thread is not None:
            raise RuntimeError("this connector was already started")
        self._thread = threading.Thread(target=self.run, name="tokios-connector", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """Close the tunnels, abort the streams in flight and wait up to ``timeout`` seconds
        for the connector thread; the exit code, or None if it is still running."""
        self._stopping.set()
        self._drop_sessions()
        return self.wait(timeout)

    def _drop_sessions(self) -> None:
        with self._session_lock:
            sessions = list(self._readers)
        for session in sessions:
            session.stop()

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the connector thread to end; its exit code, or None on timeout."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return None
        return self.exit_code

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ---- the loops -----------------------------------------------------------------------

    def submit(self, work: Callable[[int, _Stream], None], stream_id: int,
               stream: _Stream) -> None:
        self._workers.submit(work, stream_id, stream)

    def run(self) -> int:
        """Serve until a permanent rejection (EXIT_PERMANENT) or :meth:`stop` (EXIT_OK).
        Once per connector: its worker pool ends with it."""
        if self._ran:
            raise RuntimeError("a ThreadedConnector runs once; make a new one")
        self._ran = True
        if not start_metrics(self):
            self._workers.shutdown(wait=False)
            self.pool.close()
            self.exit_code = EXIT_USAGE
            return EXIT_USAGE
        checks = None
        if self.health is not None:
            checks = threading.Thread(target=self._check_health, name="tokios-health",
                                      daemon=True)
            checks.start()
        holders = [threading.Thread(target=self._hold, args=(slot,), daemon=True,
                                    name=f"tokios-tunnel-{slot.index}")
                   for slot in self.plan.slots]
        try:
            for holder in holders:
                holder.start()
            self._stopping.wait()
        finally:
            self._stopping.set()  # ends the health checks too
            self._drop_sessions()
            for holder in holders:
                holder.join(5.0)
            with self._session_lock:
                readers = list(self._readers.values())
            for reader in readers:
                reader.join(5.0)
            self._workers.shutdown(wait=False, cancel_futures=True)
            if checks is not None:
                checks.join(2 * CHECK_TIMEOUT)
            if self.metrics is not None:
                self.metrics.close()
            self.pool.close()
            self.exit_code = EXIT_PERMANENT if self._permanent else EXIT_OK
        return self.exit_code

    def _check_health(self) -> None:
        """The health thread: check the model server every ``--health-interval`` (one check
        at a time, each read within the check timeout); every live session reports changes."""
        health = self.health
        assert health is not None
        # its own connection: requests holding every slot of the pool must not fail a check
        pool = UpstreamPool(self.settings.upstream, max_connections=1, read_timeout=health.timeout,
                            connect_timeout=min(self.settings.connect_timeout, health.timeout))
        try:
            while not self._stopping.wait(health.due_in(time.monotonic())):
                health.started(time.monotonic())
                try:
                    head, body = pool.fetch("GET", health.path, limit=MAX_LIST_BODY,
                                            timeout=health.timeout)
                except (UpstreamError, OSError):
                    changed = health.failed(time.monotonic())
                else:
                    changed = health.answered(head.status, body, time.monotonic())
                if changed:
                    self._health_changed()
        finally:
            pool.close()

    def _health_changed(self) -> None:
        health_changed(self, None)
        with self._session_lock:
            sessions = [s.current for s in self.plan.slots
                        if isinstance(s.current, TunnelSession)]
        for session in sessions:
            with session.lock:
                queued = session.send_health()
            if queued:
                session.flush()

    def _hold(self, slot: TunnelSlot) -> None:
        """One tunnel's loop: dial, serve, wait, again (a permanent rejection stops all)."""
        while not self._stopping.is_set():
            try:
                session = self.session(slot)
                if self._stopping.is_set():
                    break
                delay = self.plan.after_session(slot, session, time.monotonic())
            except PermanentRejection:
                self._permanent = True
                self._stopping.set()
                break
            except (OSError, TimeoutError, WebSocketHandshakeError) as exc:
                if self._stopping.is_set():
                    break
                delay = slot.reconnect.after_dial_failure(exc, time.monotonic())
            if self._stopping.wait(delay):
                break

    def session(self, slot: TunnelSlot | None = None) -> TunnelSession:
        """One connection to the gateway, from dial until it lets go of its tunnel's loop:
        it ended, it landed on a node another tunnel holds, or its node drains (then its
        reader thread finishes its streams)."""
        slot = slot or self.plan.slots[0]
        url = self.plan.url_for(slot)
        context = client_context(ca_file=self.settings.ca_file) if url.startswith(
            "wss://") else None
        ws = connect_websocket(url, ssl_context=context, max_message_size=1024 * 1024)
        conn = ConnectorConnection(config_for(self.settings), hello=hello_for(self.settings))
        session = TunnelSession(self, ws, conn, slot)
        reader = threading.Thread(target=self._read, args=(session,), daemon=True,
                                  name=f"tokios-tunnel-{slot.index}-reader")
        with self._session_lock:
            slot.current = session
            self._readers[session] = reader
        if self._stopping.is_set():
            session.stop()
        reader.start()
        try:
            session.released.wait()
        finally:
            with self._session_lock:
                if slot.current is session:
                    slot.current = None
        return session

    def _read(self, session: TunnelSession) -> None:
        try:
            session.run()
        finally:
            session.ws.release()
            with self._session_lock:
                self._readers.pop(session, None)
            session.finish()


def serve_until_signal(settings: ConnectorSettings, *, auto: bool = False) -> int:
    """``tokios-connector --runtime threaded``: probe the backend if ``auto``, then serve until
    SIGTERM/SIGINT (EXIT_OK) or a permanent rejection. Call from the main thread."""
    if auto:
        probe_pool = UpstreamPool(settings.upstream, max_connections=2, read_timeout=10.0)
        try:
            kind = probe_backend(probe_pool)
        finally:
            probe_pool.close()
        if kind is None:
            sys.stderr.write(f"tokios-connector: no model server found at {settings.upstream} "
                             "(tried /api/version, /props, /v1/models); give --backend\n")
            return EXIT_PROBE_FAILED
        logger.info("upstream detected as %s", kind.value)
        settings = dataclasses.replace(settings, backend=kind)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    connector = ThreadedConnector(settings).start()
    try:
        while not stop.wait(0.2):
            if not connector.running:
                break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    code = connector.stop()
    return EXIT_OK if code is None else code
