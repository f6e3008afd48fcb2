"""HttpServer over real sockets: httpx (HTTP/1.1 and HTTP/2 over trustme TLS), raw h11/h2."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import uvloop

from runtimes.netio import (
    BodyTooLarge,
    ClientDisconnected,
    HttpRequest,
    HttpResponse,
    HttpServer,
    RequestBodyError,
    ServerConfig,
    client_context,
    server_context,
)
from runtimes.netio._http import lenient_head

Handler = Callable[[HttpRequest, HttpResponse], Awaitable[None]]


def run(coro: Coroutine[Any, Any, None], *, use_uvloop: bool = False) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro, 30)

    factory = uvloop.new_event_loop if use_uvloop else None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(bounded())


def make_tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_file = tmp_path / "server.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return server_context(cert_file), ca_file


async def echo_handler(request: HttpRequest, response: HttpResponse) -> None:
    body = await request.body(limit=1 << 20)
    await response.respond(
        200,
        [
            ("content-type", "application/octet-stream"),
            ("x-method", request.method),
            ("x-path", request.path),
            ("x-query", request.query),
            ("x-version", request.http_version),
            ("x-seen", request.headers.get("x-test", "")),
        ],
        body,
    )


async def raw_exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    chunks = []
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                chunks.append(chunk)
    finally:
        writer.close()
    return b"".join(chunks)


# ---- HTTP/1.1 and HTTP/2 through httpx ---------------------------------------------------


@pytest.mark.parametrize("http2", [False, True])
def test_httpx_round_trip_over_tls_and_alpn(tmp_path: Path, http2: bool) -> None:
    server_ctx, ca_file = make_tls(tmp_path)

    async def main() -> None:
        server = HttpServer(echo_handler, ssl_context=server_ctx)
        await server.start("127.0.0.1", 0)
        verify = client_context(ca_file=ca_file)
        async with httpx.AsyncClient(http2=http2, verify=verify) as client:
            for i in range(3):
                body = b"x" * (1000 * i + 1)
                r = await client.post(
                    f"https://localhost:{server.port}/v1/messages?beta=true",
                    content=body,
                    headers={"X-Test": "Yes"},
                )
                assert r.status_code == 200
                assert r.content == body
                assert r.headers["x-method"] == "POST"
                assert r.headers["x-path"] == "/v1/messages"
                assert r.headers["x-query"] == "beta=true"
                assert r.headers["x-seen"] == "Yes"
                assert r.headers["x-version"] == ("2" if http2 else "1.1")
                assert r.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        await server.shutdown(grace=1)

    run(main())


def test_alpn_selects_h2_on_a_raw_tls_socket(tmp_path: Path) -> None:
    server_ctx, ca_file = make_tls(tmp_path)

    async def main() -> None:
        server = HttpServer(echo_handler, ssl_context=server_ctx)
        await server.start()
        for offered, expected in ((["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1")):
            ctx = client_context(ca_file=ca_file, alpn=offered)
            _, writer = await asyncio.open_connection(
                "127.0.0.1", server.port, ssl=ctx, server_hostname="localhost"
            )
            assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == expected
            writer.close()
        await server.shutdown(grace=1)

    run(main())


@pytest.mark.parametrize("http2", [False, True])
def test_streamed_chunks_reach_the_client_before_the_next_is_sent(
    tmp_path: Path, http2: bool
) -> None:
    server_ctx, ca_file = make_tls(tmp_path)

    async def main() -> None:
        received: list[asyncio.Event] = [asyncio.Event() for _ in range(3)]

        async def handler(request: HttpRequest, response: HttpResponse) -> None:
            await response.start(200, [("content-type", "text/event-stream")])
            for i in range(3):
                await response.send(f"data: {i}\n\n".encode())
                # The client must see event i before event i+1 exists at all.
                await asyncio.wait_for(received[i].wait(), 5)
            await response.end()

        server = HttpServer(handler, ssl_context=server_ctx)
        await server.start()
        async with (
            httpx.AsyncClient(http2=http2, verify=client_context(ca_file=ca_file)) as client,
            client.stream("GET", f"https://localhost:{server.port}/sse") as r,
        ):
            seen = b""
            async for chunk in r.aiter_raw():
                seen += chunk
                for i in range(3):
                    if f"data: {i}\n\n".encode() in seen:
                        received[i].set()
            assert seen == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
        await server.shutdown(grace=1)

    run(main())


@pytest.mark.parametrize("http2", [False, True])
def test_body_limit_gives_the_handler_body_too_large(tmp_path: Path, http2: bool) -> None:
    server_ctx, ca_file = make_tls(tmp_path)

    async def main() -> None:
        async def handler(request: HttpRequest, response: HttpResponse) -> None:
            try:
                body = await request.body(limit=100_000)
            except BodyTooLarge:
                await response.respond(413, [("content-type", "text/plain")], b"too large")
                return
            await response.respond(200, [], str(len(body)).encode())

        server = HttpServer(handler, ssl_context=server_ctx)
        await server.start()
        url = f"https://localhost:{server.port}/"
        async with httpx.AsyncClient(http2=http2, verify=client_context(ca_file=ca_file)) as c:
            assert (await c.post(url, content=b"a" * 100_000)).content == b"100000"
            assert (await c.post(url, content=b"a" * 150_000)).status_code == 413

            async def chunked_body() -> Any:  # no content-length: counted while read
                for _ in range(15):
                    yield b"b" * 10_000

            r = await c.post(url, content=chunked_body())
            assert r.status_code == 413
            # The connection is still usable afterwards (h2) or a new one is opened (h1).
            assert (await c.post(url, content=b"ok")).content == b"2"
        await server.shutdown(grace=1)

    run(main())


def test_plain_http_serves_h1_and_h2c_prior_knowledge() -> None:
    async def main() -> None:
        server = HttpServer(echo_handler)
        await server.start()
        async with httpx.AsyncClient() as c:
            r = await c.post(f"http://127.0.0.1:{server.port}/a", content=b"hi")
            assert (r.http_version, r.content) == ("HTTP/1.1", b"hi")
        async with httpx.AsyncClient(http1=False, http2=True) as c:
            r = await c.post(f"http://127.0.0.1:{server.port}/b", content=b"hey")
            assert (r.http_version, r.content) == ("HTTP/2", b"hey")
        await server.shutdown(grace=1)

    run(main())


def test_runs_on_uvloop_too(tmp_path: Path) -> None:
    server_ctx, ca_file = make_tls(tmp_path)

    async def main() -> None:
        server = HttpServer(echo_handler, ssl_context=server_ctx)
        await server.start()
        for http2 in (False, True):
            async with httpx.AsyncClient(http2=http2, verify=client_context(ca_file=ca_file)) as c:
                r = await c.post(f"https://localhost:{server.port}/u", content=b"uv")
                assert r.content == b"uv"
                assert r.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        await server.shutdown(grace=1)

    run(main(), use_uvloop=True)


# ---- auth before body ----------------------------------------------------------------------


def test_handler_rejects_before_the_body_is_read_h1() -> None:
    async def main() -> None:
        body_reads = 0

        async def handler(request: HttpRequest, response: HttpResponse) -> None:
            nonlocal body_reads
            if request.headers.get("authorization") != "Bearer good":
                await response.respond(401, [("content-type", "text/plain")], b"no")
                return
            body_reads += 1
            await response.respond(200, [], await request.body(limit=1 << 20))

        server = HttpServer(handler, config=ServerConfig(linger_timeout=0.3))
        await server.start()
        # A huge declared body, of which only the start is sent: 401 comes back at once and
        # the server closes the connection (the rest is never read).
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100000000\r\n\r\n" + b"a" * 10)
        async with asyncio.timeout(5):
            reply = await reader.read(65536)
            assert reply.startswith(b"HTTP/1.1 401 ")
            assert b"connection: close" in reply.lower()
            assert await reader.read(65536) == b""
        writer.close()
        # A short unread body is discarded and the connection kept alive.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nabcde")
        writer.write(
            b"POST / HTTP/1.1\r\nhost: x\r\nauthorization: Bearer good\r\n"
            b"content-length: 3\r\n\r\nxyz"
        )
        data = b""
        async with asyncio.timeout(5):
            while b"xyz" not in data:
                data += await reader.read(65536)
        assert data.startswith(b"HTTP/1.1 401 ")
        assert b"HTTP/1.1 200 " in data
        writer.close()
        # Expect: 100-continue is answered only when the handler reads the body.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST / HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 3\r\n\r\n"
        )
        async with asyncio.timeout(5):
            reply = await reader.read(65536)
        assert reply.startswith(b"HTTP/1.1 401 ")
        assert b"100 Continue" not in reply
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST / HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n"
            b"authorization: Bearer good\r\ncontent-length: 3\r\n\r\n"
        )
        async with asyncio.timeout(5):
            interim = await reader.readuntil(b"\r\n\r\n")
            assert interim.startswith(b"HTTP/1.1 100 ")
            writer.write(b"abc")
            final = await reader.readuntil(b"abc")
        assert final.startswith(b"HTTP/1.1 200 ")
        writer.close()
        assert body_reads == 2
        await server.shutdown(grace=1)

    run(main())


# ---- malformed requests, limits, timeouts -------------------------------------------------


def test_lenient_head_reads_what_it_can_of_a_head_that_did_not_parse() -> None:
    raw = (b"POST /v1/messages?beta=1 HTTP/1.1\r\nHost: x\r\nx-\xff: 1\r\n"
           b"Anthropic-Version: 2023-06-01\r\nbad line\r\n x-folded: y\r\n\r\nbody: no")
    method, path, headers = lenient_head(raw)
    assert (method, path) == ("POST", "/v1/messages")
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["x-\xff"] == "1"  # latin-1, as h11 decodes a value
    assert "bad line" not in headers and " x-folded" not in headers and "body" not in headers
    assert lenient_head(b"GARBAGE\r\n\r\n") == ("", "", {})
    assert lenient_head(b"") == ("", "", {})


def test_malformed_and_oversized_heads_get_plain_errors_before_the_handler() -> None:
    async def main() -> None:
        calls = 0

        async def handler(request: HttpRequest, response: HttpResponse) -> None:
            nonlocal calls
            calls += 1
            await response.respond(200)

        config = ServerConfig(max_header_bytes=4096, allow_h2c=False)
        server = HttpServer(handler, config=config)
        await server.start()
        reply = await raw_exchange(server.port, b"NOT A REQUEST\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 400 ")
        big = b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 8000 + b"\r\n\r\n"
        reply = await raw_exchange(server.port, big)
        assert reply.startswith(b"HTTP/1.1 431 ")
        reply = await raw_exchange(server.port, b"GET / HTTP/1.1\r\n\r\n")  # no host
        assert reply.startswith(b"HTTP/1.1 400 ")
        assert calls == 0
        await server.shutdown(grace=1)

    run(main())


def test_slowloris_head_timeout_and_keepalive_idle_timeout() -> None:
    async def main() -> None:
        config = ServerConfig(header_timeout=0.3, keepalive_timeout=0.5)
        server = HttpServer(echo_handler, config=config)
        await server.start()
        # A head that never completes: 408 and close after header_timeout.
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n")
        async with asyncio.timeout(3):
            reply = await reader.read()
        assert reply.startswith(b"HTTP/1.1 408 ")
        assert 0.25 < time.monotonic() - started < 2
        writer.close()
        # An idle keep-alive connection is closed after keepalive_timeout.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        async with asyncio.timeout(3):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            idle_from = time.monotonic()
            assert await reader.read() == b""
        assert 0.4 < time.monotonic() - idle_from < 2
        writer.close()
        assert server.connection_count == 0
        await server.shutdown(grace=1)

    run(main())


def test_max_connections_refuses_extra_connections() -> None:
    async def main() -> None:
        server = HttpServer(echo_handler, config=ServerConfig(max_connections=2))
        await server.start()
        kept = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            await reader.readuntil(b"\r\n\r\n")
            kept.append(writer)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        async with asyncio.timeout(3):
            with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
                await reader.readuntil(b"\r\n\r\n")
        for w in [*kept, writer]:
            w.close()
        await server.shutdown(grace=1)

    run(main())


# ---- disconnects and backpressure ----------------------------------------------------------


@pytest.mark.parametrize("use_uvloop", [False, True])
@pytest.mark.parametrize("secure", [False, True])
def test_h1_client_disconnect_is_seen_promptly_while_streaming(
    tmp_path: Path, use_uvloop: bool, secure: bool
) -> None:
    server_ctx, ca_file = make_tls(tmp_path)

    async def main() -> None:
        gone = asyncio.Event()
        send_error: list[BaseException] = []

        async def handler(request: HttpRequest, response: HttpResponse) -> None:
            await response.start(200, [("content-type", "text/event-stream")])
            await response.send(b"data: first\n\n")
            await response.disconnected.wait()
            gone.set()
            try:
                await response.send(b"data: late\n\n")
            except ClientDisconnected as exc:
                send_error.append(exc)

        server = HttpServer(handler, ssl_context=server_ctx if secure else None)
        await server.start()
        if secure:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1",
                server.port,
                ssl=client_context(ca_file=ca_file, alpn=["http/1.1"]),
                server_hostname="localhost",
            )
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /sse HTTP/1.1\r\nhost: x\r\n\r\n")
        await reader.readuntil(b"data: first\n\n")
        writer.close()
        closed_at = time.monotonic()
        await asyncio.wait_for(gone.wait(), 1)
        assert time.monotonic() - closed_at < 1
        await asyncio.sleep(0.05)
        assert len(send_error) == 1
        await server.shutdown(grace=1)

    run(main(), use_uvloop=use_uvloop)


@pytest.mark.parametrize("use_uvloop", [False, True])
def test_h1_slow_client_makes_send_wait_and_memory_stays_bounded(use_uvloop: bool) -> None:
    async def main() -> None:
        blocked = asyncio.Event()
        sent = 0
        transport_buffers: list[int] = []

        async def handler(request: HttpRequest, response: HttpResponse) -> None:
            nonlocal sent
            await response.start(200, [("content-type", "application/octet-stream")])
            chunk = b"z" * 65536
            while sent < 512 * 1024 * 1024:
                try:
                    await asyncio.wait_for(response.send(chunk), 0.5)
                except TimeoutError:
                    blocked.set()
                    break
                sent += len(chunk)
            for connection in server._state.connections:
                transport = connection._transport  # type: ignore[attr-defined]
                transport_buffers.append(transport.get_write_buffer_size())

        server = HttpServer(handler, config=ServerConfig(write_high_water=64 * 1024))
        await server.start()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.connect(("127.0.0.1", server.port))
        sock.setblocking(False)
        _reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
        writer.transport.pause_reading()  # the client reads nothing
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        await asyncio.wait_for(blocked.wait(), 10)
        assert sent < 16 * 1024 * 1024  # kernel buffers only, not an unbounded queue
        assert transport_buffers and max(transport_buffers) <= 64 * 1024 + 65536 * 2
        writer.transport.abort()
        await server.shutdown(grace=1)

    run(main(), use_uvloop=use_uvloop)


# ---- shutdown, errors ----------------------------------------------------------------------


@pytest.mark.parametrize("http2", [False, True])
def test_graceful_shutdown_lets_in_flight_requests_finish(tmp_path: Path, http2: bool) -> None:
    server_ctx, ca_file = make_tls(tmp_path)

    async def main() -> None:
        started = asyncio.Event()

        async def handler(request: HttpRequest, response: HttpResponse) -> None:
            await response.start(200, [])
            await response.send(b"part1 ")
            started.set()
            await asyncio.sleep(0.3)
            await response.send(b"part2")
            await response.end()

        server = HttpServer(handler, ssl_context=server_ctx)
        await server.start()
        port = server.port
        async with httpx.AsyncClient(http2=http2, verify=client_context(ca_file=ca_file)) as c:
            request = asyncio.create_task(c.get(f"https://localhost:{port}/"))
            await started.wait()
            shutdown_started = time.monotonic()
            await server.shutdown(grace=5)
            assert time.monotonic() - shutdown_started < 2
            r = await request
            assert r.content == b"part1 part2"
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)

    run(main())


def test_shutdown_grace_expiry_aborts_stuck_handlers() -> None:
    async def main() -> None:
        cancelled = asyncio.Event()

        async def handler(request: HttpRequest, response: HttpResponse) -> None:
            await response.start(200, [])
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        server = HttpServer(handler)
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        started = time.monotonic()
        await server.shutdown(grace=0.3)
        assert time.monotonic() - started < 2
        await asyncio.wait_for(cancelled.wait(), 1)
        writer.close()

    run(main())


@pytest.mark.parametrize("http2", [False, True])
def test_handler_errors_become_500_without_leaking_details(http2: bool) -> None:
    async def main() -> None:
        async def handler(request: HttpRequest, response: HttpResponse) -> None:
            if request.path == "/silent":
                return
            raise ValueError("secret prompt text")

        server = HttpServer(handler)
        await server.start()
        async with httpx.AsyncClient(http1=not http2, http2=http2) as c:
            r = await c.get(f"http://127.0.0.1:{server.port}/boom")
            assert r.status_code == 500
            assert b"secret" not in r.content
            r = await c.get(f"http://127.0.0.1:{server.port}/silent")
            assert r.status_code == 500
        await server.shutdown(grace=1)

    run(main())


def test_h1_disconnect_while_the_handler_reads_the_body() -> None:
    async def main() -> None:
        outcome: list[str] = []

        async def handler(request: HttpRequest, response: HttpResponse) -> None:
            try:
                await request.body(limit=1 << 20)
            except ClientDisconnected:
                outcome.append("disconnected")
                raise

        server = HttpServer(handler)
        await server.start()
        _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\nonly part")
        await asyncio.sleep(0.1)
        writer.close()
        async with asyncio.timeout(1):
            while not outcome:
                await asyncio.sleep(0.01)
        assert outcome == ["disconnected"]
        await asyncio.sleep(0.05)
        assert server.connection_count == 0
        await server.shutdown(grace=1)

    run(main())


def test_h1_body_and_write_timeouts_release_the_handler() -> None:
    async def main() -> None:
        outcome: dict[str, float] = {}

        async def handler(request: HttpRequest, response: HttpResponse) -> None:
            started = time.monotonic()
            if request.path == "/upload":
                try:
                    await request.body(limit=1 << 20)
                except RequestBodyError as exc:
                    assert exc.status == 408
                    outcome["body"] = time.monotonic() - started
                    raise
            await response.start(200, [])
            try:
                while True:
                    await response.send(b"y" * 65536)
            except ClientDisconnected:
                outcome["write"] = time.monotonic() - started
                raise

        config = ServerConfig(body_timeout=0.3, write_timeout=0.5)
        server = HttpServer(handler, config=config)
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nabc")
        async with asyncio.timeout(2):
            while "body" not in outcome:
                await asyncio.sleep(0.01)
            # the stalled body is answered (408, from the default error responder), then the
            # connection closes
            reply = await reader.read()
        assert 0.25 < outcome["body"] < 1.5
        assert reply.startswith(b"HTTP/1.1 408 ")
        assert b"connection: close" in reply.lower()
        writer.close()
        _reader, writer = await asyncio.open_connection("127.0.0.1", server.port, limit=1024)
        writer.transport.pause_reading()  # reads nothing: the server's buffer fills up
        writer.write(b"GET /download HTTP/1.1\r\nhost: x\r\n\r\n")
        async with asyncio.timeout(5):
            while "write" not in outcome:
                await asyncio.sleep(0.01)
        assert outcome["write"] < 4
        writer.transport.abort()
        await server.shutdown(grace=1)

    run(main())


def test_a_stalled_tls_handshake_is_dropped_after_the_header_timeout(tmp_path: Path) -> None:
    server_ctx, _ = make_tls(tmp_path)

    async def main() -> None:
        server = HttpServer(
            echo_handler, ssl_context=server_ctx, config=ServerConfig(header_timeout=0.3)
        )
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)  # no TLS hello
        started = time.monotonic()
        async with asyncio.timeout(3):
            assert await reader.read() == b""
        assert time.monotonic() - started < 2
        writer.close()
        await server.shutdown(grace=1)

    run(main())


@pytest.mark.parametrize("http2", [False, True])
def test_head_requests_get_headers_only_and_repeated_headers_are_joined(http2: bool) -> None:
    async def main() -> None:
        async def handler(request: HttpRequest, response: HttpResponse) -> None:
            await response.respond(
                200,
                [
                    ("content-type", "text/plain"),
                    ("x-accept", request.headers.get("accept", "")),
                    ("x-cookie", request.headers.get("cookie", "")),
                ],
                b"twelve bytes",
            )

        server = HttpServer(handler)
        await server.start()
        async with httpx.AsyncClient(http1=not http2, http2=http2) as c:
            url = f"http://127.0.0.1:{server.port}/healthz"
            r = await c.head(url)
            assert (r.status_code, r.headers["content-length"], r.content) == (200, "12", b"")
            r = await c.get(url, headers=[("accept", "a"), ("accept", "b"), ("cookie", "x=1")])
            assert r.content == b"twelve bytes"
            assert r.headers["x-accept"] == "a, b"
            assert r.headers["x-cookie"] == "x=1"
            r = await c.get(url)  # the connection is still in sync after the HEAD
            assert r.content == b"twelve bytes"
        await server.shutdown(grace=1)

    run(main())


def test_h1_request_body_is_read_with_backpressure() -> None:
    async def main() -> None:
        release = asyncio.Event()
        buffered: list[int] = []
        received = 0

        async def handler(request: HttpRequest, response: HttpResponse) -> None:
            nonlocal received
            await release.wait()
            async for chunk in request.stream():
                received += len(chunk)
            await response.respond(200, [], str(received).encode())

        config = ServerConfig(read_high_water=64 * 1024)
        server = HttpServer(handler, config=config)
        await server.start()
        total = 64 * 1024 * 1024
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % total)
        sent = 0
        block = b"u" * (1024 * 1024)
        try:
            while sent < total:
                writer.write(block)
                sent += len(block)
                await asyncio.wait_for(writer.drain(), 0.5)
        except TimeoutError:
            pass
        # The server stopped reading: the client could not push everything, and what the
        # server holds (h11's buffer) stays near the high-water mark.
        assert sent < total
        for connection in server._state.connections:
            buffered.append(len(connection._conn.trailing_data[0]))  # type: ignore[attr-defined]
        assert buffered and max(buffered) <= 64 * 1024 + 256 * 1024
        release.set()
        while sent < total:
            writer.write(block)
            sent += len(block)
            await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert await reader.readexactly(len(str(total))) == str(total).encode()
        writer.close()
        await server.shutdown(grace=1)

    run(main())
