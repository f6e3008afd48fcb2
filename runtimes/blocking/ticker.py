"""One thread that beats callbacks at a fixed interval, for the threaded connector's keep-alives
(a streamed answer waiting for its model's first token). No asyncio::

    ticker = Ticker(15.0)
    ticker.add(beat)        # beat() runs every 15 s in the ticker's thread until it returns False
    ...
    ticker.close()          # drops every beat; the thread ends

All beats share the interval, so the queue stays in due order by appending: a beat that
returns True is due again ``interval`` seconds after it ran. A beat that returns False (or
raises) is dropped. The thread starts with the first :meth:`add`; memory is one entry per beat.
A slow beat delays the others (beats should only take a lock and queue a few bytes).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

__all__ = ["Ticker"]

logger = logging.getLogger("tokios.connector")


class Ticker:
    """Runs each added ``beat()`` every ``interval`` seconds until it returns False."""

    def __init__(self, interval: float, *, name: str = "tokios-ticker") -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self._name = name
        self._cond = threading.Condition()
        self._due: collections.deque[tuple[float, Callable[[], bool]]] = collections.deque()
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, beat: Callable[[], bool]) -> None:
        """Run ``beat()`` in ``interval`` seconds, and again after each True (any thread)."""
        with self._cond:
            if self._closed:
                return
            self._due.append((time.monotonic() + self.interval, beat))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()

    def __len__(self) -> int:
        """Beats waiting (dropped beats leave at their next due time)."""
        with self._cond:
            return len(self._due)

    def close(self, timeout: float = 2.0) -> None:
        """Drop every beat and end the thread (waits up to ``timeout`` for a running beat)."""
        with self._cond:
            self._closed = True
            self._due.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    now = time.monotonic()
                    if self._due and self._due[0][0] <= now:
                        break
                    self._cond.wait(self._due[0][0] - now if self._due else None)
                if self._closed:
                    return
                _, beat = self._due.popleft()
            try:
                again = beat()
            except Exception as exc:  # a bug in one beat must not stop the others
                logger.error("keep-alive failed: %s", type(exc).__name__)
                again = False
            if again:
                with self._cond:
                    if not self._closed:
                        self._due.append((time.monotonic() + self.interval, beat))
