"""HttpServer's HTTP/2 abuse bounds (issue 11, item 5), with the h2 library and hand-built
frames as the attacking client, over TLS as a client connects: rapid reset (CVE-2023-44487)
gets GOAWAY(ENHANCE_YOUR_CALM), control-frame floods from a peer that never reads are cut,
what is queued for such a peer stays bounded, a header block cannot grow without bound,
handlers cannot pile up behind resets, and the process-wide request cap answers 503."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import httpx
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from runtimes.netio import (
    HttpRequest,
    HttpResponse,
    HttpServer,
    ServerConfig,
    client_context,
)
from tests.runtimes.test_netio_h2 import make_tls, run

CALM = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
REQUEST = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"localhost"),
           (b":path", b"/work")]


def frames_in(data: bytes) -> list[Frame]:
    """The frames in what the server sent (after a partial last frame, nothing)."""
    frames, view = [], memoryview(data)
    while len(view) >= 9:
        frame, length = Frame.parse_frame_header(view[:9])
        if len(view) < 9 + length:
            break
        frame.parse_body(view[9:9 + length])
        frames.append(frame)
        view = view[9 + length:]
    return frames


class Attacker:
    """An HTTP/2 client over TLS that writes whatever it is given and reads only when told."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.sent = 0
        self.received = bytearray()
        self._watcher: asyncio.Task[None] | None = None

    def watch(self) -> None:
        """Read in the background from now on (see `goaway_seen`)."""
        self._watcher = asyncio.create_task(self._read_all())

    @property
    def goaway_seen(self) -> bool:
        return goaway_code(bytes(self.received)) is not None

    async def _read_all(self) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while chunk := await self.reader.read(65536):
                self.received += chunk

    @classmethod
    async def connect(cls, port: int, ca_file: Path | None, *,
                      buffers: int | None = None) -> Attacker:
        """TLS with ALPN h2, or h2c prior knowledge without ``ca_file``."""
        sock = socket.socket()
        if buffers is not None:  # small kernel buffers: what is sent is what the server took
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffers)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffers)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        if ca_file is None:
            reader, writer = await asyncio.open_connection(sock=sock)
        else:
            reader, writer = await asyncio.open_connection(
                sock=sock, ssl=client_context(ca_file=ca_file, alpn=["h2"]),
                server_hostname="localhost")
        attacker = cls(reader, writer)
        await attacker.send(attacker.conn.data_to_send())
        return attacker

    async def send(self, data: bytes) -> bool:
        """Write ``data``; False once the server has closed or reset the connection."""
        try:
            self.writer.write(data)
            async with asyncio.timeout(5):
                await self.writer.drain()
        except (ConnectionError, ssl.SSLError, RuntimeError):
            return False
        self.sent += len(data)
        return not self.writer.transport.is_closing()

    async def read_to_end(self, timeout: float = 5.0) -> bytes:
        """Everything the server sent until it closed the connection (or reset it)."""
        async with asyncio.timeout(timeout):
            if self._watcher is None:
                await self._read_all()
            else:
                await self._watcher
        self.writer.close()
        return bytes(self.received)


def goaway_code(received: bytes) -> int | None:
    goaways = [f for f in frames_in(received) if isinstance(f, GoAwayFrame)]
    return goaways[-1].error_code if goaways else None


async def normal_request_time(port: int, ca_file: Path) -> float:
    """How long a fresh client's ordinary HTTP/2 request takes (it must succeed)."""
    started = time.monotonic()
    async with httpx.AsyncClient(http2=True, verify=client_context(ca_file=ca_file)) as client:
        reply = await client.get(f"https://localhost:{port}/fast")
    assert reply.status_code == 200 and reply.http_version == "HTTP/2"
    return time.monotonic() - started


