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

__all__ = ["Pump", "Signal"]

logger = logging.getLogger("tokios.tunnel")

#: Output taken from the core per WebSocket write, so a slow peer holds the rest in the core
#: (bounded by the flow-control windows), not in the socket buffer.
_WRITE_CHUNK = 256 * 1024
#: Seconds a peer gets to take the last output (GOAWAY, REJECT) once the connection ended.
_END_GRACE = 2.0


class Pump:
    """One connection, one socket, one reader loop, one timer. Output is written by a plain
    callback once per loop iteration (no task); a task exists only while the peer is slow
    and the pump waits for the socket to drain."""

    def __init__(self, ws: WebSocket, conn: Connection,
                 on_event: Callable[[Event], None]) -> None:
        self.ws = ws
        self.conn = conn
        self._on_event = on_event
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._write_scheduled = False  # _write_now is queued for this loop iteration
        self._drain_task: asyncio.Task[None] | None = None  # only while the peer is slow
        self._closer: asyncio.Task[None] | None = None  # the core is CLOSED: close the socket
        self._stopped = False  # run() is over: nothing more is written
        #: The ConnectionTerminated event, once the connection ended (None if the socket
        #: dropped before the core saw an end).
        self.terminated: ConnectionTerminated | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

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
                # write what the core queued last (GOAWAY, REJECT), then end the socket
                self._write_now()
                if self._closer is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(self._closer)
            self._stopped = True
            for task in (self._drain_task, self._closer):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
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
        if not self._write_scheduled and not self._stopped:
            self._write_scheduled = True
            self._loop.call_soon(self._write_now)
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

    def _write_now(self) -> None:
        """Frame everything the core queued and write it in one go, unless the peer is slow
        (then a drain task waits for the socket and calls this again)."""
        self._write_scheduled = False
        if self._stopped:
            return
        ws = self.ws
        if self._drain_task is None:  # else the drain task writes once the peer catches up
            try:
                while not ws.write_paused:
                    messages = self.conn.messages_to_send(_WRITE_CHUNK)
                    if not messages:
                        break
                    for message in messages:
                        ws.send_nowait(message)
                ws.flush()
            except WebSocketClosed:
                return
            if ws.write_paused:
                self._drain_task = self._loop.create_task(self._drain_then_write())
        if self.conn.state is ConnectionState.CLOSED and self._closer is None:
            # the core is done: end the socket, so the reader loop's recv() returns
            self._closer = self._loop.create_task(self._end_socket())

    async def _end_socket(self) -> None:
        """Let a slow peer take what is still queued for up to ``_END_GRACE`` seconds, then
        close the WebSocket; abort it if the peer still is not reading (a peer that never
        reads must not hold an ended tunnel open)."""
        deadline = self._loop.time() + _END_GRACE
        while (task := self._drain_task) is not None and \
                (left := deadline - self._loop.time()) > 0:
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(task), left)
            if self._drain_task is task:
                break
        if self.ws.write_paused:
            self.ws.abort()
        else:
            await self.ws.close(1000, "", timeout=1.0)

    async def _drain_then_write(self) -> None:
        try:
            await self.ws.drain()
        finally:
            self._drain_task = None
        self._write_now()


class Signal:
    """``asyncio.Event`` (set / clear / wait) for one waiting task at a time, without the
    Event's deque of waiters: ~600 bytes less per signal, two per open stream. What a sender
    out of credit waits on (see ``runtimes.tunnel.credit``)."""

    __slots__ = ("_is_set", "_loop", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._is_set = False
        self._waiter: asyncio.Future[None] | None = None

    @property
    def waiting(self) -> bool:
        """True while a task waits on this signal."""
        return self._waiter is not None

    def set(self) -> None:
        self._is_set = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._is_set = False

    async def wait(self) -> None:
        if self._is_set:
            return
        waiter = self._waiter
        if waiter is None or waiter.done():
            waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            if self._waiter is waiter:
                self._waiter = None
