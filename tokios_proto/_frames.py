"""Framing: the 12-byte header, whole-frame encode, incremental decode (docs/protocol.md §3).

    byte 0     1       2..3        4..7          8..11
    +-------+-------+-----------+-------------+-------------+------------------------+
    |version| type  |   flags   |  stream_id  |   length    |  payload (length bytes)|
    +-------+-------+-----------+-------------+-------------+------------------------+

All integers are big-endian. Frames are self-delimiting, so the decoder works on any byte stream;
on the wire a WebSocket binary message carries one or more whole frames.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ._codes import ErrorCode, FrameType
from ._errors import RemoteProtocolError

__all__ = ["FRAME_VERSION", "HEADER_SIZE", "Frame", "FrameReader", "decode_frames",
           "encode_frame"]

#: The ``version`` byte of every frame header (the framing layout, not the protocol version
#: negotiated in HELLO).
FRAME_VERSION = 1
HEADER = struct.Struct(">BBHII")
HEADER_SIZE = HEADER.size  # 12
MAX_U32 = 2**32 - 1
_KNOWN_TYPES = frozenset(int(t) for t in FrameType)


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame. ``type`` is a :class:`FrameType` (or a plain int if unknown)."""

    type: FrameType | int
    flags: int
    stream_id: int
    payload: bytes

    def encode(self) -> bytes:
        return encode_frame(self.type, self.flags, self.stream_id, self.payload)


def encode_frame(frame_type: int, flags: int, stream_id: int,
                 payload: bytes | bytearray | memoryview = b"") -> bytes:
    """Header plus payload as one ``bytes``."""
    return HEADER.pack(FRAME_VERSION, frame_type, flags, stream_id, len(payload)) + payload


def encode_header(frame_type: int, flags: int, stream_id: int, length: int) -> bytes:
    return HEADER.pack(FRAME_VERSION, frame_type, flags, stream_id, length)


class FrameReader:
    """Splits a byte stream into frames, buffering at most one partial frame.

    ``max_payload`` is the largest length accepted in a header; a larger one is a
    FRAME_SIZE_ERROR before any payload is buffered, so the buffer never exceeds
    ``HEADER_SIZE + max_payload`` between calls.
    """

    __slots__ = ("_buffer", "_need", "error", "max_payload")

    def __init__(self, max_payload: int) -> None:
        self._buffer = bytearray()
        self._need = HEADER_SIZE  # bytes the buffer must hold before it is worth parsing
        self.max_payload = max_payload
        #: Set on the first bad header; the frames before it are still returned, so that they
        #: are handled exactly as if the bytes had arrived in smaller pieces.
        self.error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes of a partial frame held back."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple[int, int, int, memoryview]]:
        """Return the complete frames in the stream so far as (type, flags, stream_id, payload).

        Payloads are views into an immutable ``bytes``: the caller copies what it keeps.
        On a bad version byte or an oversized length, the frames before it are returned and
        :attr:`error` is set (a :class:`RemoteProtocolError`); the caller handles the frames,
        then raises it. Nothing more is parsed after an error.
        """
        if self.error is not None:
            return []
        buffer = self._buffer
        if buffer:
            buffer += data
            if len(buffer) < self._need:
                return []
            blob = bytes(buffer)
            buffer.clear()
        else:
            blob = data if isinstance(data, bytes) else bytes(data)
        view = memoryview(blob)
        end = len(blob)
        pos = 0
        frames: list[tuple[int, int, int, memoryview]] = []
        unpack_from = HEADER.unpack_from
        max_payload = self.max_payload
        while end - pos >= HEADER_SIZE:
            version, frame_type, flags, stream_id, length = unpack_from(blob, pos)
            if version != FRAME_VERSION:
                self.error = RemoteProtocolError(f"unsupported frame version {version}")
            elif length > max_payload:
                self.error = RemoteProtocolError(
                    f"frame length {length} exceeds the limit {max_payload}",
                    code=ErrorCode.FRAME_SIZE_ERROR)
            if self.error is not None:
                return frames
            stop = pos + HEADER_SIZE + length
            if stop > end:
                self._need = stop - pos
                break
            frames.append((frame_type, flags, stream_id, view[pos + HEADER_SIZE:stop]))
            pos = stop
        else:
            self._need = HEADER_SIZE
        if pos < end:
            buffer += view[pos:]
        return frames


def decode_frames(data: bytes, max_payload: int = MAX_U32) -> list[Frame]:
    """Decode a byte string holding only whole frames (for tests, tools and vectors).

    Unknown types are kept as ints. Raises :class:`RemoteProtocolError` on a malformed header
    or a trailing partial frame.
    """
    reader = FrameReader(max_payload)
    frames = [Frame(FrameType(t) if t in _KNOWN_TYPES else t, f, s, bytes(p))
              for t, f, s, p in reader.feed(data)]
    if reader.error is not None:
        raise reader.error
    if reader.buffered:
        raise RemoteProtocolError("trailing partial frame")
    return frames

