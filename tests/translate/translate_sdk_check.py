"""Validate client-facing bodies with the official SDK types, strictly.

The SDK models are lenient (extra keys allowed, coercion), so besides ``model_validate(...,
strict=True)`` every model in the parsed tree is checked for unknown keys (a typo in a field
name would otherwise pass), except the few non-standard extensions we send on purpose.
"""

from __future__ import annotations

from typing import Any

import orjson
from anthropic.types import ErrorResponse as AnthropicErrorResponse
from anthropic.types import Message, MessageTokensCount
from openai.types import CreateEmbeddingResponse, Model
from openai.types.chat import ChatCompletion
from openai.types.responses import Response
from openai.types.shared import ErrorObject
from pydantic import BaseModel

#: Keys we send on purpose that the SDK models do not declare (class name -> keys):
#: ``reasoning_content`` is the de-facto reasoning field of Chat; ``store`` is in the real
#: Responses object (OpenAI's API reference) but not in this SDK's model.
ALLOWED_EXTRAS = {"ChatCompletionMessage": {"reasoning_content"}, "Response": {"store"}}


def no_unknown_keys(model: object, path: str = "$") -> None:
    """Fail if any pydantic model in the tree kept keys its class does not declare."""
    if isinstance(model, BaseModel):
        extra = set(model.model_extra or {}) - ALLOWED_EXTRAS.get(type(model).__name__, set())
        assert not extra, f"{path}: unknown keys {sorted(extra)} for {type(model).__name__}"
        for name in type(model).model_fields:
            no_unknown_keys(getattr(model, name), f"{path}.{name}")
    elif isinstance(model, list | tuple):
        for i, item in enumerate(model):
            no_unknown_keys(item, f"{path}[{i}]")


def _strict(cls: type[BaseModel], body: bytes) -> Any:
    obj = orjson.loads(body)
    parsed = cls.model_validate(obj, strict=True)
    no_unknown_keys(parsed)
    return parsed


def chat_completion(body: bytes) -> ChatCompletion:
    completion: ChatCompletion = _strict(ChatCompletion, body)
    assert completion.object == "chat.completion"
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.finish_reason in ("stop", "length", "tool_calls", "content_filter")
    assert completion.usage is not None
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    if choice.message.tool_calls:
        for call in choice.message.tool_calls:
            if call.type == "custom":
                assert isinstance(call.custom.input, str)
            else:
                orjson.loads(call.function.arguments)
    return completion


def response(body: bytes) -> Response:
    parsed: Response = _strict(Response, body)
    assert parsed.object == "response"
    assert parsed.status in ("completed", "incomplete")
    assert parsed.usage is not None
    assert parsed.usage.total_tokens == parsed.usage.input_tokens + parsed.usage.output_tokens
    if parsed.status == "incomplete":
        assert parsed.incomplete_details is not None
    return parsed


def message(body: bytes) -> Message:
    parsed: Message = _strict(Message, body)
    assert parsed.type == "message"
    assert parsed.role == "assistant"
    kinds = [block.type for block in parsed.content]
    # Thinking blocks come first, and every one carries a signature.
    assert kinds == sorted(kinds, key=lambda k: k != "thinking")
    for block in parsed.content:
        if block.type == "thinking":
            assert block.signature
        if block.type == "tool_use":
            assert isinstance(block.input, dict)
    return parsed


def count_tokens(body: bytes) -> MessageTokensCount:
    parsed: MessageTokensCount = _strict(MessageTokensCount, body)
    return parsed


#: Anthropic's documented error types; the SDK union lacks two of them.
ANTHROPIC_ERROR_TYPES = {
    "invalid_request_error", "authentication_error", "billing_error", "permission_error",
    "not_found_error", "conflict_error", "request_too_large", "rate_limit_error", "api_error",
    "timeout_error", "overloaded_error",
}


def openai_error(body: bytes) -> ErrorObject:
    obj = orjson.loads(body)
    assert set(obj) == {"error"}
    assert set(obj["error"]) == {"message", "type", "param", "code"}
    parsed = ErrorObject.model_validate(obj["error"], strict=True)
    no_unknown_keys(parsed)
    assert parsed.message
    return parsed


def anthropic_error(body: bytes) -> dict[str, Any]:
    obj = orjson.loads(body)
    assert obj["type"] == "error"
    assert set(obj) == {"type", "error"}
    assert set(obj["error"]) == {"type", "message"}
    assert obj["error"]["type"] in ANTHROPIC_ERROR_TYPES
    assert obj["error"]["message"]
    if obj["error"]["type"] not in ("request_too_large", "conflict_error"):
        parsed = AnthropicErrorResponse.model_validate({**obj, "request_id": None}, strict=True)
        assert parsed.error.type == obj["error"]["type"]
    return obj  # type: ignore[no-any-return]


def models_list(body: bytes) -> list[str]:
    obj = orjson.loads(body)
    assert obj["object"] == "list"
    ids = []
    for item in obj["data"]:
        model = Model.model_validate(item, strict=True)
        no_unknown_keys(model)
        ids.append(model.id)
    return ids


def embeddings(body: bytes) -> CreateEmbeddingResponse:
    parsed: CreateEmbeddingResponse = CreateEmbeddingResponse.model_validate(orjson.loads(body))
    no_unknown_keys(parsed)
    return parsed
