"""Incremental readers for upstream stream framing: SSE and NDJSON.

Both follow the h11 reader contract: ``feed(data)`` stores the bytes and returns the units that
are now complete (possibly none); a partial unit waits for the next call. The search offset is
remembered, so a unit arriving in many small reads is scanned once. Each reader has a size limit;
going over it raises :class:`ReaderLimitError` and the reader must then be dropped. Bytes are
never decoded here, so a read that splits a UTF-8 character is harmless.

Call ``feed`` for each upstream read, then ``finish`` once at upstream EOF.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Default limit on one SSE event or one NDJSON line (a whole tool call may arrive in one unit).
DEFAULT_MAX_UNIT_SIZE = 8 * 1024 * 1024

_LINE_END = re.compile(rb"\r\n?|\n")
_BOM = b"\xef\xbb\xbf"
_CR = 13


class ReaderLimitError(Exception):
    """An SSE event or NDJSON line is larger than the reader's limit."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SSEMessage:
    """One dispatched SSE event: its ``event:`` name ("" when absent) and its joined data."""

    event: str
    data: bytes


class SSEParser:
    """Server-sent events parser (WHATWG rules: LF, CR or CRLF; ``:`` comments; multi-line data).

    ``feed(bytes) -> list[SSEMessage]``; ``finish() -> list[SSEMessage]`` at EOF dispatches an
    event left without its blank line (lenient: some servers end the stream without one).
    """

    __slots__ = ("_buf", "_data", "_event", "_limit", "_scan", "_size", "_started")

    def __init__(self, *, max_event_size: int = DEFAULT_MAX_UNIT_SIZE) -> None:
        self._buf = bytearray()
        self._scan = 0
        self._limit = max_event_size
        self._event = ""
        self._data: list[bytes] = []
        self._size = 0
        self._started = False

    def feed(self, data: bytes) -> list[SSEMessage]:
        """Store ``data``; return the events completed by it."""
        buf = self._buf
        if not buf and self._started and b"\r" not in data:
            # Fast path (the usual read: whole LF-terminated events, nothing pending).
            lines = data.split(b"\n")
            rest = lines.pop()
            out: list[SSEMessage] = []
            line = self._line
            for one in lines:
                line(one, out)
            if rest:
                buf += rest
                self._scan = len(rest)
                if len(rest) + self._size > self._limit:
                    raise ReaderLimitError("SSE event exceeds the size limit")
            return out
        buf += data
        if not self._started:
            if len(buf) < len(_BOM) and _BOM.startswith(bytes(buf)):
                return []
            self._started = True
            if buf.startswith(_BOM):
                del buf[: len(_BOM)]
        out = []
        start = 0
        scan = self._scan
        size = len(buf)
        search = _LINE_END.search
        while True:
            match = search(buf, scan)
            if match is None:
                scan = size
                break
            end = match.start()
            if match.end() == size and end == size - 1 and buf[end] == _CR:
                # A CR at the end of the read may be the first half of a CRLF: wait.
                scan = end
                break
            self._line(bytes(buf[start:end]), out)
            start = scan = match.end()
        if start:
            del buf[:start]
            scan -= start
        self._scan = scan
        if len(buf) + self._size > self._limit:
            raise ReaderLimitError("SSE event exceeds the size limit")
        return out

    def finish(self) -> list[SSEMessage]:
        """Upstream EOF: process a last unterminated line and dispatch a pending event."""
        out: list[SSEMessage] = []
        buf = self._buf
        if buf:
            line = bytes(buf[:-1]) if buf[-1] == _CR else bytes(buf)
            buf.clear()
            self._scan = 0
            self._line(line, out)
        self._line(b"", out)
        return out

    def _line(self, line: bytes, out: list[SSEMessage]) -> None:
        if not line:
            if self._data:
                out.append(SSEMessage(event=self._event, data=b"\n".join(self._data)))
                self._data = []
                self._size = 0
            self._event = ""
            return
        if line[0] == 0x3A:  # ":" comment (llama.cpp pings)
            return
        colon = line.find(b":")
        if colon < 0:
            name, value = line, b""
        else:
            name = line[:colon]
            value = line[colon + 2 :] if line[colon + 1 : colon + 2] == b" " else line[colon + 1 :]
        if name == b"data":
            self._data.append(value)
            self._size += len(value) + 1
            if self._size > self._limit:
                raise ReaderLimitError("SSE event exceeds the size limit")
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        # "id", "retry" and unknown fields are ignored.


class NDJSONReader:
    """Newline-delimited JSON framing: ``feed(bytes) -> list[bytes]`` of complete, non-blank lines.

    A trailing CR is stripped. ``finish()`` returns a last line that lacked its newline.
    """

    __slots__ = ("_buf", "_limit", "_scan")

    def __init__(self, *, max_line_size: int = DEFAULT_MAX_UNIT_SIZE) -> None:
        self._buf = bytearray()
        self._scan = 0
        self._limit = max_line_size

    def feed(self, data: bytes) -> list[bytes]:
        """Store ``data``; return the lines completed by it."""
        buf = self._buf
        buf += data
        out: list[bytes] = []
        start = 0
        find = buf.find
        newline = find(b"\n", self._scan)
        while newline >= 0:
            line = bytes(buf[start:newline]).strip()
            if line:
                out.append(line)
            start = newline + 1
            newline = find(b"\n", start)
        if start:
            del buf[:start]
        self._scan = len(buf)
        if self._scan > self._limit:
            raise ReaderLimitError("NDJSON line exceeds the size limit")
        return out

    def finish(self) -> list[bytes]:
        """Upstream EOF: the unterminated last line, if any."""
        line = bytes(self._buf).strip()
        self._buf.clear()
        self._scan = 0
        return [line] if line else []
