"""A one-line progress display for long steps (building the engine, loading the model).

On a terminal the line redraws in place: a spinner, the step, the elapsed time and a short
detail. Elsewhere (CI logs, pipes) it prints a plain line every ``quiet_interval`` seconds, and
when the detail changes (at most every 5 s), so a log stays short. Standard library only.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def format_elapsed(seconds: float) -> str:
    """``"42s"`` or ``"3m05s"``."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    return f"{whole // 60}m{whole % 60:02d}s"


class Progress:
    """Call :meth:`tick` often (e.g. every 0.1 s) while a step runs, then :meth:`done`."""

    def __init__(self, label: str, *, stream: TextIO | None = None, width: int | None = None,
                 quiet_interval: float = 30.0) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width or max(40, shutil.get_terminal_size().columns - 1)
        self.quiet_interval = quiet_interval
        self.started = time.monotonic()
        self.detail = ""
        self._frame = 0
        self._last_plain = -quiet_interval
        self._tty = self.stream.isatty()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def tick(self, detail: str | None = None) -> None:
        """Redraw the line; ``detail`` (if given) replaces the text after the elapsed time."""
        if detail is not None:
            detail = " ".join(detail.split())
        changed = detail is not None and detail != self.detail
        if detail is not None:
            self.detail = detail
        elapsed = format_elapsed(self.elapsed)
        if self._tty:
            self._frame = (self._frame + 1) % len(_FRAMES)
            line = f"{_FRAMES[self._frame]} {self.label} ({elapsed})"
            if self.detail:
                line += f"  {self.detail}"
            self.stream.write("\r" + line[: self.width].ljust(self.width))
            self.stream.flush()
            return
        now = time.monotonic()
        since = now - self._last_plain
        if since >= self.quiet_interval or (changed and since >= 5):
            self._last_plain = now
            self.stream.write(f"... {self.label} ({elapsed}) {self.detail}".rstrip() + "\n")
            self.stream.flush()

    def done(self, message: str = "done") -> None:
        """End the line with ``message`` and the total time."""
        text = f"✓ {self.label}: {message} ({format_elapsed(self.elapsed)})"
        if self._tty:
            self.stream.write("\r" + text.ljust(self.width)[: max(self.width, len(text))] + "\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def fail(self, message: str) -> None:
        """End the line with a failure ``message``."""
        text = f"✗ {self.label}: {message} ({format_elapsed(self.elapsed)})"
        self.stream.write(("\r" if self._tty else "") + text.ljust(self.width) + "\n")
        self.stream.flush()
