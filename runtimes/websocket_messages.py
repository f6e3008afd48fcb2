"""The message layer of a WebSocket over wsproto, without I/O.

Both WebSockets, asyncio (``runtimes.netio.websocket``: the gateway's tunnels and the asyncio
connector) and blocking (``runtimes.blocking.websocket``: the threaded connector), feed the
bytes they read here and write what it returns; they only move bytes and wait, so both
follow the same rules. A shell calls::

    layer = MessageLayer(connection, max_message_size=1 << 20)
    layer.receive(data)              # bytes read from the socket; None once it hit EOF
    write(layer.data_to_send())      # replies: pongs, close frames
    while (message := layer.next_message()) is not None: ...
    if layer.closed is not None: ...the WebSocket is over: close the socket (after writing)...
    write(layer.send(payload))       # one binary message (WebSocketClosed once closing)
    write(layer.close(code, reason)) # start the close handshake
    layer.abort(reason)              # the link dropped or was dropped: closed with 1006
    layer.finish(code, reason)       # closed now (a shell that does not wait for the peer)

The rules (RFC 6455):

- Fragments are reassembled up to ``max_message_size`` bytes per message; a longer message
  closes the WebSocket with 1009 and drops the messages still queued (the peer broke the
  agreement; nothing it sent after is delivered).
- A ping is answered with a pong while the WebSocket is open; once a close frame went out
  (either side), wsproto can send no pong and none is sent.
- A frame the peer got wrong (unmasked, bad opcode, invalid UTF-8 in a text or a close
  frame...) closes the WebSocket with the code wsproto gives (1002, 1007, ...), and that close
  frame is sent to the peer before the socket closes.
- A close frame from the peer is answered with ours (unless we sent one first) and closes
  with the peer's code and reason.
- End of file or a dropped link without a close frame: closed with 1006, nothing sent.
- Client side, during the upgrade: :attr:`accepted` once the server answered 101,
  :attr:`refused` (the HTTP status, 0 for a malformed answer) if it did not.

Text messages are delivered UTF-8 encoded, like binary ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import wsproto
import wsproto.connection
import wsproto.events as ws_events
import wsproto.utilities

__all__ = [
    "CLOSE_ABNORMAL",
    "CLOSE_GOING_AWAY",
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_NORMAL",
    "CloseInfo",
    "MessageLayer",
    "WebSocketClosed",
    "WebSocketHandshakeError",
]

#: Close codes used here (RFC 6455 section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_MESSAGE_TOO_BIG = 1009
#: Never sent: reported when the connection is lost without a close frame.
CLOSE_ABNORMAL = 1006

_OPEN = wsproto.connection.ConnectionState.OPEN
_REMOTE_CLOSING = wsproto.connection.ConnectionState.REMOTE_CLOSING


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseInfo:
    """How the WebSocket ended: the close code and reason (1006 when the link just dropped)."""

    code: int
    reason: str


class WebSocketClosed(Exception):  # noqa: N818
    """The WebSocket is closed; ``.code`` and ``.reason`` tell why (1006: the link dropped)."""

    def __init__(self, info: CloseInfo) -> None:
        super().__init__(f"websocket closed with code {info.code}")
        self.code = info.code
        self.reason = info.reason


class WebSocketHandshakeError(Exception):
    """The server refused the upgrade (``.status`` is its HTTP status, 0 if none)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class MessageLayer:
    """Whole messages in, frames out, for one WebSocket (see the module doc)."""

    __slots__ = ("_close_sent", "_head", "_messages", "_out", "_partial", "_ws", "accepted",
                 "closed", "max_message_size", "queued", "refused", "subprotocol")

    def __init__(self, connection: wsproto.connection.Connection | wsproto.WSConnection, *,
                 max_message_size: int) -> None:
        self._ws = connection
        self.max_message_size = max_message_size
        # a list read from _head, not a deque: an empty deque keeps a ~700-byte block, and
        # a tunnel's queue is empty nearly all the time
        self._messages: list[bytes] = []
        self._head = 0
        #: Bytes of whole messages received and not yet taken with :meth:`next_message`.
        self.queued = 0
        self._partial = bytearray()
        self._out: list[bytes] = []
        self._close_sent = False
        #: None while open; how it ended once it did (see the module doc).
        self.closed: CloseInfo | None = None
        #: Client side: True once the server accepted the upgrade; its chosen subprotocol.
        self.accepted = False
        self.subprotocol: str | None = None
        #: Client side: the HTTP status of a refused upgrade (0: a malformed answer).
        self.refused: int | None = None

    @property
    def closing(self) -> bool:
        """True once nothing more may be sent: closed, or our close frame went out."""
        return self.closed is not None or self._close_sent

    # ---- input ---------------------------------------------------------------------------

    def receive(self, data: bytes | None) -> None:
        """Feed bytes read from the socket (``None``: end of file). Then write
        :meth:`data_to_send`, take :meth:`next_message` and check :attr:`closed`."""
        if self.closed is not None:
            return  # over: whatever still arrives is dropped
        if data is None:  # every byte before it was decoded already
            self.finish(CLOSE_ABNORMAL, "connection lost")
            return
        ws = self._ws
        try:
            ws.receive_data(data)
        except wsproto.utilities.LocalProtocolError:
            return  # data after the close handshake completed
        except wsproto.utilities.RemoteProtocolError:  # an invalid upgrade answer
            self.refused = self.refused or 0
            self.finish(CLOSE_ABNORMAL, "invalid handshake response")
            return
        for event in ws.events():
            self._on_event(event)
            if self.closed is not None:
                break

    def _on_event(self, event: ws_events.Event) -> None:
        if isinstance(event, ws_events.Message):
            if self._close_sent:
                return  # we are closing: the peer's late messages are not delivered
            chunk = event.data.encode() if isinstance(event.data, str) else event.data
            if len(self._partial) + len(chunk) > self.max_message_size:
                self._partial.clear()
                self._messages.clear()
                self._head = self.queued = 0
                self._send_close(CLOSE_MESSAGE_TOO_BIG, "message too big")
                self.finish(CLOSE_MESSAGE_TOO_BIG, "message too big")
            elif not event.message_finished:
                self._partial += chunk
            else:
                if self._partial:
                    self._partial += chunk
                    chunk = bytes(self._partial)
                    self._partial.clear()
                self._messages.append(bytes(chunk))
                self.queued += len(chunk)
        elif isinstance(event, ws_events.Ping):
            if self._ws.state is _OPEN:
                self._out.append(self._ws.send(event.response()))
        elif isinstance(event, ws_events.CloseConnection):
            state = self._ws.state
            if state is _REMOTE_CLOSING:  # the peer's close: answer it
                self._out.append(self._ws.send(event.response()))
            elif state is _OPEN:  # wsproto reports a frame the peer got wrong this way
                self._send_close(int(event.code), "")
            self.finish(int(event.code), event.reason or "")
        elif isinstance(event, ws_events.AcceptConnection):
            self.accepted = True
            self.subprotocol = event.subprotocol
        elif isinstance(event, ws_events.RejectConnection):
            self.refused = event.status_code
            self.finish(CLOSE_ABNORMAL, f"upgrade refused with HTTP {event.status_code}")

    def abort(self, reason: str = "aborted") -> None:
        """The link dropped (or we dropped it): closed with 1006 unless already closed."""
        self.finish(CLOSE_ABNORMAL, reason)

    def finish(self, code: int, reason: str) -> None:
        """Mark the WebSocket over with ``code`` unless it already is (a shell that stops
        waiting for the peer's close after sending its own)."""
        if self.closed is None:
            self.closed = CloseInfo(code=code, reason=reason)

    # ---- output --------------------------------------------------------------------------

    def next_message(self) -> bytes | None:
        """The oldest whole message not yet taken, or None."""
        messages = self._messages
        if self._head >= len(messages):
            return None
        message = messages[self._head]
        self._head += 1
        if self._head == len(messages):
            messages.clear()  # drained: the list frees its storage
            self._head = 0
        elif self._head >= 64 and self._head * 2 >= len(messages):
            del messages[:self._head]  # never drained: let the taken ones go
            self._head = 0
        self.queued -= len(message)
        return message

    @property
    def has_messages(self) -> bool:
        return self._head < len(self._messages)

    def data_to_send(self) -> bytes:
        """The frames :meth:`receive` produced (pongs, close frames); b"" if none."""
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def send(self, data: bytes) -> bytes:
        """One binary message, framed; WebSocketClosed once closing or closed."""
        if self.closing:
            raise WebSocketClosed(self.closed or CloseInfo(code=CLOSE_NORMAL, reason="closing"))
        return self._ws.send(ws_events.BytesMessage(data=data))

    def ping(self, payload: bytes = b"") -> bytes:
        """A ping frame (the peer's pong is consumed silently); WebSocketClosed once closing."""
        if self.closing:
            raise WebSocketClosed(self.closed or CloseInfo(code=CLOSE_NORMAL, reason="closing"))
        return self._ws.send(ws_events.Ping(payload=payload))

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> bytes:
        """Our close frame (b"" if one went out already or the WebSocket is over); the
        WebSocket is closed once the peer's close arrives (or the link drops)."""
        if self.closed is not None:
            return b""
        self._send_close(code, reason)
        return self.data_to_send()

    def _send_close(self, code: int, reason: str) -> None:
        if self._close_sent or self._ws.state is not _OPEN:
            return
        self._close_sent = True
        self._out.append(self._ws.send(ws_events.CloseConnection(code=code, reason=reason)))