async def wait_until_idle(server: HttpServer, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while server.connection_count or server.requests_in_flight:
            await asyncio.sleep(0.02)


def calm_reasons(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "tokios.netio.h2")


@pytest.mark.parametrize(("use_uvloop", "paced"), [(False, True), (True, True), (False, False)])
def test_rapid_reset_gets_goaway_enhance_your_calm(tmp_path: Path, use_uvloop: bool,
                                                   paced: bool,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """20,000 streams opened and reset at once. Paced (50 per write, a pause between), so
    the handlers end between reads: the reset budget stops it. All at once: whichever limit
    comes first, the reset budget or the handlers still running."""
    server_ctx, ca_file = make_tls(tmp_path)

    async def main() -> None:
        calls = 0

        async def handler(request: HttpRequest, response: HttpResponse) -> None:
            nonlocal calls
            if request.path == "/fast":
                await response.respond(200, [], b"ok")
                return
            calls += 1
            await response.disconnected.wait()  # a request that works until the client goes

        config = ServerConfig(linger_timeout=0.5)
        server = HttpServer(handler, ssl_context=server_ctx, config=config)
        await server.start()
        attacker = await Attacker.connect(server.port, ca_file)
        attacker.watch()
        conn, opened = attacker.conn, 0
        batch = 50 if paced else 500
        # HEADERS (a request, no END_STREAM), then RST_STREAM at once
        while opened < 20_000 and not attacker.goaway_seen:
            for _ in range(batch):
                stream_id = conn.get_next_available_stream_id()
                conn.send_headers(stream_id, REQUEST)
                conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            opened += batch
            if not await attacker.send(conn.data_to_send()):
                break
            if paced:
                await asyncio.sleep(0.005)
        received = await attacker.read_to_end()
        assert goaway_code(received) == CALM
        reasons = calm_reasons(caplog)
        if paced:
            assert f"more than {config.h2_max_resets} stream resets within 30 s" in reasons
        else:
            assert "stream resets" in reasons or "handlers still running" in reasons
        # the handlers started are bounded by the limits, not by what the client sent
        assert calls <= config.h2_max_resets + 2 * config.max_h2_streams
        await wait_until_idle(server)
        assert await normal_request_time(server.port, ca_file) < 1
        await server.shutdown(grace=1)

    run(main(), use_uvloop=use_uvloop)


def flood_frame(kind: str) -> bytes:
    if kind == "ping":
        return PingFrame(0, opaque_data=b"12345678").serialize()
    if kind == "settings":
        return SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 65535}).serialize()
    if kind == "priority":
        return PriorityFrame(1, depends_on=0, stream_weight=15).serialize()
    if kind == "window_update":
        return WindowUpdateFrame(0, window_increment=1).serialize()
    assert kind == "empty_data"
    return DataFrame(1).serialize()


@pytest.mark.parametrize("kind", ["ping", "settings", "priority", "window_update",
                                  "empty_data"])
def test_control_frame_flood_from_a_peer_that_never_reads_is_cut(
        tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    server_ctx, ca_file = make_tls(tmp_path)

    async def main() -> None:
        async def handler(request: HttpRequest, response: HttpResponse) -> None:
            if request.path == "/fast":
                await response.respond(200, [], b"ok")
                return
            await response.disconnected.wait()

        config = ServerConfig(linger_timeout=0.5)
        server = HttpServer(handler, ssl_context=server_ctx, config=config)
        await server.start()
        attacker = await Attacker.connect(server.port, ca_file)
        attacker.conn.send_headers(1, REQUEST)  # stream 1 stays open (for empty DATA)
        await attacker.send(attacker.conn.data_to_send())
        frame = flood_frame(kind)
        started = time.monotonic()
        sent_frames = 0
        for _ in range(50):  # 5,000 frames, never reading the answers
            if not await attacker.send(frame * 100):
                break
            sent_frames += 100
        received = await attacker.read_to_end()  # only now: what was queued, then the end
        assert goaway_code(received) == CALM
        assert "control frames within 30 s" in calm_reasons(caplog)
        assert time.monotonic() - started < 3
        acks = sum(1 for f in frames_in(received) if isinstance(f, PingFrame | SettingsFrame)
                   and "ACK" in f.flags)
        # answered at most up to the budget (plus what the one request earned)
        assert acks <= config.h2_max_control_frames + 10
        await wait_until_idle(server)
        assert await normal_request_time(server.port, ca_file) < 1
        await server.shutdown(grace=1)

    run(main())


def test_answers_queued_for_a_peer_that_never_reads_are_bounded(
        caplog: pytest.LogCaptureFixture) -> None:
    """With the control-frame budget out of the way, a PING flood from a client that reads
    nothing fills the server's write buffer with PING ACKs: the connection is aborted once
    h2_max_queued_control bytes of them wait, so the server's memory for it stays bounded.
    Plain h2c with small kernel buffers on both ends, so that what the client managed to send
    is what the server took in (a TLS client keeps reading and decrypting into its own
    buffers even when its application stops reading)."""

    async def main() -> None:
        async def handler(request: HttpRequest, response: HttpResponse) -> None:
            await response.respond(200, [], b"ok")

        config = ServerConfig(h2_max_control_frames=10**9, h2_max_queued_control=64 * 1024)
        listener = socket.socket()
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):  # inherited on accept
            listener.setsockopt(socket.SOL_SOCKET, option, 8192)
        listener.bind(("127.0.0.1", 0))
        server = HttpServer(handler, config=config)
        await server.start(sock=listener)
        attacker = await Attacker.connect(server.port, None, buffers=8192)
        attacker.writer.transport.pause_reading()
        async with asyncio.timeout(3):
            while server.connection_count == 0:  # the server's side of the handshake is done
                await asyncio.sleep(0.01)
        ping = PingFrame(0, opaque_data=b"12345678").serialize()
        sent = 0
        cut = False
        while sent < 300_000:  # 5 MB of PINGs: far more than buffers and the bound hold
            if not await attacker.send(ping * 1000):
                cut = True
                break
            sent += 1000
            if server.connection_count == 0:
                cut = True
                break
        assert cut, "the server kept queueing PING ACKs for a client that reads nothing"
        async with asyncio.timeout(3):
            while "queued while it does not read" not in calm_reasons(caplog):
                await asyncio.sleep(0.02)
        # in 17-byte ACKs: the bound, the write high-water mark, one read's worth of answers
        # (256 KiB) and the kernel buffers; without the bound it would be all 300,000
        assert sent * 17 < 64 * 1024 + 64 * 1024 + 256 * 1024 + 128 * 1024
        attacker.writer.transport.abort()
        await wait_until_idle(server)
        await server.shutdown(grace=1)

    run(main())


