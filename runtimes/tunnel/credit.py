"""One stream's body bytes, sent within its flow-control credit, without I/O.

The one "send within credit, wait for WindowUpdated" loop of the project: the gateway sends
request bodies with it, both connector shells send answers with it. A shell calls::

    outbox = Outbox(conn, stream_id)
    outbox.add(data)               # keeps a view of the bytes (no copy)
    while not outbox.send():       # queues what the credit allows; True once all is queued
        ...flush the core's output, wait for WindowUpdated (this stream or the connection)...

``send`` never raises for lack of credit: it queues ``min(credit, pending)`` bytes per call
(``conn.available_to_send``) and stops at 0. It never waits either: waiting is the shell's
business (an asyncio signal, a condition variable). Bytes added while some are pending go
after them, in order.
"""

from __future__ import annotations

from tokios_proto import Connection

__all__ = ["Outbox"]


class Outbox:
    """Bytes still to send on one stream (see the module doc)."""

    __slots__ = ("_conn", "_pending", "_stream_id")

    def __init__(self, conn: Connection, stream_id: int) -> None:
        self._conn = conn
        self._stream_id = stream_id
        self._pending: list[memoryview] = []

    @property
    def empty(self) -> bool:
        """True when every byte added has been queued in the core."""
        return not self._pending

    @property
    def pending(self) -> int:
        """Bytes added and not yet queued in the core."""
        return sum(len(view) for view in self._pending)

    def add(self, data: bytes | memoryview) -> None:
        """Keep ``data`` to send after what is already pending."""
        if data:
            self._pending.append(memoryview(data))

    def send(self) -> bool:
        """Queue in the core as much as the credit allows; True once nothing is pending."""
        pending = self._pending
        conn, stream_id = self._conn, self._stream_id
        while pending:
            view = pending[0]
            credit = conn.available_to_send(stream_id)
            if credit <= 0:
                return False
            if credit >= len(view):
                conn.send_data(stream_id, view)
                del pending[0]
            else:
                conn.send_data(stream_id, view[:credit])
                pending[0] = view[credit:]
        return True
