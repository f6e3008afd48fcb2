"""Throughput of the tunnel core alone: a gateway and a connector joined in memory.

Run: ``.venv/bin/python bench/proto_core.py [--scale S] [--repeats N] [--profile]`` (or
``python -m bench`` for every bench). Prints markdown tables with the Python version and date.

No sockets, no event loop: the figures are the pure state machines' cost, the ceiling a shell
can reach. Each case runs a shell-like loop, as a runtime would:

* **DATA**: the connector answers 1 or 100 open streams with body chunks of 64 B .. 64 KiB
  (``send_data`` of one chunk per stream per round, then ``messages_to_send``); the gateway
  ``receive_data``s each message, drains events and ``acknowledge_received_data``s every
  ``DataReceived``; its WINDOW_UPDATEs go back to the connector. frames/s counts DATA frames
  delivered to the gateway's shell, MB/s their payload (10^6 bytes).
* **streams**: a whole request/response exchange per stream (OPEN + END, RESPONSE + END), one
  at a time or 100 at once.
* **ping**: PING -> PONG round trips, one at a time.

Each figure is the best of ``--repeats`` runs. ``--profile`` adds cProfile's top functions
(by own time) for the 64 B / 1-stream and 64 B / 100-stream DATA cases.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import functools
import io
import platform
import pstats
import time
from collections.abc import Callable
from dataclasses import dataclass

from tokios_proto import (
    ConnectorConnection,
    DataReceived,
    DeploymentOffer,
    GatewayConnection,
    Hello,
    PongReceived,
    RequestHead,
    ResponseReceived,
    Secret,
    StreamEnded,
    StreamOpened,
)

PAYLOAD_SIZES = (64, 1024, 16 * 1024, 64 * 1024)
STREAM_COUNTS = (1, 100)
HEAD = RequestHead(method="POST", path="/v1/chat/completions", deployment="llama",
                   headers=(("content-type", "application/json"),))
NOW = 0.0  # the clock never matters here: no timer is due within a run


@dataclass
class Figure:
    """One measured case: ``units`` of work (frames, streams, pings) and payload bytes."""

    units: int
    payload_bytes: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.units / self.seconds

    @property
    def megabytes_per_second(self) -> float:
        return self.payload_bytes / self.seconds / 1e6


class Link:
    """A handshaken gateway + connector and the shell loop that moves bytes between them."""

    def __init__(self) -> None:
        hello = Hello(credential=Secret("bench-credential"), connector_id="bench",
                      software_version="bench",
                      deployments=(DeploymentOffer(name="llama", upstream_model="llama3"),))
        self.gateway = GatewayConnection()
        self.connector = ConnectorConnection(hello=hello)
        self.gateway.start(NOW)
        self.connector.start(NOW)
        self.to_gateway()
        self.gateway.accept("bench-session", ("llama",), NOW)
        self.to_connector()

    def to_gateway(self) -> tuple[int, int]:
        """Move the connector's output to the gateway and play its shell: acknowledge every
        DataReceived. Returns (DATA frames, payload bytes) delivered."""
        gateway = self.gateway
        frames = size = 0
        for message in self.connector.messages_to_send():
            gateway.receive_data(message, NOW)
            while (event := gateway.next_event()) is not None:
                if type(event) is DataReceived:
                    frames += 1
                    size += event.flow_controlled_length
                    gateway.acknowledge_received_data(
                        stream_id=event.stream_id, acknowledged_size=event.flow_controlled_length)
        return frames, size

    def to_connector(self) -> int:
        """Move the gateway's output to the connector; return the events it produced."""
        connector = self.connector
        count = 0
        for message in self.gateway.messages_to_send():
            connector.receive_data(message, NOW)
            while connector.next_event() is not None:
                count += 1
        return count


def bench_data(payload_size: int, streams: int, total_bytes: int) -> Figure:
    """Response DATA connector -> gateway on ``streams`` streams until ``total_bytes`` moved."""
    link = Link()
    gateway, connector = link.gateway, link.connector
    ids = [gateway.open_stream(HEAD) for _ in range(streams)]
    link.to_connector()
    for stream_id in ids:
        connector.send_response(stream_id, 200)
    link.to_gateway()
    payload = b"x" * payload_size
    available, send = connector.available_to_send, connector.send_data
    frames = moved = 0
    start = time.perf_counter()
    while moved < total_bytes:
        for stream_id in ids:
            if available(stream_id) >= payload_size:
                send(stream_id, payload)
        got_frames, got_bytes = link.to_gateway()
        link.to_connector()
        if not got_frames:
            raise RuntimeError("the pair stalled: flow control never gave credit back")
        frames += got_frames
        moved += got_bytes
    return Figure(frames, moved, time.perf_counter() - start)


