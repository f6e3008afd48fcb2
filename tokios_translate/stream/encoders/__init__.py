"""Client stream encoders: Chat Completions SSE, Responses SSE, Anthropic Messages SSE.

Each encoder exposes ``start() -> bytes`` (the stream preamble, called once before anything
else), ``encode(event) -> bytes`` for every non-terminal and terminal event, and
``error(message) -> bytes`` for the format's in-stream error. The translator guarantees the
call order; encoders do not re-check it.
"""

from __future__ import annotations

from tokios_translate.stream.encoders.chat import ChatEncoder
from tokios_translate.stream.encoders.messages import (
    THINKING_SIGNATURE_PLACEHOLDER,
    MessagesEncoder,
)
from tokios_translate.stream.encoders.responses import ResponsesEncoder

__all__ = ["THINKING_SIGNATURE_PLACEHOLDER", "ChatEncoder", "MessagesEncoder", "ResponsesEncoder"]
