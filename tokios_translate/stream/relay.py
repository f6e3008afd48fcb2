"""The gateway's guard over a relayed stream: a stream that cannot finish still ends well.

The gateway passes a connector's translated stream to the client byte for byte. If the stream
breaks after the response head (the tunnel is lost, the connector resets the stream, the
gateway drains past its grace period), cutting the connection would leave the client with an
answer it cannot tell from a complete one. The guard lets the gateway end it instead as the
client's own API ends a failed stream, after the last complete event:

* Chat Completions and legacy Completions: a chunk holding an ``error`` object, then
  ``data: [DONE]``;
* Messages: ``event: error`` (``api_error``, ``overloaded_error``, ...);
* Responses: ``error`` then ``response.failed``, numbered after the last event sent and
  carrying the response object of the stream's ``response.created``;
* Ollama NDJSON: a ``{"error": "..."}`` line.

Use, per streamed response::

    guard = StreamGuard.for_response(client, content_type)  # None: not a stream, no guard
    send(guard.feed(data))       # for each piece: only whole events go out, the rest waits
    send(guard.finish())         # the source ended normally: whatever is left
    send(guard.cut(message, kind))  # the source broke: the format's error (b"" if the
                                 # stream had already ended), then end the body properly

The fast path (a piece that ends on an event boundary, as the connector's frames do) costs one
``endswith`` and keeps a reference; only a piece split mid-event is searched and held. What is
held is bounded by :data:`MAX_HELD_BYTES`.
"""

from __future__ import annotations

from typing import Any

import orjson

from tokios_translate._common import ClientFormat, ErrorKind
from tokios_translate.stream.encoders.chat import error_chunk
from tokios_translate.stream.encoders.messages import error_event
from tokios_translate.stream.encoders.ollama import error_line
from tokios_translate.stream.encoders.responses import failed_events

__all__ = ["MAX_HELD_BYTES", "StreamGuard"]

#: The most of one unfinished event the guard holds back; a longer event goes out as it comes
#: (the guard then ends it with a blank line before any error it adds).
MAX_HELD_BYTES = 4 * 1024 * 1024

_SEQUENCE = b'"sequence_number":'
_SSE_TYPES = frozenset({"text/event-stream"})
_NDJSON_TYPES = frozenset({"application/x-ndjson", "application/jsonl", "application/json-seq"})
#: The events after which a stream of each format is over (nothing is added to it).
_TERMINAL: dict[ClientFormat, frozenset[str]] = {
    ClientFormat.MESSAGES: frozenset({"message_stop", "error"}),
    ClientFormat.RESPONSES: frozenset({"response.completed", "response.incomplete",
                                       "response.failed", "error"}),
}


