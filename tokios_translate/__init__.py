"""Tokios translators between client API formats and model backends. Pure, no I/O.

The connector calls, for a generation request::

    upstream = translate_request(client, body, backend=..., upstream_model=..., deployment=...,
                                 response_id=..., created=...)
    # send upstream.method/path/headers/body to the backend, then either
    answer = translate_response(upstream.context, status, body)     # stream is False
    translator = open_stream_translator(upstream.context)            # stream is True
    # (a passthrough context, ``context.passthrough``, streams the backend's bytes as they are)
    # any TranslationError (raised by translate_request) -> error_response(client, err)

and, for the other endpoints, :func:`count_tokens` (with :func:`tokenize_request` first when the
backend has a tokenizer), :func:`models_request` + :func:`translate_models`, and
:func:`translate_embeddings_request` + :func:`translate_embeddings_response`.
One internal representation (:mod:`tokios_translate.ir`) sits between three client codecs
(:mod:`tokios_translate.clients`) and two upstream codecs (:mod:`tokios_translate.backends`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import orjson

from . import embeddings as _embeddings
from . import models as _models
from . import passthrough as _passthrough
from . import tokens as _tokens
from ._common import (
    BackendKind,
    ClientFormat,
    ErrorKind,
    StopReason,
    StreamContext,
    TranslationError,
    Usage,
)
from ._parse import JSONObject, estimate_input_tokens, load_object
from .backends import ollama, openai_compat
from .backends import prompt as _prompt_backend
from .clients import chat, completions, messages, ollama_client, responses
from .ir import Completion, Request, ToolCall
from .prompt import PromptRequest
from .stream import open_stream_translator

__all__ = [
    "BackendKind",
    "ClientFormat",
    "ClientResponse",
    "EmbeddingsContext",
    "ErrorKind",
    "StopReason",
    "StreamContext",
    "TranslationError",
    "UpstreamCall",
    "UpstreamRequest",
    "Usage",
    "count_tokens",
    "decode_request",
    "error_response",
    "models_list",
    "models_request",
    "open_stream_translator",
    "tokenize_request",
    "translate_embeddings_request",
    "translate_embeddings_response",
    "translate_models",
    "translate_request",
    "translate_response",
]

Headers = tuple[tuple[str, str], ...]

_JSON: Headers = (("content-type", "application/json"),)
_MALFORMED = TranslationError(ErrorKind.UPSTREAM, "the backend sent a malformed answer")


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamCall:
    """A plain request to send to the backend (models list, tokenizer)."""

    method: str
    path: str
    headers: Headers = ()
    body: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamRequest:
    """A generation request to send to the backend; ``context`` shapes its answer."""

    method: str
    path: str
    headers: Headers
    body: bytes
    #: Whether the answer is a stream (feed it to ``open_stream_translator(context)``).
    stream: bool
    context: StreamContext


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientResponse:
    """What to send the client: status, headers, body."""

    status: int
    headers: Headers
    body: bytes
    #: The tokens the backend reported for a successful answer (None: an error, a refusal,
    #: or an answer that reports none); the connector's usage report.
    usage: Usage | None = None
    #: True when ``usage`` is the connector's estimate (the backend reported no count).
    usage_estimated: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class EmbeddingsContext:
    """What shaping an embeddings answer needs (returned with the upstream request)."""

    backend: BackendKind
    model: str
    encoding_format: str
    #: The client's format: OpenAI's list, or Ollama's ``/api/embed`` answer for OLLAMA_CHAT.
    client: ClientFormat = ClientFormat.CHAT


_DECODERS = {
    ClientFormat.CHAT: chat.decode_request,
    ClientFormat.RESPONSES: responses.decode_request,
    ClientFormat.MESSAGES: messages.decode_request,
    ClientFormat.OLLAMA_CHAT: ollama_client.decode_chat_request,
    ClientFormat.OLLAMA_GENERATE: ollama_client.decode_generate_request,
}
#: Client formats whose body may be a raw prompt (no chat form): ``/v1/completions`` always,
#: ``/api/generate`` with ``raw`` or ``suffix``.
_PROMPT_DECODERS = {
    ClientFormat.COMPLETIONS: completions.decode_request,
    ClientFormat.OLLAMA_GENERATE: ollama_client.decode_generate_prompt,
}
_ENCODERS = {
    ClientFormat.CHAT: chat.encode_response,
    ClientFormat.RESPONSES: responses.encode_response,
    ClientFormat.MESSAGES: messages.encode_response,
    ClientFormat.OLLAMA_CHAT: ollama_client.encode_chat_response,
    ClientFormat.OLLAMA_GENERATE: ollama_client.encode_generate_response,
    ClientFormat.COMPLETIONS: completions.encode_response,
}
_ERRORS = {
    ClientFormat.CHAT: chat.encode_error,
    ClientFormat.RESPONSES: responses.encode_error,
    ClientFormat.MESSAGES: messages.encode_error,
    ClientFormat.OLLAMA_CHAT: ollama_client.encode_error,
    ClientFormat.OLLAMA_GENERATE: ollama_client.encode_error,
    ClientFormat.COMPLETIONS: completions.encode_error,
}


def decode_request(client: ClientFormat, body: bytes | JSONObject) -> Request:
    """The client's body as an IR :class:`~tokios_translate.ir.Request` (raises
    :class:`TranslationError`; a ``/v1/completions`` prompt has no chat form)."""
    if client not in _DECODERS:
        raise TranslationError(ErrorKind.INVALID_REQUEST, "a text completion is not a chat")
    return _DECODERS[client](body)


def _prompt_upstream(client: ClientFormat, request: PromptRequest, *, backend: BackendKind,
                     upstream_model: str, deployment: str, response_id: str, created: int,
                     num_ctx: int | None) -> UpstreamRequest:
    path, body = _prompt_backend.encode_request(request, upstream_model, backend,
                                                num_ctx=num_ctx)
    context = StreamContext(
        client=client, backend=backend, model=deployment, response_id=response_id,
        created=created, stream=request.stream, include_usage=request.include_usage,
        estimated_input_tokens=(len(request.prompt) + len(request.suffix or "") + 3) // 4,
        stop_sequences=request.params.stop, prompt=True,
    )
    accept = "application/json"
    if request.stream:
        accept = "application/x-ndjson" if backend.speaks_ollama else "text/event-stream"
    return UpstreamRequest(method="POST", path=path, headers=(*_JSON, ("accept", accept)),
                           body=body, stream=request.stream, context=context)


def encode_upstream(request: Request, backend: BackendKind, upstream_model: str,
                    *, num_ctx: int | None = None) -> tuple[str, bytes]:
    """``(path, body)`` of ``request`` for ``backend``."""
    if backend.speaks_ollama:
        return ollama.encode_request(request, upstream_model, num_ctx=num_ctx)
    return openai_compat.encode_request(request, upstream_model, backend)


def translate_request(
    client: ClientFormat,
    body: bytes,
    *,
    backend: BackendKind,
    upstream_model: str,
    deployment: str,
    response_id: str,
    created: int,
    passthrough: bool = False,
    num_ctx: int | None = None,
) -> UpstreamRequest:
    """Translate a client's generation request for ``backend``.

    ``deployment`` is the model name the client sees; ``upstream_model`` the backend's.
    ``passthrough`` sends the body unchanged but for ``model`` when the backend serves the
    client's format natively (otherwise it is translated anyway). ``num_ctx`` (Ollama only) is
    the context size from the connector's config. Raises :class:`TranslationError`.
    """
    obj = load_object(body)
    prompt_decoder = _PROMPT_DECODERS.get(client)
    prompt_request = prompt_decoder(obj) if prompt_decoder is not None else None
    if prompt_request is not None:
        return _prompt_upstream(client, prompt_request, backend=backend,
                                upstream_model=upstream_model, deployment=deployment,
                                response_id=response_id, created=created, num_ctx=num_ctx)
    if passthrough and client in _passthrough.PATHS and _passthrough.supports(backend, client):
        stream = obj.get("stream") is True
        return UpstreamRequest(
            method="POST",
            path=_passthrough.PATHS[client],
            headers=_JSON,
            body=_passthrough.rewrite_request(obj, upstream_model),
            stream=stream,
            context=StreamContext(client=client, backend=backend, model=deployment,
                                  response_id=response_id, created=created, stream=stream,
                                  passthrough=True),
        )
    request = _DECODERS[client](obj)
    try:
        path, upstream_body = encode_upstream(request, backend, upstream_model, num_ctx=num_ctx)
    except orjson.JSONEncodeError:  # e.g. tool arguments given as a JSON text nested too deep
        raise TranslationError(ErrorKind.INVALID_REQUEST,
                               "the request nests JSON too deeply to forward") from None
    context = StreamContext(
        client=client,
        backend=backend,
        model=deployment,
        response_id=response_id,
        created=created,
        stream=request.stream,
        include_usage=request.include_usage,
        estimated_input_tokens=estimate_input_tokens(request),
        stop_sequences=request.params.stop,
        parallel_tool_calls=request.parallel_tool_calls,
        tool_origins=request.tool_origins,
        echo=responses.echo_fields(obj) if client is ClientFormat.RESPONSES else {},
    )
    accept = "application/json"
    if request.stream:
        accept = "application/x-ndjson" if backend.speaks_ollama else "text/event-stream"
    return UpstreamRequest(method="POST", path=path, headers=(*_JSON, ("accept", accept)),
                           body=upstream_body, stream=request.stream, context=context)


def decode_completion(ctx: StreamContext, body: bytes) -> Completion:
    """A whole upstream answer as an IR completion; only the first tool call is kept when the
    client disabled parallel tool calls."""
    if ctx.prompt:
        return _prompt_backend.decode_response(body, ctx.backend, ctx.stop_sequences)
    if ctx.backend.speaks_ollama:
        completion = ollama.decode_response(body, ctx.response_id)
    else:
        completion = openai_compat.decode_response(body, ctx.response_id, ctx.stop_sequences)
    if not ctx.parallel_tool_calls:
        calls = [i for i, p in enumerate(completion.parts) if isinstance(p, ToolCall)]
        if len(calls) > 1:
            drop = set(calls[1:])
            completion = replace(completion, parts=tuple(
                p for i, p in enumerate(completion.parts) if i not in drop))
    return completion


def upstream_error(backend: BackendKind, status: int, body: bytes) -> TranslationError:
    """An upstream error status and body as a :class:`TranslationError`."""
    if backend.speaks_ollama:
        return ollama.decode_error(status, body)
    return openai_compat.decode_error(status, body)


def translate_response(ctx: StreamContext, status: int, body: bytes) -> ClientResponse:
    """Translate a whole (non-streamed) upstream answer for the client. An error status (or an
    unreadable answer) becomes the client format's error envelope; nothing raises."""
    if ctx.passthrough:
        out = _passthrough.rewrite_response(body, ctx.model) if status < 400 else body
        return ClientResponse(status=status, headers=_JSON, body=out)
    if status >= 400:
        return error_response(ctx.client, upstream_error(ctx.backend, status, body))
    try:
        completion = decode_completion(ctx, body)
        encoded = _ENCODERS[ctx.client](completion, ctx)
    except orjson.JSONEncodeError:  # e.g. tool arguments nested too deep to re-encode
        return error_response(ctx.client, _MALFORMED)
    except TranslationError as err:
        if err.kind is ErrorKind.INVALID_REQUEST:  # a malformed answer is the backend's fault
            err = _MALFORMED
        return error_response(ctx.client, err)
    usage, estimated = completion.usage, False
    if not _tokens.reported(usage):
        usage = _tokens.estimated_usage(ctx.estimated_input_tokens,
                                        _tokens.completion_chars(completion.parts))
        estimated = True
    return ClientResponse(status=200, headers=_JSON, body=encoded, usage=usage,
                          usage_estimated=estimated)


