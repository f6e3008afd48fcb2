"""The one credit loop (runtimes/tunnel/credit.py): an Outbox queues what the credit allows,
never more, in order, and says when it must wait; driven here over a real core pair."""

from __future__ import annotations

from runtimes.tunnel.credit import Outbox
from tests.proto.pair import Pair
from tokios_proto import (
    Config,
    DataReceived,
    FlowControlError,
    RequestHead,
    Settings,
    WindowUpdated,
)

WINDOW = 64 * 1024


def _pair() -> tuple[Pair, int]:
    small = Config(settings=Settings(initial_stream_window=WINDOW,
                                     initial_connection_window=WINDOW))
    pair = Pair(gateway_config=small, connector_config=small)
    pair.handshake()
    stream_id = pair.gateway.open_stream(RequestHead(method="POST", path="/v1/chat/completions",
                                                     deployment="llama"))
    pair.gateway.end_stream(stream_id)
    pair.flush()
    pair.connector.send_response(stream_id, 200, (("content-type", "text/plain"),))
    return pair, stream_id


def _received(pair: Pair, stream_id: int) -> bytes:
    """What reached the gateway's shell so far, acknowledged as a reader that keeps up does."""
    data = b""
    for event in list(pair.gateway_events):
        if isinstance(event, DataReceived) and event.stream_id == stream_id:
            data += event.data
            pair.gateway.acknowledge_received_data(
                stream_id=event.stream_id, acknowledged_size=event.flow_controlled_length)
    pair.gateway_events.clear()
    return data


def test_sends_within_the_credit_in_order_and_waits_for_window_updates() -> None:
    pair, stream_id = _pair()
    body = bytes(range(256)) * 1200  # 300 KiB: almost five windows
    outbox = Outbox(pair.connector, stream_id)
    outbox.add(body[:100_000])
    outbox.add(b"")  # nothing to keep
    outbox.add(memoryview(body)[100_000:])
    received, rounds = b"", 0
    while not outbox.send():
        rounds += 1
        assert pair.connector.available_to_send(stream_id) == 0  # it used all the credit
        assert outbox.pending == len(body) - len(received) - WINDOW
        pair.flush()
        received += _received(pair, stream_id)
        pair.flush()  # the WINDOW_UPDATEs reach the connector
        assert any(isinstance(e, WindowUpdated) for e in pair.connector_events)
        pair.connector_events.clear()
        assert rounds < 20
    assert outbox.empty and outbox.pending == 0
    pair.connector.end_stream(stream_id)
    pair.flush()
    received += _received(pair, stream_id)
    assert received == body
    assert rounds == len(body) // WINDOW


def test_without_credit_send_queues_nothing_and_does_not_raise() -> None:
    pair, stream_id = _pair()
    first = Outbox(pair.connector, stream_id)
    first.add(b"x" * WINDOW)
    assert first.send()
    later = Outbox(pair.connector, stream_id)
    later.add(b"y" * 10)
    assert not later.send() and later.pending == 10  # the credit is spent
    try:
        pair.connector.send_data(stream_id, b"z")
    except FlowControlError:
        pass
    else:  # pragma: no cover - the core's own rule, which Outbox relies on
        raise AssertionError("the core accepted bytes beyond the credit")
