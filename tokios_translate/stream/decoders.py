"""Upstream stream decoders: Ollama ``/api/chat`` NDJSON and OpenAI-compatible chat SSE.

Each decoder turns upstream bytes into :mod:`~tokios_translate.stream.events`. Call
``feed(chunk)`` for every upstream read and ``finish()`` at EOF; both return a list of events
and never raise (malformed data becomes one :class:`UpstreamError`). After a terminal event the
decoder returns nothing more.

Tool calls go through :class:`ToolCallSequencer`, which makes them sequential whatever the
upstream does (interleaved fragments, the name in a later chunk, missing ids, arguments only in
the last chunk), keeps only the first call when parallel tool calls are disabled, and generates
missing or repeated ids as ``f"call_{ctx.response_id}_{index}"`` (index = the call's position in
the answer).
"""

from __future__ import annotations

from typing import Any

import orjson

from tokios_translate._common import StopReason, StreamContext, Usage
from tokios_translate.ids import tool_call_id
from tokios_translate.stream.events import (
    Finished,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCallArgumentsDelta,
    ToolCallEnded,
    ToolCallStarted,
    UpstreamError,
)
from tokios_translate.stream.readers import NDJSONReader, ReaderLimitError, SSEParser

#: Upstream error messages are cut to this length before they reach the client.
MAX_ERROR_MESSAGE = 500

#: Limit on the tool-call argument bytes held back (calls waiting behind the live one).
MAX_PENDING_ARGUMENTS = 8 * 1024 * 1024

_EARLY_EOF = "upstream stream ended before the response was complete"
_MALFORMED = "malformed upstream stream data"


class _ProtocolViolationError(Exception):
    """Internal: upstream data that cannot be translated. The message is content-free."""


#: The id given to tool call ``index`` of an answer when the upstream sent none
#: (``call_{response_id}_{index}``, shared with the non-streaming codecs).
generated_tool_call_id = tool_call_id


def _error_message(value: object) -> str:
    if isinstance(value, dict):
        value = value.get("message") or value.get("error") or "upstream error"
    if not isinstance(value, str) or not value:
        value = "upstream error"
    return value[:MAX_ERROR_MESSAGE]


class _Call:
    __slots__ = ("dropped", "id", "name", "out_index", "pending", "sent_args", "state")

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.pending: list[str] = []
        self.state = "new"  # new -> queued -> live -> closed
        self.out_index = -1
        self.sent_args = False
        self.dropped = False


