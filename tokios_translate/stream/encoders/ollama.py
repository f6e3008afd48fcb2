"""Ollama NDJSON stream encoders: ``/api/chat`` (``message`` chunks) and ``/api/generate``
(``response`` chunks), one JSON object per line, the last with ``done: true`` and the counts.

Tool calls go out whole, as Ollama sends them: the arguments of the live call are held (at most
:data:`MAX_HELD_ARGUMENTS` bytes) until it ends, then one chunk carries the call with its
arguments as an object. ``/api/generate`` has no tool calls: they are dropped. Errors are one
``{"error": "..."}`` line, which Ollama's clients raise.
"""

from __future__ import annotations

import orjson

from tokios_translate._common import ErrorKind, StreamContext, Usage
from tokios_translate.clients.ollama_client import created_at, final_fields, tool_call_object
from tokios_translate.stream.encoders.messages import StreamEncodeError
from tokios_translate.stream.events import (
    Finished,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCallArgumentsDelta,
    ToolCallEnded,
    ToolCallStarted,
)

#: Most argument bytes held for the tool call being streamed.
MAX_HELD_ARGUMENTS = 8 * 1024 * 1024


def error_line(message: str) -> bytes:
    """Ollama's in-stream error: one NDJSON line ``{"error": message}`` (its clients raise it)."""
    return orjson.dumps({"error": message}) + b"\n"


class _OllamaEncoder:
    __slots__ = ("_model", "_prefix")

    def __init__(self, ctx: StreamContext) -> None:
        self._model = ctx.model
        self._prefix = orjson.dumps({"model": ctx.model, "created_at": created_at(ctx)})[:-1]

    def start(self) -> bytes:
        return b""

    def _line(self, fields: dict[str, object]) -> bytes:
        return self._prefix + b"," + orjson.dumps(fields)[1:] + b"\n"

    def _final(self, event: Finished, extra: dict[str, object]) -> bytes:
        usage = event.usage or Usage()
        return self._line({**extra, **final_fields(event.stop, usage.input_tokens,
                                                   usage.output_tokens)})

    def error(self, message: str, kind: ErrorKind = ErrorKind.UPSTREAM) -> bytes:
        return error_line(message)


class OllamaChatEncoder(_OllamaEncoder):
    """Encodes stream events as ``/api/chat`` NDJSON chunks."""

    __slots__ = ("_call", "_held", "_held_size")

    def __init__(self, ctx: StreamContext) -> None:
        super().__init__(ctx)
        self._call: ToolCallStarted | None = None
        self._held: list[str] = []
        self._held_size = 0

    def _message(self, message: dict[str, object]) -> bytes:
        return self._line({"message": {"role": "assistant", **message}, "done": False})

    def encode(self, event: StreamEvent) -> bytes:
        if isinstance(event, TextDelta):
            return self._message({"content": event.text})
        if isinstance(event, ReasoningDelta):
            return self._message({"content": "", "thinking": event.text})
        if isinstance(event, ToolCallStarted):
            self._call, self._held, self._held_size = event, [], 0
            return b""
        if isinstance(event, ToolCallArgumentsDelta):
            self._held_size += len(event.fragment)
            if self._held_size > MAX_HELD_ARGUMENTS:
                raise StreamEncodeError("tool call arguments exceed the size limit")
            self._held.append(event.fragment)
            return b""
        if isinstance(event, ToolCallEnded):
            call = self._call
            self._call = None
            if call is None:
                return b""
            arguments = "".join(self._held) or "{}"
            self._held = []
            return self._message({"content": "", "tool_calls": [
                tool_call_object(call.id, call.index, call.name, arguments)]})
        if isinstance(event, Finished):
            return self._final(event, {"message": {"role": "assistant", "content": ""}})
        return b""


class OllamaGenerateEncoder(_OllamaEncoder):
    """Encodes stream events as ``/api/generate`` NDJSON chunks."""

    __slots__ = ()

    def encode(self, event: StreamEvent) -> bytes:
        if isinstance(event, TextDelta):
            return self._line({"response": event.text, "done": False})
        if isinstance(event, ReasoningDelta):
            return self._line({"response": "", "thinking": event.text, "done": False})
        if isinstance(event, Finished):
            return self._final(event, {"response": ""})
        return b""  # tool calls: /api/generate has no place for them
