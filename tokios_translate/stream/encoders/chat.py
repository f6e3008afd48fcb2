"""OpenAI Chat Completions stream encoder (``chat.completion.chunk`` SSE, ends ``[DONE]``).

Every chunk shares one precomputed prefix (id, object, created, model); the role is sent once,
in the first delta. Reasoning goes out as ``delta.reasoning_content``. With
``ctx.include_usage`` a usage chunk (``choices: []``) follows the finish chunk.
"""

from __future__ import annotations

import orjson

from tokios_translate._common import ErrorKind, StopReason, StreamContext, Usage
from tokios_translate.clients._openai import OPENAI_ERROR_CODE, OPENAI_ERROR_TYPE
from tokios_translate.ids import chat_completion_id
from tokios_translate.stream.events import (
    Finished,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCallArgumentsDelta,
    ToolCallStarted,
)

FINISH_REASONS: dict[StopReason, bytes] = {
    StopReason.END_TURN: b'"stop"',
    StopReason.STOP_SEQUENCE: b'"stop"',
    StopReason.MAX_TOKENS: b'"length"',
    StopReason.TOOL_USE: b'"tool_calls"',
    StopReason.CONTENT_FILTER: b'"content_filter"',
}

DONE = b"data: [DONE]\n\n"


def error_chunk(message: str, kind: ErrorKind = ErrorKind.UPSTREAM) -> bytes:
    """The in-stream error of Chat and legacy Completions streams: one chunk holding the same
    error object as a non-streamed error envelope (clients/_openai.py), then ``[DONE]``."""
    body = {
        "error": {
            "message": message,
            "type": OPENAI_ERROR_TYPE[kind],
            "param": None,
            "code": OPENAI_ERROR_CODE.get(kind),
        }
    }
    return b"data: " + orjson.dumps(body) + b"\n\n" + DONE


class ChatEncoder:
    """Encodes stream events as Chat Completions chunks."""

    __slots__ = ("_bare", "_include_usage", "_prefix", "_suffix")

    def __init__(self, ctx: StreamContext) -> None:
        head = orjson.dumps(
            {
                "id": chat_completion_id(ctx.response_id),
                "object": "chat.completion.chunk",
                "created": ctx.created,
                "model": ctx.model,
            }
        )[:-1]
        self._bare = b"data: " + head
        self._prefix = self._bare + b',"choices":[{"index":0,"delta":'
        self._suffix = b',"finish_reason":null}]}\n\n'
        self._include_usage = ctx.include_usage

    def start(self) -> bytes:
        return self._prefix + b'{"role":"assistant","content":""}' + self._suffix

    def encode(self, event: StreamEvent) -> bytes:
        if isinstance(event, TextDelta):
            return self._prefix + b'{"content":' + orjson.dumps(event.text) + b"}" + self._suffix
        if isinstance(event, ReasoningDelta):
            return (
                self._prefix
                + b'{"reasoning_content":'
                + orjson.dumps(event.text)
                + b"}"
                + self._suffix
            )
        if isinstance(event, ToolCallArgumentsDelta):
            return (
                self._prefix
                + b'{"tool_calls":[{"index":'
                + str(event.index).encode()
                + b',"function":{"arguments":'
                + orjson.dumps(event.fragment)
                + b"}}]}"
                + self._suffix
            )
        if isinstance(event, ToolCallStarted):
            call = {
                "index": event.index,
                "id": event.id,
                "type": "function",
                "function": {"name": event.name, "arguments": ""},
            }
            return self._prefix + b'{"tool_calls":[' + orjson.dumps(call) + b"]}" + self._suffix
        if isinstance(event, Finished):
            out = self._prefix + b'{},"finish_reason":' + FINISH_REASONS[event.stop] + b"}]}\n\n"
            if self._include_usage:
                out += self._usage_chunk(event.usage or Usage())
            return out + DONE
        return b""  # ToolCallEnded: nothing to say in Chat.

    def _usage_chunk(self, usage: Usage) -> bytes:
        body = {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        }
        return self._bare + b',"choices":[],"usage":' + orjson.dumps(body) + b"}\n\n"

    def error(self, message: str, kind: ErrorKind = ErrorKind.UPSTREAM) -> bytes:
        return error_chunk(message, kind)
