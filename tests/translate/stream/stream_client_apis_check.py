"""Validate the new client formats' streams with the official clients' own types and parsers.

Ollama ``/api/chat`` and ``/api/generate``: NDJSON, each line parsed as the ``ollama`` client
does (``json.loads`` per line, ``error`` raises), built into its pydantic ``ChatResponse`` /
``GenerateResponse``. OpenAI legacy completions: the openai SDK's SSE decoder and its
``Completion`` type, ending ``[DONE]``. Each check returns what the client ends up with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import ollama
from openai._streaming import SSEDecoder
from openai.types import Completion


@dataclass
class Result:
    """What a client accumulates from a stream (or its whole answer)."""

    text: str = ""
    thinking: str = ""
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    done_reason: str | None = None
    usage: tuple[int, int] | None = None
    error: str | None = None


def check_ollama(body: bytes, *, chat: bool) -> Result:
    """An NDJSON stream as the ollama client reads it: every line a response object, exactly
    one final line (``done: true``) or an ``error`` line, and nothing after it."""
    result = Result()
    lines = body.splitlines()
    assert lines and body.endswith(b"\n"), "an NDJSON stream ends with a newline"
    for i, line in enumerate(lines):
        part = json.loads(line)  # exactly what ollama._client does per line
        assert result.error is None and result.done_reason is None, "line after the end"
        if part.get("error"):
            with_error = ollama.ResponseError(part["error"])
            result.error = with_error.error
            assert i == len(lines) - 1
            continue
        # the wire shape Ollama itself streams (its SDK fills missing fields in silently)
        assert isinstance(part.get("model"), str) and part["model"], part
        assert isinstance(part.get("created_at"), str) and part["created_at"].endswith("Z"), part
        assert isinstance(part.get("done"), bool), part
        if chat:
            message = part.get("message")
            assert isinstance(message, dict) and message.get("role") == "assistant", part
            assert isinstance(message.get("content"), str), part
        else:
            assert isinstance(part.get("response"), str), part
        if chat:
            chunk: Any = ollama.ChatResponse.model_validate(part)
            result.text += chunk.message.content or ""
            result.thinking += chunk.message.thinking or ""
            for call in chunk.message.tool_calls or []:
                result.calls.append((call.function.name, dict(call.function.arguments)))
        else:
            chunk = ollama.GenerateResponse.model_validate(part)
            result.text += chunk.response or ""
            result.thinking += chunk.thinking or ""
        if chunk.done:
            assert chunk.done_reason in ("stop", "length")
            result.done_reason = chunk.done_reason
            result.usage = (chunk.prompt_eval_count, chunk.eval_count)
    assert result.error is not None or result.done_reason is not None, "no final line"
    return result


def check_completions(body: bytes) -> Result:
    """A text-completion SSE stream: ``Completion`` chunks, one finish reason, then
    ``[DONE]`` (or an error event, then ``[DONE]``)."""
    result = Result()
    decoder = SSEDecoder()
    events = list(decoder.iter_bytes(iter([body])))
    assert events and events[-1].data == "[DONE]", "the stream ends with [DONE]"
    for event in events[:-1]:
        data = json.loads(event.data)
        if "error" in data:
            result.error = data["error"]["message"]
            continue
        assert result.error is None
        # The SDK builds stream chunks unvalidated (``finish_reason`` is null until the last
        # one): validate every other field strictly, and the reasons one by one.
        reasons = [c.get("finish_reason") for c in data.get("choices", [])]
        assert all(r in (None, "stop", "length", "content_filter") for r in reasons)
        chunk = Completion.model_validate({**data, "choices": [
            {**c, "finish_reason": "stop"} for c in data.get("choices", [])]})
        assert chunk.object == "text_completion"
        if chunk.usage is not None:
            result.usage = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
        for choice, reason in zip(chunk.choices, reasons, strict=True):
            result.text += choice.text
            if reason is not None:
                assert result.done_reason is None, "two finish reasons"
                result.done_reason = reason
    assert result.error is not None or result.done_reason is not None
    return result
