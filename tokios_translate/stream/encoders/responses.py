"""OpenAI Responses stream encoder (``event:``-named SSE, every event has ``sequence_number``).

Order per item: ``output_item.added`` first (reasoning included, before any summary delta:
Codex rejects orphan deltas), its parts and deltas, then the ``.done`` events and
``output_item.done`` (which is what Codex builds history from). The stream ends with
``response.completed``, ``response.incomplete`` (length / content filter) or, on failure,
``error`` followed by ``response.failed``. No ``[DONE]``.
"""

from __future__ import annotations

from typing import Any

import orjson

from tokios_translate._common import ErrorKind, StopReason, StreamContext, Usage
from tokios_translate.clients._responses_tools import custom_input
from tokios_translate.clients.responses import call_item, response_object
from tokios_translate.ids import responses_item_id
from tokios_translate.stream.events import (
    Finished,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCallArgumentsDelta,
    ToolCallEnded,
    ToolCallStarted,
)

_NONE, _MESSAGE, _REASONING, _CALL = 0, 1, 2, 3

_INCOMPLETE: dict[StopReason, str] = {
    StopReason.MAX_TOKENS: "max_output_tokens",
    StopReason.CONTENT_FILTER: "content_filter",
}


def failed_events(response: dict[str, Any], sequence_number: int, message: str,
                  kind: ErrorKind = ErrorKind.UPSTREAM) -> bytes:
    """How a Responses stream fails: ``error`` (numbered ``sequence_number``) then
    ``response.failed`` (the next number) carrying ``response`` with ``status: failed`` and
    the error. The encoder and the gateway's stream guard (stream/relay.py) both end so."""
    code = "rate_limit_exceeded" if kind is ErrorKind.RATE_LIMITED else "server_error"
    error = {"code": code, "message": message}
    failed = {**response, "status": "failed", "error": error}
    return _sse("error", {"type": "error", **error, "param": None,
                          "sequence_number": sequence_number}) + _sse(
        "response.failed", {"type": "response.failed", "response": failed,
                            "sequence_number": sequence_number + 1})


