"""Ollama native codec: ``/api/chat`` (NDJSON when streamed), ``/api/tags``, ``/api/embed``.

Call :func:`encode_request` with an IR request, send the body to the path it returns, then
:func:`decode_response` on a whole (non-streamed) answer or :func:`decode_error` on an error
status. Documented drops (docs/translation.md): ``tool_choice`` required/named cannot be forced
(named narrows the tool list), ``budget_tokens``, ``is_error`` on tool results, penalties are
sent as options.
"""

from __future__ import annotations

import orjson

from .._common import ErrorKind, StopReason, TranslationError, Usage
from .._parse import JSONObject, arguments_object, arguments_text, as_obj, get_list, load_object
from ..ids import tool_call_id
from ..ir import (
    Completion,
    FormatKind,
    Image,
    Message,
    Reasoning,
    Request,
    Role,
    Text,
    ToolCall,
    ToolChoiceKind,
    ToolResult,
)
from ._errors import upstream_error

CHAT_PATH = "/api/chat"
TAGS_PATH = "/api/tags"
EMBED_PATH = "/api/embed"

#: ``think`` levels Ollama accepts as strings.
THINK_LEVELS = frozenset({"low", "medium", "high", "max"})


def _arguments(arguments_json: str) -> object:
    value = arguments_object(arguments_json)
    return value if isinstance(value, dict) else {}


def _user_messages(message: Message, out: list[JSONObject]) -> None:
    # Tool results first (one tool message each), then the user's own text and images.
    text: list[str] = []
    images: list[str] = []
    for part in message.parts:
        if isinstance(part, ToolResult):
            tool: JSONObject = {
                "role": "tool",
                "content": "\n".join(p.text for p in part.content if isinstance(p, Text)),
                "tool_call_id": part.call_id,
            }
            if part.name is not None:
                tool["tool_name"] = part.name
            result_images = [p.data_b64 for p in part.content if isinstance(p, Image)]
            if result_images:
                tool["images"] = result_images
            out.append(tool)
        elif isinstance(part, Text):
            text.append(part.text)
        elif isinstance(part, Image):
            images.append(part.data_b64)
    if text or images or not message.parts:
        user: JSONObject = {"role": "user", "content": "\n".join(text)}
        if images:
            user["images"] = images
        out.append(user)


def _assistant_message(message: Message) -> JSONObject:
    out: JSONObject = {
        "role": "assistant",
        "content": "".join(p.text for p in message.parts if isinstance(p, Text)),
    }
    thinking = "".join(p.text for p in message.parts if isinstance(p, Reasoning))
    if thinking:
        out["thinking"] = thinking
    calls = [p for p in message.parts if isinstance(p, ToolCall)]
    if calls:
        out["tool_calls"] = [
            {"id": c.id, "function": {"index": i, "name": c.name,
                                      "arguments": _arguments(c.arguments_json)}}
            for i, c in enumerate(calls)
        ]
    return out


def encode_messages(request: Request) -> list[JSONObject]:
    """The ``messages`` array: system first, tool results as ``tool`` messages carrying
    ``tool_call_id`` and the ``tool_name`` looked up from the earlier call."""
    out: list[JSONObject] = []
    if request.system:
        out.append({"role": "system", "content": request.system})
    for message in request.messages:
        if message.role is Role.USER:
            _user_messages(message, out)
        else:
            out.append(_assistant_message(message))
    return out


def think_value(request: Request) -> bool | str | None:
    """Ollama ``think``: a level when one was named, else a boolean, else None (omitted, so the
    model's default applies; never turned on when the client did not ask)."""
    reasoning = request.reasoning
    if reasoning.enabled is False:
        return False
    if reasoning.effort in THINK_LEVELS:
        return reasoning.effort
    if reasoning.enabled or reasoning.effort:
        return True
    return None


def encode_request(
    request: Request, upstream_model: str, *, num_ctx: int | None = None
) -> tuple[str, bytes]:
    """``(path, body)`` for ``/api/chat``. Parameters are sent only when present; ``stream`` is
    always explicit (Ollama defaults to streaming)."""
    body: JSONObject = {
        "model": upstream_model,
        "messages": encode_messages(request),
        "stream": request.stream,
    }
    choice = request.tool_choice
    if request.tools and choice.kind is not ToolChoiceKind.NONE:
        tools = request.tools
        if choice.kind is ToolChoiceKind.NAMED:
            tools = tuple(t for t in tools if t.name == choice.name) or tools
        body["tools"] = [
            {"type": "function", "function": {
                "name": t.name, "description": t.description or "", "parameters": t.parameters}}
            for t in tools
        ]
    fmt = request.response_format
    if fmt is not None:
        body["format"] = "json" if fmt.kind is FormatKind.JSON_OBJECT else (fmt.schema or "json")
    think = think_value(request)
    if think is not None:
        body["think"] = think
    params = request.params
    options: JSONObject = {}
    for name, value in (
        ("num_predict", params.max_tokens), ("temperature", params.temperature),
        ("top_p", params.top_p), ("top_k", params.top_k), ("seed", params.seed),
        ("frequency_penalty", params.frequency_penalty),
        ("presence_penalty", params.presence_penalty), ("num_ctx", num_ctx),
    ):
        if value is not None:
            options[name] = value
    if params.stop:
        options["stop"] = list(params.stop)
    if options:
        body["options"] = options
    return CHAT_PATH, orjson.dumps(body)


