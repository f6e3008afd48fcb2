"""Upstream stream decoders of prompt requests: Ollama ``/api/generate`` NDJSON and
OpenAI-compatible ``/v1/completions`` SSE.

They produce the same events as the chat decoders (:mod:`~tokios_translate.stream.decoders`,
whose terminal-state handling and error containment they share): text, reasoning, then one
``Finished`` or ``UpstreamError``. Prompt answers have no tool calls.
"""

from __future__ import annotations

from typing import Any

import orjson

from tokios_translate._common import StopReason, StreamContext, Usage
from tokios_translate.backends.prompt import infill_stop, infill_usage
from tokios_translate.stream.decoders import (
    _MALFORMED,
    OllamaDecoder,
    OpenAIChatDecoder,
    _error_message,
    _finish_reason,
    _int,
    _object,
    _ProtocolViolationError,
)
from tokios_translate.stream.events import (
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    UpstreamError,
)

_OPENAI_STOP = {"stop": StopReason.END_TURN, "length": StopReason.MAX_TOKENS,
                "content_filter": StopReason.CONTENT_FILTER}


class OllamaGenerateDecoder(OllamaDecoder):
    """Ollama ``/api/generate`` NDJSON: ``response``, ``thinking``, ``done``/``done_reason``,
    counts, ``error``."""

    __slots__ = ()

    def _line(self, line: bytes, out: list[StreamEvent]) -> None:
        obj = orjson.loads(line)
        if not isinstance(obj, dict):
            raise _ProtocolViolationError(_MALFORMED)
        if obj.get("error") is not None:
            out.append(UpstreamError(message=_error_message(obj["error"])))
            return
        thinking = obj.get("thinking")
        if thinking and isinstance(thinking, str):
            out.append(ReasoningDelta(text=thinking))
        text = obj.get("response")
        if text and isinstance(text, str):
            out.append(TextDelta(text=text))
        if obj.get("done") is True:
            stop = (StopReason.MAX_TOKENS if obj.get("done_reason") == "length"
                    else StopReason.END_TURN)
            usage = Usage(input_tokens=_int(obj.get("prompt_eval_count")),
                          output_tokens=_int(obj.get("eval_count")))
            self._finished(stop, usage, out)


class OpenAICompletionsDecoder(OpenAIChatDecoder):
    """OpenAI-compatible ``/v1/completions`` SSE: ``choices[0].text``, ``finish_reason``, a
    usage chunk, ``[DONE]``, error objects; and llama.cpp's native ``/infill`` SSE
    (``content``, then ``stop: true`` with ``stop_type`` and the counts; no ``[DONE]``)."""

    __slots__ = ()

    def _message(self, event: str, data: bytes, out: list[StreamEvent]) -> None:
        if event not in ("", "message", "error") or not data.strip():
            return
        if data == b"[DONE]":
            stop = self._stop if self._stop is not None else StopReason.END_TURN
            self._finished(stop, self._usage, out, self._stop_sequence)
            return
        obj = orjson.loads(data)
        if not isinstance(obj, dict):
            raise _ProtocolViolationError(_MALFORMED)
        if event == "error" or obj.get("error") is not None:
            out.append(UpstreamError(message=_error_message(obj.get("error") or obj)))
            return
        if "choices" not in obj and "content" in obj:
            self._native(obj, out)
            return
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self._usage = Usage(input_tokens=_int(usage.get("prompt_tokens")),
                                output_tokens=_int(usage.get("completion_tokens")))
        choices = obj.get("choices")
        if not choices:
            return
        if not isinstance(choices, list):
            raise _ProtocolViolationError(_MALFORMED)
        choice = _object(choices[0])
        text = choice.get("text")
        if text and isinstance(text, str):
            out.append(TextDelta(text=text))
        reason = _finish_reason(choice)
        if reason:
            self._stop = _OPENAI_STOP.get(reason, StopReason.END_TURN)
            matched = choice.get("stop_reason")
            if reason == "stop" and isinstance(matched, str) and matched in self._stops:
                self._stop = StopReason.STOP_SEQUENCE
                self._stop_sequence = matched


    def _native(self, obj: dict[str, Any], out: list[StreamEvent]) -> None:
        text = obj.get("content")
        if text and isinstance(text, str):
            out.append(TextDelta(text=text))
        if obj.get("stop") is True:
            stop, word = infill_stop(obj)
            self._finished(stop, infill_usage(obj), out, word)


def open_prompt_decoder(ctx: StreamContext) -> OllamaGenerateDecoder | OpenAICompletionsDecoder:
    """The upstream decoder of a prompt answer for ``ctx.backend``."""
    if ctx.backend.speaks_ollama:
        return OllamaGenerateDecoder(ctx)
    return OpenAICompletionsDecoder(ctx)
