"""UpstreamPool against a raw asyncio HTTP/1.1 server (h11 on the server side)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import h11
import pytest
import trustme

from runtimes.netio import UpstreamError, UpstreamPool, client_context, server_context
from runtimes.upstream_http import Failure, Received, ResponseHead


def run(coro: Coroutine[Any, Any, None]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro, 30)

    asyncio.run(bounded())


class FakeUpstream:
    """A model server stand-in: counts accepts, streams, notices disconnects."""

    def __init__(self) -> None:
        self.accepts = 0
        self.open_now = 0
        self.max_open = 0
        self.requests: list[tuple[str, str, bytes, dict[str, str]]] = []
        self.chunk_seen = asyncio.Event()
        self.disconnected_at: float | None = None
        self.server: asyncio.Server | None = None

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> int:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0, ssl=ssl_context)
        return int(self.server.sockets[0].getsockname()[1])

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepts += 1
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = await self.read_request(conn, reader)
                if request is None:
                    return
                keep = await self.respond(conn, writer, request, body)
                if not keep or conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError):
            pass
        finally:
            self.open_now -= 1
            writer.close()

    async def read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> tuple[h11.Request | None, bytes]:
        request = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return request, body
            else:
                return None, b""

    async def respond(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        request: h11.Request,
        body: bytes,
    ) -> bool:
        path = request.target.decode()
        headers = {k.decode(): v.decode() for k, v in request.headers}
        self.requests.append((request.method.decode(), path, body, headers))

        def send(event: Any) -> None:
            writer.write(conn.send(event))

        if path == "/json":
            payload = b'{"echo": "' + body + b'"}'
            send(h11.Response(status_code=200, headers=[("content-length", str(len(payload)))]))
            send(h11.Data(data=payload))
            send(h11.EndOfMessage())
        elif path == "/stream":
            send(h11.Response(status_code=200, headers=[("content-type", "text/event-stream")]))
            send(h11.Data(data=b"data: 1\n\n"))
            await writer.drain()
            await asyncio.wait_for(self.chunk_seen.wait(), 5)  # the client saw chunk 1 first
            send(h11.Data(data=b"data: 2\n\n"))
            send(h11.EndOfMessage())
        elif path == "/forever":
            send(h11.Response(status_code=200, headers=[("content-type", "text/event-stream")]))
            try:
                while True:
                    send(h11.Data(data=b"data: token\n\n"))
                    await writer.drain()
                    if writer.transport.is_closing():
                        raise ConnectionResetError
                    await asyncio.sleep(0.02)
            except ConnectionError:
                self.disconnected_at = time.monotonic()
                return False
        elif path == "/close":
            send(h11.Response(status_code=200, headers=[("connection", "close")]))
            send(h11.Data(data=b"bye"))
            send(h11.EndOfMessage())
        elif path == "/slow":
            await asyncio.sleep(1)
            send(h11.Response(status_code=204, headers=[]))
            send(h11.EndOfMessage())
        elif path == "/big":
            send(h11.Response(status_code=200, headers=[("content-length", "1000000")]))
            send(h11.Data(data=b"x" * 1_000_000))
            send(h11.EndOfMessage())
        elif path == "/wait":
            await asyncio.sleep(0.2)
            send(h11.Response(status_code=200, headers=[("content-length", "2")]))
            send(h11.Data(data=b"ok"))
            send(h11.EndOfMessage())
        else:
            send(h11.Response(status_code=404, headers=[("content-length", "0")]))
            send(h11.EndOfMessage())
        await writer.drain()
        return True

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


def test_content_length_bodies_and_keep_alive_reuse() -> None:
    async def main() -> None:
        upstream = FakeUpstream()
        port = await upstream.start()
        pool = UpstreamPool(f"http://127.0.0.1:{port}", max_connections=4)
        for i in range(5):
            head, body = await pool.fetch(
                "POST", "/json", [("content-type", "application/json")], f"n{i}".encode(),
                limit=1000)
            assert head.status == 200
            assert head.header("Content-Length") == str(len(f'{{"echo": "n{i}"}}'))
            assert body == f'{{"echo": "n{i}"}}'.encode()
        head, body = await pool.fetch("GET", "/missing", limit=10)
        assert (head.status, body) == (404, b"")
        assert upstream.accepts == 1  # one connection, kept alive for all six requests
        assert pool.connects == 1
        method, path, body, headers = upstream.requests[0]
        assert (method, path, body) == ("POST", "/json", b"n0")
        assert headers["host"] == f"127.0.0.1:{port}"
        assert headers["content-length"] == "2"
        await pool.aclose()
        await upstream.stop()

    run(main())


def test_chunked_streaming_yields_each_chunk_as_it_arrives() -> None:
    async def main() -> None:
        upstream = FakeUpstream()
        port = await upstream.start()
        pool = UpstreamPool(f"http://127.0.0.1:{port}")
        chunks = []
        async with pool.exchange("GET", "/stream") as exchange:
            head = await exchange.receive(None)
            assert isinstance(head, ResponseHead)
            assert head.header("transfer-encoding") == "chunked"
            while (event := await exchange.receive(None)) is not Received.END:
                assert isinstance(event, bytes)
                chunks.append(event)
                if b"data: 1" in event:
                    upstream.chunk_seen.set()
        assert b"".join(chunks) == b"data: 1\n\ndata: 2\n\n"
        assert chunks[0] == b"data: 1\n\n"
        await pool.fetch("GET", "/json", limit=100)  # reused after a chunked body
        assert upstream.accepts == 1
        await pool.aclose()
        await upstream.stop()

    run(main())


def test_leaving_early_aborts_the_connection_so_the_upstream_stops() -> None:
    async def main() -> None:
        upstream = FakeUpstream()
        port = await upstream.start()
        pool = UpstreamPool(f"http://127.0.0.1:{port}")
        async with pool.exchange("POST", "/forever", body=b"{}") as exchange:
            assert isinstance(await exchange.receive(None), ResponseHead)
            assert isinstance(await exchange.receive(None), bytes)
        left_at = time.monotonic()
        async with asyncio.timeout(1):
            while upstream.disconnected_at is None:
                await asyncio.sleep(0.01)
        assert upstream.disconnected_at - left_at < 1
        # An exception inside the block aborts too, and the next request opens a new connection.
        with pytest.raises(RuntimeError):
            async with pool.exchange("GET", "/stream"):
                raise RuntimeError("consumer failed")
        head, _ = await pool.fetch("GET", "/json", limit=100)
        assert head.status == 200
        assert upstream.accepts == 3
        await pool.aclose()
        await upstream.stop()

    run(main())


def test_connection_close_timeouts_limits_and_errors() -> None:
    async def main() -> None:
        upstream = FakeUpstream()
        port = await upstream.start()
        pool = UpstreamPool(f"http://127.0.0.1:{port}", read_timeout=0.3)
        assert (await pool.fetch("GET", "/close", limit=10))[1] == b"bye"
        await pool.fetch("GET", "/json", limit=100)
        assert upstream.accepts == 2  # "connection: close" was honoured: not reused
        started = time.monotonic()
        with pytest.raises(UpstreamError, match="timed out"):
            await pool.fetch("GET", "/slow", limit=100)
        assert time.monotonic() - started < 1
        async with pool.exchange("GET", "/slow") as exchange:  # an exchange's own deadline
            loop = asyncio.get_running_loop()
            assert await exchange.receive(loop.time() + 0.1) is Received.IDLE
            assert isinstance(await exchange.receive(loop.time() + 5), ResponseHead)
        with pytest.raises(UpstreamError, match="exceeds"):
            await pool.fetch("GET", "/big", limit=1000)
        await pool.aclose()
        await upstream.stop()
        closed = UpstreamPool(f"http://127.0.0.1:{port}", connect_timeout=1)
        with pytest.raises(UpstreamError, match="connect failed") as failed:
            await closed.fetch("GET", "/json", limit=100)
        assert failed.value.failure is Failure.CONNECT
        with pytest.raises(ValueError):
            UpstreamPool("ftp://example")

    run(main())


def test_max_connections_bounds_concurrent_connections() -> None:
    async def main() -> None:
        upstream = FakeUpstream()
        port = await upstream.start()
        pool = UpstreamPool(f"http://127.0.0.1:{port}", max_connections=2)

        async def one() -> bytes:
            return (await pool.fetch("GET", "/wait", limit=10))[1]

        results = await asyncio.gather(*(one() for _ in range(6)))
        assert results == [b"ok"] * 6
        assert upstream.max_open == 2
        assert upstream.accepts == 2
        await pool.aclose()
        await upstream.stop()

    run(main())


def test_a_kept_alive_connection_closed_by_the_upstream_is_replaced() -> None:
    async def main() -> None:
        accepts = 0

        async def one_shot(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepts
            accepts += 1
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
            writer.close()  # closes without saying so: the pooled connection is stale

        server = await asyncio.start_server(one_shot, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = UpstreamPool(f"http://127.0.0.1:{port}")
        for pause in (0.05, 0.05, 0, 0):  # with or without time to notice the FIN first
            assert (await pool.fetch("GET", "/", limit=10))[1] == b"ok"
            if pause:
                await asyncio.sleep(pause)
        assert accepts == 4
        await pool.aclose()
        server.close()

    run(main())


def test_https_upstream_with_a_private_ca(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert_file = tmp_path / "up.pem"
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    async def main() -> None:
        upstream = FakeUpstream()
        port = await upstream.start(server_context(cert_file, alpn=()))
        pool = UpstreamPool(
            f"https://localhost:{port}", ssl_context=client_context(ca_file=ca_file)
        )
        for _ in range(2):
            assert (await pool.fetch("POST", "/json", body=b"tls", limit=100))[1] == \
                b'{"echo": "tls"}'
        assert upstream.accepts == 1
        await pool.aclose()
        untrusted = UpstreamPool(f"https://localhost:{port}")  # system roots only
        with pytest.raises(UpstreamError, match="connect failed"):
            await untrusted.fetch("GET", "/json", limit=100)
        await upstream.stop()

    run(main())
