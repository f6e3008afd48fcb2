"""HttpServer's HTTP/2 side with a raw h2 client: resets, flow control, GOAWAY, streams."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
import trustme
import uvloop

from runtimes.netio import (
    ClientDisconnected,
    HttpRequest,
    HttpResponse,
    HttpServer,
    ServerConfig,
    client_context,
    server_context,
)


def run(coro: Coroutine[Any, Any, None], *, use_uvloop: bool = False) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro, 30)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop if use_uvloop else None) as runner:
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
    await response.respond(200, [], await request.body(limit=1 << 20))


class RawH2Client:
    """A minimal h2 client to send RST_STREAM and to withhold WINDOW_UPDATEs."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.conn.initiate_connection()
        self.flush()

    @classmethod
    async def connect(cls, port: int, ca_file: Path) -> RawH2Client:
        ctx = client_context(ca_file=ca_file, alpn=["h2"])
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
        )
        return cls(reader, writer)

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)

    def get(self, path: str) -> int:
        stream_id: int = self.conn.get_next_available_stream_id()
        self.conn.send_headers(
            stream_id,
            [
                (b":method", b"GET"),
                (b":path", path.encode()),
                (b":scheme", b"https"),
                (b":authority", b"localhost"),
            ],
            end_stream=True,
        )
        self.flush()
        return stream_id

    async def events(self) -> list[h2.events.Event]:
        data = await self.reader.read(65536)
        if not data:
            return [h2.events.ConnectionTerminated()]
        events: list[h2.events.Event] = self.conn.receive_data(data)
        self.flush()
        return events


@pytest.mark.parametrize("use_uvloop", [False, True])
def test_h2_stream_reset_and_connection_close_are_seen_promptly(
    tmp_path: Path, use_uvloop: bool
) -> None:
    server_ctx, ca_file = make_tls(tmp_path)

    async def main() -> None:
        gone: dict[str, float] = {}

        async def handler(request: HttpRequest, response: HttpResponse) -> None:
            await response.start(200, [("content-type", "text/event-stream")])
            await response.send(b"data: first\n\n")
            await response.disconnected.wait()
            gone[request.path] = time.monotonic()
            with pytest.raises(ClientDisconnected):
                await response.send(b"data: late\n\n")

        server = HttpServer(handler, ssl_context=server_ctx)
        await server.start()
        client = await RawH2Client.connect(server.port, ca_file)
        first = client.get("/reset")
        second = client.get("/kept")
        got_data: set[int] = set()
        while got_data != {first, second}:
            for event in await client.events():
                if isinstance(event, h2.events.DataReceived):
                    got_data.add(event.stream_id)
        client.conn.reset_stream(first)
        client.flush()
        reset_at = time.monotonic()
        async with asyncio.timeout(1):
            while "/reset" not in gone:
                await asyncio.sleep(0.01)
        assert gone["/reset"] - reset_at < 1
        assert "/kept" not in gone  # the other stream is unaffected
        client.writer.close()
        closed_at = time.monotonic()
        async with asyncio.timeout(1):
            while "/kept" not in gone:
                await asyncio.sleep(0.01)
        assert gone["/kept"] - closed_at < 1
        await server.shutdown(grace=1)

    run(main(), use_uvloop=use_uvloop)


@pytest.mark.parametrize("use_uvloop", [False, True])
def test_h2_flow_control_window_makes_send_wait(tmp_path: Path, use_uvloop: bool) -> None:
    server_ctx, ca_file = make_tls(tmp_path)

    async def main() -> None:
        progress: list[int] = []
        blocked = asyncio.Event()

        async def handler(request: HttpRequest, response: HttpResponse) -> None:
            await response.start(200, [])
            total = 0
            try:
                while total < 10 * 1024 * 1024:
                    await asyncio.wait_for(response.send(b"w" * 16384), 0.5)
                    total += 16384
                    progress.append(total)
            except TimeoutError:
                blocked.set()

        server = HttpServer(handler, ssl_context=server_ctx)
        await server.start()
        client = await RawH2Client.connect(server.port, ca_file)
        client.get("/")
        received = 0
        async with asyncio.timeout(5):
            while not blocked.is_set():
                for event in await client.events():  # never acknowledged: no WINDOW_UPDATE
                    if isinstance(event, h2.events.DataReceived):
                        received += len(event.data)
        # The default 65535-byte window is all the server could send.
        assert received <= 65535
        assert max(progress, default=0) <= 65535
        client.writer.close()
        await server.shutdown(grace=1)

    run(main(), use_uvloop=use_uvloop)


