"""The Pump's write path (a callback per loop iteration, a task only while the peer is slow)
over real loopback WebSockets, and the client-disconnect signal the gateway's handler uses
(`Disconnected.on_set`, `GatewayApi._wait_with_client`)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Coroutine
from typing import Any

import pytest
import uvloop

from runtimes.connector.settings import ConnectorSettings, config_for, hello_for
from runtimes.gateway.api import GatewayApi
from runtimes.netio import (
    ClientDisconnected,
    Disconnected,
    HttpRequest,
    HttpResponse,
    HttpServer,
    WebSocket,
    connect_websocket,
)
from runtimes.tunnel.pump import Pump
from tokios_proto import (
    Accepted,
    Config,
    ConnectorConnection,
    DataReceived,
    ErrorCode,
    Event,
    GatewayConnection,
    HelloReceived,
    RequestHead,
    Settings,
    StreamEnded,
    StreamOpened,
)
from tokios_translate import BackendKind


def run(coro: Coroutine[Any, Any, None], *, use_uvloop: bool = False) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro, 30)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop if use_uvloop else None) as runner:
        runner.run(bounded())


# -- Disconnected ---------------------------------------------------------------------------


def test_disconnected_runs_each_callback_once_and_wakes_waiters() -> None:
    async def main() -> None:
        gone = Disconnected()
        calls: list[str] = []
        stop_a = gone.on_set(lambda: calls.append("a"))
        gone.on_set(lambda: 1 / 0)  # a buggy callback: logged, the others still run
        gone.on_set(lambda: calls.append("b"))
        stop_c = gone.on_set(lambda: calls.append("c"))
        stop_c()  # unregistered before the client left: never called
        waiter = asyncio.ensure_future(gone.wait())
        await asyncio.sleep(0)
        assert not waiter.done() and not gone.is_set()
        gone.set()
        gone.set()  # a second set changes nothing
        await asyncio.wait_for(waiter, 1)
        assert calls == ["a", "b"]
        stop_a()  # removing after the fact is harmless
        late: list[str] = []
        gone.on_set(lambda: late.append("late"))  # already gone: called at once
        assert late == ["late"] and gone.is_set()
        await gone.wait()  # returns at once once set

    run(main())


class _Response:
    """Just what ``_wait_with_client`` reads of an HttpResponse."""

    def __init__(self) -> None:
        self.disconnected = Disconnected()


def test_wait_with_client_cancels_the_work_when_the_client_leaves() -> None:
    async def main() -> None:
        response = _Response()
        cleaned = asyncio.Event()

        async def work() -> int:
            try:
                await asyncio.sleep(30)
            finally:
                cleaned.set()
            return 1

        asyncio.get_running_loop().call_later(0.05, response.disconnected.set)
        with pytest.raises(ClientDisconnected):
            await GatewayApi._wait_with_client(response, work())  # type: ignore[arg-type]
        assert cleaned.is_set()
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0  # our cancel was taken back
        assert not response.disconnected._callbacks  # run and released

        # a client that is already gone: the work never starts
        started: list[bool] = []

        async def never() -> None:
            started.append(True)

        with pytest.raises(ClientDisconnected):
            await GatewayApi._wait_with_client(response, never())  # type: ignore[arg-type]
        assert started == []

    run(main())


def test_wait_with_client_returns_the_result_and_keeps_outer_cancellation() -> None:
    async def main() -> None:
        response = _Response()

        async def quick() -> str:
            await asyncio.sleep(0)
            return "head"

        assert await GatewayApi._wait_with_client(response, quick()) == "head"  # type: ignore[arg-type]
        assert response.disconnected._callbacks == []  # unregistered when the work ended

        async def handler() -> None:
            await GatewayApi._wait_with_client(response, asyncio.sleep(30))  # type: ignore[arg-type]

        outer = asyncio.ensure_future(handler())
        await asyncio.sleep(0.01)
        outer.cancel()  # e.g. the server shutting down: stays a cancellation
        with pytest.raises(asyncio.CancelledError):
            await outer

    run(main())


# -- the Pump over a real WebSocket pair ----------------------------------------------------

DEPLOYMENT = "coder"


async def _tunnel_pair() -> tuple[HttpServer, Pump, Pump, list[Event], list[asyncio.Task[None]]]:
    """A gateway-side and a connector-side Pump joined by a ws:// connection on loopback,
    handshake done. Returns (server, gateway pump, connector pump, connector events, tasks)."""
    gateway_side: asyncio.Future[Pump] = asyncio.get_running_loop().create_future()
    tasks: list[asyncio.Task[None]] = []

    async def handler(request: HttpRequest, response: HttpResponse) -> None:
        ws = await request.accept_websocket(max_message_size=1 << 20)
        conn = GatewayConnection(Config(settings=Settings(max_concurrent_streams=16)))

        def on_event(event: Event) -> None:
            if isinstance(event, HelloReceived):
                conn.accept("session-1", (DEPLOYMENT,), pump.now())

        pump = Pump(ws, conn, on_event)
        conn.start(pump.now())
        gateway_side.set_result(pump)
        await pump.run()

    server = HttpServer(handler)
    await server.start()
    settings = ConnectorSettings(tunnel_url=f"ws://127.0.0.1:{server.port}/v1/tunnel",
                                 token="tkct-test", upstream="http://127.0.0.1:9",
                                 backend=BackendKind.LLAMACPP, models={DEPLOYMENT: "m"},
                                 connector_id="pump-test")
    ws = await connect_websocket(settings.tunnel_url)
    events: list[Event] = []
    accepted = asyncio.Event()

    def on_connector_event(event: Event) -> None:
        events.append(event)
        if isinstance(event, Accepted):
            accepted.set()

    conn = ConnectorConnection(config_for(settings), hello=hello_for(settings))
    connector = Pump(ws, conn, on_connector_event)
    conn.start(connector.now())
    tasks.append(asyncio.ensure_future(connector.run()))
    gateway = await asyncio.wait_for(gateway_side, 5)
    await asyncio.wait_for(accepted.wait(), 5)
    return server, gateway, connector, events, tasks


def _ws_transport(ws: WebSocket) -> asyncio.Transport:
    transport = ws._transport
    assert transport is not None
    return transport


@pytest.mark.parametrize("use_uvloop", [False, True])
def test_a_slow_peer_parks_the_pump_in_a_drain_task_and_nothing_is_lost(
        use_uvloop: bool) -> None:
    async def main() -> None:
        server, gateway, connector, events, tasks = await _tunnel_pair()
        try:
            await asyncio.sleep(0.05)
            assert gateway._drain_task is None and connector._drain_task is None  # idle: no task
            # small socket buffers, so the gateway's transport fills up quickly
            for side, option in ((gateway, socket.SO_SNDBUF), (connector, socket.SO_RCVBUF)):
                sock = _ws_transport(side.ws).get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, option, 32 * 1024)
            _ws_transport(connector.ws).pause_reading()  # the connector stops reading
            body = bytes(range(256)) * (3 * 4096)  # 3 MiB: within the 4 MiB stream window
            conn = gateway.conn
            assert isinstance(conn, GatewayConnection)
            stream_id = conn.open_stream(RequestHead(method="POST", path="/v1/chat/completions",
                                                     query="", headers=(),
                                                     deployment=DEPLOYMENT,
                                                     request_id="req_1"))
            conn.send_data(stream_id, body)
            conn.end_stream(stream_id)
            gateway.kick()
            async with asyncio.timeout(5):
                while gateway._drain_task is None:
                    await asyncio.sleep(0.01)
            assert gateway.ws.write_paused  # parked on the socket, the rest kept in the core
            assert not any(isinstance(e, StreamEnded) for e in events)
            _ws_transport(connector.ws).resume_reading()
            async with asyncio.timeout(10):
                while not any(isinstance(e, StreamEnded) for e in events):
                    await asyncio.sleep(0.01)
            assert any(isinstance(e, StreamOpened) for e in events)
            received = b"".join(e.data for e in events if isinstance(e, DataReceived))
            assert received == body  # every byte, in order
            await asyncio.sleep(0.05)
            assert gateway._drain_task is None  # drained: back to callbacks only
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.shutdown(grace=1)

    run(main(), use_uvloop=use_uvloop)


def test_goaway_is_written_and_both_pumps_end() -> None:
    async def main() -> None:
        server, gateway, connector, _events, tasks = await _tunnel_pair()
        try:
            gateway.conn.goaway()
            gateway.dispatch()  # as Tunnel.goaway does: no stream open, so the core is CLOSED
            assert gateway.terminated is not None
            async with asyncio.timeout(5):
                await tasks[0]  # the connector's run() returns once the tunnel closed
            assert connector.terminated is not None
            assert connector.terminated.reason == "drained"  # it got the GOAWAY, not a drop
            async with asyncio.timeout(5):  # the gateway's run() ends too, its tasks gone
                while gateway.ws.closed is None or not gateway._stopped:
                    await asyncio.sleep(0.01)
            assert all(t is None or t.done() for t in (gateway._closer, gateway._drain_task))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.shutdown(grace=1)

    run(main())


def test_a_peer_that_never_reads_cannot_keep_an_ended_tunnel_alive() -> None:
    async def main() -> None:
        server, gateway, connector, _events, tasks = await _tunnel_pair()
        try:
            for side, option in ((gateway, socket.SO_SNDBUF), (connector, socket.SO_RCVBUF)):
                sock = _ws_transport(side.ws).get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, option, 32 * 1024)
            _ws_transport(connector.ws).pause_reading()  # and never resumes
            conn = gateway.conn
            assert isinstance(conn, GatewayConnection)
            stream_id = conn.open_stream(RequestHead(method="POST", path="/v1/chat/completions",
                                                     deployment=DEPLOYMENT))
            conn.send_data(stream_id, bytes(3 * 1024 * 1024))
            gateway.kick()
            async with asyncio.timeout(5):
                while gateway._drain_task is None:
                    await asyncio.sleep(0.01)
            conn.goaway(ErrorCode.INTERNAL_ERROR, "test")  # ends the connection at once
            gateway.dispatch()
            assert gateway.terminated is not None
            started = time.monotonic()
            async with asyncio.timeout(8):  # 2 s of grace for the peer, then the socket goes
                while not gateway._stopped or gateway.ws.closed is None:
                    await asyncio.sleep(0.05)
            assert time.monotonic() - started < 4.5
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.shutdown(grace=1)

    run(main())
