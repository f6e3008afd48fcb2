"""Identifiers and placeholders shared by the response codecs and the stream translators.

All ids derive from :attr:`StreamContext.response_id` (passed in: the package has no randomness),
so a streamed and a non-streamed answer to the same request carry the same ids.
"""

from __future__ import annotations

#: Sent as the ``signature`` of every Anthropic thinking block: local backends sign nothing, but
#: Claude Code rejects a thinking block without one. Ignored when a client echoes it back.
SIGNATURE_PLACEHOLDER = "tokios-local-thinking"


def chat_completion_id(response_id: str) -> str:
    """``id`` of a Chat completion (and of each of its stream chunks)."""
    return f"chatcmpl-{response_id}"


def anthropic_message_id(response_id: str) -> str:
    """``id`` of an Anthropic message."""
    return f"msg_{response_id}"


def responses_id(response_id: str) -> str:
    """``id`` of a Responses response object."""
    return f"resp_{response_id}"


def responses_item_id(response_id: str, kind: str, output_index: int) -> str:
    """``id`` of a Responses output item; ``kind`` is ``rs``, ``msg`` or ``fc``."""
    return f"{kind}_{response_id}_{output_index}"


def tool_call_id(response_id: str, index: int) -> str:
    """A deterministic tool-call id for a backend that gave none (older Ollama)."""
    return f"call_{response_id}_{index}"
