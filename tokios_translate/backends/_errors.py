"""Upstream HTTP error statuses -> :class:`TranslationError`, shared by both upstream codecs."""

from __future__ import annotations

from .._common import ErrorKind, TranslationError

#: Longest piece of an upstream error message passed on to the client.
MAX_UPSTREAM_MESSAGE = 300

#: Upstream status -> what the client is told. Statuses not listed become UPSTREAM (502): an
#: upstream 401/403 is the connector's configuration, not the client's key.
_KIND_BY_STATUS: dict[int, ErrorKind] = {
    400: ErrorKind.INVALID_REQUEST,
    404: ErrorKind.NOT_FOUND,
    413: ErrorKind.REQUEST_TOO_LARGE,
    422: ErrorKind.INVALID_REQUEST,
    429: ErrorKind.RATE_LIMITED,
    503: ErrorKind.OVERLOADED,
    504: ErrorKind.TIMEOUT,
}


def upstream_error(status: int, detail: str | None, backend: str) -> TranslationError:
    """The error for an upstream ``status`` with its (truncated) ``detail`` message."""
    kind = _KIND_BY_STATUS.get(status, ErrorKind.UPSTREAM)
    message = f"the {backend} backend returned HTTP {status}"
    if detail:
        message += ": " + detail[:MAX_UPSTREAM_MESSAGE]
    return TranslationError(kind, message)
