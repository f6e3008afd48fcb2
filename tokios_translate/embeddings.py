"""OpenAI ``/v1/embeddings`` for both upstream codecs (Ollama ``/api/embed``, OpenAI-compatible
``/v1/embeddings``).

Call :func:`decode_request` on the client body, :func:`encode_request` for the upstream, then
:func:`encode_response` with the vectors the backend codec decoded.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass

import orjson

from ._common import BackendKind
from ._parse import JSONObject, get_int, get_str, invalid, load_object, need_str
from .backends import ollama

#: Most inputs in one embeddings request.
MAX_INPUTS = 2048


@dataclass(frozen=True, slots=True, kw_only=True)
class EmbeddingsRequest:
    """An embeddings request in the terms both backends understand."""

    #: A string, strings, or token arrays (a flat list of ints is one token array).
    inputs: str | list[str] | list[int] | list[list[int]]
    encoding_format: str = "float"
    dimensions: int | None = None


def decode_request(body: bytes | JSONObject) -> EmbeddingsRequest:
    """The client's ``/v1/embeddings`` body. ``input`` is a string, strings, or token arrays."""
    obj = load_object(body)
    need_str(obj, "model")
    fmt = get_str(obj, "encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise invalid("`encoding_format` must be float or base64", "encoding_format")
    return EmbeddingsRequest(
        inputs=_inputs(obj.get("input")), encoding_format=fmt,
        dimensions=get_int(obj, "dimensions"),
    )


def _inputs(value: object) -> str | list[str] | list[int] | list[list[int]]:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and 0 < len(value) <= MAX_INPUTS:
        texts = [v for v in value if isinstance(v, str)]
        if len(texts) == len(value):
            return texts
        tokens = [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
        if len(tokens) == len(value):
            return tokens
        arrays = [v for v in value if isinstance(v, list)
                  and all(isinstance(t, int) and not isinstance(t, bool) for t in v)]
        if len(arrays) == len(value):
            return arrays
    raise invalid(f"`input` must be a string or 1..{MAX_INPUTS} strings or token arrays",
                  "input")


def encode_request(
    request: EmbeddingsRequest, backend: BackendKind, upstream_model: str
) -> tuple[str, bytes]:
    """``(path, body)`` for the backend. Ollama takes text only: token arrays are refused."""
    if backend is BackendKind.OLLAMA:
        inputs = request.inputs
        texts = [v for v in inputs if isinstance(v, str)] if isinstance(inputs, list) else inputs
        if isinstance(inputs, list) and len(texts) != len(inputs):
            raise invalid("this backend embeds text only: send strings, not token arrays",
                          "input")
        return ollama.EMBED_PATH, ollama.encode_embed(texts, upstream_model, request.dimensions)
    body: JSONObject = {"model": upstream_model, "input": request.inputs,
                        "encoding_format": "float"}
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    return "/v1/embeddings", orjson.dumps(body)


def _encoded(vector: list[float], encoding_format: str) -> object:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def encode_response(
    vectors: list[list[float]], prompt_tokens: int, *, model: str, encoding_format: str
) -> bytes:
    """The OpenAI ``list`` of ``embedding`` objects (base64 = little-endian float32)."""
    return orjson.dumps({
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encoded(v, encoding_format)}
            for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    })