def bench_streams(count: int, concurrent: int) -> Figure:
    """Whole exchanges: OPEN + END, RESPONSE + 32-byte body + END, ``concurrent`` at a time."""
    link = Link()
    gateway, connector = link.gateway, link.connector
    body = b"data: {}\n\n" * 3 + b"xx"
    done = 0
    start = time.perf_counter()
    while done < count:
        for _ in range(concurrent):
            gateway.end_stream(gateway.open_stream(HEAD))
        for message in gateway.messages_to_send():
            connector.receive_data(message, NOW)
            while (event := connector.next_event()) is not None:
                if type(event) is StreamEnded:
                    connector.send_response(event.stream_id, 200)
                    connector.send_data(event.stream_id, body, end_stream=True)
                elif type(event) is not StreamOpened:
                    raise RuntimeError(f"unexpected {type(event).__name__}")
        for message in connector.messages_to_send():
            gateway.receive_data(message, NOW)
            while (event := gateway.next_event()) is not None:
                if type(event) is DataReceived:
                    gateway.acknowledge_received_data(
                        stream_id=event.stream_id, acknowledged_size=event.flow_controlled_length)
                elif type(event) is StreamEnded:
                    done += 1
                elif type(event) is not ResponseReceived:
                    raise RuntimeError(f"unexpected {type(event).__name__}")
        link.to_connector()  # window updates, if any
    if gateway.open_stream_ids or connector.open_stream_ids:
        raise RuntimeError("streams left open")
    return Figure(done, 0, time.perf_counter() - start)


def bench_pings(count: int) -> Figure:
    """PING from the gateway, PONG from the connector, one round trip at a time."""
    link = Link()
    gateway, connector = link.gateway, link.connector
    pongs = 0
    start = time.perf_counter()
    for _ in range(count):
        gateway.ping(NOW)
        link.to_connector()
        for message in connector.messages_to_send():
            gateway.receive_data(message, NOW)
            while (event := gateway.next_event()) is not None:
                pongs += type(event) is PongReceived
    elapsed = time.perf_counter() - start
    if pongs != count:
        raise RuntimeError(f"{count} PINGs got {pongs} PONGs")
    return Figure(count, 0, elapsed)


def best_of(repeats: int, run: Callable[[], Figure]) -> Figure:
    return min((run() for _ in range(repeats)), key=lambda f: f.seconds / f.units)


def data_cases(scale: float) -> list[tuple[int, int, int]]:
    """(payload size, streams, bytes to move): 40 000 chunks, at most 32 MiB, times scale."""
    cases = []
    for streams in STREAM_COUNTS:
        for size in PAYLOAD_SIZES:
            total = int(min(40_000 * size, 32 * 2**20) * scale)
            cases.append((size, streams, max(total, size * streams)))
    return cases


def _size(n: int) -> str:
    return f"{n // 1024} KiB" if n >= 1024 else f"{n} B"


def profile_top(run: Callable[[], object], limit: int = 12) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    run()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(limit)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="work per case (1.0: 40 000 chunks or 32 MiB)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top costs")
    args = parser.parse_args()
    scale, repeats = args.scale, args.repeats
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"tokios_proto core in memory: {platform.python_implementation()} "
          f"{platform.python_version()} on {platform.system()} {platform.machine()}, {when}; "
          f"best of {repeats}\n")
    print("| DATA connector -> gateway | streams | frames/s | MB/s |")
    print("|---|---|---|---|")
    for size, streams, total in data_cases(scale):
        figure = best_of(repeats, functools.partial(bench_data, size, streams, total))
        print(f"| {_size(size)} chunks | {streams} | {figure.per_second:,.0f} | "
              f"{figure.megabytes_per_second:,.1f} |", flush=True)
    exchanges = max(100, int(20_000 * scale))
    pings = max(100, int(50_000 * scale))
    print("\n| operation | per second |")
    print("|---|---|")
    for label, run in (
        ("open + close a stream (request, response, both ended), 1 at a time",
         lambda: bench_streams(exchanges, 1)),
        ("open + close a stream, 100 at a time", lambda: bench_streams(exchanges, 100)),
        ("PING -> PONG round trip", lambda: bench_pings(pings)),
    ):
        print(f"| {label} | {best_of(repeats, run).per_second:,.0f} |", flush=True)
    if args.profile:
        for size, streams in ((64, 1), (64, 100)):
            total = max(size * streams, int(40_000 * scale) * size)
            print(f"\ncProfile, {size} B chunks, {streams} stream(s), by own time:\n```")
            print(profile_top(functools.partial(bench_data, size, streams, total)).strip())
            print("```")


if __name__ == "__main__":
    main()