def error_response(client: ClientFormat, err: TranslationError) -> ClientResponse:
    """``err`` in ``client``'s error envelope, with its status."""
    status, body = _ERRORS[client](err)
    headers = _JSON
    if err.kind in (ErrorKind.RATE_LIMITED, ErrorKind.OVERLOADED):
        headers = (*_JSON, ("retry-after", "1"))
    return ClientResponse(status=status, headers=headers, body=body)


def tokenize_request(body: bytes, *, backend: BackendKind,
                     upstream_model: str) -> UpstreamCall | None:
    """For ``count_tokens``: the backend's tokenizer call, or None when it has none (then call
    :func:`count_tokens` without a count). Raises :class:`TranslationError`."""
    path = _tokens.TOKENIZE_PATH.get(backend)
    if path is None:
        return None
    text, _ = _tokens.prompt_text(messages.decode_request(body, count_only=True))
    return UpstreamCall(method="POST", path=path, headers=_JSON,
                        body=_tokens.tokenize_body(backend, upstream_model, text))


def count_tokens(body: bytes, *, tokenizer_status: int | None = None,
                 tokenizer_body: bytes | None = None) -> ClientResponse:
    """Answer Anthropic ``/v1/messages/count_tokens``: the tokenizer's count when its answer is
    given and readable, else the estimate (characters / 4, plus 768 per image). Pure."""
    try:
        request = messages.decode_request(body, count_only=True)
    except TranslationError as err:
        return error_response(ClientFormat.MESSAGES, err)
    count = None
    if tokenizer_status is not None and tokenizer_body is not None:
        count = _tokens.tokenizer_count(tokenizer_status, tokenizer_body)
    if count is None:
        total = estimate_input_tokens(request)
    else:
        total = _tokens.with_images(count, _tokens.prompt_text(request)[1])
    return ClientResponse(status=200, headers=_JSON, body=messages.count_tokens_body(total))


