"""Per-stream bookkeeping and the fair round-robin output scheduler."""

from __future__ import annotations

from collections import deque

from ._codes import FrameFlag, FrameType
from ._flow import ReceiveWindow
from ._frames import HEADER_SIZE, encode_header
from ._state import StreamState

__all__ = ["Stream", "produce_frames"]

Piece = bytes | memoryview
_DATA = int(FrameType.DATA)
_END = int(FrameFlag.END_STREAM)


class Stream:
    """One stream: its state, send credit, receive window and queued outbound body."""

    __slots__ = ("end_pending", "queue", "queued", "recv", "report_owed", "scheduled",
                 "send_window", "state", "stream_id")

    def __init__(self, stream_id: int, send_window: int, recv_window: int) -> None:
        self.stream_id = stream_id
        self.state = StreamState.IDLE  # the OPEN input moves it to OPEN
        #: Credit left to *queue* more DATA (queued bytes are already deducted).
        self.send_window = send_window
        self.recv = ReceiveWindow(recv_window)
        #: Body bytes accepted by ``send_data`` and not yet framed.
        self.queue: deque[memoryview] = deque()
        self.queued = 0
        #: An END_STREAM is due after ``queue`` drains.
        self.end_pending = False
        #: The stream sits in the scheduler's ready queue.
        self.scheduled = False
        #: Protocol version 2: the connector owes a usage report for this stream.
        self.report_owed = False

    def drop_output(self) -> int:
        """Forget queued body bytes (on reset); return how many were dropped."""
        dropped = self.queued
        self.queue.clear()
        self.queued = 0
        self.end_pending = False
        return dropped


def produce_frames(control: list[bytes], ready: deque[Stream], max_frame_size: int,
                   budget: int | None) -> list[list[Piece]]:
    """Take frames off the queues: control frames first, then DATA round-robin.

    Each stream gives at most one frame of at most ``max_frame_size`` bytes per turn, then goes
    to the back of ``ready``, so a long body cannot starve short ones. ``budget`` caps the
    total bytes (at least one frame is produced if anything is pending). Each returned item is
    the pieces of one whole frame.
    """
    frames: list[list[Piece]] = []
    left = -1 if budget is None else budget
    taken_control = 0
    for frame in control:
        size = len(frame)
        if budget is not None and frames and size > left:
            break
        frames.append([frame])
        left -= size
        taken_control += 1
    if taken_control == len(control):
        control.clear()
    else:
        del control[:taken_control]
        return frames
    while ready:
        stream = ready[0]
        if not stream.queued and not stream.end_pending:
            ready.popleft()
            stream.scheduled = False
            continue
        room = max_frame_size
        if budget is not None:
            room = min(room, left - HEADER_SIZE)
            if frames and (room < 0 or (room == 0 and stream.queued)):
                break
            room = max(room, 0 if frames else 1)
        pieces: list[Piece] = []
        taken = 0
        queue = stream.queue
        while queue and taken < room:
            view = queue[0]
            want = room - taken
            if len(view) <= want:
                queue.popleft()
                pieces.append(view)
                taken += len(view)
            else:
                pieces.append(view[:want])
                queue[0] = view[want:]
                taken += want
        stream.queued -= taken
        flags = 0
        if stream.end_pending and not stream.queued:
            flags = _END
            stream.end_pending = False
        pieces.insert(0, encode_header(_DATA, flags, stream.stream_id, taken))
        frames.append(pieces)
        left -= HEADER_SIZE + taken
        ready.popleft()
        if stream.queued or stream.end_pending:
            ready.append(stream)
        else:
            stream.scheduled = False
    return frames
