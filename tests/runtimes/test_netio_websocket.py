"""WebSocket server (HTTP/1.1 upgrade) and client (`connect_websocket`) over real TLS."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
import trustme
import uvloop

from runtimes.netio import (
    HttpRequest,
    HttpResponse,
    HttpServer,
    WebSocket,
    WebSocketClosed,
    WebSocketHandshakeError,
    WebSocketUpgradeError,
    client_context,
    connect_websocket,
    server_context,
)


def run(coro: Coroutine[Any, Any, None], *, use_uvloop: bool = False) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro, 30)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop if use_uvloop else None) as runner:
        runner.run(bounded())


def make_tls(tmp_path: Path, *names: str) -> tuple[ssl.SSLContext, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert(*(names or ("localhost", "127.0.0.1")))
    cert_file = tmp_path / "server.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return server_context(cert_file), ca_file


def make_echo_server(
    ssl_context: ssl.SSLContext | None, *, max_message_size: int = 1 << 20
) -> tuple[HttpServer, list[Any]]:
    seen: list[Any] = []

    async def handler(request: HttpRequest, response: HttpResponse) -> None:
        if request.path != "/v1/tunnel":
            await response.respond(404, [("content-type", "text/plain")], b"nope")
            return
        if request.headers.get("authorization") != "Bearer token":
            await response.respond(401, [("content-type", "text/plain")], b"no")
            return
        ws = await request.accept_websocket(max_message_size=max_message_size)
        seen.append(("query", request.query))
        try:
            while True:
                message = await ws.recv()
                await ws.send(message)
        except WebSocketClosed as closed:
            seen.append(("closed", closed.code, closed.reason))

    return HttpServer(handler, ssl_context=ssl_context), seen


@pytest.mark.parametrize("use_uvloop", [False, True])
def test_echo_over_tls_with_fragments_large_messages_and_close(
    tmp_path: Path, use_uvloop: bool
) -> None:
    server_ctx, ca_file = make_tls(tmp_path)

    async def main() -> None:
        server, seen = make_echo_server(server_ctx)
        await server.start()
        ws = await connect_websocket(
            f"wss://localhost:{server.port}/v1/tunnel?v=1",
            ssl_context=client_context(ca_file=ca_file),
            headers=[("authorization", "Bearer token")],
        )
        for payload in (b"", b"hello", bytes(range(256)) * 1000, b"\x00" * 700_000):
            await ws.send(payload)
            assert await ws.recv() == payload
        await ws.ping(b"are you there")
        # Many messages in flight at once arrive in order.
        for i in range(200):
            await ws.send(i.to_bytes(2, "big"))
        for i in range(200):
            assert await ws.recv() == i.to_bytes(2, "big")
        await ws.close(1000, "bye")
        assert ws.closed is not None and ws.closed.code == 1000
        with pytest.raises(WebSocketClosed):
            await ws.send(b"late")
        async with asyncio.timeout(2):
            while not any(item[0] == "closed" for item in seen):
                await asyncio.sleep(0.01)
        assert ("query", "v=1") in seen
        assert ("closed", 1000, "bye") in seen
        assert server.connection_count == 0
        await server.shutdown(grace=1)

    run(main(), use_uvloop=use_uvloop)


def test_message_size_limits_close_with_1009(tmp_path: Path) -> None:
    server_ctx, ca_file = make_tls(tmp_path)

    async def main() -> None:
        server, seen = make_echo_server(server_ctx, max_message_size=1000)
        await server.start()
        url = f"wss://localhost:{server.port}/v1/tunnel"
        ctx = client_context(ca_file=ca_file)
        auth = [("authorization", "Bearer token")]
        # The server's limit: a 2000-byte message closes the connection with 1009.
        ws = await connect_websocket(url, ssl_context=ctx, headers=auth)
        await ws.send(b"a" * 1000)
        assert await ws.recv() == b"a" * 1000
        await ws.send(b"b" * 2000)
        with pytest.raises(WebSocketClosed) as info:
            await ws.recv()
        assert info.value.code == 1009
        async with asyncio.timeout(2):
            while ("closed", 1009, "message too big") not in seen:
                await asyncio.sleep(0.01)
        # The client's limit: the server echoes 900 bytes, the client accepts only 500.
        ws = await connect_websocket(url, ssl_context=ctx, headers=auth, max_message_size=500)
        await ws.send(b"c" * 900)
        with pytest.raises(WebSocketClosed) as info:
            await ws.recv()
        assert info.value.code == 1009
        await server.shutdown(grace=1)

    run(main())


def test_refused_upgrade_and_wrong_hostname_fail_the_client(tmp_path: Path) -> None:
    server_ctx, ca_file = make_tls(tmp_path, "localhost")

    async def main() -> None:
        server, _ = make_echo_server(server_ctx)
        await server.start()
        ctx = client_context(ca_file=ca_file)
        with pytest.raises(WebSocketHandshakeError) as info:
            await connect_websocket(f"wss://localhost:{server.port}/v1/tunnel", ssl_context=ctx)
        assert info.value.status == 401
        with pytest.raises(WebSocketHandshakeError) as info:
            await connect_websocket(
                f"wss://localhost:{server.port}/elsewhere",
                ssl_context=ctx,
                headers=[("authorization", "Bearer token")],
            )
        assert info.value.status == 404
        # The certificate names "localhost" only: dialing 127.0.0.1 fails verification.
        with pytest.raises(ssl.SSLCertVerificationError):
            await connect_websocket(f"wss://127.0.0.1:{server.port}/v1/tunnel", ssl_context=ctx)
        # An untrusted CA (system roots) fails too.
        with pytest.raises(ssl.SSLCertVerificationError):
            await connect_websocket(f"wss://localhost:{server.port}/v1/tunnel")
        with pytest.raises(ValueError):
            await connect_websocket(f"https://localhost:{server.port}/v1/tunnel")
        await server.shutdown(grace=1)

    run(main())


def test_connect_timeout_applies_to_a_silent_server() -> None:
    async def main() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(65536)
            await asyncio.sleep(5)

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await connect_websocket(f"ws://127.0.0.1:{port}/", connect_timeout=0.3)
        assert time.monotonic() - started < 2
        server.close()

    run(main())


def test_plain_ws_upgrade_non_upgrade_request_and_server_shutdown_close() -> None:
    async def main() -> None:
        sockets: list[WebSocket] = []

        async def handler(request: HttpRequest, response: HttpResponse) -> None:
            try:
                ws = await request.accept_websocket(subprotocol="tokios.v1")
            except WebSocketUpgradeError:
                await response.respond(426, [("content-type", "text/plain")], b"upgrade")
                return
            sockets.append(ws)
            with pytest.raises(WebSocketClosed):
                while True:
                    await ws.recv()

        server = HttpServer(handler)
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /v1/tunnel HTTP/1.1\r\nhost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 426 ")
        writer.close()
        ws = await connect_websocket(
            f"ws://127.0.0.1:{server.port}/v1/tunnel", subprotocols=["tokios.v1"]
        )
        assert ws.subprotocol == "tokios.v1"
        await ws.send(b"x")
        # Shutdown closes WebSockets with 1001 (going away).
        await server.shutdown(grace=2)
        with pytest.raises(WebSocketClosed) as info:
            await ws.recv()
        assert info.value.code == 1001

    run(main())


def test_slow_websocket_reader_pushes_back_on_the_sender() -> None:
    async def main() -> None:
        accepted: asyncio.Queue[WebSocket] = asyncio.Queue()
        release = asyncio.Event()

        async def handler(request: HttpRequest, response: HttpResponse) -> None:
            ws = await request.accept_websocket(max_message_size=65536)
            await accepted.put(ws)
            await release.wait()
            try:
                while True:
                    await ws.recv()
            except WebSocketClosed:
                pass

        server = HttpServer(handler)
        await server.start()
        ws = await connect_websocket(f"ws://127.0.0.1:{server.port}/")
        server_ws = await accepted.get()
        sent = 0
        chunk = b"m" * 65536
        try:
            while sent < 256 * 1024 * 1024:
                await asyncio.wait_for(ws.send(chunk), 0.5)
                sent += len(chunk)
        except TimeoutError:
            pass
        assert sent < 64 * 1024 * 1024  # the sender blocked: bounded by socket buffers
        assert server_ws._layer.queued <= 2 * 65536 + len(chunk)  # the server queue is bounded too
        release.set()
        await ws.close()
        await server.shutdown(grace=1)

    run(main())


def test_a_malformed_frame_closes_with_a_protocol_error_code() -> None:
    async def main() -> None:
        server, seen = make_echo_server(None)
        await server.start()
        ws = await connect_websocket(
            f"ws://127.0.0.1:{server.port}/v1/tunnel", headers=[("authorization", "Bearer token")]
        )
        await ws.send(b"fine")
        assert await ws.recv() == b"fine"
        assert ws._transport is not None
        ws._transport.write(b"\x82\x05hello")  # unmasked: clients must mask (RFC 6455 5.1)
        with pytest.raises(WebSocketClosed) as info:
            await ws.recv()
        assert info.value.code == 1002
        async with asyncio.timeout(2):
            while not any(item[0] == "closed" for item in seen):
                await asyncio.sleep(0.01)
        assert [item[1] for item in seen if item[0] == "closed"] == [1002]
        await server.shutdown(grace=1)

    run(main())
