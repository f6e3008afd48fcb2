"""Incremental stream translators: upstream stream bytes in, client stream bytes out.

The connector calls exactly this::

    translator = open_stream_translator(ctx)
    for chunk in upstream:                  # any split, even inside a UTF-8 character
        send(translator.feed(chunk))        # the client bytes ready now (may be b"")
        if translator.done:                 # terminal event sent: stop reading upstream
            break
    else:
        send(translator.finish())           # upstream EOF: close properly or error out
    # if the upstream connection dies: send(translator.fail("upstream connection lost"))
    # (an optional ErrorKind picks the error type: fail("...", ErrorKind.TIMEOUT))

Early bytes (slow prefill): a shell may answer before the upstream does. Right after sending the
200 ``text/event-stream`` head it sends ``translator.open()`` (Messages ``message_start`` +
``ping``, Responses ``response.created`` + ``response.in_progress``, Chat an SSE comment), then
``translator.keepalive()`` every interval until a :meth:`~StreamTranslator.feed` returned bytes
(:attr:`~StreamTranslator.answering`). Nothing of the opening is sent again. If the upstream then
answers an error status, send ``translator.upstream_error(status, body)``; if it cannot be
reached, ``translator.fail(...)``: both are the format's in-stream error, after which the stream
is ``done``.

One decoder per upstream codec (Ollama NDJSON, OpenAI-compatible SSE) and one encoder per client
format share the events of :mod:`tokios_translate.stream.events`. The client's preamble (role
chunk, ``message_start``, ``response.created``) is emitted on the first call. Nothing raises:
malformed upstream data becomes the client format's in-stream error, after which the translator
is ``done`` and returns only ``b""``.

Tool calls reach every client sequentially (interleaved upstream fragments are reordered; see
:class:`~tokios_translate.stream.decoders.ToolCallSequencer`); ids missing or repeated upstream
are generated as ``f"call_{ctx.response_id}_{index}"`` (``tokios_translate.ids.tool_call_id``).
With ``ctx.parallel_tool_calls`` false only the first call is kept. Stop reasons follow
docs/translation.md: tool calls present -> ``tool_use`` / ``tool_calls``.

Per client: Chat sends reasoning as ``delta.reasoning_content`` and a usage chunk only with
``ctx.include_usage``; Anthropic thinking blocks end with ``THINKING_SIGNATURE_PLACEHOLDER`` and
tool arguments go out as one checked ``input_json_delta`` per call; Responses items follow the
canonical event order with ``sequence_number`` on every event.
"""

from __future__ import annotations

from tokios_translate._common import ClientFormat, ErrorKind, StreamContext, Usage
from tokios_translate.backends import ollama as _ollama
from tokios_translate.backends import openai_compat as _openai_compat
from tokios_translate.stream.decoders import (
    OllamaDecoder,
    OpenAIChatDecoder,
    generated_tool_call_id,
    open_decoder,
)
from tokios_translate.stream.encoders import (
    THINKING_SIGNATURE_PLACEHOLDER,
    ChatEncoder,
    MessagesEncoder,
    ResponsesEncoder,
)
from tokios_translate.stream.encoders.completions import CompletionsEncoder
from tokios_translate.stream.encoders.messages import StreamEncodeError
from tokios_translate.stream.encoders.ollama import OllamaChatEncoder, OllamaGenerateEncoder
from tokios_translate.stream.events import (
    Finished,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCallArgumentsDelta,
    ToolCallStarted,
    UpstreamError,
)
from tokios_translate.stream.prompt_decoders import (
    OllamaGenerateDecoder,
    OpenAICompletionsDecoder,
    open_prompt_decoder,
)
from tokios_translate.tokens import estimated_usage, reported

__all__ = [
    "CHAT_OPENING",
    "MESSAGES_PING",
    "SSE_COMMENT_KEEPALIVE",
    "THINKING_SIGNATURE_PLACEHOLDER",
    "StreamTranslator",
    "generated_tool_call_id",
    "open_stream_translator",
]

_INTERNAL = "internal error while translating the stream"

#: What :meth:`StreamTranslator.open` sends a Chat client (its first real chunk carries the role).
CHAT_OPENING = b": the model is working on it\n\n"
#: The keep-alive of Chat and Responses clients: an SSE comment, ignored by every SSE parser.
SSE_COMMENT_KEEPALIVE = b": keep-alive\n\n"
#: The keep-alive of Messages clients: the event Anthropic's own API sends while it waits.
MESSAGES_PING = b'event: ping\ndata: {"type":"ping"}\n\n'
#: The client formats with early bytes: (opening, or None for the encoder's preamble; keep-alive).
_EARLY: dict[ClientFormat, tuple[bytes | None, bytes]] = {
    ClientFormat.CHAT: (CHAT_OPENING, SSE_COMMENT_KEEPALIVE),
    ClientFormat.RESPONSES: (None, SSE_COMMENT_KEEPALIVE),
    ClientFormat.MESSAGES: (None, MESSAGES_PING),
}

Encoder = (ChatEncoder | ResponsesEncoder | MessagesEncoder | OllamaChatEncoder
           | OllamaGenerateEncoder | CompletionsEncoder)
Decoder = OllamaDecoder | OpenAIChatDecoder | OllamaGenerateDecoder | OpenAICompletionsDecoder


def _open_encoder(ctx: StreamContext) -> Encoder:
    if ctx.client is ClientFormat.CHAT:
        return ChatEncoder(ctx)
    if ctx.client is ClientFormat.RESPONSES:
        return ResponsesEncoder(ctx)
    if ctx.client is ClientFormat.OLLAMA_CHAT:
        return OllamaChatEncoder(ctx)
    if ctx.client is ClientFormat.OLLAMA_GENERATE:
        return OllamaGenerateEncoder(ctx)
    if ctx.client is ClientFormat.COMPLETIONS:
        return CompletionsEncoder(ctx)
    return MessagesEncoder(ctx)