class ToolCallSequencer:
    """Turns tool-call fragments keyed by upstream index into sequential tool-call events.

    ``fragment(...)`` for each upstream piece; ``complete(key)`` when the upstream says a call is
    whole (Ollama); ``close_all(out)`` before any non-tool event and at the end of the answer.
    The live call streams its fragments at once; calls that start while another is live wait
    (buffered) until it closes, so blocks never interleave.
    """

    __slots__ = (
        "_calls",
        "_first_key",
        "_live",
        "_next_index",
        "_parallel",
        "_pending_size",
        "_queue",
        "_rid",
        "_used_ids",
    )

    def __init__(self, ctx: StreamContext) -> None:
        self._rid = ctx.response_id
        self._parallel = ctx.parallel_tool_calls
        self._calls: dict[object, _Call] = {}
        self._queue: list[_Call] = []
        self._live: _Call | None = None
        self._next_index = 0
        self._first_key: object = None
        self._pending_size = 0
        self._used_ids: set[str] = set()

    @property
    def any_calls(self) -> bool:
        """True once at least one (kept) tool call was seen."""
        return self._first_key is not None

    def last_key(self) -> object:
        """The key of the most recently created call (None if none)."""
        return next(reversed(self._calls)) if self._calls else None

    def fragment(
        self, key: object, call_id: str, name: str, arguments: str, out: list[StreamEvent]
    ) -> None:
        call = self._calls.get(key)
        if call is None:
            call = self._calls[key] = _Call()
            if self._first_key is None:
                self._first_key = key
            elif not self._parallel:
                call.dropped = True
        if call.dropped:
            return
        if call_id and not call.id:
            call.id = call_id
        if name and not call.name:
            call.name = name
        if arguments:
            if call.state == "live":
                call.sent_args = True
                out.append(ToolCallArgumentsDelta(index=call.out_index, fragment=arguments))
            elif call.state == "closed":
                raise _ProtocolViolationError("tool call arguments arrived after the call ended")
            else:
                call.pending.append(arguments)
                self._pending_size += len(arguments)
                if self._pending_size > MAX_PENDING_ARGUMENTS:
                    raise _ProtocolViolationError("held tool call arguments exceed the size limit")
        if call.state == "new" and call.name:
            if self._live is None and not self._queue:
                self._start(call, out)
            else:
                call.state = "queued"
                self._queue.append(call)

    def complete(self, key: object, out: list[StreamEvent]) -> None:
        """The upstream says call ``key`` is whole (Ollama): close it if it is the live call.

        Whole calls never wait in the queue: each is live as soon as it arrives."""
        call = self._calls.get(key)
        if call is not None and call is self._live:
            self._end(call, out)
            self._live = None

    def close_all(self, out: list[StreamEvent]) -> None:
        """End the live call and emit every waiting call whole (before text, or at the end)."""
        if self._live is not None:
            self._end(self._live, out)
            self._live = None
        while self._queue:
            call = self._queue.pop(0)
            self._start(call, out)
            self._end(call, out)
            self._live = None

    def check_complete(self) -> None:
        """At the end of the answer: every call must have received a name."""
        for call in self._calls.values():
            if not call.dropped and call.state == "new":
                raise _ProtocolViolationError("tool call without a name")

    def _start(self, call: _Call, out: list[StreamEvent]) -> None:
        index = self._next_index
        self._next_index += 1
        call.out_index = index
        call.state = "live"
        self._live = call
        if not call.id or call.id in self._used_ids:
            # Missing or repeated upstream id: ids must be unique within an answer (clients
            # link results by them, and the SDK stream helpers reject duplicates).
            call.id = generated_tool_call_id(self._rid, index)
            while call.id in self._used_ids:
                call.id += "_"
        self._used_ids.add(call.id)
        out.append(ToolCallStarted(index=index, id=call.id, name=call.name))
        if call.pending:
            call.sent_args = True
            out.extend(
                ToolCallArgumentsDelta(index=index, fragment=piece) for piece in call.pending
            )
            call.pending = []

    @staticmethod
    def _end(call: _Call, out: list[StreamEvent]) -> None:
        if not call.sent_args:
            out.append(ToolCallArgumentsDelta(index=call.out_index, fragment="{}"))
            call.sent_args = True
        call.state = "closed"
        out.append(ToolCallEnded(index=call.out_index))


class _Decoder:
    """Shared decoder shell: terminal-state handling and exception containment."""

    __slots__ = ("_ctx", "_done", "_tools")

    def __init__(self, ctx: StreamContext) -> None:
        self._ctx = ctx
        self._done = False
        self._tools = ToolCallSequencer(ctx)

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        """Decode one upstream read. Never raises."""
        if self._done:
            return []
        out: list[StreamEvent] = []
        try:
            self._feed(chunk, out)
        except ReaderLimitError:
            out.append(UpstreamError(message="upstream stream unit exceeds the size limit"))
        except Exception as exc:
            self._contain(exc, out)
        return self._seal(out)

    def finish(self) -> list[StreamEvent]:
        """Upstream EOF. Returns the remaining events, ending with exactly one terminal event
        unless one was already returned."""
        if self._done:
            return []
        out: list[StreamEvent] = []
        try:
            self._finish(out)
        except Exception as exc:
            self._contain(exc, out)
        out = self._seal(out)
        if not self._done:
            out.append(UpstreamError(message=_EARLY_EOF))
            self._done = True
        return out

    def _contain(self, exc: Exception, out: list[StreamEvent]) -> None:
        """Turn an exception of the decoding into the stream's in-stream error: malformed
        upstream data (invalid JSON, a shape the decoder refuses) as such, anything else (a
        bug) as malformed data too, so no exception escapes, unless ``ctx.strict``, where a bug
        re-raises."""
        if isinstance(exc, _ProtocolViolationError):
            out.append(UpstreamError(message=str(exc)))
            return
        if not isinstance(exc, orjson.JSONDecodeError) and self._ctx.strict:
            raise exc
        out.append(UpstreamError(message=_MALFORMED))

    def _seal(self, out: list[StreamEvent]) -> list[StreamEvent]:
        for position, event in enumerate(out):
            if isinstance(event, Finished | UpstreamError):
                self._done = True
                return out[: position + 1]
        return out

    def _finished(
        self,
        stop: StopReason,
        usage: Usage | None,
        out: list[StreamEvent],
        stop_sequence: str | None = None,
    ) -> None:
        tools = self._tools
        tools.close_all(out)
        tools.check_complete()
        if tools.any_calls and stop in (StopReason.END_TURN, StopReason.STOP_SEQUENCE):
            stop = StopReason.TOOL_USE
        if stop is not StopReason.STOP_SEQUENCE:
            stop_sequence = None
        out.append(Finished(stop=stop, usage=usage, stop_sequence=stop_sequence))

    def _feed(self, chunk: bytes, out: list[StreamEvent]) -> None:
        raise NotImplementedError

    def _finish(self, out: list[StreamEvent]) -> None:
        raise NotImplementedError


