"""The connector's per-stream decisions, with no I/O, for ``runtimes.connector.serving``
(the per-stream work both shells drive):

1. :func:`plan_request` with the request path and body -> a :class:`Plan`: either an answer
   to send at once (``plan.immediate``: an error or a count), or an upstream call to make
   (``plan.call``), streamed (``plan.stream``: ``open_stream_translator(plan.context)``, the
   :func:`stream_headers` head) or whole;
2. after a whole upstream answer: :func:`finish_plan`;
3. when the upstream failed before the response head went out: :func:`failure_answer` (the
   messages: :data:`UNREACHABLE`, :func:`no_first_byte`, ...), marked with the retryable
   header (:func:`marked_retryable`) when the model server failed before any byte of its
   answer.

Also here: the ``--model`` map (:func:`parse_model_map`), the ``--backend auto`` decision
(:class:`BackendProbe` over :data:`PROBES`) and the reconnect schedule (:class:`Backoff`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from runtimes.tunnel.headers import RETRYABLE_HEADER
from tokios_translate import (
    BackendKind,
    ClientFormat,
    ClientResponse,
    EmbeddingsContext,
    ErrorKind,
    StreamContext,
    TranslationError,
    UpstreamCall,
    count_tokens,
    error_response,
    tokenize_request,
    translate_embeddings_request,
    translate_embeddings_response,
    translate_request,
    translate_response,
)

__all__ = [
    "KEEPALIVE_INTERVAL",
    "MAX_PROBE_BODY",
    "PROBES",
    "STREAM_HEADERS",
    "BackendProbe",
    "Backoff",
    "Plan",
    "Route",
    "backend_from_probe",
    "failure_answer",
    "finish_plan",
    "marked_retryable",
    "parse_model_map",
    "plan_request",
    "refusal",
    "response_headers",
    "route_for",
    "stream_headers",
    "upstream_unreachable",
]

Headers = tuple[tuple[str, str], ...]

#: The response head of a streamed answer.
STREAM_HEADERS: Headers = (("content-type", "text/event-stream"),
                           ("cache-control", "no-cache"))

#: Largest upstream answer read whole (non-streamed answers, embeddings, tokenizer).
MAX_UPSTREAM_BODY = 64 * 1024 * 1024

#: Seconds between keep-alives of a streamed answer while the model has not produced its first
#: token (slow prefill); ``tokios-connector --keepalive-interval`` changes it.
KEEPALIVE_INTERVAL = 15.0


class Route(enum.Enum):
    """What a stream asks for, from its path."""

    GENERATE = "generate"
    COUNT_TOKENS = "count_tokens"
    EMBEDDINGS = "embeddings"


_ROUTES: dict[str, tuple[Route, ClientFormat]] = {
    "/v1/chat/completions": (Route.GENERATE, ClientFormat.CHAT),
    "/v1/responses": (Route.GENERATE, ClientFormat.RESPONSES),
    "/v1/messages": (Route.GENERATE, ClientFormat.MESSAGES),
    "/v1/messages/count_tokens": (Route.COUNT_TOKENS, ClientFormat.MESSAGES),
    "/v1/embeddings": (Route.EMBEDDINGS, ClientFormat.CHAT),
    "/v1/completions": (Route.GENERATE, ClientFormat.COMPLETIONS),
    "/api/chat": (Route.GENERATE, ClientFormat.OLLAMA_CHAT),
    "/api/generate": (Route.GENERATE, ClientFormat.OLLAMA_GENERATE),
    "/api/embed": (Route.EMBEDDINGS, ClientFormat.OLLAMA_CHAT),
}

#: The response head of a streamed answer to an Ollama-native client (NDJSON).
NDJSON_STREAM_HEADERS: Headers = (("content-type", "application/x-ndjson"),)


def stream_headers(plan: Plan) -> Headers:
    """The response head of ``plan``'s streamed answer: :data:`STREAM_HEADERS` (SSE), or
    :data:`NDJSON_STREAM_HEADERS` for Ollama's ``/api/chat`` and ``/api/generate``."""
    return NDJSON_STREAM_HEADERS if plan.client.speaks_ollama else STREAM_HEADERS