def test_an_endless_header_block_is_cut(tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    server_ctx, ca_file = make_tls(tmp_path)

    async def main() -> None:
        async def handler(request: HttpRequest, response: HttpResponse) -> None:
            await response.respond(200, [], b"ok")

        config = ServerConfig(h2_max_header_block=32 * 1024, linger_timeout=0.5)
        server = HttpServer(handler, ssl_context=server_ctx, config=config)
        await server.start()
        attacker = await Attacker.connect(server.port, ca_file)
        block = [HeadersFrame(1, data=b"\x00" * 16_000).serialize()]  # no END_HEADERS
        block += [ContinuationFrame(1, data=b"\x00" * 16_000).serialize() for _ in range(10)]
        for frame in block:
            if not await attacker.send(frame):
                break
        received = await attacker.read_to_end()
        assert goaway_code(received) == CALM
        assert "a header block of more than 32768 bytes" in calm_reasons(caplog)
        await wait_until_idle(server)
        await server.shutdown(grace=1)

    run(main())


def test_handlers_cannot_pile_up_behind_resets(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """Streams reset faster than their handlers end (a handler that ignores the reset):
    more than twice SETTINGS_MAX_CONCURRENT_STREAMS handlers running ends the connection."""
    server_ctx, ca_file = make_tls(tmp_path)

    async def main() -> None:
        calls = 0
        release = asyncio.Event()

        async def handler(request: HttpRequest, response: HttpResponse) -> None:
            nonlocal calls
            calls += 1
            await release.wait()

        config = ServerConfig(max_h2_streams=10, h2_max_resets=10**6, linger_timeout=0.5)
        server = HttpServer(handler, ssl_context=server_ctx, config=config)
        await server.start()
        attacker = await Attacker.connect(server.port, ca_file)
        conn = attacker.conn
        for _ in range(5):
            for _ in range(10):
                stream_id = conn.get_next_available_stream_id()
                conn.send_headers(stream_id, REQUEST)
                conn.reset_stream(stream_id)
            if not await attacker.send(conn.data_to_send()):
                break
            await asyncio.sleep(0.05)
        received = await attacker.read_to_end()
        assert goaway_code(received) == CALM
        assert "more than 20 handlers still running" in calm_reasons(caplog)
        assert calls == 2 * config.max_h2_streams
        release.set()
        await wait_until_idle(server)
        await server.shutdown(grace=1)

    run(main())


@pytest.mark.parametrize("http2", [False, True])
def test_requests_over_max_requests_get_503(tmp_path: Path, http2: bool) -> None:
    server_ctx, ca_file = make_tls(tmp_path)

    async def main() -> None:
        release = asyncio.Event()

        async def handler(request: HttpRequest, response: HttpResponse) -> None:
            await release.wait()
            await response.respond(200, [], b"ok")

        server = HttpServer(handler, ssl_context=server_ctx, config=ServerConfig(max_requests=2))
        await server.start()
        url = f"https://localhost:{server.port}/"

        async def get() -> httpx.Response:  # one connection each (httpx cannot interleave)
            async with httpx.AsyncClient(http2=http2,
                                         verify=client_context(ca_file=ca_file)) as client:
                return await client.get(url)

        held = [asyncio.create_task(get()) for _ in range(2)]
        async with asyncio.timeout(3):
            while server.requests_in_flight < 2:
                await asyncio.sleep(0.01)
        refused = await get()
        assert refused.status_code == 503
        assert b"retry" in refused.content
        release.set()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
        assert (await get()).status_code == 200
        assert server.requests_in_flight == 0
        await server.shutdown(grace=1)

    run(main())