def _sse(kind: str, body: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"


class ResponsesEncoder:
    """Encodes stream events as Responses API SSE events."""

    __slots__ = (
        "_call",
        "_ctx",
        "_delta_prefix",
        "_item",
        "_item_id",
        "_kind",
        "_output",
        "_parts",
        "_seq",
    )

    def __init__(self, ctx: StreamContext) -> None:
        self._ctx = ctx
        self._seq = 0
        self._kind = _NONE
        self._item_id = ""
        self._parts: list[str] = []
        self._output: list[dict[str, Any]] = []
        self._delta_prefix = b""
        self._call: dict[str, Any] = {}
        self._item = -1

    # -- framing ---------------------------------------------------------------------------

    def _event(self, kind: str, body: dict[str, Any]) -> bytes:
        body = {"type": kind, **body, "sequence_number": self._seq}
        self._seq += 1
        return _sse(kind, body)

    def _delta(self, text: str, tail: bytes) -> bytes:
        seq = self._seq
        self._seq += 1
        return self._delta_prefix + orjson.dumps(text) + tail + str(seq).encode() + b"}\n\n"

    def _response(self, status: str, **fields: Any) -> dict[str, Any]:
        # The same response object as a non-streamed answer (clients/responses.py).
        response: dict[str, Any] = response_object(
            self._ctx, status=status, output=list(self._output), completion=None
        )
        response["usage"] = None
        response.update(fields)
        return response

    # -- public ----------------------------------------------------------------------------

    def start(self) -> bytes:
        response = self._response("in_progress")
        return self._event("response.created", {"response": response}) + self._event(
            "response.in_progress", {"response": response}
        )

    def encode(self, event: StreamEvent) -> bytes:
        if isinstance(event, TextDelta):
            head = b"" if self._kind == _MESSAGE else self._open_message()
            self._parts.append(event.text)
            return head + self._delta(event.text, b',"logprobs":[],"sequence_number":')
        if isinstance(event, ReasoningDelta):
            head = b"" if self._kind == _REASONING else self._open_reasoning()
            self._parts.append(event.text)
            return head + self._delta(event.text, b',"sequence_number":')
        if isinstance(event, ToolCallArgumentsDelta):
            self._parts.append(event.fragment)
            if self._call.get("type") == "custom_tool_call":
                return b""  # its input is sent whole when the call ends (see _close)
            return self._delta(event.fragment, b',"sequence_number":')
        if isinstance(event, ToolCallStarted):
            return self._open_call(event)
        if isinstance(event, ToolCallEnded):
            return self._close()
        if isinstance(event, Finished):
            return self._close(cut=event.stop in _INCOMPLETE) + self._finish(event)
        return b""

    def error(self, message: str, kind: ErrorKind = ErrorKind.UPSTREAM) -> bytes:
        out = failed_events(self._response("failed"), self._seq, message, kind)
        self._seq += 2
        return out

    # -- items -----------------------------------------------------------------------------

    def _begin(self, kind: int, prefix: str) -> int:
        self._kind = kind
        self._item = len(self._output)
        self._item_id = responses_item_id(self._ctx.response_id, prefix, self._item)
        self._parts = []
        return self._item

    def _open_message(self) -> bytes:
        out = self._close()
        index = self._begin(_MESSAGE, "msg")
        item = {
            "id": self._item_id,
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        where = {"item_id": self._item_id, "output_index": index, "content_index": 0}
        self._delta_prefix = (
            b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
            + orjson.dumps(where)[1:-1]
            + b',"delta":'
        )
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return (
            out
            + self._event("response.output_item.added", {"output_index": index, "item": item})
            + self._event("response.content_part.added", {**where, "part": part})
        )

    def _open_reasoning(self) -> bytes:
        out = self._close()
        index = self._begin(_REASONING, "rs")
        item = {"id": self._item_id, "type": "reasoning", "summary": []}
        where = {"item_id": self._item_id, "output_index": index, "summary_index": 0}
        self._delta_prefix = (
            b"event: response.reasoning_summary_text.delta\n"
            b'data: {"type":"response.reasoning_summary_text.delta",'
            + orjson.dumps(where)[1:-1]
            + b',"delta":'
        )
        part = {"type": "summary_text", "text": ""}
        return (
            out
            + self._event("response.output_item.added", {"output_index": index, "item": item})
            + self._event("response.reasoning_summary_part.added", {**where, "part": part})
        )

    def _open_call(self, event: ToolCallStarted) -> bytes:
        out = self._close()
        index = self._begin(_CALL, "fc")
        self._call = call_item(self._item_id, event.id, event.name, "", status="in_progress",
                               origins=self._ctx.tool_origins)
        where = {"item_id": self._item_id, "output_index": index}
        self._delta_prefix = (
            b"event: response.function_call_arguments.delta\n"
            b'data: {"type":"response.function_call_arguments.delta",'
            + orjson.dumps(where)[1:-1]
            + b',"delta":'
        )
        return out + self._event(
            "response.output_item.added", {"output_index": index, "item": self._call}
        )

    def _close(self, *, cut: bool = False) -> bytes:
        """Finish the open item; ``cut``: the answer stopped inside it (length, filter)."""
        kind = self._kind
        if kind == _NONE:
            return b""
        self._kind = _NONE
        text = "".join(self._parts)
        self._parts = []
        index = self._item
        item_id = self._item_id
        item: dict[str, Any]
        if kind == _MESSAGE:
            where = {"item_id": item_id, "output_index": index, "content_index": 0}
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            item = {
                "id": item_id,
                "type": "message",
                "status": "incomplete" if cut else "completed",
                "role": "assistant",
                "content": [part],
            }
            out = self._event("response.output_text.done", {**where, "text": text, "logprobs": []})
            out += self._event("response.content_part.done", {**where, "part": part})
        elif kind == _REASONING:
            where = {"item_id": item_id, "output_index": index, "summary_index": 0}
            part = {"type": "summary_text", "text": text}
            item = {"id": item_id, "type": "reasoning", "summary": [part]}
            out = self._event("response.reasoning_summary_text.done", {**where, "text": text})
            out += self._event("response.reasoning_summary_part.done", {**where, "part": part})
        elif self._call["type"] == "custom_tool_call":
            item = {**self._call, "input": custom_input(text)}
            where = {"item_id": item_id, "output_index": index}
            out = self._event("response.custom_tool_call_input.delta",
                              {**where, "delta": item["input"]})
            out += self._event("response.custom_tool_call_input.done",
                               {**where, "input": item["input"]})
        else:
            item = {**self._call, "status": "completed", "arguments": text}
            out = self._event(
                "response.function_call_arguments.done",
                {
                    "item_id": item_id,
                    "output_index": index,
                    "name": item["name"],
                    "arguments": text,
                },
            )
        self._output.append(item)
        return out + self._event("response.output_item.done", {"output_index": index, "item": item})

    def _finish(self, event: Finished) -> bytes:
        usage = event.usage or Usage()
        usage_body = {
            "input_tokens": usage.input_tokens,
            "input_tokens_details": {
                "cached_tokens": usage.cached_input_tokens,
                "cache_write_tokens": 0,
            },
            "output_tokens": usage.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.total_tokens,
        }
        reason = _INCOMPLETE.get(event.stop)
        if reason is None:
            response = self._response("completed", usage=usage_body)
            return self._event("response.completed", {"response": response})
        response = self._response(
            "incomplete", usage=usage_body, incomplete_details={"reason": reason}
        )
        return self._event("response.incomplete", {"response": response})
