"""The asyncio connector: dial the gateway, serve granted deployments, reconnect.

    connector = Connector(settings)      # ConnectorSettings (built by cli.py)
    code = await connector.run()         # returns an exit code (see EXIT_* below)

One session at a time: connect_websocket -> ConnectorConnection.start (HELLO) -> Accepted ->
for each StreamOpened a task (read the body, plan with ``handling``, call the upstream through
an :class:`~runtimes.netio.UpstreamPool`, answer with flow control). A session that ends for a
retryable reason is followed by a full-jitter back-off; a permanent rejection ends ``run``.
The connector never listens on a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Callable

from runtimes.connector import handling
from runtimes.connector.handling import Backoff, Plan
from runtimes.connector.session import SessionEvents, StreamRequest, dial_failure, plan_for
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
    session_outcome,
)
from runtimes.netio import (
    UpstreamError,
    UpstreamPool,
    WebSocket,
    WebSocketHandshakeError,
    client_context,
    connect_websocket,
)
from runtimes.tunnel.credit import Outbox
from runtimes.tunnel.pump import Pump, Signal
from tokios_proto import (
    ConnectorConnection,
    Event,
    RequestHead,
    ResetCode,
)
from tokios_translate import BackendKind, ClientResponse, open_stream_translator
from tokios_translate.stream import StreamTranslator

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
    for path, _ in handling.PROBES:
        try:
            async with pool.request("GET", path) as response:
                await response.read(1024 * 1024)
                kind = handling.backend_from_probe(path, response.status)
        except UpstreamError:
            continue
        if kind is not None:
            return kind
    return None


class _Stream(StreamRequest):
    __slots__ = ("body_done", "task", "window")

    def __init__(self, head: RequestHead) -> None:
        super().__init__(head, limit=MAX_REQUEST_BODY)
        self.body_done = asyncio.Event()
        self.window = Signal(asyncio.get_running_loop())
        self.task: asyncio.Task[None] | None = None


class _StreamGone(Exception):  # noqa: N818
    pass


class Session(SessionEvents[_Stream]):
    """One tunnel connection: the events of the core (``SessionEvents``), one task per
    stream."""

    connector: Connector

    def __init__(self, connector: Connector, ws: WebSocket, conn: ConnectorConnection) -> None:
        super().__init__(connector, conn)
        self.pump = Pump(ws, conn, self._on_event)

    def _on_event(self, event: Event) -> None:
        self.on_event(event, self.pump.now())

    def _open(self, stream_id: int, head: RequestHead) -> _Stream:
        stream = _Stream(head)
        stream.task = asyncio.create_task(self._serve(stream_id, stream))
        return stream

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
            await self._answer(stream_id, stream)
        except (_StreamGone, asyncio.CancelledError):
            pass
        except Exception as exc:  # a bug: reset the stream, keep the tunnel
            logger.error("stream failed: %s", type(exc).__name__)
            with contextlib.suppress(Exception):
                self.conn.reset_stream(stream_id, ResetCode.INTERNAL_ERROR)
                self.pump.kick()
        finally:
            self.streams.pop(stream_id, None)

    async def _answer(self, stream_id: int, stream: _Stream) -> None:
        await stream.body_done.wait()
        started = time.monotonic()
        plan = plan_for(self.connector, stream)
        if plan.immediate is not None:
            await self._send_whole(stream_id, stream, plan.immediate)
            return
        await self._call_upstream(stream_id, stream, plan)
        logger.info("stream %d %s done in %.3fs", stream_id, plan.route.value,
                    time.monotonic() - started)

    async def _call_upstream(self, stream_id: int, stream: _Stream, plan: Plan) -> None:
        assert plan.call is not None
        if plan.stream:
            await self._stream_answer(stream_id, stream, plan)
            return
        pool = self.connector.pool
        try:
            async with pool.request(plan.call.method, plan.call.path, plan.call.headers,
                                    plan.call.body) as response:
                answer_body = await response.read(handling.MAX_UPSTREAM_BODY)
                answer = handling.finish_plan(plan, response.status, answer_body)
                await self._send_whole(stream_id, stream, answer)
        except UpstreamError as exc:
            logger.warning("upstream call failed: %s", exc)
            if stream_id not in self.streams:
                return
            if stream.head_sent:
                self.conn.reset_stream(stream_id, ResetCode.UPSTREAM_FAILED)
                self.pump.kick()
            else:
                await self._send_whole(stream_id, stream, handling.upstream_unreachable(plan))

    async def _stream_answer(self, stream_id: int, stream: _Stream, plan: Plan) -> None:
        """A streamed answer: the head and the opening at once, keep-alives until the first
        token (slow prefill), then the translated stream; an upstream failure is the format's
        in-stream error (see handling's step 2)."""
        assert plan.call is not None and plan.context is not None
        translator = open_stream_translator(plan.context)
        self.conn.send_response(stream_id, 200, handling.stream_headers(plan))
        stream.head_sent = True
        self.pump.kick()
        await self._send(stream_id, stream, translator.open())
        keepalive = asyncio.create_task(self._keep_alive(stream_id, translator))
        try:
            async with self.connector.pool.request(plan.call.method, plan.call.path,
                                                   plan.call.headers,
                                                   plan.call.body) as response:
                if response.status >= 400:
                    body = await response.read(handling.MAX_UPSTREAM_BODY)
                    tail = translator.upstream_error(response.status, body)
                else:
                    try:
                        async for chunk in response.iter_bytes():
                            out = translator.feed(chunk)
                            if out:
                                keepalive.cancel()
                                await self._send(stream_id, stream, out)
                            if translator.done:
                                break
                        tail = translator.finish()
                    except UpstreamError:
                        tail = translator.fail("upstream connection lost")
        except UpstreamError as exc:
            logger.warning("upstream call failed: %s", exc)
            tail = translator.fail(*handling.early_failure(str(exc)))
        finally:
            keepalive.cancel()
        if stream_id not in self.streams:
            return
        if tail:
            await self._send(stream_id, stream, tail)
        self.conn.end_stream(stream_id)
        self.pump.kick()

    async def _keep_alive(self, stream_id: int, translator: StreamTranslator) -> None:
        """Every keep-alive interval until the first token: one keep-alive, if the window has
        room for it (never in the middle of other bytes: the answer cancels this task first)."""
        interval = self.connector.settings.keepalive_interval
        while True:
            await asyncio.sleep(interval)
            if translator.answering or translator.done or stream_id not in self.streams:
                return
            data = translator.keepalive()
            if data and self.conn.available_to_send(stream_id) >= len(data):
                self.conn.send_data(stream_id, data)
                self.pump.kick()

    async def _send_whole(self, stream_id: int, stream: _Stream, answer: ClientResponse) -> None:
        self.conn.send_response(stream_id, answer.status, handling.response_headers(answer))
        stream.head_sent = True
        self.pump.kick()
        if answer.body:
            await self._send(stream_id, stream, answer.body)
        self.conn.end_stream(stream_id)
        self.pump.kick()

    async def _send(self, stream_id: int, stream: _Stream, data: bytes) -> None:
        """Send with flow control: wait for WindowUpdated whenever the credit runs out."""
        outbox = Outbox(self.conn, stream_id)
        outbox.add(data)
        while True:
            if stream_id not in self.streams:
                raise _StreamGone
            if outbox.send():
                break
            self.pump.kick()
            stream.window.clear()
            await stream.window.wait()
        self.pump.kick()


class Connector:
    """The reconnect loop around :class:`Session`."""

    def __init__(self, settings: ConnectorSettings, *,
                 rng: Callable[[], float] = random.random,
                 sleep: Callable[[float], object] | None = None) -> None:
        self.settings = settings
        self.backoff = Backoff(rng)
        self.backend = settings.backend
        self.pool: UpstreamPool = None  # type: ignore[assignment]
        self._sleep = sleep or asyncio.sleep
        #: Sessions accepted so far (for tests).
        self.sessions = 0
        self.current: Session | None = None

    def _ssl(self) -> ssl.SSLContext | None:
        if not self.settings.tunnel_url.startswith("wss://"):
            return None
        return client_context(ca_file=self.settings.ca_file)

    async def run(self) -> int:
        """Serve until a permanent rejection (returns EXIT_PERMANENT) or cancellation."""
        self.pool = UpstreamPool(self.settings.upstream,
                                 max_connections=max(4, self.settings.max_concurrent_streams))
        try:
            while True:
                try:
                    await self.session()
                except PermanentRejection as exc:
                    logger.error("%s", exc)
                    return EXIT_PERMANENT
                except (OSError, TimeoutError, WebSocketHandshakeError) as exc:
                    logger.warning("%s", dial_failure(exc))
                loop = asyncio.get_running_loop()
                self.backoff.disconnected(loop.time())
                delay = self.backoff.next_delay()
                logger.info("reconnecting in %.2fs", delay)
                await self._sleep(delay)  # type: ignore[misc]
        finally:
            await self.pool.aclose()

    async def session(self) -> None:
        """One connection to the gateway, from dial to close."""
        ws = await connect_websocket(self.settings.tunnel_url, ssl_context=self._ssl(),
                                     max_message_size=1024 * 1024)
        conn = ConnectorConnection(config_for(self.settings), hello=hello_for(self.settings))
        session = Session(self, ws, conn)
        self.current = session
        conn.start(session.pump.now())
        try:
            await session.pump.run()
        finally:
            self.current = None
        retry_after = session_outcome(session.rejected, session.revoked)
        if retry_after:
            await self._sleep(retry_after)  # type: ignore[misc]
