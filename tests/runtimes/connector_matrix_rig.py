"""The rig of the connector matrix (test_connector_matrix.py): a gateway the test scripts frame
by frame, and either connector shell, asyncio or threaded, run as a program runs it.

:class:`ScriptedGateway` is a real WebSocket server on loopback (asyncio streams, wsproto,
``tokios_proto.GatewayConnection``) whose every frame is visible and scriptable: its verdict on
each HELLO, the streams it opens and whether it reads their answers, resets, GOAWAYs, WebSocket
pings and malformed frames. It records what the connector sends back: answers (with arrival
times), pongs, close frames. :func:`run_shell` starts the connector under test against it and
a scripted model server (tests/upstreams/model_servers.py), as a program embedding either
runtime would.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import wsproto
import wsproto.events as ws_events

from runtimes.connector.app import Connector
from runtimes.connector.settings import ConnectorSettings
from runtimes.connector.threaded import ThreadedConnector
from tests.e2e.stack import BackgroundLoop, wait_for
from tokios_proto import (
    Config,
    ConnectionTerminated,
    DataReceived,
    Event,
    GatewayConnection,
    HealthReported,
    HelloReceived,
    RequestHead,
    ResetCode,
    ResponseReceived,
    Settings,
    StreamEnded,
    StreamReset,
    UsageReported,
)
from tokios_translate import BackendKind

SHELLS = ["asyncio", "threaded"]


@dataclass
class StreamLog:
    """What the connector answered on one stream, as the gateway received it."""

    opened_at: float
    acknowledge: bool
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    head_at: float | None = None
    data: bytearray = field(default_factory=bytearray)
    arrivals: list[tuple[float, bytes]] = field(default_factory=list)
    unacknowledged: int = 0
    ended: bool = False
    reset: ResetCode | None = None

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None

    def json(self) -> Any:
        return orjson.loads(bytes(self.data))


class Tunnel:
    """One connector connection at the scripted gateway."""

    def __init__(self, gateway: ScriptedGateway, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.gateway = gateway
        self.reader, self.writer = reader, writer
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        self.conn = GatewayConnection(Config(settings=Settings(
            initial_stream_window=gateway.window, initial_connection_window=4 * gateway.window)))
        self.hello_at: float | None = None
        self.accepted = False
        self.streams: dict[int, StreamLog] = {}
        self.pongs: list[bytes] = []
        #: The connector's REPORTs, in order (UsageReported, HealthReported).
        self.reports: list[UsageReported | HealthReported] = []
        #: The close code of the connector's close frame (None: none came).
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self._partial = bytearray()

    # ---- driven by the test (on the gateway's loop) -----------------------------------------

    def open(self, path: str, body: dict[str, Any], *, deployment: str = "coder",
             acknowledge: bool = True) -> int:
        stream_id = self.conn.open_stream(RequestHead(method="POST", path=path,
                                                      deployment=deployment))
        self.streams[stream_id] = StreamLog(opened_at=time.monotonic(), acknowledge=acknowledge)
        self.conn.send_data(stream_id, orjson.dumps(body), end_stream=True)
        self.flush()
        return stream_id

    def read_everything(self, stream_id: int) -> None:
        """Start reading a stream opened with ``acknowledge=False``: return its credit."""
        log = self.streams[stream_id]
        log.acknowledge = True
        if log.unacknowledged:
            self.conn.acknowledge_received_data(stream_id=stream_id,
                                                acknowledged_size=log.unacknowledged)
            log.unacknowledged = 0
        self.flush()

    def send_frames(self, raw: bytes) -> None:
        self.writer.write(raw)

    def flush(self) -> None:
        for message in self.conn.messages_to_send():
            self.writer.write(self.ws.send(ws_events.BytesMessage(data=message)))

    # ---- the connection's own work ---------------------------------------------------------

    async def serve(self) -> None:
        ticker = asyncio.ensure_future(self._timers())
        try:
            while True:
                data = await self.reader.read(65536)
                self.ws.receive_data(data or None)
                for event in self.ws.events():
                    self._on_ws_event(event)
                self._dispatch()
                self.flush()
                if not data or self.close_code is not None:
                    return
        except (ConnectionError, wsproto.utilities.LocalProtocolError):
            return
        finally:
            ticker.cancel()
            self.closed.set()
            self.writer.close()

    async def _timers(self) -> None:
        while True:
            await asyncio.sleep(0.02)
            when = self.conn.get_timer()
            if when is not None and when <= time.monotonic():
                self.conn.handle_timer(time.monotonic())
                self._dispatch()
                self.flush()

    def _on_ws_event(self, event: ws_events.Event) -> None:
        if isinstance(event, ws_events.Request):
            self.writer.write(self.ws.send(ws_events.AcceptConnection()))
        elif isinstance(event, ws_events.BytesMessage):
            self._partial += event.data
            if event.message_finished:
                message, self._partial = bytes(self._partial), bytearray()
                self.conn.receive_data(message, time.monotonic())
        elif isinstance(event, ws_events.Ping):
            self.writer.write(self.ws.send(event.response()))
        elif isinstance(event, ws_events.Pong):
            self.pongs.append(bytes(event.payload))
        elif isinstance(event, ws_events.CloseConnection):
            self.close_code = event.code
            with contextlib.suppress(wsproto.utilities.LocalProtocolError):
                self.writer.write(self.ws.send(event.response()))

    def _dispatch(self) -> None:
        now = time.monotonic()
        while (event := self.conn.next_event()) is not None:
            self._on_event(event, now)

    def _on_event(self, event: Event, now: float) -> None:
        log = self.streams.get(getattr(event, "stream_id", -1))
        if isinstance(event, HelloReceived):
            self.hello_at = now
            verdict = self.gateway.verdicts.pop(0) if self.gateway.verdicts else None
            if verdict is None:
                self.conn.accept("session", tuple(d.name for d in event.hello.deployments), now)
                self.accepted = True
            else:
                verdict(self.conn)
        elif isinstance(event, ResponseReceived) and log is not None:
            log.status, log.headers, log.head_at = event.status, dict(event.headers), now
        elif isinstance(event, DataReceived):
            if log is None:
                self.conn.acknowledge_received_data(
                    stream_id=event.stream_id, acknowledged_size=event.flow_controlled_length)
                return
            log.data += event.data
            log.arrivals.append((now, event.data))
            if log.acknowledge:
                self.conn.acknowledge_received_data(
                    stream_id=event.stream_id, acknowledged_size=event.flow_controlled_length)
            else:
                log.unacknowledged += event.flow_controlled_length
        elif isinstance(event, StreamEnded) and log is not None:
            log.ended = True
        elif isinstance(event, StreamReset) and log is not None:
            log.reset = event.code
        elif isinstance(event, UsageReported | HealthReported):
            self.reports.append(event)
        elif isinstance(event, ConnectionTerminated):
            self.flush()


class ScriptedGateway:
    """A WebSocket server speaking the tunnel protocol as the test says (see module doc)."""

    def __init__(self, bg: BackgroundLoop, *, window: int = 4 * 1024 * 1024) -> None:
        self.bg = bg
        self.window = window
        #: Verdicts for the next HELLOs, in order (``verdict(conn)``); then: accept.
        self.verdicts: list[Callable[[GatewayConnection], None]] = []
        self.tunnels: list[Tunnel] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/tunnel"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tunnel = Tunnel(self, reader, writer)
        self.tunnels.append(tunnel)
        await tunnel.serve()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for tunnel in self.tunnels:
            tunnel.writer.transport.abort()

    # ---- from the test's thread ------------------------------------------------------------

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` on the gateway's loop and return its result."""
        async def run() -> Any:
            return fn()
        return self.bg.run(run())

    def live(self, timeout: float = 10) -> Tunnel:
        """The accepted tunnel (waits for it)."""
        wait_for(lambda: any(t.accepted and not t.closed.is_set() for t in self.tunnels),
                 timeout, "an accepted tunnel")
        return next(t for t in self.tunnels if t.accepted and not t.closed.is_set())

    def open(self, path: str, body: dict[str, Any], **options: Any) -> tuple[Tunnel, int]:
        tunnel = self.live()
        return tunnel, self.call(lambda: tunnel.open(path, body, **options))

    def answer(self, tunnel: Tunnel, stream_id: int, timeout: float = 10) -> StreamLog:
        log = tunnel.streams[stream_id]
        wait_for(lambda: log.done, timeout, f"the answer on stream {stream_id}")
        return log