def _object(value: object) -> dict[str, Any]:
    """``value`` if it is a JSON object; a shape the decoder cannot use is malformed data."""
    if not isinstance(value, dict):
        raise _ProtocolViolationError(_MALFORMED)
    return value


def _finish_reason(choice: dict[str, Any]) -> str | None:
    """A choice's ``finish_reason``: None while the answer goes on; malformed if not a string."""
    reason = choice.get("finish_reason")
    if not reason:
        return None
    if not isinstance(reason, str):
        raise _ProtocolViolationError(_MALFORMED)
    return reason


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class OllamaDecoder(_Decoder):
    """Ollama ``/api/chat`` NDJSON: ``message.thinking``, ``message.content``, whole
    ``message.tool_calls`` (arguments as an object), ``done``/``done_reason``, counts, ``error``."""

    __slots__ = ("_call_count", "_reader")

    def __init__(self, ctx: StreamContext) -> None:
        super().__init__(ctx)
        self._reader = NDJSONReader()
        self._call_count = 0

    def _feed(self, chunk: bytes, out: list[StreamEvent]) -> None:
        for line in self._reader.feed(chunk):
            self._line(line, out)
            if out and isinstance(out[-1], Finished | UpstreamError):
                return

    def _finish(self, out: list[StreamEvent]) -> None:
        for line in self._reader.finish():
            self._line(line, out)

    def _line(self, line: bytes, out: list[StreamEvent]) -> None:
        obj = orjson.loads(line)
        if not isinstance(obj, dict):
            raise _ProtocolViolationError(_MALFORMED)
        if obj.get("error") is not None:
            out.append(UpstreamError(message=_error_message(obj["error"])))
            return
        message = obj.get("message")
        if isinstance(message, dict):
            thinking = message.get("thinking")
            if thinking and isinstance(thinking, str):
                self._tools.close_all(out)
                out.append(ReasoningDelta(text=thinking))
            content = message.get("content")
            if content and isinstance(content, str):
                self._tools.close_all(out)
                out.append(TextDelta(text=content))
            calls = message.get("tool_calls")
            if calls:
                self._tool_calls(calls, out)
        elif message is not None:
            raise _ProtocolViolationError(_MALFORMED)
        if obj.get("done") is True:
            reason = obj.get("done_reason")
            stop = StopReason.MAX_TOKENS if reason == "length" else StopReason.END_TURN
            usage = Usage(
                input_tokens=_int(obj.get("prompt_eval_count")),
                output_tokens=_int(obj.get("eval_count")),
            )
            self._finished(stop, usage, out)

    def _tool_calls(self, calls: object, out: list[StreamEvent]) -> None:
        if not isinstance(calls, list):
            raise _ProtocolViolationError(_MALFORMED)
        tools = self._tools
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict):
                raise _ProtocolViolationError(_MALFORMED)
            name = function.get("name")
            if not isinstance(name, str) or not name:
                raise _ProtocolViolationError("tool call without a name")
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                text = arguments or "{}"
            else:
                text = orjson.dumps(arguments if arguments is not None else {}).decode()
            call_id = call.get("id")
            key = self._call_count
            self._call_count += 1
            tools.fragment(key, call_id if isinstance(call_id, str) else "", name, text, out)
            tools.complete(key, out)


_OPENAI_STOP = {
    "stop": StopReason.END_TURN,
    "length": StopReason.MAX_TOKENS,
    "tool_calls": StopReason.TOOL_USE,
    "function_call": StopReason.TOOL_USE,
    "content_filter": StopReason.CONTENT_FILTER,
}
_REASONING_FIELDS = ("reasoning_content", "reasoning", "thinking")


