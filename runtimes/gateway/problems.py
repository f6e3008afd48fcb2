"""Error answers in the client's own format, for the API handler and for the HTTP layer.

:func:`error_answer` shapes one error (status, headers, body) in a client format's envelope.
:func:`problem_answer` is the error responder the gateway gives ``runtimes.netio``'s
``HttpServer``: what the HTTP layer answers by itself (a malformed or oversized head, a broken,
oversized or stalled body, the server at its request limit) is shaped like every other error of
the endpoint the request named - OpenAI's envelope for ``/v1/chat/completions`` and the other
OpenAI paths, Anthropic's for ``/v1/messages`` or an ``anthropic-version`` header, Ollama's
``{"error": ...}`` for ``/api/*`` - and logged like any request (no header value, no body).
"""

from __future__ import annotations

import logging
import os

from runtimes.gateway.routing import answer_format
from runtimes.netio import ErrorAnswer, RequestProblem
from tokios_translate import ClientFormat, ErrorKind, TranslationError, error_response

__all__ = ["error_answer", "problem_answer"]

logger = logging.getLogger("tokios.gateway")

#: The error kind of each status the HTTP layer answers with.
_KINDS = {
    400: ErrorKind.INVALID_REQUEST,
    408: ErrorKind.TIMEOUT,
    413: ErrorKind.REQUEST_TOO_LARGE,
    431: ErrorKind.INVALID_REQUEST,
    500: ErrorKind.INTERNAL,
    501: ErrorKind.INVALID_REQUEST,
    503: ErrorKind.OVERLOADED,
}


def error_answer(client: ClientFormat, kind: ErrorKind, message: str, request_id: str, *,
                 status: int | None = None, retry_after: str | None = None) -> ErrorAnswer:
    """``kind`` in ``client``'s envelope, with an ``x-request-id``. ``status`` wins over the
    codec's choice (Anthropic's codec sends overloaded as 529; the gateway's contract says
    503)."""
    answer = error_response(client, TranslationError(kind, message, status=status))
    headers: list[tuple[str, str]] = [*answer.headers, ("x-request-id", request_id)]
    if retry_after is not None and not any(n == "retry-after" for n, _ in headers):
        headers.append(("retry-after", retry_after))
    return (status if status is not None else answer.status), headers, answer.body


def problem_answer(problem: RequestProblem) -> ErrorAnswer:
    """The gateway's answer to a request the HTTP layer could not hand to the API (see module
    doc); one log line per problem, as for a request."""
    client = answer_format(problem.method, problem.path, problem.headers)
    request_id = f"req_{os.urandom(12).hex()}"
    kind = _KINDS.get(problem.status, ErrorKind.INVALID_REQUEST)
    retry_after = "1" if kind is ErrorKind.OVERLOADED else None
    logger.info("%s %s %s (%s) %s", _printable(problem.method) or "-",
                _printable(problem.path) or "-", problem.status, problem.reason, request_id)
    return error_answer(client, kind, problem.reason, request_id, status=problem.status,
                        retry_after=retry_after)


def _printable(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters (it may come from a head that did not parse)."""
    return text if len(text) <= limit else text[:limit] + "..."
