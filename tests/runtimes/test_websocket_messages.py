"""The one WebSocket message layer (runtimes/websocket_messages.py), fed as a peer would:
reassembly and its cap, pings, close on a protocol error, the close handshake, abnormal
closure and the client's upgrade. Both WebSocket shells use it; the connector matrix
(test_connector_matrix.py) checks the same rules over real sockets on both."""

from __future__ import annotations

import pytest
import wsproto
import wsproto.connection
import wsproto.events as ws_events

from runtimes.websocket_messages import MessageLayer, WebSocketClosed

CLIENT, SERVER = wsproto.ConnectionType.CLIENT, wsproto.ConnectionType.SERVER


def _server(limit: int = 1 << 16) -> tuple[MessageLayer, wsproto.connection.Connection]:
    """A server-side layer and the client-side wsproto that talks to it."""
    return (MessageLayer(wsproto.connection.Connection(SERVER), max_message_size=limit),
            wsproto.connection.Connection(CLIENT))


def _events(peer: wsproto.connection.Connection, data: bytes) -> list[ws_events.Event]:
    peer.receive_data(data)
    return list(peer.events())


def _frame(event: ws_events.Event) -> bytes:
    """A client frame from a fresh encoder (whatever state the test's peer is in)."""
    return wsproto.connection.Connection(CLIENT).send(event)


def _drain(layer: MessageLayer) -> list[bytes]:
    out = []
    while (message := layer.next_message()) is not None:
        out.append(message)
    return out


def test_fragments_are_reassembled_and_text_arrives_as_utf8() -> None:
    layer, peer = _server()
    wire = peer.send(ws_events.BytesMessage(data=b"he", message_finished=False))
    wire += peer.send(ws_events.Ping(payload=b"mid"))  # control frames may interleave
    wire += peer.send(ws_events.BytesMessage(data=b"llo", message_finished=True))
    wire += peer.send(ws_events.TextMessage(data="héllo"))
    for byte in range(len(wire)):  # one byte at a time
        layer.receive(wire[byte:byte + 1])
    assert _drain(layer) == [b"hello", "héllo".encode()]
    assert layer.queued == 0 and layer.closed is None
    assert [type(e) for e in _events(peer, layer.data_to_send())] == [ws_events.Pong]


def test_the_queue_keeps_order_and_lets_taken_messages_go() -> None:
    layer, peer = _server()
    got: list[bytes] = []
    for batch in range(50):
        layer.receive(b"".join(peer.send(ws_events.BytesMessage(data=b"%05d" % (batch * 10 + i)))
                               for i in range(10)))
        for _ in range(6):  # the reader takes fewer than arrive: the queue never drains
            message = layer.next_message()
            assert message is not None
            got.append(message)
        pending = len(layer._messages) - layer._head
        assert pending == (batch + 1) * 4 and layer.queued == pending * 5
        assert len(layer._messages) <= 2 * pending + 64  # taken messages are let go
    got += _drain(layer)
    assert got == [b"%05d" % n for n in range(500)]
    assert layer._messages == [] and layer._head == 0


def test_a_message_over_the_cap_closes_with_1009_and_drops_the_queue() -> None:
    layer, peer = _server(limit=100)
    layer.receive(peer.send(ws_events.BytesMessage(data=b"a" * 100)))
    layer.receive(peer.send(ws_events.BytesMessage(data=b"b" * 60, message_finished=False))
                  + peer.send(ws_events.BytesMessage(data=b"b" * 41)))
    assert layer.closed is not None and layer.closed.code == 1009
    assert _drain(layer) == [] and layer.queued == 0
    closes = [e for e in _events(peer, layer.data_to_send())
              if isinstance(e, ws_events.CloseConnection)]
    assert [c.code for c in closes] == [1009]
    with pytest.raises(WebSocketClosed) as info:
        layer.send(b"late")
    assert info.value.code == 1009


