"""H1Connection fed through a fake transport: any split of the input gives the same answers,
and arbitrary bytes never make data_received raise."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtimes.netio import HttpRequest, HttpResponse, ServerConfig
from runtimes.netio.h1 import H1Connection
from runtimes.netio.http_server import ServerState

PIPELINE = (
    b"GET /a?x=1 HTTP/1.1\r\nhost: h\r\n\r\n"
    b"POST /b HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\n\r\nhello"
    b"POST /c HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    b"GET /d HTTP/1.1\r\nhost: h\r\nconnection: close\r\n\r\n"
)
EXPECTED = [b"GET /a x=1 ", b"POST /b  hello", b"POST /c  abcde", b"GET /d  "]


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False
        self.protocol: Any = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5555) if name == "peername" else default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol


async def echo(request: HttpRequest, response: HttpResponse) -> None:
    body = await request.body(limit=1000)
    text = f"{request.method} {request.path} {request.query} ".encode() + body
    await response.respond(200, [("content-type", "text/plain")], text)


async def drive(chunks: list[bytes]) -> tuple[bytes, bool]:
    state = ServerState(echo, ServerConfig())
    protocol = H1Connection(state, "http")
    transport = FakeTransport()
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    for chunk in chunks:
        if transport.closed:
            break
        protocol.data_received(chunk)
        await asyncio.sleep(0)
    for _ in range(50):  # let the handlers run
        await asyncio.sleep(0)
    if not transport.closed:
        protocol.eof_received()
    for _ in range(10):
        await asyncio.sleep(0)
    return bytes(transport.out), transport.closed


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[last:point])
        last = point
    return [p for p in pieces if p]


def test_pipeline_whole_and_byte_by_byte() -> None:
    for chunks in ([PIPELINE], [PIPELINE[i : i + 1] for i in range(len(PIPELINE))]):
        out, closed = asyncio.run(drive(chunks))
        assert [body for _, body in parse_responses_sequential(out)] == EXPECTED
        assert closed


def parse_responses_sequential(data: bytes) -> list[tuple[int, bytes]]:
    """Split a stream of responses that each carry a content-length."""
    answers = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        answers.append((status, rest[:length]))
        data = rest[length:]
    return answers


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_any_split_of_a_pipeline_gives_the_same_answers(cuts: list[int]) -> None:
    out, closed = asyncio.run(drive(split(PIPELINE, cuts)))
    assert parse_responses_sequential(out) == [(200, body) for body in EXPECTED]
    assert closed


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=400), max_size=5))
def test_arbitrary_bytes_never_break_the_protocol(data: bytes, cuts: list[int]) -> None:
    out, closed = asyncio.run(drive(split(data, cuts)))
    # Either nothing (incomplete input), or well-formed responses; never an exception.
    if out:
        assert out.startswith(b"HTTP/1.1 ")
    assert closed