def test_h2_request_body_is_acknowledged_only_as_the_handler_reads(tmp_path: Path) -> None:
    server_ctx, ca_file = make_tls(tmp_path)

    async def main() -> None:
        release = asyncio.Event()
        read_total = 0

        async def handler(request: HttpRequest, response: HttpResponse) -> None:
            nonlocal read_total
            await release.wait()
            async for chunk in request.stream():
                read_total += len(chunk)
            await response.respond(200, [], str(read_total).encode())

        config = ServerConfig(h2_stream_window=65535, h2_connection_window=65535)
        server = HttpServer(handler, ssl_context=server_ctx, config=config)
        await server.start()
        client = await RawH2Client.connect(server.port, ca_file)
        await client.events()  # settings
        stream_id = client.conn.get_next_available_stream_id()
        client.conn.send_headers(
            stream_id,
            [
                (b":method", b"POST"),
                (b":path", b"/"),
                (b":scheme", b"https"),
                (b":authority", b"localhost"),
            ],
        )
        body = b"q" * 200_000
        sent = 0
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:  # send what the window allows
            window = client.conn.local_flow_control_window(stream_id)
            if window and sent < len(body):
                n = min(window, client.conn.max_outbound_frame_size, len(body) - sent)
                client.conn.send_data(stream_id, body[sent : sent + n])
                sent += n
                client.flush()
            try:
                async with asyncio.timeout(0.05):
                    await client.events()
            except TimeoutError:
                pass
        assert sent == 65535  # no credit came back: the handler has not read anything
        release.set()
        async with asyncio.timeout(5):
            answer = b""
            while not answer:
                while sent < len(body) and (
                    window := client.conn.local_flow_control_window(stream_id)
                ):
                    n = min(window, client.conn.max_outbound_frame_size, len(body) - sent)
                    end = sent + n == len(body)
                    client.conn.send_data(stream_id, body[sent : sent + n], end_stream=end)
                    sent += n
                client.flush()
                for event in await client.events():
                    if isinstance(event, h2.events.DataReceived):
                        answer += event.data
        assert answer == b"200000"
        client.writer.close()
        await server.shutdown(grace=1)

    run(main())


def test_h2_idle_connection_gets_goaway_on_shutdown(tmp_path: Path) -> None:
    server_ctx, ca_file = make_tls(tmp_path)

    async def main() -> None:
        server = HttpServer(echo_handler, ssl_context=server_ctx)
        await server.start()
        client = await RawH2Client.connect(server.port, ca_file)
        stream_id = client.get("/")
        ended = False
        while not ended:
            ended = any(isinstance(e, h2.events.StreamEnded) for e in await client.events())
        shutdown = asyncio.create_task(server.shutdown(grace=2))
        terminated = []
        async with asyncio.timeout(2):
            while not terminated:
                events = await client.events()
                terminated = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        assert terminated[0].error_code == 0
        assert terminated[0].last_stream_id == stream_id
        await shutdown
        client.writer.close()

    run(main())


def test_many_concurrent_h2_streams_on_one_connection(tmp_path: Path) -> None:
    server_ctx, ca_file = make_tls(tmp_path)

    async def main() -> None:
        peers: set[Any] = set()

        active = 0
        most_active = 0

        async def handler(request: HttpRequest, response: HttpResponse) -> None:
            nonlocal active, most_active
            active += 1
            most_active = max(most_active, active)
            peers.add(request.peer)
            body = await request.body(limit=1 << 20)
            await response.start(200, [("content-type", "text/plain")])
            for part in (body[:10], body[10:]):
                await asyncio.sleep(0.01)
                await response.send(part)
            active -= 1
            await response.end()

        server = HttpServer(handler, ssl_context=server_ctx, config=ServerConfig(max_h2_streams=8))
        await server.start()
        async with httpx.AsyncClient(http2=True, verify=client_context(ca_file=ca_file)) as c:

            async def one(i: int) -> bytes:
                r = await c.post(f"https://localhost:{server.port}/", content=b"%d-" % i * 50)
                assert r.http_version == "HTTP/2"
                return r.content

            results = await asyncio.gather(*(one(i) for i in range(40)))
        assert results == [b"%d-" % i * 50 for i in range(40)]
        assert len(peers) == 1  # one connection carried all 40 streams...
        assert 2 <= most_active <= 8  # ...concurrently, within SETTINGS_MAX_CONCURRENT_STREAMS
        await server.shutdown(grace=1)

    run(main())


def test_h2_write_timeout_resets_a_stream_whose_window_stays_closed(tmp_path: Path) -> None:
    server_ctx, ca_file = make_tls(tmp_path)

    async def main() -> None:
        gave_up = asyncio.Event()

        async def handler(request: HttpRequest, response: HttpResponse) -> None:
            await response.start(200, [])
            try:
                while True:
                    await response.send(b"w" * 16384)
            except ClientDisconnected:
                gave_up.set()
                raise

        server = HttpServer(handler, ssl_context=server_ctx, config=ServerConfig(write_timeout=0.3))
        await server.start()
        client = await RawH2Client.connect(server.port, ca_file)
        stream_id = client.get("/")
        resets = []
        async with asyncio.timeout(3):
            while not resets:
                resets = [e for e in await client.events() if isinstance(e, h2.events.StreamReset)]
        assert resets[0].stream_id == stream_id
        assert gave_up.is_set()
        client.writer.close()
        await server.shutdown(grace=1)

    run(main())