class OpenAIChatDecoder(_Decoder):
    """OpenAI-compatible ``/v1/chat/completions`` SSE (llama.cpp, vLLM, LM Studio, others).

    Reasoning in ``reasoning_content``, ``reasoning`` or ``thinking``; tool-call deltas by index;
    ``finish_reason``; a usage chunk (with or without ``choices``); ``[DONE]``; error objects.
    The terminal :class:`Finished` is emitted at ``[DONE]`` (so a usage chunk that follows
    ``finish_reason`` is included), or at EOF when ``finish_reason`` was seen.
    """

    __slots__ = ("_parser", "_stop", "_stop_sequence", "_stops", "_usage")

    def __init__(self, ctx: StreamContext) -> None:
        super().__init__(ctx)
        self._parser = SSEParser()
        self._stops = frozenset(ctx.stop_sequences)
        self._stop: StopReason | None = None
        self._stop_sequence: str | None = None
        self._usage: Usage | None = None

    def _feed(self, chunk: bytes, out: list[StreamEvent]) -> None:
        for message in self._parser.feed(chunk):
            self._message(message.event, message.data, out)
            if out and isinstance(out[-1], Finished | UpstreamError):
                return

    def _finish(self, out: list[StreamEvent]) -> None:
        for message in self._parser.finish():
            self._message(message.event, message.data, out)
            if out and isinstance(out[-1], Finished | UpstreamError):
                return
        if self._stop is not None:
            self._finished(self._stop, self._usage, out, self._stop_sequence)

    def _message(self, event: str, data: bytes, out: list[StreamEvent]) -> None:
        if event not in ("", "message", "error") or not data.strip():
            return  # other named events (pings, extensions) and empty keep-alives
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
        usage = obj.get("usage")
        if isinstance(usage, dict):
            details = usage.get("prompt_tokens_details")
            cached = details.get("cached_tokens") if isinstance(details, dict) else 0
            self._usage = Usage(
                input_tokens=_int(usage.get("prompt_tokens")),
                output_tokens=_int(usage.get("completion_tokens")),
                cached_input_tokens=_int(cached),
            )
        choices = obj.get("choices")
        if not choices:
            return
        if not isinstance(choices, list):
            raise _ProtocolViolationError(_MALFORMED)
        choice = _object(choices[0])
        delta = choice.get("delta")
        if delta:
            self._delta(_object(delta), out)
        reason = _finish_reason(choice)
        if reason:
            self._stop = _OPENAI_STOP.get(reason, StopReason.END_TURN)
            # vLLM names the matched stop string in ``stop_reason``; report it when it is one
            # of the client's stop sequences (other backends cannot tell which one matched).
            matched = choice.get("stop_reason")
            if reason == "stop" and isinstance(matched, str) and matched in self._stops:
                self._stop = StopReason.STOP_SEQUENCE
                self._stop_sequence = matched

    def _delta(self, delta: dict[str, Any], out: list[StreamEvent]) -> None:
        for field in _REASONING_FIELDS:
            reasoning = delta.get(field)
            if reasoning and isinstance(reasoning, str):
                self._tools.close_all(out)
                out.append(ReasoningDelta(text=reasoning))
                break
        content = delta.get("content")
        if content and isinstance(content, str):
            self._tools.close_all(out)
            out.append(TextDelta(text=content))
        calls = delta.get("tool_calls")
        if calls:
            if not isinstance(calls, list):
                raise _ProtocolViolationError(_MALFORMED)
            tools = self._tools
            for item in calls:
                call = _object(item)
                key = call.get("index")
                call_id = call.get("id")
                if not isinstance(key, int):
                    # No index: a new id starts a new call, otherwise continue the last one.
                    last = tools.last_key()
                    key = ("auto", call_id) if call_id or last is None else last
                function = _object(call.get("function") or {})
                name = function.get("name")
                arguments = function.get("arguments")
                if arguments is not None and not isinstance(arguments, str):
                    arguments = orjson.dumps(arguments).decode()
                tools.fragment(
                    key,
                    call_id if isinstance(call_id, str) else "",
                    name if isinstance(name, str) else "",
                    arguments or "",
                    out,
                )


def open_decoder(ctx: StreamContext) -> OllamaDecoder | OpenAIChatDecoder:
    """The upstream decoder for ``ctx.backend``."""
    if ctx.backend.speaks_ollama:
        return OllamaDecoder(ctx)
    return OpenAIChatDecoder(ctx)