@pytest.mark.parametrize(("wire", "code"), [
    (b"\x82\x05hello", 1002),  # a client frame must be masked (RFC 6455 5.1)
    (b"\x8b\x80\x00\x00\x00\x00", 1002),  # opcode 0xB is reserved
    (b"\x81\x82\x00\x00\x00\x00\xc3\x28", 1007),  # a text frame with invalid UTF-8
])
def test_a_frame_the_peer_got_wrong_is_answered_with_a_close_frame(wire: bytes,
                                                                   code: int) -> None:
    layer, peer = _server()
    layer.receive(wire)
    assert layer.closed is not None and layer.closed.code == code
    closes = [e for e in _events(peer, layer.data_to_send())
              if isinstance(e, ws_events.CloseConnection)]
    assert [c.code for c in closes] == [code]  # the peer is told why
    layer.receive(_frame(ws_events.BytesMessage(data=b"after")))
    assert layer.next_message() is None  # nothing after is delivered


def test_pings_are_answered_while_open_and_never_once_our_close_went_out() -> None:
    layer, peer = _server()
    layer.receive(peer.send(ws_events.Ping(payload=b"1")))
    assert [e.payload for e in _events(peer, layer.data_to_send())] == [b"1"]
    ours = layer.close(1000, "bye")
    assert [type(e) for e in _events(peer, ours)] == [ws_events.CloseConnection]
    layer.receive(_frame(ws_events.Ping(payload=b"2")))  # wsproto could not pong now
    assert layer.data_to_send() == b""
    assert layer.closed is None and layer.closing  # still waiting for the peer's close
    with pytest.raises(WebSocketClosed):
        layer.send(b"x")
    layer.receive(_frame(ws_events.CloseConnection(code=1000, reason="bye")))
    assert layer.closed is not None and (layer.closed.code, layer.closed.reason) == (1000, "bye")
    assert layer.data_to_send() == b""  # the handshake is complete: nothing more to say


def test_the_peers_close_is_answered_and_ends_with_its_code() -> None:
    layer, peer = _server()
    layer.receive(peer.send(ws_events.CloseConnection(code=1001, reason="going")))
    assert layer.closed is not None and (layer.closed.code, layer.closed.reason) == (1001, "going")
    assert [type(e) for e in _events(peer, layer.data_to_send())] == [ws_events.CloseConnection]
    assert layer.close(1000) == b""  # over: no second close frame


def test_end_of_file_and_aborts_are_abnormal_closures_with_nothing_sent() -> None:
    layer, peer = _server()
    layer.receive(peer.send(ws_events.BytesMessage(data=b"kept")))
    layer.receive(None)
    assert layer.closed is not None and layer.closed.code == 1006
    assert layer.data_to_send() == b""
    assert _drain(layer) == [b"kept"]  # what arrived whole before the end is still delivered
    other, _ = _server()
    other.abort("aborted")
    assert other.closed is not None and (other.closed.code, other.closed.reason) == (1006,
                                                                                   "aborted")


def test_the_clients_upgrade_accepted_refused_or_garbled() -> None:
    def client() -> tuple[MessageLayer, wsproto.WSConnection, bytes]:
        connection = wsproto.WSConnection(CLIENT)
        request = connection.send(ws_events.Request(host="gw", target="/v1/tunnel"))
        return MessageLayer(connection, max_message_size=1024), connection, request

    layer, _, request = client()
    server = wsproto.WSConnection(SERVER)
    server.receive_data(request)
    assert [type(e) for e in server.events()] == [ws_events.Request]
    layer.receive(server.send(ws_events.AcceptConnection())
                  + server.send(ws_events.BytesMessage(data=b"first")))
    assert layer.accepted and layer.closed is None
    assert layer.next_message() == b"first"  # a frame that came with the 101

    layer, _, request = client()
    layer.receive(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n")
    assert not layer.accepted and layer.refused == 401
    assert layer.closed is not None and "401" in layer.closed.reason

    layer, _, request = client()
    layer.receive(b"NOT HTTP AT ALL\r\n\r\n")
    assert not layer.accepted and layer.refused == 0
