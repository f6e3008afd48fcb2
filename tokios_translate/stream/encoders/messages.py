"""Anthropic Messages stream encoder (``event:``-named SSE, exact block discipline).

Guarantees what Claude Code and the SDKs check: exactly one ``message_start`` (with the
estimated ``input_tokens``), a ``content_block_start`` before any delta of its block, block
indices equal to positions, blocks closed in order, each thinking block closed with a
``signature_delta`` carrying :data:`THINKING_SIGNATURE_PLACEHOLDER`, ``message_delta`` with the
exact cumulative usage, then ``message_stop``. A failure is ``event: error`` and nothing after.

Tool arguments are held until the call ends and sent as one ``input_json_delta`` once they parse
as a JSON object: the Anthropic SDKs parse every partial ``input_json_delta`` and fail on invalid
JSON, so a model's malformed arguments become a clean ``event: error`` instead.
"""

from __future__ import annotations

import orjson

from tokios_translate._common import ErrorKind, StopReason, StreamContext, Usage
from tokios_translate.clients.messages import ERROR_TYPE
from tokios_translate.ids import SIGNATURE_PLACEHOLDER, anthropic_message_id
from tokios_translate.stream.events import (
    Finished,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCallArgumentsDelta,
    ToolCallEnded,
    ToolCallStarted,
)

#: Opaque signature sent for thinking produced by a local model (it has no real signature).
#: Clients echo it back unchanged; the request codecs recognise and drop it.
THINKING_SIGNATURE_PLACEHOLDER = SIGNATURE_PLACEHOLDER

STOP_REASONS: dict[StopReason, str] = {
    StopReason.END_TURN: "end_turn",
    StopReason.STOP_SEQUENCE: "stop_sequence",
    StopReason.MAX_TOKENS: "max_tokens",
    StopReason.TOOL_USE: "tool_use",
    StopReason.CONTENT_FILTER: "refusal",
}

_NONE, _TEXT, _THINKING, _TOOL = 0, 1, 2, 3

#: Limit on the arguments of one tool call held before they are checked and sent.
MAX_TOOL_ARGUMENTS = 8 * 1024 * 1024


def error_event(message: str, kind: ErrorKind = ErrorKind.UPSTREAM) -> bytes:
    """The Messages in-stream error (``event: error``), with the same error type as a
    non-streamed error envelope (clients/messages.py): ``api_error``, ``overloaded_error``..."""
    body = {"type": "error", "error": {"type": ERROR_TYPE[kind][0], "message": message}}
    return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"


class StreamEncodeError(Exception):
    """The events cannot be shaped for the client; the message is content-free."""

_DELTA = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
_STOP = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":'
_START = b'event: content_block_start\ndata: {"type":"content_block_start","index":'
_TEXT_BLOCK = b',"content_block":{"type":"text","text":""}}\n\n'
_THINKING_BLOCK = b',"content_block":{"type":"thinking","thinking":"","signature":""}}\n\n'
_SIGNATURE = (
    b',"delta":{"type":"signature_delta","signature":'
    + orjson.dumps(THINKING_SIGNATURE_PLACEHOLDER)
    + b"}}\n\n"
)
_PING = b'event: ping\ndata: {"type":"ping"}\n\n'


class MessagesEncoder:
    """Encodes stream events as Anthropic Messages SSE."""

    __slots__ = ("_args", "_args_size", "_block", "_ctx", "_index", "_index_bytes", "_next")

    def __init__(self, ctx: StreamContext) -> None:
        self._ctx = ctx
        self._block = _NONE
        self._index = -1
        self._index_bytes = b""
        self._next = 0
        self._args: list[str] = []
        self._args_size = 0

    def start(self) -> bytes:
        ctx = self._ctx
        message = {
            "type": "message_start",
            "message": {
                "id": anthropic_message_id(ctx.response_id),
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": ctx.model,
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": ctx.estimated_input_tokens, "output_tokens": 0},
            },
        }
        return b"event: message_start\ndata: " + orjson.dumps(message) + b"\n\n" + _PING

    def encode(self, event: StreamEvent) -> bytes:
        if isinstance(event, TextDelta):
            head = b"" if self._block == _TEXT else self._open(_TEXT, _TEXT_BLOCK)
            return (
                head
                + _DELTA
                + self._index_bytes
                + b',"delta":{"type":"text_delta","text":'
                + orjson.dumps(event.text)
                + b"}}\n\n"
            )
        if isinstance(event, ReasoningDelta):
            head = b"" if self._block == _THINKING else self._open(_THINKING, _THINKING_BLOCK)
            return (
                head
                + _DELTA
                + self._index_bytes
                + b',"delta":{"type":"thinking_delta","thinking":'
                + orjson.dumps(event.text)
                + b"}}\n\n"
            )
        if isinstance(event, ToolCallArgumentsDelta):
            self._args.append(event.fragment)
            self._args_size += len(event.fragment)
            if self._args_size > MAX_TOOL_ARGUMENTS:
                raise StreamEncodeError("tool call arguments exceed the size limit")
            return b""
        if isinstance(event, ToolCallStarted):
            block = {"type": "tool_use", "id": event.id, "name": event.name, "input": {}}
            self._args = []
            self._args_size = 0
            return self._open(_TOOL, b',"content_block":' + orjson.dumps(block) + b"}\n\n")
        if isinstance(event, ToolCallEnded):
            return self._tool_arguments() + self._close()
        if isinstance(event, Finished):
            return self._close() + self._finish(event)
        return b""

    def _tool_arguments(self) -> bytes:
        arguments = "".join(self._args)
        self._args = []
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise StreamEncodeError("tool call arguments are not a JSON object")
        return (
            _DELTA
            + self._index_bytes
            + b',"delta":{"type":"input_json_delta","partial_json":'
            + orjson.dumps(arguments)
            + b"}}\n\n"
        )

    def _open(self, kind: int, block: bytes) -> bytes:
        out = self._close()
        self._index = self._next
        self._next += 1
        self._index_bytes = str(self._index).encode()
        self._block = kind
        return out + _START + self._index_bytes + block

    def _close(self) -> bytes:
        if self._block == _NONE:
            return b""
        out = b""
        if self._block == _THINKING:
            out = _DELTA + self._index_bytes + _SIGNATURE
        self._block = _NONE
        return out + _STOP + self._index_bytes + b"}\n\n"

    def _finish(self, event: Finished) -> bytes:
        usage = event.usage or Usage()
        # Anthropic's input_tokens excludes cache reads; fall back to the estimate when the
        # backend did not count the prompt (Ollama omits prompt_eval_count on cache hits).
        input_tokens = usage.input_tokens or self._ctx.estimated_input_tokens
        input_tokens = max(input_tokens - usage.cached_input_tokens, 0)
        body = {
            "type": "message_delta",
            "delta": {
                "stop_reason": STOP_REASONS[event.stop],
                "stop_sequence": event.stop_sequence,
            },
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": usage.output_tokens,
                "cache_read_input_tokens": usage.cached_input_tokens,
            },
        }
        return (
            b"event: message_delta\ndata: "
            + orjson.dumps(body)
            + b'\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n'
        )

    def error(self, message: str, kind: ErrorKind = ErrorKind.UPSTREAM) -> bytes:
        return error_event(message, kind)
