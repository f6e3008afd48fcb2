"""runtimes.blocking on real loopback sockets: the wsproto client (TLS via trustme), and the h11
upstream pool's keep-alive and cross-thread abort."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import h11
import pytest
import trustme
import wsproto
import wsproto.events as ws_events

from runtimes.blocking import (
    UpstreamError,
    UpstreamPool,
    WebSocketClosed,
    WebSocketHandshakeError,
    client_context,
    connect_websocket,
)
from runtimes.upstream_http import Failure, ResponseHead, WholeAnswer

pytestmark = pytest.mark.timeout(30)


@contextmanager
def ws_server(handle: Callable[[socket.socket, wsproto.WSConnection], None], *,
              tls: ssl.SSLContext | None = None, accept: bool = True) -> Iterator[int]:
    """A one-connection WebSocket server in a thread; ``handle`` runs after the upgrade."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        sock, _ = listener.accept()
        ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        try:
            if tls is not None:
                sock = tls.wrap_socket(sock, server_side=True)
            while True:
                ws.receive_data(sock.recv(65536))
                for event in ws.events():
                    if isinstance(event, ws_events.Request):
                        if not accept:
                            sock.sendall(ws.send(ws_events.RejectConnection(status_code=403)))
                            return
                        sock.sendall(ws.send(ws_events.AcceptConnection()))
                        handle(sock, ws)
                        return
        except OSError:
            pass
        finally:
            sock.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.close()
        thread.join(5)


def _echo(sock: socket.socket, ws: wsproto.WSConnection) -> None:
    sock.sendall(ws.send(ws_events.Ping(payload=b"hb")))
    parts: list[bytes] = []
    while True:
        data = sock.recv(65536)
        if not data:
            return
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, ws_events.BytesMessage):
                parts.append(event.data)
                if event.message_finished:
                    sock.sendall(ws.send(ws_events.Message(data=b"".join(parts))))
                    parts.clear()
            elif isinstance(event, ws_events.Pong):
                sock.sendall(ws.send(ws_events.Message(data=b"pong:" + event.payload)))
            elif isinstance(event, ws_events.CloseConnection):
                sock.sendall(ws.send(event.response()))
                return


def test_websocket_over_tls_echo_ping_wake_timeout_and_close() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    with ws_server(_echo, tls=server_ctx) as port:
        ws = connect_websocket(f"wss://localhost:{port}/v1/tunnel", ssl_context=client_ctx)
        assert ws.recv(5) == b"pong:hb"  # the server's ping was answered at once
        ws.send(b"x" * 200_000)
        assert ws.recv(5) == b"x" * 200_000
        started = time.monotonic()
        assert ws.recv(0.2) is None  # nothing came: the timeout
        assert 0.15 < time.monotonic() - started < 2
        threading.Timer(0.1, ws.wake).start()
        assert ws.recv(10) is None  # woken long before the timeout
        ws.close()
        assert ws.closed is not None and ws.closed.code == 1000
        with pytest.raises(WebSocketClosed):
            ws.send(b"late")
        ws.release()


def test_websocket_untrusted_certificate_and_refused_upgrade() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    with ws_server(_echo, tls=server_ctx) as port, pytest.raises(ssl.SSLCertVerificationError):
        connect_websocket(f"wss://localhost:{port}/", ssl_context=client_context())
    with ws_server(_echo, accept=False) as port, pytest.raises(WebSocketHandshakeError) as err:
        connect_websocket(f"ws://127.0.0.1:{port}/")
    assert err.value.status == 403


def test_websocket_message_over_the_limit_closes_1009() -> None:
    def big(sock: socket.socket, ws: wsproto.WSConnection) -> None:
        sock.sendall(ws.send(ws_events.Message(data=b"y" * 5000)))
        time.sleep(0.5)

    with ws_server(big) as port:
        ws = connect_websocket(f"ws://127.0.0.1:{port}/", max_message_size=1000)
        with pytest.raises(WebSocketClosed) as err:
            ws.recv(5)
        assert err.value.code == 1009
        ws.release()


def test_a_write_to_a_peer_that_stopped_reading_times_out() -> None:
    stop = threading.Event()
    with ws_server(lambda _s, _w: stop.wait(10)) as port:
        ws = connect_websocket(f"ws://127.0.0.1:{port}/", write_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(WebSocketClosed):
            for _ in range(10_000):  # the peer reads nothing: the buffers fill, then a stall
                ws.send(b"z" * 65536)
        assert time.monotonic() - started < 10
        closing = time.monotonic()
        ws.close()  # the close frame cannot go out; close does not hang on it
        assert time.monotonic() - closing < 2
        stop.set()
        ws.release()


@contextmanager
def http_server(respond: Callable[[socket.socket, h11.Connection], None]) -> Iterator[list[int]]:
    """A keep-alive HTTP/1.1 server (one thread per connection); yields [connections]."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = [listener.getsockname()[1], 0]

    def connection(sock: socket.socket) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(sock.recv(65536))
                elif isinstance(event, h11.EndOfMessage):
                    respond(sock, conn)
                    conn.start_next_cycle()
                elif event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                    return
        except (OSError, h11.ProtocolError):
            return
        finally:
            sock.close()

    def serve() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            accepted[1] += 1
            threading.Thread(target=connection, args=(sock,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield accepted
    finally:
        listener.close()


def _ok(sock: socket.socket, conn: h11.Connection) -> None:
    sock.sendall(conn.send(h11.Response(status_code=200, headers=[("content-length", "2")]))
                 + conn.send(h11.Data(data=b"ok")) + conn.send(h11.EndOfMessage()))


def test_upstream_pool_keeps_connections_alive() -> None:
    with http_server(_ok) as server:
        pool = UpstreamPool(f"http://127.0.0.1:{server[0]}", max_connections=2)
        seen: list[object] = []
        for _ in range(3):
            with pool.exchange("POST", "/x", [("content-type", "application/json")], b"{}",
                               on_start=seen.append) as exchange:
                whole = WholeAnswer(100)
                while not whole.add(exchange.receive(None)):
                    pass
                assert whole.head is not None and whole.head.status == 200
                assert whole.body == b"ok"
        assert pool.connects == 1 and server[1] == 1
        assert len(seen) == 3 and all(callable(exchange.abort) for exchange in seen)
        pool.close()


def test_upstream_abort_from_another_thread_unblocks_the_reader() -> None:
    release = threading.Event()

    def endless(sock: socket.socket, conn: h11.Connection) -> None:
        sock.sendall(conn.send(h11.Response(status_code=200,
                                            headers=[("transfer-encoding", "chunked")])))
        sock.sendall(conn.send(h11.Data(data=b"first")))
        release.wait(10)  # then nothing more: the model "thinks" forever

    with http_server(endless) as server:
        pool = UpstreamPool(f"http://127.0.0.1:{server[0]}")
        with pytest.raises(UpstreamError), pool.exchange("POST", "/gen", body=b"{}") as exchange:
            assert isinstance(exchange.receive(None), ResponseHead)
            assert exchange.receive(None) == b"first"
            threading.Timer(0.2, exchange.abort).start()
            started = time.monotonic()
            exchange.receive(None)
        assert time.monotonic() - started < 2
        release.set()
        pool.close()


def test_upstream_unreachable_is_an_upstream_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    pool = UpstreamPool(f"http://127.0.0.1:{port}", connect_timeout=1)
    with pytest.raises(UpstreamError) as failed:
        pool.fetch("GET", "/", limit=10)
    assert failed.value.failure is Failure.CONNECT
