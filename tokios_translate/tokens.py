"""Anthropic ``/v1/messages/count_tokens``: the backend's tokenizer where it has one
(llama.cpp and vLLM ``/tokenize``), otherwise a documented estimate (characters / 4, plus 768
per image; see :func:`tokios_translate._parse.estimate_input_tokens`).

Flow: :func:`tokenize_request` -> the connector sends it (if not None) -> :func:`tokenizer_count`
on the answer -> ``count_tokens(body, tokenizer_tokens=...)`` in the facade.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from ._common import BackendKind, Usage
from ._parse import CHARS_PER_TOKEN, IMAGE_TOKEN_ESTIMATE, object_or_none
from .ir import Image, Reasoning, Request, Text, ToolCall, ToolResult

#: The backends with a tokenizer endpoint, and its path.
TOKENIZE_PATH: dict[BackendKind, str] = {
    BackendKind.LLAMACPP: "/tokenize",
    BackendKind.VLLM: "/tokenize",
}


def prompt_text(request: Request) -> tuple[str, int]:
    """``(text, image count)``: the request flattened for a tokenizer (chat-template tokens are
    not counted, so the result slightly undercounts)."""
    pieces: list[str] = [request.system] if request.system else []
    images = 0
    pieces.extend(
        f"{tool.name} {tool.description or ''} {orjson.dumps(tool.parameters).decode()}"
        for tool in request.tools
    )
    for message in request.messages:
        for part in message.parts:
            if isinstance(part, Text | Reasoning):
                pieces.append(part.text)
            elif isinstance(part, ToolCall):
                pieces.append(f"{part.name} {part.arguments_json}")
            elif isinstance(part, ToolResult):
                for inner in part.content:
                    if isinstance(inner, Text):
                        pieces.append(inner.text)
                    else:
                        images += 1
            elif isinstance(part, Image):
                images += 1
    return "\n".join(pieces), images


def tokenize_body(backend: BackendKind, upstream_model: str, text: str) -> bytes:
    """The ``/tokenize`` body: llama.cpp takes ``content``, vLLM ``model`` + ``prompt``."""
    if backend is BackendKind.LLAMACPP:
        return orjson.dumps({"content": text, "add_special": False})
    return orjson.dumps({"model": upstream_model, "prompt": text, "add_special_tokens": False})


def tokenizer_count(status: int, body: bytes) -> int | None:
    """The token count from a ``/tokenize`` answer (``count`` or ``len(tokens)``), or None when
    the answer is an error or unreadable (fall back to the estimate)."""
    obj = object_or_none(body) if status == 200 else None
    if obj is None:
        return None
    count = obj.get("count")
    if isinstance(count, int) and not isinstance(count, bool):
        return count
    tokens = obj.get("tokens")
    return len(tokens) if isinstance(tokens, list) else None


def with_images(tokens: int, images: int) -> int:
    """A tokenizer count plus the flat per-image estimate."""
    return tokens + images * IMAGE_TOKEN_ESTIMATE


def estimated_usage(input_tokens: int, output_chars: int) -> Usage:
    """The usage to report when the backend reported none (or a stream was cut short):
    the request's estimated prompt tokens, and the characters generated / 4 (the same rule as
    the prompt estimate)."""
    return Usage(input_tokens=input_tokens,
                 output_tokens=(output_chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN)


def reported(usage: Usage | None) -> bool:
    """Whether a backend's usage says anything (a missing or all-zero count is none)."""
    return usage is not None and (usage.input_tokens > 0 or usage.output_tokens > 0)


def completion_chars(parts: Iterable[Text | ToolCall | Reasoning]) -> int:
    """The characters a whole answer generated (text, reasoning, tool names and arguments)."""
    chars = 0
    for part in parts:
        if isinstance(part, ToolCall):
            chars += len(part.name) + len(part.arguments_json)
        else:
            chars += len(part.text)
    return chars
