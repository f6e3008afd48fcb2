"""Flow-control windows (h2-style credit), modelled on h2's ``windows.py``.

Only DATA payload bytes count. The *sender* keeps a plain integer of credit per stream and
per connection (see ``_streams.Stream.send_window``). The *receiver* keeps a
:class:`ReceiveWindow`: credit granted to the peer, bytes delivered to the shell but not
acknowledged, and bytes acknowledged but not yet returned to the peer. Credit goes back in a
WINDOW_UPDATE only once the shell acknowledged at least half of the initial window, which keeps
updates rare (one per half window) while the peer never stalls on a healthy consumer.
"""

from __future__ import annotations

from ._config import MAX_WINDOW

__all__ = ["ReceiveWindow"]


class ReceiveWindow:
    """Credit this end granted the peer for one stream or for the connection."""

    __slots__ = ("initial", "processed", "unacknowledged", "window")

    def __init__(self, initial: int) -> None:
        self.initial = initial
        #: Credit the peer still has.
        self.window = initial
        #: Bytes received and not yet acknowledged by the shell.
        self.unacknowledged = 0
        #: Bytes acknowledged and not yet returned to the peer.
        self.processed = 0

    def consume(self, n: int) -> bool:
        """The peer sent ``n`` flow-controlled bytes. False if that overruns its credit."""
        if n > self.window:
            return False
        self.window -= n
        self.unacknowledged += n
        return True

    def acknowledge(self, n: int) -> int:
        """The shell consumed ``n`` bytes; return the increment to send now (0 = none yet)."""
        self.unacknowledged -= n
        self.processed += n
        if self.processed * 2 < self.initial:
            return 0
        increment = min(self.processed, MAX_WINDOW - self.window)
        self.processed -= increment
        self.window += increment
        return increment