@dataclass
class Shell:
    """A connector under test, run as a program embedding that runtime runs it."""

    name: str
    connector: Connector | ThreadedConnector
    bg: BackgroundLoop | None = None
    task: asyncio.Task[int] | None = None

    @property
    def sessions(self) -> int:
        return self.connector.sessions

    def exit_code(self, timeout: float) -> int | None:
        """Wait for the connector to end by itself; its exit code (None: still running)."""
        if isinstance(self.connector, ThreadedConnector):
            return self.connector.wait(timeout)
        task = self.task
        assert task is not None and self.bg is not None

        async def outcome() -> int | None:
            done, _ = await asyncio.wait([task], timeout=timeout)
            return task.result() if done else None

        return self.bg.run(outcome(), timeout + 5)

    def stop(self) -> None:
        if isinstance(self.connector, ThreadedConnector):
            self.connector.stop()
            return
        task = self.task
        assert task is not None and self.bg is not None

        async def cancel() -> None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        self.bg.run(cancel())
        self.bg.stop()


@contextlib.contextmanager
def run_shell(name: str, gateway: ScriptedGateway, upstream: str, *,
              rng: Callable[[], float] = lambda: 0.0, backoff_base: float = 0.5,
              **settings: Any) -> Iterator[Shell]:
    """Start the ``name`` connector ("asyncio" or "threaded") against ``gateway`` and the
    model server at ``upstream`` (OpenAI-compatible); stop it on exit. ``rng`` and
    ``backoff_base`` set its reconnect back-off."""
    config = ConnectorSettings(tunnel_url=gateway.url, token="tkct-matrix", upstream=upstream,
                               backend=BackendKind.LLAMACPP, models={"coder": "m"},
                               max_concurrent_streams=8, **settings)
    shell: Shell
    if name == "threaded":
        threaded = ThreadedConnector(config, rng=rng)
        threaded.backoff.base = backoff_base
        shell = Shell(name, threaded.start())
    else:
        bg = BackgroundLoop()  # its own loop and thread, as its own process would have
        connector = Connector(config, rng=rng)
        connector.backoff.base = backoff_base

        async def start() -> asyncio.Task[int]:
            return asyncio.create_task(connector.run())

        shell = Shell(name, connector, bg, bg.run(start()))
    try:
        yield shell
    finally:
        shell.stop()
