"""netio's shared read and write buffers: one receive buffer for every connection
(BufferedReads) and one write per loop iteration (WriteBatch)."""

from __future__ import annotations

import asyncio

from runtimes.netio import WebSocket
from runtimes.netio._http import BufferedReads, WriteBatch
from runtimes.netio.h1 import H1Connection
from runtimes.netio.h2 import H2Connection
from runtimes.netio.http_server import _Dispatcher


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, 10))  # type: ignore[arg-type]


def test_every_netio_protocol_reads_through_the_shared_buffer() -> None:
    # a BufferedProtocol: uvloop's TLS transport then reads into our buffer instead of
    # allocating a 256 KiB bytes object per read
    for protocol in (_Dispatcher, H1Connection, H2Connection, WebSocket):
        assert issubclass(protocol, asyncio.BufferedProtocol), protocol


def test_buffered_reads_hand_each_connection_a_copy_of_its_bytes() -> None:
    class Collect(BufferedReads):
        def __init__(self) -> None:
            self.got: list[bytes] = []

        def data_received(self, data: bytes) -> None:
            self.got.append(data)

    a, b = Collect(), Collect()
    buf = a.get_buffer(-1)
    buf[:5] = b"hello"
    a.buffer_updated(5)
    buf = b.get_buffer(100)  # the same buffer, filled for another connection
    buf[:3] = b"xyz"
    b.buffer_updated(3)
    assert a.got == [b"hello"] and b.got == [b"xyz"]  # copies: reuse did not change them
    assert all(type(chunk) is bytes for chunk in a.got + b.got)


def test_write_batch_writes_once_per_loop_iteration_and_at_once_when_large() -> None:
    async def main() -> None:
        writes: list[bytes] = []
        batch = WriteBatch(asyncio.get_running_loop(), writes.append, flush_at=10)
        batch.add(b"ab")
        batch.add(b"cd")
        assert writes == []  # not before the end of this iteration
        await asyncio.sleep(0)
        assert writes == [b"abcd"]  # the parts produced together leave in one write
        batch.add(b"0123456789x")  # past flush_at: written at once
        assert writes[-1] == b"0123456789x"
        batch.add_unscheduled(b"ef")
        await asyncio.sleep(0)
        assert writes[-1] == b"0123456789x"  # unscheduled: waits for the caller's flush
        batch.flush()
        assert writes[-1] == b"ef"
        batch.add(b"gone")
        batch.clear()  # an aborted connection drops what was queued
        await asyncio.sleep(0)
        assert writes == [b"abcd", b"0123456789x", b"ef"]

    run(main())
