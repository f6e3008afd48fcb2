"""Drive one sans-IO tunnel connection (``tokios_proto``) over one WebSocket, on asyncio.

Used by both ends (the gateway's tunnels and the asyncio connector)::

    pump = Pump(ws, conn, on_event)
    await pump.run()          # returns once the connection is CLOSED and the socket closed

``run`` reads messages -> ``receive_data(now=loop.time())`` -> ``on_event`` for each event ->
flushes ``messages_to_send()`` -> re-arms one timer from ``get_timer()``. After calling a
command on ``conn`` (``accept``, ``send_data``, ``reset_stream``, ``goaway`` ...) call
:meth:`Pump.kick` so the output is sent and the timer re-armed. ``on_event`` must not block.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from runtimes.netio import WebSocket, WebSocketClosed
from tokios_proto import (
    Connection,
    ConnectionState,
    ConnectionTerminated,
    ErrorCode,
    Event,
    ProtocolError,
)

__all__ = ["Pump"]

logger = logging.getLogger("tokios.tunnel")

#: Output taken from the core per WebSocket write, so a slow peer holds the rest in the core
#: (bounded by the flow-control windows), not in the socket buffer.
_WRITE_CHUNK = 256 * 1024


class Pump:
    """One connection, one socket, one reader loop, one timer, and a writer task that
    exists only while there is output to send (an idle tunnel has none: ~1.5 KB less)."""

    def __init__(self, ws: WebSocket, conn: Connection,
                 on_event: Callable[[Event], None]) -> None:
        self.ws = ws
        self.conn = conn
        self._on_event = on_event
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        # output is pending; the writer task runs while it is set (started on demand)
        self._wake_pending = False
        self._writer_task: asyncio.Task[None] | None = None
        self._stopped = False  # run() is over: no more writer tasks
        #: The ConnectionTerminated event, once the connection ended (None if the socket
        #: dropped before the core saw an end).
        self.terminated: ConnectionTerminated | None = None

    def now(self) -> float:
        return self._loop.time()

    async def run(self) -> None:
        """Pump until the connection is closed; always closes the WebSocket."""
        self.kick()
        try:
            while self.terminated is None:
                try:
                    message = await self.ws.recv()
                except WebSocketClosed:
                    break
                try:
                    self.conn.receive_data(message, self.now())
                except ProtocolError as exc:
                    logger.warning("tunnel protocol error: %s", type(exc).__name__)
                self.dispatch()
        finally:
            if self._timer is not None:
                self._timer.cancel()
            if self.terminated is not None:
                # let the writer flush what the core queued last (GOAWAY, REJECT)
                self._wake()
                writer = self._writer_task
                if writer is not None:
                    with contextlib.suppress(TimeoutError, Exception):
                        await asyncio.wait_for(asyncio.shield(writer), 2.0)
            self._stopped = True
            writer = self._writer_task
            if writer is not None:
                writer.cancel()
                with contextlib.suppress(BaseException):
                    await writer
            await self.ws.close(1000, "", timeout=1.0)
            if self.terminated is None:
                self.terminated = ConnectionTerminated(code=ErrorCode.INTERNAL_ERROR,
                                                       reason="connection lost", remote=True)
                self._on_event(self.terminated)

    def dispatch(self) -> None:
        """Hand every pending event to ``on_event``, then flush and re-arm the timer."""
        while (event := self.conn.next_event()) is not None:
            if isinstance(event, ConnectionTerminated):
                self.terminated = event
            self._on_event(event)
        self.kick()

    def kick(self) -> None:
        """Send what the core queued and re-arm the timer (call after any command)."""
        self._wake()
        when = self.conn.get_timer() if self.terminated is None else None
        if self._timer is not None:
            if when is not None and self._timer.when() == when:
                return  # already armed for that moment (the common case on the data path)
            self._timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.conn.handle_timer(self.now())
        self.dispatch()

    def _wake(self) -> None:
        self._wake_pending = True
        if self._writer_task is None and not self._stopped:
            self._writer_task = self._loop.create_task(self._writer())

    async def _writer(self) -> None:
        try:
            await self._write_pending()
        finally:
            self._writer_task = None

    async def _write_pending(self) -> None:
        while self._wake_pending:
            self._wake_pending = False
            while messages := self.conn.messages_to_send(_WRITE_CHUNK):
                for message in messages:
                    try:
                        await self.ws.send(message)
                    except WebSocketClosed:
                        return
            if self.conn.state is ConnectionState.CLOSED:
                # everything is written: tell the reader loop to stop waiting on recv()
                await self.ws.close(1000, "", timeout=1.0)
                return
