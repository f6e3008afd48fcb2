"""What the tunnel costs, against calling the upstream directly (issue 6, items 4 and 5).

    .venv/bin/python -m bench tunnel [--quick] [--runtime asyncio uvloop threaded]

Everything runs on loopback, each part in its own process: a raw uvloop HTTP/1.1 upstream
serving fixed OpenAI-compatible answers (so it is never the bottleneck), ``tokios-gateway
serve`` with TLS from a trustme CA, and ``tokios-connector`` dialling it over ``wss://``
(restarted once per connector runtime, against the same gateway and upstream). Clients talk
HTTPS to the gateway and plain HTTP to the upstream ("direct"). It prints one markdown table per
section:

- non-streaming: req/s, p50 and p99 at concurrency 1, 32 and 256 (wrk, HTTP/1.1 keep-alive),
  direct and through the tunnel, with the ratio;
- streaming: time to first byte and total for a 1,000-event SSE answer, and the time the
  tunnel adds per event;
- concurrency: N streams open at once over one tunnel (the upstream holds each one open), all
  must complete; completion-time p50, p99 and their ratio;
- bulk: 10 MB request bodies, MB/s;
- gateway memory: RSS per idle tunnel (light in-process connectors doing the real wss + HELLO
  handshake) and per open stream (with its client's HTTPS connection).

Every step has a time limit. A missing tool (wrk) is named with the command to install it and
its rows are skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import platform
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.e2e.stack import Proc, Stack, admin, wait_for  # noqa: E402

SMALL_CHAT = {"model": "coder", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
MARK = re.compile(rb"bench:events=(\d+);hold=(\d+)")
STREAM_EVENTS = 1000

# -- the upstream: raw uvloop HTTP/1.1, fixed bodies ---------------------------------------


def _chat_body() -> bytes:
    return orjson.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1735000000,
        "model": "m", "choices": [{"index": 0, "finish_reason": "stop",
                                   "message": {"role": "assistant", "content": "Hello there."}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}})


def _sse_parts(events: int) -> tuple[bytes, bytes]:
    """The first event, then the rest (``events`` content chunks in all, then [DONE])."""
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return b"data: " + orjson.dumps({
            "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1735000000,
            "model": "m", "choices": [{"index": 0, "delta": delta,
                                       "finish_reason": finish}]}) + b"\n\n"
    first = chunk({"role": "assistant", "content": "w0 "})
    rest = b"".join(chunk({"content": f"w{i} "}) for i in range(1, events))
    return first, rest + chunk({}, "stop") + b"data: [DONE]\n\n"


class _UpstreamProtocol(asyncio.Protocol):
    chat = _chat_body()
    chat_head = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                 + str(len(chat)).encode() + b"\r\n\r\n")
    sse_cache: ClassVar[dict[int, tuple[bytes, bytes]]] = {}

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            match = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
            size = int(match.group(1)) if match else 0
            if len(self.buf) < end + 4 + size:
                return
            body = bytes(self.buf[end + 4:end + 4 + size])
            del self.buf[:end + 4 + size]
            self.answer(head, body)

    def answer(self, head: bytes, body: bytes) -> None:
        assert self.transport is not None
        if not head.startswith(b"post"):
            self.transport.write(self.chat_head + self.chat)
            return
        if b'"stream":true' not in body and b'"stream": true' not in body:
            self.transport.write(self.chat_head + self.chat)
            return
        mark = MARK.search(body)
        events, hold = (int(mark.group(1)), int(mark.group(2))) if mark else (STREAM_EVENTS, 0)
        parts = self.sse_cache.get(events)
        if parts is None:
            parts = self.sse_cache[events] = _sse_parts(events)
        first, rest = parts
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"cache-control: no-cache\r\ncontent-length: "
                             + str(len(first) + len(rest)).encode() + b"\r\n\r\n" + first)
        if hold:
            asyncio.get_running_loop().call_later(hold / 1000, self.transport.write, rest)
        else:
            self.transport.write(rest)


def serve_upstream() -> None:
    """Run the upstream until killed; print ``port N`` once listening."""
    import uvloop

    async def run() -> None:
        server = await asyncio.get_running_loop().create_server(
            _UpstreamProtocol, "127.0.0.1", 0, backlog=4096)
        print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Event().wait()

    uvloop.run(run())


@dataclass
class _Upstream:
    base_url: str


# -- the stack -----------------------------------------------------------------------------


@dataclass
class BenchStack(Stack):
    """The e2e stack with the raw upstream (its own process) and a chosen connector loop."""

    loop: str = "asyncio"
    upstream_proc: Proc | None = None
    max_streams: int = 4096  # the connector CLI's ceiling
    key_count: int = 1
    keys: list[str] = field(default_factory=list)

    def up(self) -> BenchStack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        cert.private_key_pem.write_to_path(str(self.workdir / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(self.workdir / "cert.pem"))
        self.upstream_proc = Proc("upstream", [sys.executable, "-c",
                                               "from bench.tunnel import serve_upstream; "
                                               "serve_upstream()"],
                                  self.workdir / "upstream.log")
        self.upstream_proc.start()

        def listening() -> bool:
            return "port " in self.upstream_proc.log() if self.upstream_proc else False

        wait_for(listening, 20, "the upstream to listen")
        port = int(self.upstream_proc.log().split("port ")[1].split()[0])
        self.upstream = _Upstream(f"http://127.0.0.1:{port}")  # type: ignore[assignment]
        admin(self.data, "tenant", "add", "acme")
        admin(self.data, "deployment", "add", "acme", self.deployment)
        # the gateway allows MAX_STREAMS_PER_KEY (64) streams at once per API key: spread
        # concurrent clients over several keys
        self.keys = [admin(self.data, "key", "add", "acme", "--name", f"bench{i}")["key"]
                     for i in range(self.key_count)]
        self.key = self.keys[0]
        token = admin(self.data, "connector-token", "add", "acme", "--deployment", self.deployment)
        self.token, self.token_id = token["token"], token["id"]
        self.start_gateway()
        return self

    def connector_argv(self, token: str | None = None) -> list[str]:
        argv = super().connector_argv(token)
        if self.runtime == "asyncio":
            argv += ["--loop", self.loop]
        return [*argv, "--log-level", "warning", "--max-concurrent-streams",
                str(self.max_streams)]

    def restart_gateway(self) -> None:
        """A fresh gateway process (same data dir), so memory figures start from a clean heap."""
        if self.connector is not None:
            self.connector.stop()
        if self.gateway is not None:
            self.gateway.stop()
        self.start_gateway()

    def use_runtime(self, runtime: str) -> None:
        self.restart_gateway()
        self.runtime, self.loop = ("threaded", "-") if runtime == "threaded" else \
            ("asyncio", runtime)
        self.start_connector()
        try:
            self.wait_served()
        except AssertionError:
            assert self.connector is not None
            print(self.connector.log()[-3000:], file=sys.stderr)
            raise

    def down(self) -> None:
        for proc in (self.connector, self.gateway, self.upstream_proc):
            if proc is not None:
                proc.stop()
        self.bg.stop()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# -- non-streaming: wrk --------------------------------------------------------------------

WRK_INSTALL = "sudo apt-get install wrk"


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: str
    requests: int = 0


def _ms(text: str) -> float:
    value = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert value, text
    return float(value.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[value.group(2)]


def wrk(url: str, connections: int, seconds: float, workdir: Path,
        keys: list[str]) -> WrkResult:
    """wrk POSTing the small chat; each request takes the next of ``keys`` (if any)."""
    script = workdir / "post.lua"
    lines = ['wrk.method = "POST"', f"wrk.body = [[{orjson.dumps(SMALL_CHAT).decode()}]]",
             'wrk.headers["content-type"] = "application/json"']
    if keys:
        lines += ["keys = {" + ", ".join(f'"Bearer {k}"' for k in keys) + "}", "n = 0",
                  "request = function()", "  n = n + 1",
                  '  wrk.headers["authorization"] = keys[n % #keys + 1]',
                  "  return wrk.format()", "end"]
    script.write_text("\n".join(lines) + "\n")
    threads = 1 if connections == 1 else 2
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d",
                          f"{seconds:g}s", "--latency", "--timeout", "10s", "-s", str(script),
                          url], capture_output=True, text=True, timeout=seconds + 30,
                         check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = []
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors.append(f"{m.group(1)} non-2xx")
    if m := re.search(r"Socket errors: (.*)", out):
        errors.append(m.group(1))
    done = re.search(r"(\d+) requests in", out)
    return WrkResult(rps, p50, p99, "; ".join(errors), int(done.group(1)) if done else 0)


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` in clock ticks (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def cpu_per_request(stack: BenchStack, seconds: float) -> list[list[str]]:
    """CPU time per request of the gateway, the connector and the raw upstream, measured from
    /proc/PID/stat around a wrk run at each concurrency (the 'Latency at c=1' table)."""
    assert stack.gateway and stack.connector and stack.upstream_proc
    pids = (stack.gateway.pid, stack.connector.pid, stack.upstream_proc.pid)
    tick = os.sysconf("SC_CLK_TCK")
    rows = []
    for connections in (1, 2, 4, 8, 16, 32, 64):
        before = [cpu_ticks(pid) for pid in pids]
        result = wrk(f"{stack.base_url}/v1/chat/completions", connections, seconds,
                     stack.workdir, stack.keys)
        spent = [cpu_ticks(pid) - start for pid, start in zip(pids, before, strict=True)]
        per = [ticks / tick * 1e6 / max(1, result.requests) for ticks in spent]
        rows.append([str(connections), f"{result.rps:,.0f}", *(f"{us:.0f}" for us in per)])
    return rows


# -- raw asyncio HTTPS/HTTP client for streams ---------------------------------------------


async def _one_stream(host: str, port: int, ctx: ssl.SSLContext | None, key: str,
                      body: bytes, *, started: float | None = None) -> tuple[float, float, int]:
    """POST one streaming request; return (first byte, done) seconds after ``started`` (default:
    once connected, so a TLS handshake is not counted) and the count of ``data:`` events."""
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx,
                                                   server_hostname=host if ctx else None)
    if started is None:
        started = time.perf_counter()
    try:
        auth = f"authorization: Bearer {key}\r\n" if key else ""
        writer.write(f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\n{auth}"
                     f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
                     "connection: close\r\n\r\n".encode() + body)
        first = 0.0
        tail = b""
        events = 0
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if not first:
                first = time.perf_counter() - started
                if not data.startswith(b"HTTP/1.1 200") and os.environ.get("BENCH_DEBUG"):
                    print(data[:400], file=sys.stderr)
            events += data.count(b"data: ")
            tail = (tail + data)[-64:]
            if b"data: [DONE]" in tail:
                break
        return first, time.perf_counter() - started, events
    finally:
        writer.transport.abort()  # done reading: no need for a graceful TLS close


def _stream_body(events: int, hold_ms: int) -> bytes:
    chat = {**SMALL_CHAT, "stream": True, "max_tokens": events * 2,
            "messages": [{"role": "user", "content": f"bench:events={events};hold={hold_ms}"}]}
    return orjson.dumps(chat)


def stream_once(url: str, ctx: ssl.SSLContext | None, key: str,
                events: int) -> tuple[float, float, int]:
    host, port = url.split("//")[1].split(":")

    async def run() -> tuple[float, float, int]:
        return await asyncio.wait_for(
            _one_stream(host, int(port), ctx, key, _stream_body(events, 0)), 60)

    return asyncio.run(run())


#: Streams per HTTP/2 connection of the h2 client: the gateway's SETTINGS_MAX_CONCURRENT_STREAMS
#: (runtimes.netio.ServerConfig.max_h2_streams).
H2_STREAMS_PER_CONNECTION = 100


async def _h2_streams(host: str, port: int, ctx: ssl.SSLContext, keys: list[str], body: bytes,
                      *, started: float) -> list[tuple[float, float, int]]:
    """One HTTP/2 connection carrying ``len(keys)`` streaming POSTs at once (stream i uses
    ``keys[i]``); per stream (first byte, done) seconds after ``started`` and its ``data:``
    count (0 for a reset or non-200 stream)."""
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings

    reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding=None))
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    first: dict[int, float] = {}
    done: dict[int, float] = {}
    bodies: dict[int, bytearray] = {}
    ok: dict[int, bool] = {}
    sent = False
    try:
        while not sent or len(done) < len(keys):
            data = await reader.read(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RemoteSettingsChanged) and not sent:
                    limit = conn.remote_settings.max_concurrent_streams
                    assert len(keys) <= limit, (len(keys), limit)
                    for key in keys:
                        sid = conn.get_next_available_stream_id()
                        bodies[sid] = bytearray()
                        conn.send_headers(sid, [
                            (b":method", b"POST"), (b":path", b"/v1/chat/completions"),
                            (b":scheme", b"https"), (b":authority", host.encode()),
                            (b"authorization", f"Bearer {key}".encode()),
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())])
                        conn.send_data(sid, body, end_stream=True)
                    sent = True
                elif isinstance(event, h2.events.ResponseReceived):
                    first[event.stream_id] = time.perf_counter() - started
                    ok[event.stream_id] = dict(event.headers).get(b":status") == b"200"
                elif isinstance(event, h2.events.DataReceived):
                    bodies[event.stream_id] += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length,
                                                   event.stream_id)
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    done[event.stream_id] = time.perf_counter() - started
                    if isinstance(event, h2.events.StreamReset):
                        ok[event.stream_id] = False
            writer.write(conn.data_to_send())
    finally:
        writer.transport.abort()
    now = time.perf_counter() - started
    return [(first.get(sid, now), done.get(sid, now),
             bodies[sid].count(b"data: ") if ok.get(sid) else 0) for sid in bodies]


def many_streams(stack: BenchStack, count: int, hold_ms: int,
                 client: str = "h1") -> dict[str, float]:
    """``count`` streams opened at once; the upstream holds each open ``hold_ms``. Gateway
    RSS is sampled while they are all open. ``client`` "h1": one HTTPS/1.1 connection per
    stream (the gateway accepts 1,024 connections); "h2": HTTP/2 connections carrying
    H2_STREAMS_PER_CONNECTION streams each."""
    ctx = stack.ssl_context()
    host, port = "127.0.0.1", stack.port
    body = _stream_body(20, hold_ms)
    assert stack.gateway is not None
    before = rss_kb(stack.gateway.pid)

    async def run() -> dict[str, float]:
        started = time.perf_counter()
        sem = asyncio.Semaphore(200)  # bound concurrent TLS handshakes, not open streams

        async def one(i: int) -> tuple[float, float, int]:
            async with sem:
                key = stack.keys[i % len(stack.keys)]
                reader_writer = _one_stream(host, port, ctx, key, body, started=started)
                task = asyncio.ensure_future(reader_writer)
                await asyncio.sleep(0)
            return await task

        async def h2_all() -> list[tuple[float, float, int]]:
            h2_ctx = stack.ssl_context()
            h2_ctx.set_alpn_protocols(["h2"])
            keys = [stack.keys[i % len(stack.keys)] for i in range(count)]
            per = H2_STREAMS_PER_CONNECTION
            groups = await asyncio.gather(*(
                _h2_streams(host, port, h2_ctx, keys[i:i + per], body, started=started)
                for i in range(0, count, per)))
            return [r for group in groups for r in group]

        if client == "h2":
            tasks = [asyncio.ensure_future(h2_all())]
        else:
            tasks = [asyncio.ensure_future(one(i)) for i in range(count)]
        peak = before
        while not all(t.done() for t in tasks):
            await asyncio.sleep(0.1)
            peak = max(peak, rss_kb(stack.gateway.pid))  # type: ignore[union-attr]
        results = tasks[0].result() if client == "h2" else [t.result() for t in tasks]
        done = sorted(r[1] for r in results)
        complete = sum(1 for r in results if r[2] >= 21)
        return {"complete": complete, "p50": statistics.median(done),
                "p99": done[int(len(done) * 0.99) - 1], "max": done[-1],
                "rss_per_stream_kb": (peak - before) / count}

    return asyncio.run(asyncio.wait_for(run(), 60 + hold_ms / 1000 + count / 50))


# -- idle tunnels: light in-process connectors ---------------------------------------------


def idle_tunnels(stack: BenchStack, count: int) -> tuple[int, float]:
    """Open ``count`` tunnels (real wss + HELLO/WELCOME) after 20 warm-up ones and
    measure the gateway's RSS growth. Returns (tunnels accepted, KB per tunnel)."""
    from runtimes.connector.cli import tunnel_url
    from runtimes.connector.settings import ConnectorSettings, config_for, hello_for
    from runtimes.netio import connect_websocket
    from runtimes.tunnel.pump import Pump
    from tokios_proto import Accepted, ConnectorConnection
    from tokios_translate import BackendKind

    assert stack.gateway is not None
    ctx = stack.ssl_context()
    url = tunnel_url(stack.base_url)

    async def run() -> tuple[int, float]:
        accepted = 0
        pumps: list[asyncio.Task[None]] = []
        sem = asyncio.Semaphore(50)

        async def connect(i: int) -> None:
            nonlocal accepted
            settings = ConnectorSettings(tunnel_url=url, token=stack.token,
                                         upstream=stack.upstream.base_url,  # type: ignore
                                         backend=BackendKind.LLAMACPP,
                                         models={stack.deployment: "m"},
                                         connector_id=f"bench-idle-{i}")
            got = asyncio.Event()

            def on_event(event: object) -> None:
                if isinstance(event, Accepted):
                    got.set()

            async with sem:
                ws = await connect_websocket(url, ssl_context=ctx)
                conn = ConnectorConnection(config_for(settings), hello=hello_for(settings))
                pump = Pump(ws, conn, on_event)
                conn.start(pump.now())
                pumps.append(asyncio.ensure_future(pump.run()))
                await asyncio.wait_for(got.wait(), 30)
                accepted += 1

        async def batch(first: int, n: int) -> None:
            results = await asyncio.gather(*(connect(i) for i in range(first, first + n)),
                                           return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures:
                print(f"  ({len(failures)} tunnels failed: {failures[0]!r})", flush=True)
            await asyncio.sleep(2)  # let the gateway settle (allocator, buffers)

        # a first batch warms the gateway up (TLS, allocator arenas); the figure is the
        # growth from the second batch only. The gateway's HTTP server holds at most 1,024
        # connections (netio ServerConfig.max_connections), tunnels included.
        warm = 20
        await batch(0, warm)
        before, warm_accepted = rss_kb(stack.gateway.pid), accepted  # type: ignore[union-attr]
        await batch(warm, count)
        after = rss_kb(stack.gateway.pid)  # type: ignore[union-attr]
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        measured = accepted - warm_accepted
        return measured, (after - before) / max(1, measured)

    import uvloop
    return uvloop.run(asyncio.wait_for(run(), 120))


def serve_bare_tls(cert: str, key: str) -> None:
    """A uvloop TLS server whose connections do nothing (the floor under an idle tunnel);
    print ``port N`` once listening."""
    import uvloop

    from runtimes.netio import server_context

    async def run() -> None:
        server = await asyncio.get_running_loop().create_server(
            asyncio.Protocol, "127.0.0.1", 0, ssl=server_context(cert, key), backlog=4096)
        print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Event().wait()

    uvloop.run(run())


def bare_tls_floor(stack: BenchStack, count: int) -> float:
    """RSS per idle TLS connection (handshake done, nothing else) of a server on the
    gateway's loop and TLS context: what an idle tunnel costs before any Python object of
    ours. Returns KB per connection."""
    workdir = stack.workdir
    proc = Proc("bare-tls", [sys.executable, "-c",
                             "import sys; from bench.tunnel import serve_bare_tls; "
                             "serve_bare_tls(sys.argv[1], sys.argv[2])",
                             str(workdir / "cert.pem"), str(workdir / "key.pem")],
                workdir / "bare-tls.log")
    proc.start()
    try:
        wait_for(lambda: "port " in proc.log(), 20, "the bare TLS server to listen")
        port = int(proc.log().split("port ")[1].split()[0])
        pid = proc.popen.pid  # type: ignore[union-attr]
        ctx = stack.ssl_context()

        async def run() -> float:
            writers: list[asyncio.StreamWriter] = []
            sem = asyncio.Semaphore(50)

            async def one() -> None:
                async with sem:
                    _, writer = await asyncio.open_connection(
                        "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1")
                    writers.append(writer)

            await asyncio.gather(*(one() for _ in range(20)))
            await asyncio.sleep(1)
            before = rss_kb(pid)
            await asyncio.gather(*(one() for _ in range(count)))
            await asyncio.sleep(2)
            after = rss_kb(pid)
            for writer in writers:
                writer.transport.abort()
            return (after - before) / count

        import uvloop
        return uvloop.run(asyncio.wait_for(run(), 120))
    finally:
        proc.stop()


# -- bulk ----------------------------------------------------------------------------------


def bulk(url: str, ctx: ssl.SSLContext | bool, key: str, megabytes: int, reps: int) -> float:
    import httpx

    content = "x" * (megabytes * 1_000_000 - 100)
    body = orjson.dumps({**SMALL_CHAT, "messages": [{"role": "user", "content": content}]})
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    times = []
    with httpx.Client(verify=ctx, timeout=60) as client:
        for _ in range(reps + 1):
            started = time.perf_counter()
            response = client.post(f"{url}/v1/chat/completions", content=body, headers=headers)
            times.append(time.perf_counter() - started)
            assert response.status_code == 200, response.status_code
    return len(body) / 1e6 / statistics.median(times[1:])


# -- the run -------------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (about a minute)")
    parser.add_argument("--runtime", nargs="+", default=None,
                        choices=("asyncio", "uvloop", "threaded"),
                        help="connector runtimes (default: asyncio uvloop threaded)")
    parser.add_argument("--streams", type=int, default=None,
                        help="concurrent streams over one tunnel (default 1000)")
    parser.add_argument("--tunnels", type=int, default=1000, help="idle tunnels for memory")
    parser.add_argument("--stream-client", choices=("auto", "h1", "h2"), default="auto",
                        help="client of the concurrent-streams rows: h1 (a connection per "
                             "stream), h2 (100 streams per connection); auto: h2 above "
                             "1,000 streams (the gateway accepts 1,024 connections)")
    parser.add_argument("--only-streams", action="store_true",
                        help="just the concurrent-streams rows")
    parser.add_argument("--cpu", action="store_true",
                        help="just the CPU time per request of each process at wrk "
                             "concurrency 1-64, uvloop connector (needs wrk)")
    args = parser.parse_args()
    chosen = args.runtime or ["asyncio", "uvloop", "threaded"]
    if "threaded" in chosen and importlib.util.find_spec("runtimes.connector.threaded") is None:
        print("(threaded connector not available: skipped)")
        chosen.remove("threaded")
    seconds = 2 if args.quick else 8  # wrk takes whole seconds
    reps = 3 if args.quick else 7
    streams = args.streams or 1000
    stream_client = args.stream_client
    if stream_client == "auto":
        stream_client = "h2" if streams > 1000 else "h1"
    only_streams = args.only_streams
    have_wrk = shutil.which("wrk") is not None

    def out_of_time(signum: int, frame: object) -> None:
        raise TimeoutError(f"bench/tunnel: over its {limit} s limit")

    limit = 300 if args.quick else 1200
    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(limit)
    print(f"machine: {machine()}")
    print("load generator: wrk (HTTP/1.1 keep-alive, "
          f"{seconds:g} s per cell) for non-streaming; a raw asyncio client for streams; "
          "httpx for bulk. Upstream: raw uvloop HTTP/1.1 server, fixed bodies, own process.")
    print("TLS on both legs: client -> gateway HTTPS, connector -> gateway wss (trustme CA).")
    if not have_wrk:
        print(f"wrk not found: non-streaming rows skipped (install: {WRK_INSTALL})")
    print(flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        stack = BenchStack(workdir=Path(tmp), backend="llamacpp", upstream_model="m",
                           key_count=max(5, -(-streams // 60)), max_streams=max(4096, streams))
        try:
            stack.up()
            if args.cpu:
                if not have_wrk:
                    raise SystemExit(f"--cpu needs wrk (install: {WRK_INSTALL})")
                stack.use_runtime("uvloop")
                wrk(f"{stack.base_url}/v1/chat/completions", 8, 1, stack.workdir, stack.keys)
                rows = cpu_per_request(stack, 4 if not args.quick else 2)
                print("\n### CPU per request (uvloop connector, /proc/PID/stat around wrk)\n")
                print(table(["wrk connections", "req/s", "gateway µs CPU/request",
                             "connector µs CPU/request", "raw upstream µs CPU/request"], rows))
                return
            assert stack.upstream is not None
            direct_url = stack.upstream.base_url
            ctx = stack.ssl_context()
            nonstream: list[list[str]] = []
            streaming: list[list[str]] = []
            concurrency: list[list[str]] = []
            bulk_rows: list[list[str]] = []
            direct_wrk: dict[int, WrkResult] = {}
            if have_wrk and not only_streams:
                for c in (1, 32, 256):
                    direct_wrk[c] = wrk(f"{direct_url}/v1/chat/completions", c, seconds,
                                        stack.workdir, [])
                    r = direct_wrk[c]
                    nonstream.append(["direct", str(c), f"{r.rps:,.0f}", f"{r.p50_ms:.2f}",
                                      f"{r.p99_ms:.2f}", "1.00", r.errors or "-"])
            d_per = d_bulk = 0.0
            if not only_streams:
                d_ttfb, d_total, d_per = _median_stream(f"{direct_url}", None, "", reps)
                streaming.append(["direct", f"{d_ttfb * 1000:.2f}", f"{d_total * 1000:.1f}",
                                  f"{d_per * 1e6:.1f}", "-"])
                d_bulk = bulk(direct_url, False, "", 10, max(2, reps // 2))
                bulk_rows.append(["direct", f"{d_bulk:.0f}", "1.00"])

            for runtime in chosen:
                name = "threaded" if runtime == "threaded" else f"tunnel ({runtime})"
                print(f"-- {name}", flush=True)
                stack.use_runtime(runtime)
                if only_streams:
                    concurrency.append(_concurrency_row(stack, name, streams, stream_client))
                    continue
                if have_wrk:
                    wrk(f"{stack.base_url}/v1/chat/completions", 8, 1, stack.workdir, stack.keys)
                    for c in (1, 32, 256):
                        r = wrk(f"{stack.base_url}/v1/chat/completions", c, seconds,
                                stack.workdir, stack.keys)
                        ratio = r.rps / direct_wrk[c].rps
                        nonstream.append([name, str(c), f"{r.rps:,.0f}", f"{r.p50_ms:.2f}",
                                          f"{r.p99_ms:.2f}", f"{ratio:.2f}", r.errors or "-"])
                ttfb, total, per = _median_stream(stack.base_url, ctx, stack.key, reps)
                streaming.append([name, f"{ttfb * 1000:.2f}", f"{total * 1000:.1f}",
                                  f"{per * 1e6:.1f}", f"{(per - d_per) * 1e6:.1f}"])
                concurrency.append(_concurrency_row(stack, name, streams, stream_client))
                mbps = bulk(stack.base_url, ctx, stack.key, 10, max(2, reps // 2))
                bulk_rows.append([name, f"{mbps:.0f}", f"{mbps / d_bulk:.2f}"])

            accepted, per_tunnel, floor = 0, 0.0, 0.0
            if not only_streams:
                stack.restart_gateway()
                accepted, per_tunnel = idle_tunnels(stack, args.tunnels)
                floor = bare_tls_floor(stack, args.tunnels)

            if not only_streams:
                print("\n### Non-streaming (small chat request, wrk)\n")
                print(table(["path", "conc.", "req/s", "p50 ms", "p99 ms", "req/s vs direct",
                             "errors"], nonstream))
                print(f"\n### Streaming ({STREAM_EVENTS:,}-event SSE answer, median of {reps})\n")
                print("(timed from the request on an open connection; µs/event: (total - "
                      f"total of a 1-event answer) / {STREAM_EVENTS - 1})\n")
                print(table(["path", "first byte ms", "total ms", "µs/event", "added µs/event"],
                            streaming))
            print("\n### Concurrent streams over one tunnel (upstream holds each 2 s; client "
                  f"{stream_client})\n")
            print(table(["path", "streams", "completed", "p50 s", "p99 s", "p99/p50",
                         "gateway KB/open stream"], concurrency))
            if not only_streams:
                print("\n### Bulk (10 MB request bodies)\n")
                print(table(["path", "MB/s", "vs direct"], bulk_rows))
                print("\n### Gateway memory\n")
                print(table(["idle tunnels accepted", "gateway RSS KB per idle tunnel",
                             "of which TLS alone (bare uvloop TLS connection, same context)"],
                            [[str(accepted), f"{per_tunnel:.1f}", f"{floor:.1f}"]]))
            print(flush=True)
        finally:
            stack.down()


def _concurrency_row(stack: BenchStack, name: str, streams: int, client: str) -> list[str]:
    many = many_streams(stack, streams, 2000, client)
    return [name, str(streams), f"{many['complete']:.0f}", f"{many['p50']:.2f}",
            f"{many['p99']:.2f}", f"{many['p99'] / many['p50']:.2f}",
            f"{many['rss_per_stream_kb']:.1f}"]


def _median_stream(url: str, ctx: ssl.SSLContext | None, key: str,
                   reps: int) -> tuple[float, float, float]:
    """Medians of (first byte, total) of a STREAM_EVENTS-event answer and the time per extra
    event: (total - total of a 1-event answer) / (STREAM_EVENTS - 1). Timed from the request
    on an open connection."""
    stream_once(url, ctx, key, STREAM_EVENTS)  # warm-up
    runs, singles = [], []
    for _ in range(reps):
        first, total, events = stream_once(url, ctx, key, STREAM_EVENTS)
        assert events >= STREAM_EVENTS, events
        runs.append((first, total))
        singles.append(stream_once(url, ctx, key, 1)[1])
    total = statistics.median(r[1] for r in runs)
    per_event = (total - statistics.median(singles)) / (STREAM_EVENTS - 1)
    return statistics.median(r[0] for r in runs), total, per_event


if __name__ == "__main__":
    main()