def models_request(backend: BackendKind) -> UpstreamCall:
    """The backend's model-list call: Ollama ``/api/tags``, others ``/v1/models``."""
    path = ollama.TAGS_PATH if backend.speaks_ollama else openai_compat.MODELS_PATH
    return UpstreamCall(method="GET", path=path)


def models_list(client: ClientFormat, names: list[str], *, created: int) -> ClientResponse:
    """A model list of ``names`` (e.g. a tenant's deployments) without asking any backend:
    OpenAI's shape, or Anthropic's for Messages clients."""
    return ClientResponse(status=200, headers=_JSON,
                          body=_models.list_body(client, names, created=created))


def translate_models(client: ClientFormat, backend: BackendKind, status: int, body: bytes,
                     *, created: int, names: dict[str, str] | None = None) -> ClientResponse:
    """The backend's model list for the client (OpenAI list, or Anthropic list for Messages
    clients). ``names`` maps upstream model -> deployment name: when given, only mapped models
    are listed, under their deployment names."""
    if status >= 400:
        return error_response(client, upstream_error(backend, status, body))
    try:
        found = (ollama.decode_models(body) if backend.speaks_ollama
                 else openai_compat.decode_models(body))
    except TranslationError:
        return error_response(client, TranslationError(
            ErrorKind.UPSTREAM, "the backend sent a malformed model list"))
    if names is not None:
        found = [names[n] for n in found if n in names]
    return ClientResponse(status=200, headers=_JSON,
                          body=_models.list_body(client, found, created=created))