class StreamTranslator:
    """Translates one upstream answer stream into the client's stream format.

    Call :meth:`feed` for each upstream read, then :meth:`finish` at upstream EOF, or
    :meth:`fail` when the shell sees the upstream die. Check :attr:`done` after each call.
    """

    __slots__ = ("_chars", "_ctx", "_decoder", "_encoder", "_started", "_usage", "answering",
                 "done", "opened")

    def __init__(self, ctx: StreamContext) -> None:
        self._ctx = ctx
        self._decoder: Decoder = open_prompt_decoder(ctx) if ctx.prompt else open_decoder(ctx)
        self._encoder: Encoder = _open_encoder(ctx)
        self._started = False
        self._usage: Usage | None = None  # the backend's, from the Finished event
        self._chars = 0  # characters of the answer translated so far (for the estimate)
        #: True once :meth:`open` (or :meth:`keepalive`) sent the early opening.
        self.opened = False
        #: True once a call returned bytes of the answer itself: stop sending keep-alives.
        self.answering = False
        #: True once the terminal event (end of answer or error) has been emitted.
        self.done = False

    def open(self) -> bytes:
        """The client's opening, sent before the upstream answered (call once, right after the
        200 head; then :meth:`keepalive` on a timer). The first :meth:`feed` does not repeat it.
        Messages: ``message_start`` (usage: the estimated ``input_tokens``) and ``ping``;
        Responses: ``response.created`` and ``response.in_progress``; Chat: an SSE comment."""
        early = _EARLY.get(self._ctx.client)
        if early is None or self.opened or self._started or self.done:
            return b""  # formats without an opening (NDJSON has no comments) start as before
        self.opened = True
        if early[0] is not None:
            return early[0]  # Chat: the role chunk goes out with the first real delta
        self._started = True
        return self._encoder.start()

    def keepalive(self) -> bytes:
        """The keep-alive to send while the upstream is silent (Messages ``event: ping``, else
        an SSE comment); the opening first if :meth:`open` was not called; ``b""`` once done."""
        early = _EARLY.get(self._ctx.client)
        if early is None or self.done:
            return b""
        if not self.opened and not self._started:
            return self.open()
        return early[1]

    def upstream_error(self, status: int, body: bytes) -> bytes:
        """The upstream answered HTTP ``status`` >= 400 (``body``, read whole with a limit)
        after :meth:`open`: the client's in-stream error, with the same type and message as the
        non-streamed answer would have had (e.g. 503 -> Messages ``overloaded_error``)."""
        if self.done:
            return b""
        codec = _ollama if self._ctx.backend.speaks_ollama else _openai_compat
        err = codec.decode_error(status, body)
        return self._emit([UpstreamError(message=err.message, kind=err.kind)])

    def feed(self, chunk: bytes) -> bytes:
        """Take one upstream read; return the client bytes that are complete now."""
        if self.done:
            return b""
        out = self._emit(self._decoder.feed(chunk))
        if out:
            self.answering = True
        return out

    def finish(self) -> bytes:
        """Upstream EOF: return the closing bytes, or an in-stream error if the answer was cut."""
        if self.done:
            return b""
        return self._emit(self._decoder.finish())

    def fail(self, message: str, kind: ErrorKind = ErrorKind.UPSTREAM) -> bytes:
        """The shell saw the upstream fail: return the client's in-stream error (content-free
        ``message``; ``kind`` picks the error type, e.g. ``TIMEOUT``) and end the stream."""
        if self.done:
            return b""
        return self._emit([UpstreamError(message=message, kind=kind)])

    def usage(self) -> tuple[Usage, bool]:
        """``(usage, estimated)`` of the answer so far: the backend's count once it reported
        one (at the end of its stream), else the estimate (the request's estimated prompt
        tokens, the characters translated so far / 4) and True. Call at any time, e.g. when the
        client left mid-stream."""
        if self._usage is not None and reported(self._usage):
            return self._usage, False
        return estimated_usage(self._ctx.estimated_input_tokens, self._chars), True

    def _emit(self, events: list[StreamEvent]) -> bytes:
        encoder = self._encoder
        parts: list[bytes] = []
        try:
            # after open() the Chat preamble waits for a first event (keep-alives until then)
            if not self._started and (not self.opened or (
                    events and not isinstance(events[0], UpstreamError))):
                self._started = True
                parts.append(encoder.start())
            for event in events:
                if isinstance(event, UpstreamError):
                    self.done = True
                    parts.append(encoder.error(event.message, event.kind))
                    break
                parts.append(encoder.encode(event))
                kind = type(event)
                if kind is TextDelta or kind is ReasoningDelta:
                    self._chars += len(event.text)  # type: ignore[union-attr]
                elif kind is ToolCallArgumentsDelta:
                    self._chars += len(event.fragment)  # type: ignore[union-attr]
                elif kind is ToolCallStarted:
                    self._chars += len(event.name)  # type: ignore[union-attr]
                elif kind is Finished:
                    self._usage = event.usage  # type: ignore[union-attr]
                    self.done = True
                    break
        except StreamEncodeError as exc:
            self.done = True
            parts.append(encoder.error(str(exc)))
        except Exception:  # a bug must not kill the connection silently: tell the client
            if self._ctx.strict:
                raise
            self.done = True
            parts.append(encoder.error(_INTERNAL, ErrorKind.INTERNAL))
        return b"".join(parts)


def open_stream_translator(ctx: StreamContext) -> StreamTranslator:
    """A new translator for one streamed answer shaped by ``ctx`` (client format, backend)."""
    return StreamTranslator(ctx)