def route_for(path: str) -> tuple[Route, ClientFormat] | None:
    """The route and client format of a request path (trailing slash tolerated), or None."""
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    return _ROUTES.get(path)


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What to do for one stream. Exactly one of ``immediate`` and ``call`` is set."""

    route: Route
    client: ClientFormat
    #: An answer to send now, without calling the upstream.
    immediate: ClientResponse | None = None
    #: The upstream call to make (method, path, headers, body).
    call: UpstreamCall | None = None
    #: True when the upstream answer is a stream for ``open_stream_translator(context)``.
    stream: bool = False
    context: StreamContext | None = None
    embeddings: EmbeddingsContext | None = None
    #: count_tokens only: the original body (the count is computed from it).
    body: bytes = b""


def _error_plan(route: Route, client: ClientFormat, err: TranslationError) -> Plan:
    return Plan(route=route, client=client, immediate=error_response(client, err))


def plan_request(path: str, body: bytes, *, backend: BackendKind, deployment: str,
                 upstream_model: str, response_id: str, created: int) -> Plan:
    """Decide what to do with a request for ``path``; never raises on bad input."""
    found = route_for(path)
    if found is None:
        client = ClientFormat.MESSAGES if path.startswith("/v1/messages") else ClientFormat.CHAT
        return _error_plan(Route.GENERATE, client, TranslationError(
            ErrorKind.NOT_FOUND, "this connector does not serve that path"))
    route, client = found
    try:
        if route is Route.GENERATE:
            upstream = translate_request(client, body, backend=backend,
                                         upstream_model=upstream_model, deployment=deployment,
                                         response_id=response_id, created=created)
            call = UpstreamCall(method=upstream.method, path=upstream.path,
                                headers=upstream.headers, body=upstream.body)
            return Plan(route=route, client=client, call=call, stream=upstream.stream,
                        context=upstream.context)
        if route is Route.EMBEDDINGS:
            call, ectx = translate_embeddings_request(body, backend=backend,
                                                      upstream_model=upstream_model,
                                                      deployment=deployment, client=client)
            return Plan(route=route, client=client, call=call, embeddings=ectx)
        tokenizer = tokenize_request(body, backend=backend, upstream_model=upstream_model)
    except TranslationError as err:
        return _error_plan(route, client, err)
    if tokenizer is None:
        return Plan(route=route, client=client, immediate=count_tokens(body))
    return Plan(route=route, client=client, call=tokenizer, body=body)


def finish_plan(plan: Plan, status: int, body: bytes) -> ClientResponse:
    """The client's answer from a whole upstream answer (status and body) to ``plan.call``."""
    if plan.route is Route.COUNT_TOKENS:
        return count_tokens(plan.body, tokenizer_status=status, tokenizer_body=body)
    if plan.route is Route.EMBEDDINGS:
        assert plan.embeddings is not None
        return translate_embeddings_response(plan.embeddings, status, body)
    assert plan.context is not None
    return translate_response(plan.context, status, body)


def refusal(path: str, kind: ErrorKind, message: str) -> ClientResponse:
    """An error answer in the envelope of ``path``'s client format (body too large, a
    deployment this connector does not serve); ``message`` must hold no request content."""
    found = route_for(path)
    client = found[1] if found is not None else ClientFormat.CHAT
    return error_response(client, TranslationError(kind, message))


#: What a client reads when the model server failed (content-free: no request data in them).
UNREACHABLE = "the model server could not be reached"
CONNECTION_LOST = "upstream connection lost"
MALFORMED = "the model server sent a malformed answer"
TOO_LARGE = f"the model server's answer exceeds {MAX_UPSTREAM_BODY} bytes"


def no_first_byte(seconds: float) -> str:
    return f"the model server did not start answering within {seconds:g} s"


def went_silent(seconds: float) -> str:
    return f"the model server sent nothing for {seconds:g} s in the middle of its answer"


def took_too_long(seconds: float) -> str:
    return f"the answer took longer than {seconds:g} s"


def failure_answer(plan: Plan, kind: ErrorKind, message: str, *,
                   retryable: bool) -> ClientResponse:
    """The whole answer when the upstream failed before the response head went out: the
    error in the client's envelope (``retryable``: marked for another connector, see
    ``runtimes.tunnel.headers``); a token count still answers with its estimate."""
    if plan.route is Route.COUNT_TOKENS:
        return count_tokens(plan.body)
    answer = error_response(plan.client, TranslationError(kind, message))
    return marked_retryable(answer) if retryable else answer


