"""Pieces shared by the two OpenAI client codecs: the error envelope and tool linkage."""

from __future__ import annotations

import orjson

from .._common import ErrorKind, TranslationError

#: OpenAI error ``type`` for each error kind.
OPENAI_ERROR_TYPE: dict[ErrorKind, str] = {
    ErrorKind.INVALID_REQUEST: "invalid_request_error",
    ErrorKind.AUTHENTICATION: "authentication_error",
    ErrorKind.PERMISSION: "permission_error",
    ErrorKind.NOT_FOUND: "not_found_error",
    ErrorKind.REQUEST_TOO_LARGE: "invalid_request_error",
    ErrorKind.RATE_LIMITED: "rate_limit_error",
    ErrorKind.UPSTREAM: "server_error",
    ErrorKind.OVERLOADED: "server_error",
    ErrorKind.TIMEOUT: "server_error",
    ErrorKind.INTERNAL: "server_error",
}

#: OpenAI error ``code`` for the kinds that have a conventional one.
OPENAI_ERROR_CODE: dict[ErrorKind, str] = {
    ErrorKind.REQUEST_TOO_LARGE: "request_too_large",
    ErrorKind.RATE_LIMITED: "rate_limit_exceeded",
    ErrorKind.UPSTREAM: "upstream_error",
    ErrorKind.OVERLOADED: "overloaded",
    ErrorKind.TIMEOUT: "timeout",
}


def error_object(err: TranslationError) -> dict[str, object]:
    """The ``error`` member of an OpenAI error body (also used in a stream's error chunk)."""
    return {
        "message": err.message,
        "type": OPENAI_ERROR_TYPE[err.kind],
        "param": err.param,
        "code": OPENAI_ERROR_CODE.get(err.kind),
    }


def encode_error(err: TranslationError) -> tuple[int, bytes]:
    """``(status, body)`` of an OpenAI error response: ``{"error": {message, type, param,
    code}}``."""
    return err.status, orjson.dumps({"error": error_object(err)})