class StreamGuard:
    """Holds back the unfinished tail of a relayed stream and knows how to end it in error
    (see module doc). One per response; not reusable."""

    __slots__ = ("_client", "_first", "_held", "_last", "_ndjson", "_open_event", "_seq_at",
                 "_seq_block")

    def __init__(self, client: ClientFormat, *, ndjson: bool) -> None:
        self._client = client
        self._ndjson = ndjson
        self._held = b""
        #: The first and the last block sent (whole events), for :meth:`cut`.
        self._first: bytes | None = None
        self._last = b""
        #: The last block with a ``sequence_number`` and where it is (Responses only).
        self._seq_block = b""
        self._seq_at = -1
        #: True when an over-long event went out unfinished.
        self._open_event = False

    @classmethod
    def for_response(cls, client: ClientFormat, content_type: str) -> StreamGuard | None:
        """A guard for a response with this ``content-type`` to a ``client``, or None when
        the response is not a stream of that client's format (a whole JSON answer)."""
        media = content_type.partition(";")[0].strip().lower()
        if client.speaks_ollama:
            return cls(client, ndjson=True) if media in _NDJSON_TYPES else None
        return cls(client, ndjson=False) if media in _SSE_TYPES else None

    # -- relaying --------------------------------------------------------------------------

    def feed(self, data: bytes) -> bytes:
        """The part of ``data`` (after what was held) that ends on an event boundary; the rest
        is held until the next call. Send what it returns (it may be ``b""``)."""
        if self._held:
            data = self._held + data
            self._held = b""
        if data.endswith(b"\n" if self._ndjson else b"\n\n"):
            self._sent(data, unfinished=False)
            return data
        end = self._boundary(data)
        unfinished = len(data) - end > MAX_HELD_BYTES
        if end < len(data) and not unfinished:
            self._held = data[end:]
            data = data[:end]
        if data:
            self._sent(data, unfinished=unfinished)
        return data

    def finish(self) -> bytes:
        """The source ended normally: the bytes still held (a last event without its blank
        line is passed on as the source sent it)."""
        held, self._held = self._held, b""
        return held

    def cut(self, message: str, kind: ErrorKind = ErrorKind.UPSTREAM) -> bytes:
        """The source broke: drop the unfinished event held back and return the client
        format's in-stream error (``message`` must be content-free), or ``b""`` when the
        stream had already ended (its terminal event went out). Then end the body."""
        self._held = b""
        if self._ended():
            return b""
        lead = (b"\n" if self._ndjson else b"\n\n") if self._open_event else b""
        client = self._client
        if client is ClientFormat.MESSAGES:
            return lead + error_event(message, kind)
        if client is ClientFormat.RESPONSES:
            return lead + failed_events(self._response(), self._next_sequence(), message, kind)
        if self._ndjson:
            return lead + error_line(message)
        return lead + error_chunk(message, kind)

    # -- internals -------------------------------------------------------------------------

    def _boundary(self, data: bytes) -> int:
        """The index just past the last complete event in ``data`` (0 if none)."""
        if self._ndjson:
            return data.rfind(b"\n") + 1
        lf = data.rfind(b"\n\n")
        crlf = data.rfind(b"\n\r\n")
        return max(lf + 2 if lf >= 0 else 0, crlf + 3 if crlf >= 0 else 0)

    def _sent(self, block: bytes, *, unfinished: bool) -> None:
        if self._first is None:
            self._first = block
        self._last = block
        self._open_event = unfinished
        if self._client is ClientFormat.RESPONSES:
            at = block.rfind(_SEQUENCE)
            if at >= 0:
                self._seq_block, self._seq_at = block, at

    def _ended(self) -> bool:
        """True when the last event sent is the stream's terminal one."""
        if self._open_event or not self._last:
            return False
        if self._ndjson:
            line = self._last.rstrip(b"\r\n").rpartition(b"\n")[2]
            parsed = _json(line)
            return isinstance(parsed, dict) and (parsed.get("done") is True or "error" in parsed)
        name, data = _last_event(self._last)
        if data == "[DONE]":
            return True
        terminal = _TERMINAL.get(self._client)
        if terminal is None:
            return False
        if name is None:  # an unnamed event: its data's "type" names it (Anthropic's too)
            parsed = _json(data.encode())
            name = parsed.get("type") if isinstance(parsed, dict) else None
        return name in terminal

    def _next_sequence(self) -> int:
        if self._seq_at < 0:
            return 0
        digits = self._seq_block[self._seq_at + len(_SEQUENCE):self._seq_at + len(_SEQUENCE)
                                 + 24].lstrip()
        end = 0
        while end < len(digits) and 0x30 <= digits[end] <= 0x39:
            end += 1
        return int(digits[:end]) + 1 if end else 0

    def _response(self) -> dict[str, Any]:
        """The response object of the stream's ``response.created`` (a minimal one if the
        stream did not start with it)."""
        for _, data in _events(self._first or b""):
            parsed = _json(data.encode())
            if isinstance(parsed, dict) and parsed.get("type") == "response.created" \
                    and isinstance(parsed.get("response"), dict):
                response: dict[str, Any] = parsed["response"]
                return response
        return {"id": "resp_unknown", "object": "response", "created_at": 0, "status": "failed",
                "model": "", "output": [], "parallel_tool_calls": True, "tool_choice": "auto",
                "tools": []}


def _json(data: bytes) -> object:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _events(block: bytes) -> list[tuple[str | None, str]]:
    """The SSE events of ``block`` as (event name or None, data), comments skipped."""
    out: list[tuple[str | None, str]] = []
    text = block.decode("utf-8", "replace").replace("\r\n", "\n")
    for raw in text.split("\n\n"):
        name: str | None = None
        data: list[str] = []
        for line in raw.split("\n"):
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        if name is not None or data:
            out.append((name, "\n".join(data)))
    return out


def _last_event(block: bytes) -> tuple[str | None, str]:
    events = _events(block)
    return events[-1] if events else (None, "")
