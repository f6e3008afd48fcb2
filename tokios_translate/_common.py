"""Types shared by every codec: formats, backends, stop reasons, usage, errors, stream context.

Everything here is plain data. The request codecs (``tokios_translate.request`` side) produce a
:class:`StreamContext` when they translate a request; the stream translators
(``tokios_translate.stream``) and the non-streaming response codecs consume it, so that the
answer is shaped for the client that asked (its format, its model name, its options).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class ClientFormat(StrEnum):
    """The API format a client speaks to the gateway."""

    #: OpenAI Chat Completions, ``POST /v1/chat/completions``.
    CHAT = "chat"
    #: OpenAI Responses, ``POST /v1/responses`` (stateless).
    RESPONSES = "responses"
    #: Anthropic Messages, ``POST /v1/messages``.
    MESSAGES = "messages"
    #: Ollama's native chat, ``POST /api/chat`` (NDJSON streams by default).
    OLLAMA_CHAT = "ollama_chat"
    #: Ollama's native generate, ``POST /api/generate`` (a prompt; NDJSON streams by default).
    OLLAMA_GENERATE = "ollama_generate"
    #: OpenAI's legacy text completions, ``POST /v1/completions`` (a prompt, no chat template).
    COMPLETIONS = "completions"

    @property
    def speaks_ollama(self) -> bool:
        """True for the Ollama-native client formats (``{"error": "..."}`` envelopes, NDJSON)."""
        return self in (ClientFormat.OLLAMA_CHAT, ClientFormat.OLLAMA_GENERATE)


class BackendKind(StrEnum):
    """The model server behind the connector. Each maps to one upstream wire codec."""

    #: Ollama's native API: ``/api/chat`` with NDJSON streams.
    OLLAMA = "ollama"
    #: llama.cpp's ``llama-server``: OpenAI-compatible SSE, reasoning in ``reasoning_content``.
    LLAMACPP = "llamacpp"
    #: vLLM: OpenAI-compatible SSE, reasoning in ``reasoning``.
    VLLM = "vllm"
    #: LM Studio: OpenAI-compatible SSE, reasoning in ``reasoning``.
    LMSTUDIO = "lmstudio"
    #: Any other OpenAI-compatible server.
    OPENAI = "openai"

    @property
    def speaks_ollama(self) -> bool:
        """True when the upstream codec is Ollama NDJSON, False for OpenAI-compatible SSE."""
        return self is BackendKind.OLLAMA


class StopReason(StrEnum):
    """Why generation stopped, in the internal representation (docs/translation.md)."""

    END_TURN = "end_turn"
    MAX_TOKENS = "max_tokens"
    STOP_SEQUENCE = "stop_sequence"
    TOOL_USE = "tool_use"
    CONTENT_FILTER = "content_filter"


class ErrorKind(StrEnum):
    """Machine-readable error categories; each client codec maps them to its own envelope."""

    INVALID_REQUEST = "invalid_request"
    AUTHENTICATION = "authentication"
    PERMISSION = "permission"
    NOT_FOUND = "not_found"
    REQUEST_TOO_LARGE = "request_too_large"
    RATE_LIMITED = "rate_limited"
    UPSTREAM = "upstream"
    OVERLOADED = "overloaded"
    TIMEOUT = "timeout"
    INTERNAL = "internal"


#: The HTTP status each error kind is sent with, unless a codec overrides it.
ERROR_STATUS: dict[ErrorKind, int] = {
    ErrorKind.INVALID_REQUEST: 400,
    ErrorKind.AUTHENTICATION: 401,
    ErrorKind.PERMISSION: 403,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.REQUEST_TOO_LARGE: 413,
    ErrorKind.RATE_LIMITED: 429,
    ErrorKind.UPSTREAM: 502,
    ErrorKind.OVERLOADED: 503,
    ErrorKind.TIMEOUT: 504,
    ErrorKind.INTERNAL: 500,
}


class TranslationError(Exception):
    """A request or response that cannot be translated; carries what the client must be told.

    Raised by the request codecs (a remote image URL, ``previous_response_id``, a malformed body);
    the caller turns it into the client's error envelope with the client codec's error encoder.
    """

    def __init__(
        self, kind: ErrorKind, message: str, *, param: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param
        self.status = status if status is not None else ERROR_STATUS[kind]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts. ``input_tokens`` excludes nothing; cached tokens are reported separately."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolOrigin:
    """How the client offered a tool that the model sees under another shape (Responses).

    A ``namespace`` tool's functions are flattened into plain function tools, and a ``custom``
    (freeform) tool becomes a function with one string argument, ``input``; the answer must
    name the call the client's way again: ``function_call`` with its ``namespace``, or
    ``custom_tool_call`` with the ``input`` text.
    """

    #: The tool's name as the client knows it (inside its namespace, if any).
    name: str
    #: The namespace the client grouped it in, or None.
    namespace: str | None = None
    #: True for a custom (freeform) tool: the call's arguments are ``{"input": "..."}``.
    custom: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamContext:
    """What shaping an answer for the client needs to know about the request that asked for it.

    Built by the request translation; passed to the stream translator or the response codec.
    Identifiers and the timestamp are passed in (the package has no clock and no randomness).
    """

    #: The client's format, which decides the output shape.
    client: ClientFormat
    #: The backend, which decides the upstream codec.
    backend: BackendKind
    #: The model name the client sees: the deployment name, never the upstream model.
    model: str
    #: A unique id for this answer (``chatcmpl-…``, ``resp_…``, ``msg_…`` are derived from it).
    response_id: str
    #: Unix seconds for ``created`` / ``created_at`` fields.
    created: int
    #: Whether the client asked for a stream.
    stream: bool = False
    #: Chat ``stream_options.include_usage``: send the final usage chunk.
    include_usage: bool = False
    #: Estimated prompt tokens, for Anthropic ``message_start`` before the backend reports them.
    estimated_input_tokens: int = 0
    #: The client's stop sequences, to report which one matched where the backend can tell.
    stop_sequences: tuple[str, ...] = ()
    #: False when the client disabled parallel tool calls: keep only the first call.
    parallel_tool_calls: bool = True
    #: For Responses: request fields echoed in the response object (instructions, tools, ...).
    echo: dict[str, object] = field(default_factory=dict)
    #: For Responses: model-visible tool name -> how the client offered it, for the tools
    #: that are not plain function tools (namespaced or custom); empty otherwise.
    tool_origins: dict[str, ToolOrigin] = field(default_factory=dict)
    #: True when the request went to the backend untranslated (the backend serves the client's
    #: format natively, docs/translation.md, Passthrough); only ``model`` is rewritten.
    passthrough: bool = False
    #: True when the upstream call is a raw prompt (Ollama ``/api/generate``, OpenAI-compatible
    #: ``/v1/completions``) rather than a chat: it picks the upstream stream decoder.
    prompt: bool = False
    #: Tests and fuzzing only: an internal error of the stream translator (a bug) re-raises
    #: instead of becoming the client's in-stream error, so that "no exception escapes"
    #: cannot hide it. Malformed upstream data still becomes an in-stream error.
    strict: bool = False