def translate_embeddings_request(body: bytes, *, backend: BackendKind, upstream_model: str,
                                 deployment: str, client: ClientFormat = ClientFormat.CHAT,
                                 ) -> tuple[UpstreamCall, EmbeddingsContext]:
    """The backend call for an OpenAI ``/v1/embeddings`` body (or, with ``client``
    OLLAMA_CHAT, an Ollama ``/api/embed`` body: ``input``, ``dimensions``; ``truncate`` and
    ``options`` are dropped), and the context for :func:`translate_embeddings_response`.
    Raises :class:`TranslationError`."""
    request = _embeddings.decode_request(body)
    path, upstream_body = _embeddings.encode_request(request, backend, upstream_model)
    return (
        UpstreamCall(method="POST", path=path, headers=_JSON, body=upstream_body),
        EmbeddingsContext(backend=backend, model=deployment,
                          encoding_format=request.encoding_format, client=client),
    )


def translate_embeddings_response(ctx: EmbeddingsContext, status: int,
                                  body: bytes) -> ClientResponse:
    """The backend's embeddings answer as an OpenAI embeddings list, or Ollama's
    ``/api/embed`` answer (or the client's error)."""
    if status >= 400:
        return error_response(ctx.client, upstream_error(ctx.backend, status, body))
    try:
        vectors, tokens = (ollama.decode_embed(body) if ctx.backend.speaks_ollama
                           else openai_compat.decode_embeddings(body))
    except TranslationError:
        return error_response(ctx.client, TranslationError(
            ErrorKind.UPSTREAM, "the backend sent malformed embeddings"))
    usage = Usage(input_tokens=tokens)
    if ctx.client.speaks_ollama:
        return ClientResponse(status=200, headers=_JSON, body=ollama_client.embed_body(
            vectors, tokens, model=ctx.model), usage=usage)
    return ClientResponse(status=200, headers=_JSON, body=_embeddings.encode_response(
        vectors, tokens, model=ctx.model, encoding_format=ctx.encoding_format), usage=usage)
