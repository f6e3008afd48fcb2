"""What one HTTP/2 client may make the server do: the CVE-2023-44487 ("rapid reset") and
control-frame flood limits, and the header-block bound.

`GuardedH2Connection` is h2's server connection with three hooks, all inside h2's own frame
loop, so an abusive connection is stopped at the frame that crosses a limit (not after a whole
read of them has been turned into events) and h2 itself sends GOAWAY(ENHANCE_YOUR_CALM) with
the right last-stream-id: a `DenialOfServiceError` raised there is what h2 raises for its own
denial-of-service checks.

- every frame goes through `FloodGuard` first: RST_STREAM counts as a reset; SETTINGS, PING,
  PRIORITY, WINDOW_UPDATE, GOAWAY, empty DATA without END_STREAM and unknown types count as
  control frames (CONTINUATION frames, which h2 buffers before its frame loop sees them, are
  counted by `_GuardedFrameBuffer`);
- a header block may not grow past ``header_block_cap`` bytes while its CONTINUATION frames
  arrive, nor decode to more (h2 itself stops at 64 frames, up to 1 MiB);
- a DATA frame that makes a stream's body longer than its content-length, or ends it shorter,
  becomes a `BodyLengthInvalid` event (the stream gets a 400) instead of h2's connection
  error, which would take every other stream of the connection down with it.

These override h2's non-public ``_receive_frame``, ``_receive_data_frame``,
``_local_settings_acked`` and ``FrameBuffer._update_header_buffer`` (stable since h2 3.x);
tests/runtimes/test_netio_h2_abuse.py fails if any of them stops being called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.frame_buffer
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    HeadersFrame,
    PushPromiseFrame,
    RstStreamFrame,
)

__all__ = ["BodyLengthInvalid", "FloodGuard", "GuardedH2Connection"]


class FloodGuard:
    """Counts, per connection, the resets and control frames a client sends.

    More than ``max_resets`` RST_STREAM frames, or more than ``max_control`` control frames
    plus what the client earned (`allow`), within ``window`` seconds raises
    `h2.exceptions.DenialOfServiceError`. The clock is read only when a count crosses its
    limit: if the window began less than ``window`` seconds ago that is abuse, else a new
    window begins.
    """

    __slots__ = ("_allowance", "_clock", "_control", "_control_since", "_max_control",
                 "_max_resets", "_resets", "_resets_since", "_window")

    def __init__(self, *, max_resets: int, max_control: int, window: float,
                 clock: Callable[[], float]) -> None:
        self._clock = clock
        self._window = window
        self._max_resets = max_resets
        self._max_control = max_control
        self._resets = self._control = self._allowance = 0
        self._resets_since = self._control_since = clock()

    def allow(self, frames: int) -> None:
        """Let the client send ``frames`` more control frames in this window: what a request
        or a DATA frame sent to it legitimately brings back (WINDOW_UPDATEs, PRIORITY)."""
        self._allowance += frames

    def reset(self) -> None:
        """An RST_STREAM from the client."""
        self._resets += 1
        if self._resets > self._max_resets:
            self._resets_since = self._new_window(self._resets_since, "stream resets",
                                                  self._max_resets)
            self._resets = 1

    def control(self) -> None:
        """A frame that carries no request."""
        self._control += 1
        if self._control > self._max_control + self._allowance:
            self._control_since = self._new_window(self._control_since, "control frames",
                                                   self._max_control + self._allowance)
            self._control, self._allowance = 1, 0

    def _new_window(self, since: float, what: str, limit: int) -> float:
        now = self._clock()
        if now - since < self._window:
            raise h2.exceptions.DenialOfServiceError(
                f"more than {limit} {what} within {self._window:g} s")
        return now


class BodyLengthInvalid(h2.events.Event):
    """A stream's body is longer than its content-length, or ended shorter. The frame's
    ``flow_controlled_length`` was taken from the windows and must be acknowledged."""

    def __init__(self, stream_id: int, flow_controlled_length: int) -> None:
        self.stream_id = stream_id
        self.flow_controlled_length = flow_controlled_length


class _GuardedFrameBuffer(h2.frame_buffer.FrameBuffer):
    """h2's frame buffer, bounding a header block in bytes and counting CONTINUATIONs."""

    def __init__(self, guard: FloodGuard, header_block_cap: int) -> None:
        super().__init__(server=True)
        self._guard = guard
        self._cap = header_block_cap
        self._block_bytes = 0

    def _update_header_buffer(self, f: Frame | None) -> Frame | None:
        if isinstance(f, ContinuationFrame):
            self._guard.control()
            self._block_bytes += len(f.data)
        elif isinstance(f, HeadersFrame | PushPromiseFrame):
            self._block_bytes = len(f.data)
        if self._block_bytes > self._cap:
            raise h2.exceptions.DenialOfServiceError(
                f"a header block of more than {self._cap} bytes")
        return super()._update_header_buffer(f)


class GuardedH2Connection(h2.connection.H2Connection):
    """An h2 server connection that enforces `FloodGuard` and the header-block cap."""

    def __init__(self, config: h2.config.H2Configuration, *, guard: FloodGuard,
                 header_block_cap: int) -> None:
        super().__init__(config=config)
        self.guard = guard
        self._header_block_cap = header_block_cap
        self.incoming_buffer = _GuardedFrameBuffer(guard, header_block_cap)
        self.decoder.max_header_list_size = header_block_cap

    def _receive_frame(self, frame: Frame) -> list[h2.events.Event]:
        kind = frame.__class__
        if kind is DataFrame:
            if not cast(DataFrame, frame).data and "END_STREAM" not in frame.flags:
                self.guard.control()
        elif kind is HeadersFrame:
            self.guard.allow(4)
        elif kind is RstStreamFrame:
            self.guard.reset()
        else:
            self.guard.control()
        events: list[h2.events.Event] = super()._receive_frame(frame)
        return events

    def _receive_data_frame(self, frame: DataFrame) -> tuple[list[Frame], list[Any]]:
        try:
            frames, events = super()._receive_data_frame(frame)
        except h2.exceptions.InvalidBodyLengthError:
            return [], [BodyLengthInvalid(frame.stream_id, frame.flow_controlled_length)]
        return frames, events

    def _local_settings_acked(self) -> dict[Any, Any]:
        # h2 lowers the decoder's limit to the SETTINGS_MAX_HEADER_LIST_SIZE we advertised once
        # the client acknowledges it; keep the hard cap instead, so a header list between the
        # two is decoded (and answered 431) rather than ending the connection.
        changes: dict[Any, Any] = super()._local_settings_acked()
        self.decoder.max_header_list_size = self._header_block_cap
        return changes
