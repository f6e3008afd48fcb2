"""OpenAI legacy text-completion stream encoder (``text_completion`` SSE, ends ``[DONE]``).

Each text delta is one chunk ``{"id","object":"text_completion","created","model","choices":
[{"text","index":0,"logprobs":null,"finish_reason":null}]}``; the last chunk carries the
``finish_reason``; with ``ctx.include_usage`` a usage chunk (``choices: []``) follows. Reasoning
and tool calls have no place in this format and are dropped.
"""

from __future__ import annotations

import orjson

from tokios_translate._common import ErrorKind, StreamContext, Usage
from tokios_translate.clients.completions import completion_text_id
from tokios_translate.stream.encoders.chat import DONE, FINISH_REASONS, error_chunk
from tokios_translate.stream.events import Finished, StreamEvent, TextDelta


class CompletionsEncoder:
    """Encodes stream events as text-completion chunks."""

    __slots__ = ("_bare", "_include_usage", "_prefix")

    def __init__(self, ctx: StreamContext) -> None:
        head = orjson.dumps({
            "id": completion_text_id(ctx.response_id),
            "object": "text_completion",
            "created": ctx.created,
            "model": ctx.model,
        })[:-1]
        self._bare = b"data: " + head
        self._prefix = self._bare + b',"choices":[{"text":'
        self._include_usage = ctx.include_usage

    def start(self) -> bytes:
        return b""

    def _chunk(self, text: str, finish: bytes) -> bytes:
        return (self._prefix + orjson.dumps(text) + b',"index":0,"logprobs":null,'
                b'"finish_reason":' + finish + b"}]}\n\n")

    def encode(self, event: StreamEvent) -> bytes:
        if isinstance(event, TextDelta):
            return self._chunk(event.text, b"null")
        if isinstance(event, Finished):
            reason = FINISH_REASONS[event.stop]
            out = self._chunk("", b'"stop"' if reason == b'"tool_calls"' else reason)
            if self._include_usage:
                usage = event.usage or Usage()
                out += self._bare + b',"choices":[],"usage":' + orjson.dumps({
                    "prompt_tokens": usage.input_tokens,
                    "completion_tokens": usage.output_tokens,
                    "total_tokens": usage.total_tokens}) + b"}\n\n"
            return out + DONE
        return b""

    def error(self, message: str, kind: ErrorKind = ErrorKind.UPSTREAM) -> bytes:
        return error_chunk(message, kind)
