"""Checked access to decoded JSON, input limits, ``data:`` URLs and the prompt-size estimate.

Every client and upstream codec reads untrusted JSON through these helpers, so a wrong type is a
:class:`TranslationError` naming the field (never its content), and every input is bounded.
"""

from __future__ import annotations

import orjson

from ._common import ErrorKind, TranslationError
from .ir import Image, Reasoning, Request, Text, ToolCall, ToolResult

#: Largest request or response body accepted, in bytes (inline images make bodies large).
MAX_BODY_BYTES = 32 * 1024 * 1024
#: Most conversation turns in one request.
MAX_MESSAGES = 10_000
#: Most content parts in one turn.
MAX_PARTS = 2_000
#: Most tools in one request.
MAX_TOOLS = 512
#: Most stop sequences.
MAX_STOP = 16
#: Deepest JSON nesting accepted in a tool schema or tool arguments.
MAX_DEPTH = 64
#: Tokens counted per image by the estimate.
IMAGE_TOKEN_ESTIMATE = 768
#: Characters per token assumed by the estimate.
CHARS_PER_TOKEN = 4

JSONObject = dict[str, object]


def invalid(message: str, param: str | None = None) -> TranslationError:
    """An ``invalid_request`` error; ``message`` names fields, never their values."""
    return TranslationError(ErrorKind.INVALID_REQUEST, message, param=param)


def load_object(body: bytes | JSONObject, *, what: str = "request body") -> JSONObject:
    """Parse ``body`` (or take an already-decoded dict) and check it is a bounded JSON object."""
    if isinstance(body, dict):
        return body
    if len(body) > MAX_BODY_BYTES:
        raise TranslationError(
            ErrorKind.REQUEST_TOO_LARGE, f"the {what} exceeds {MAX_BODY_BYTES} bytes"
        )
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise invalid(f"the {what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise invalid(f"the {what} must be a JSON object")
    return value


def object_or_none(body: bytes) -> JSONObject | None:
    """``body`` as a JSON object, or None when it is not one (for answers read leniently)."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def depth(value: object, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of a decoded JSON value, stopping once ``limit`` is exceeded."""
    level = 0
    frontier = [value]
    while frontier:
        level += 1
        if level > limit:
            return level
        below: list[object] = []
        for item in frontier:
            if isinstance(item, dict):
                below.extend(v for v in item.values() if isinstance(v, dict | list))
            elif isinstance(item, list):
                below.extend(v for v in item if isinstance(v, dict | list))
        frontier = below
    return level


def check_depth(value: object, param: str) -> None:
    """Reject a JSON value nested deeper than :data:`MAX_DEPTH`."""
    if depth(value) > MAX_DEPTH:
        raise invalid(f"`{param}` is nested deeper than {MAX_DEPTH} levels", param)


def get_str(obj: JSONObject, key: str, param: str | None = None) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise invalid(f"`{param or key}` must be a string", param or key)


def need_str(obj: JSONObject, key: str, param: str | None = None) -> str:
    value = get_str(obj, key, param)
    if value is None:
        raise invalid(f"`{param or key}` is required", param or key)
    return value


def get_int(obj: JSONObject, key: str, param: str | None = None) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"`{param or key}` must be an integer", param or key)
    return value


def get_float(obj: JSONObject, key: str, param: str | None = None) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(f"`{param or key}` must be a number", param or key)
    return float(value)


def get_bool(obj: JSONObject, key: str, param: str | None = None) -> bool | None:
    value = obj.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise invalid(f"`{param or key}` must be a boolean", param or key)


def get_list(
    obj: JSONObject, key: str, param: str | None = None, limit: int = MAX_PARTS
) -> list[object] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise invalid(f"`{param or key}` must be an array", param or key)
    if len(value) > limit:
        raise invalid(f"`{param or key}` has more than {limit} items", param or key)
    return value


def get_obj(obj: JSONObject, key: str, param: str | None = None) -> JSONObject | None:
    value = obj.get(key)
    if value is None or isinstance(value, dict):
        return value
    raise invalid(f"`{param or key}` must be an object", param or key)


def as_obj(value: object, param: str) -> JSONObject:
    if isinstance(value, dict):
        return value
    raise invalid(f"`{param}` must be an object", param)


def stop_list(value: object, param: str) -> tuple[str, ...]:
    """A stop parameter given as one string or a list of strings."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        if len(value) > MAX_STOP:
            raise invalid(f"`{param}` has more than {MAX_STOP} sequences", param)
        return tuple(s for s in value if isinstance(s, str))
    raise invalid(f"`{param}` must be a string or an array of strings", param)


def image_from_url(url: str, param: str) -> Image:
    """An :class:`Image` from a ``data:<type>;base64,<data>`` URL; remote URLs are refused,
    because the translator does no I/O."""
    if not url.startswith("data:"):
        raise invalid(
            "remote image URLs are not supported: send the image inline, as base64 data or a "
            "data: URL",
            param,
        )
    header, sep, data = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        raise invalid("an image data: URL must be base64-encoded (data:<type>;base64,...)", param)
    media_type = header[: -len(";base64")] or "application/octet-stream"
    return Image(media_type=media_type, data_b64=data)


def arguments_text(value: object, param: str) -> str:
    """Tool-call arguments as a JSON text, whether given as a JSON string or as an object."""
    if isinstance(value, str):
        return value if value.strip() else "{}"
    if value is None:
        return "{}"
    if isinstance(value, dict):
        check_depth(value, param)
        return orjson.dumps(value).decode()
    raise invalid(f"`{param}` must be a JSON string or an object", param)


def arguments_object(arguments_json: str) -> object:
    """Tool-call arguments as a decoded value; text that is not JSON is kept as a string."""
    try:
        return orjson.loads(arguments_json)
    except orjson.JSONDecodeError:
        return arguments_json


def estimate_input_tokens(request: Request) -> int:
    """A cheap, deterministic prompt-size estimate: characters / 4, plus a flat cost per image
    and per tool schema. Used for Anthropic ``message_start`` and ``count_tokens``."""
    chars = len(request.system or "")
    images = 0
    for tool in request.tools:
        chars += len(tool.name) + len(tool.description or "") + len(orjson.dumps(tool.parameters))
    for message in request.messages:
        for part in message.parts:
            if isinstance(part, Text | Reasoning):
                chars += len(part.text)
            elif isinstance(part, Image):
                images += 1
            elif isinstance(part, ToolCall):
                chars += len(part.name) + len(part.arguments_json)
            elif isinstance(part, ToolResult):
                for inner in part.content:
                    if isinstance(inner, Text):
                        chars += len(inner.text)
                    else:
                        images += 1
        chars += 4  # role and separators
    return (chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN + images * IMAGE_TOKEN_ESTIMATE
