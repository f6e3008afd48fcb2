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

One decoder per upstream codec (Ollama NDJSON, OpenAI-compatible SSE) and one encoder per client
format share the events of :mod:`tokios_translate.stream.events`. The client's preamble (role
chunk, ``message_start``, ``response.created``) is emitted on the first call. Nothing raises:
malformed upstream data becomes the client format's in-stream error, after which the translator
is ``done`` and returns only ``b""``.

Tool calls reach every client sequentially (interleaved upstream fragments are reordered; see
:class:`~tokios_translate.stream.decoders.ToolCallSequencer`); ids missing or repeated upstream
are generated as ``f"call_{ctx.response_id}_{index}"`` (``tokios_translate.ids.tool_call_id``).
With ``ctx.parallel_tool_calls`` false only the first call is kept. Stop reasons follow
api-formats.md §6: tool calls present -> ``tool_use`` / ``tool_calls``.

Per client: Chat sends reasoning as ``delta.reasoning_content`` and a usage chunk only with
``ctx.include_usage``; Anthropic thinking blocks end with ``THINKING_SIGNATURE_PLACEHOLDER`` and
tool arguments go out as one checked ``input_json_delta`` per call; Responses items follow the
canonical event order with ``sequence_number`` on every event.
"""

from __future__ import annotations

from tokios_translate._common import ClientFormat, ErrorKind, StreamContext
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
from tokios_translate.stream.events import Finished, StreamEvent, UpstreamError
from tokios_translate.stream.prompt_decoders import (
    OllamaGenerateDecoder,
    OpenAICompletionsDecoder,
    open_prompt_decoder,
)

__all__ = [
    "THINKING_SIGNATURE_PLACEHOLDER",
    "StreamTranslator",
    "generated_tool_call_id",
    "open_stream_translator",
]

_INTERNAL = "internal error while translating the stream"

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

    __slots__ = ("_decoder", "_encoder", "_started", "done")

    def __init__(self, ctx: StreamContext) -> None:
        self._decoder: Decoder = open_prompt_decoder(ctx) if ctx.prompt else open_decoder(ctx)
        self._encoder: Encoder = _open_encoder(ctx)
        self._started = False
        #: True once the terminal event (end of answer or error) has been emitted.
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        """Take one upstream read; return the client bytes that are complete now."""
        if self.done:
            return b""
        return self._emit(self._decoder.feed(chunk))

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

    def _emit(self, events: list[StreamEvent]) -> bytes:
        encoder = self._encoder
        parts: list[bytes] = []
        try:
            if not self._started:
                self._started = True
                parts.append(encoder.start())
            for event in events:
                if isinstance(event, UpstreamError):
                    self.done = True
                    parts.append(encoder.error(event.message, event.kind))
                    break
                parts.append(encoder.encode(event))
                if isinstance(event, Finished):
                    self.done = True
                    break
        except StreamEncodeError as exc:
            self.done = True
            parts.append(encoder.error(str(exc)))
        except Exception:  # a bug must not kill the connection silently: tell the client
            self.done = True
            parts.append(encoder.error(_INTERNAL, ErrorKind.INTERNAL))
        return b"".join(parts)


def open_stream_translator(ctx: StreamContext) -> StreamTranslator:
    """A new translator for one streamed answer shaped by ``ctx`` (client format, backend)."""
    return StreamTranslator(ctx)
