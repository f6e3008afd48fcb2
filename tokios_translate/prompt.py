"""The prompt-shaped request: a raw text prompt (and an optional suffix) with no chat template.

OpenAI's legacy ``POST /v1/completions`` and Ollama's ``POST /api/generate`` with ``raw`` or a
``suffix`` ask for this. It sits beside the chat IR (:mod:`tokios_translate.ir`), sharing its
parameters, and has its own small upstream codec (:mod:`tokios_translate.backends.prompt`):
Ollama ``/api/generate`` and OpenAI-compatible ``/v1/completions``. The answer is an ordinary
IR :class:`~tokios_translate.ir.Completion` (text, maybe reasoning), so the client encoders are
the same as for a chat.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .ir import Params, ReasoningConfig, ResponseFormat


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptRequest:
    """A completion of ``prompt`` (fill-in-the-middle when ``suffix`` is given)."""

    model: str
    prompt: str
    suffix: str | None = None
    params: Params = field(default_factory=Params)
    response_format: ResponseFormat | None = None
    reasoning: ReasoningConfig = field(default_factory=ReasoningConfig)
    stream: bool = False
    include_usage: bool = False