def upstream_unreachable(plan: Plan) -> ClientResponse:
    """The answer when the upstream could not be reached (before any byte of its answer)."""
    return failure_answer(plan, ErrorKind.UPSTREAM, UNREACHABLE, retryable=True)


def marked_retryable(answer: ClientResponse) -> ClientResponse:
    """``answer`` with the header that lets the gateway try another connector."""
    return ClientResponse(status=answer.status, body=answer.body,
                          headers=(*answer.headers, (RETRYABLE_HEADER, "1")))


def response_headers(answer: ClientResponse) -> Headers:
    """The RESPONSE head of a whole answer: its headers plus content-length."""
    return (*answer.headers, ("content-length", str(len(answer.body))))


def parse_model_map(specs: Iterable[str]) -> dict[str, str]:
    """``--model DEPLOYMENT=UPSTREAM_MODEL`` (or bare ``NAME``) -> {deployment: upstream model}.

    Raises ValueError on an empty name or a deployment given twice.
    """
    mapping: dict[str, str] = {}
    for spec in specs:
        deployment, sep, upstream = spec.partition("=")
        deployment = deployment.strip()
        upstream = upstream.strip() if sep else deployment
        if not deployment or not upstream:
            raise ValueError(f"--model expects DEPLOYMENT=UPSTREAM_MODEL or NAME, got {spec!r}")
        if deployment in mapping:
            raise ValueError(f"deployment {deployment!r} is given twice")
        mapping[deployment] = upstream
    return mapping


#: ``--backend auto``: probe these GET paths in order; the first 200 decides.
PROBES: tuple[tuple[str, BackendKind], ...] = (
    ("/api/version", BackendKind.OLLAMA),
    ("/props", BackendKind.LLAMACPP),
    ("/v1/models", BackendKind.OPENAI),
)


#: Largest probe answer read.
MAX_PROBE_BODY = 1024 * 1024


class BackendProbe:
    """``--backend auto`` without I/O, for both shells::

        probe = BackendProbe()
        while (path := probe.next_path()) is not None:
            probe.answered(...the status of GET path, or None if the request failed...)
        probe.found   # the backend, or None when no probe answered 2xx
    """

    __slots__ = ("_current", "_paths", "found")

    def __init__(self) -> None:
        self._paths = iter(PROBES)
        self._current: str | None = None
        self.found: BackendKind | None = None

    def next_path(self) -> str | None:
        """The next path to GET, or None once the backend is found or every probe failed."""
        if self.found is not None:
            return None
        self._current = next((path for path, _ in self._paths), None)
        return self._current

    def answered(self, status: int | None) -> None:
        if status is not None and self._current is not None:
            self.found = backend_from_probe(self._current, status)


def backend_from_probe(path: str, status: int) -> BackendKind | None:
    """The backend that a 2xx answer on probe ``path`` reveals, or None."""
    if not 200 <= status < 300:
        return None
    for probe, kind in PROBES:
        if probe == path:
            return kind
    return None


class Backoff:
    """Full-jitter exponential back-off: delay n is uniform in [0, min(cap, base * 2**n)).

    Call :meth:`next_delay` before each reconnect; :meth:`connected` when a session starts and
    :meth:`disconnected` when it ends: a session that lasted ``stable_after`` seconds resets
    the attempt count. ``rng`` returns floats in [0, 1) (``random.random``).
    """

    def __init__(self, rng: Callable[[], float], *, base: float = 0.5, cap: float = 15.0,
                 stable_after: float = 10.0) -> None:
        if not 0 < base <= cap:
            raise ValueError("need 0 < base <= cap")
        self._rng = rng
        self.base = base
        self.cap = cap
        self.stable_after = stable_after
        self.attempt = 0
        self._connected_at: float | None = None

    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        return min(self.cap, self.base * float(2 ** min(self.attempt, 62)))

    def next_delay(self) -> float:
        delay = float(self._rng()) * self.ceiling()
        self.attempt += 1
        return delay

    def connected(self, now: float) -> None:
        self._connected_at = now

    def disconnected(self, now: float) -> None:
        if self._connected_at is not None and now - self._connected_at >= self.stable_after:
            self.attempt = 0
        self._connected_at = None
