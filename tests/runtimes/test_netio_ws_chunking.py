"""WebSocket fed through a fake transport: any split of the frames gives the same messages."""

from __future__ import annotations

import asyncio
from typing import Any

import wsproto
import wsproto.connection
import wsproto.events as ws_events
from hypothesis import given, settings
from hypothesis import strategies as st

from runtimes.netio import WebSocket, WebSocketClosed


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False
        self.paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def client_frames(messages: list[tuple[bytes, int]]) -> bytes:
    """Encode messages as a client would, each split into `parts` fragments."""
    client = wsproto.connection.Connection(wsproto.ConnectionType.CLIENT)
    out = b""
    for payload, parts in messages:
        size = max(1, len(payload) // parts)
        pieces = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            out += client.send(ws_events.BytesMessage(data=piece, message_finished=last))
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[last:point])
        last = point
    return [p for p in pieces if p]


async def feed(
    wire: bytes, cuts: list[int], max_message_size: int
) -> tuple[list[bytes], int | None, FakeTransport]:
    ws = WebSocket(
        wsproto.connection.Connection(wsproto.ConnectionType.SERVER),
        max_message_size=max_message_size,
        queue_bytes=1 << 30,
    )
    transport = FakeTransport()
    ws.adopt_transport(transport, write_paused=False)
    for chunk in split(wire, cuts):
        ws.data_received(chunk)
    ws.connection_lost(None)
    received: list[bytes] = []
    try:
        while True:
            received.append(await ws.recv())
    except WebSocketClosed as closed:
        return received, closed.code, transport


messages_strategy = st.lists(
    st.tuples(st.binary(max_size=3000), st.integers(min_value=1, max_value=4)), max_size=6
)


@settings(max_examples=60, deadline=None)
@given(messages_strategy, st.lists(st.integers(min_value=0, max_value=20_000), max_size=10))
def test_any_split_of_fragmented_messages_gives_the_same_messages(
    messages: list[tuple[bytes, int]], cuts: list[int]
) -> None:
    wire = client_frames(messages)
    received, code, _ = asyncio.run(feed(wire, cuts, max_message_size=1 << 20))
    assert received == [payload for payload, _ in messages]
    assert code == 1006  # the fake link dropped without a close frame


@settings(max_examples=40, deadline=None)
@given(messages_strategy, st.lists(st.integers(min_value=0, max_value=20_000), max_size=10))
def test_messages_over_the_limit_close_with_1009_and_nothing_after_is_delivered(
    messages: list[tuple[bytes, int]], cuts: list[int]
) -> None:
    limit = 1000
    wire = client_frames(messages)
    received, code, transport = asyncio.run(feed(wire, cuts, max_message_size=limit))
    sizes = [len(payload) for payload, _ in messages]
    too_big = next((i for i, size in enumerate(sizes) if size > limit), None)
    if too_big is None:
        assert received == [payload for payload, _ in messages]
        assert code == 1006
    else:
        assert received == []  # the queue is dropped with the connection
        assert code == 1009
        assert transport.closed
        server_view = wsproto.connection.Connection(wsproto.ConnectionType.CLIENT)
        server_view.receive_data(bytes(transport.out))
        closes = [e for e in server_view.events() if isinstance(e, ws_events.CloseConnection)]
        assert closes and closes[0].code == 1009