def usage_of(obj: JSONObject) -> Usage:
    """Usage from a final chunk; absent counts (cached prompts, older servers) are 0."""
    prompt = obj.get("prompt_eval_count")
    output = obj.get("eval_count")
    return Usage(
        input_tokens=prompt if isinstance(prompt, int) else 0,
        output_tokens=output if isinstance(output, int) else 0,
    )


def stop_reason_of(done_reason: object, has_calls: bool) -> StopReason:
    """§6: ``length`` -> MAX_TOKENS; ``stop`` with tool calls -> TOOL_USE; else END_TURN."""
    if done_reason == "length":
        return StopReason.MAX_TOKENS
    return StopReason.TOOL_USE if has_calls else StopReason.END_TURN


def decode_tool_calls(value: object, response_id: str, start: int) -> list[ToolCall]:
    """Ollama tool calls (whole, object arguments), ids kept or made from ``response_id``."""
    calls: list[ToolCall] = []
    for i, raw in enumerate(get_list({"c": value}, "c", "message.tool_calls") or ()):
        call = as_obj(raw, "message.tool_calls")
        function = as_obj(call.get("function"), "message.tool_calls.function")
        call_id = call.get("id")
        name = function.get("name")
        calls.append(ToolCall(
            id=call_id if isinstance(call_id, str) and call_id else tool_call_id(
                response_id, start + i),
            name=name if isinstance(name, str) else "",
            arguments_json=arguments_text(function.get("arguments"), "arguments"),
        ))
    return calls


def decode_response(body: bytes, response_id: str) -> Completion:
    """A whole ``/api/chat`` answer (``stream: false``) as a completion."""
    obj = load_object(body, what="upstream response")
    error = obj.get("error")
    if error is not None:
        raise upstream_error(200, str(error), "ollama")
    message = as_obj(obj.get("message") or {}, "message")
    parts: list[Text | ToolCall | Reasoning] = []
    thinking = message.get("thinking")
    if isinstance(thinking, str) and thinking:
        parts.append(Reasoning(text=thinking))
    content = message.get("content")
    if isinstance(content, str) and content:
        parts.append(Text(text=content))
    calls = decode_tool_calls(message.get("tool_calls"), response_id, 0)
    parts.extend(calls)
    return Completion(
        parts=tuple(parts),
        stop_reason=stop_reason_of(obj.get("done_reason"), bool(calls)),
        usage=usage_of(obj),
    )


def error_detail(body: bytes) -> str | None:
    """The message of an Ollama error body ``{"error": "..."}``, if it is one."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, dict):
        error = obj.get("error")
        if isinstance(error, str):
            return error
    return None


def decode_error(status: int, body: bytes) -> TranslationError:
    """An error status from Ollama as a :class:`TranslationError` for the client."""
    return upstream_error(status, error_detail(body), "ollama")


def decode_models(body: bytes) -> list[str]:
    """Model names from ``/api/tags``."""
    obj = load_object(body, what="upstream response")
    names = []
    for raw in get_list(obj, "models", limit=10_000) or ():
        if isinstance(raw, dict):
            name = raw.get("model") or raw.get("name")
            if isinstance(name, str):
                names.append(name)
    return names


def encode_embed(inputs: str | list[str], upstream_model: str, dimensions: int | None) -> bytes:
    """The ``/api/embed`` body."""
    body: JSONObject = {"model": upstream_model, "input": inputs}
    if dimensions is not None:
        body["dimensions"] = dimensions
    return orjson.dumps(body)


def decode_embed(body: bytes) -> tuple[list[list[float]], int]:
    """``(embeddings, prompt tokens)`` from an ``/api/embed`` answer."""
    obj = load_object(body, what="upstream response")
    vectors = obj.get("embeddings")
    if not isinstance(vectors, list) or not all(isinstance(v, list) for v in vectors):
        raise TranslationError(ErrorKind.UPSTREAM, "the ollama backend sent no embeddings")
    tokens = obj.get("prompt_eval_count")
    return vectors, tokens if isinstance(tokens, int) else 0
