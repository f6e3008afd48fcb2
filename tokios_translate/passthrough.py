"""Passthrough: send the client's body to a backend that natively serves the client's format,
rewriting only ``model`` (docs/translation.md, Passthrough). Off by default, per backend.

Why translation stays the default: the backends' own compatibility layers have shipped the very
bugs this package exists to avoid (docs/translation.md, Passthrough: no thinking ``signature``, no
``ping``, no in-stream ``event: error``, ``response.completed`` even on a length cut-off,
``max_completion_tokens`` ignored, injected sampling defaults, wrong tool block indexes). One
internal representation gives every backend the same, tested behaviour. Passthrough is a switch
for a backend whose native endpoint is known to be good, or for features the IR does not model.
"""

from __future__ import annotations

import orjson

from ._common import BackendKind, ClientFormat
from ._parse import JSONObject, invalid

#: The client formats each backend serves natively.
NATIVE_FORMATS: dict[BackendKind, frozenset[ClientFormat]] = {
    BackendKind.OLLAMA: frozenset(ClientFormat),  # /v1/responses 0.13.3+, /v1/messages 0.14.0+
    BackendKind.LLAMACPP: frozenset(ClientFormat),
    BackendKind.VLLM: frozenset(ClientFormat),  # /v1/messages from v0.11.1
    BackendKind.LMSTUDIO: frozenset(ClientFormat),  # /v1/messages from 0.4.1
    BackendKind.OPENAI: frozenset({ClientFormat.CHAT, ClientFormat.RESPONSES}),
}

#: The upstream path for each client format.
PATHS: dict[ClientFormat, str] = {
    ClientFormat.CHAT: "/v1/chat/completions",
    ClientFormat.RESPONSES: "/v1/responses",
    ClientFormat.MESSAGES: "/v1/messages",
}


def supports(backend: BackendKind, client: ClientFormat) -> bool:
    """Whether ``backend`` serves ``client``'s format natively."""
    return client in NATIVE_FORMATS[backend]


def rewrite_request(obj: JSONObject, upstream_model: str) -> bytes:
    """The client's body with ``model`` set to ``upstream_model``, nothing else changed."""
    if not isinstance(obj.get("model"), str):
        raise invalid("`model` is required", "model")
    return orjson.dumps({**obj, "model": upstream_model})


def rewrite_response(body: bytes, model: str) -> bytes:
    """A backend's JSON answer with its top-level ``model`` replaced by ``model`` (the
    deployment name). A body that is not a JSON object is returned unchanged."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(obj, dict) or "model" not in obj:
        return body
    return orjson.dumps({**obj, "model": model})
