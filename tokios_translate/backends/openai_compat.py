"""OpenAI-compatible chat codec: llama.cpp, vLLM, LM Studio and any OpenAI-style server.

Call :func:`encode_request` with an IR request, send the body to ``/v1/chat/completions``, then
:func:`decode_response` on a whole answer or :func:`decode_error` on an error status. Each backend
names reasoning differently (docs/translation.md, Reasoning): all of ``reasoning_content``,
``reasoning`` and ``thinking`` are accepted; assistant reasoning is sent back under the
backend's own name.
"""

from __future__ import annotations

import orjson

from .._common import BackendKind, ErrorKind, StopReason, TranslationError, Usage
from .._parse import JSONObject, arguments_text, as_obj, get_list, load_object
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

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
EMBEDDINGS_PATH = "/v1/embeddings"

#: Client effort levels beyond the three that local servers know (vLLM refuses the others):
#: OpenAI's ``minimal`` and ``xhigh``, Anthropic's ``max``.
EFFORT_LEVELS = {"minimal": "low", "xhigh": "high", "max": "high"}

#: Upstream reasoning field names, in the order they are looked for.
REASONING_FIELDS = ("reasoning_content", "reasoning", "thinking")

#: The field each backend reads assistant reasoning from in a request (None: not sent).
REASONING_FIELD: dict[BackendKind, str | None] = {
    BackendKind.LLAMACPP: "reasoning_content",
    BackendKind.VLLM: "reasoning",
    BackendKind.LMSTUDIO: "reasoning",
    BackendKind.OPENAI: None,
}

#: Backends that take ``top_k`` and ``chat_template_kwargs`` at the top level of the body.
_EXTENDED = frozenset({BackendKind.LLAMACPP, BackendKind.VLLM, BackendKind.LMSTUDIO})

#: Chat ``finish_reason`` -> IR stop reason (§6).
FINISH_REASONS: dict[str, StopReason] = {
    "stop": StopReason.END_TURN,
    "length": StopReason.MAX_TOKENS,
    "tool_calls": StopReason.TOOL_USE,
    "function_call": StopReason.TOOL_USE,
    "content_filter": StopReason.CONTENT_FILTER,
}


def _data_url(image: Image) -> str:
    return f"data:{image.media_type};base64,{image.data_b64}"


def _content(parts: list[Text | Image]) -> str | list[JSONObject]:
    if all(isinstance(p, Text) for p in parts):
        return "\n".join(p.text for p in parts if isinstance(p, Text))
    return [
        {"type": "text", "text": p.text} if isinstance(p, Text)
        else {"type": "image_url", "image_url": {"url": _data_url(p)}}
        for p in parts
    ]


def _user_messages(message: Message, out: list[JSONObject]) -> None:
    # Tool results first (one ``tool`` message each; their images follow as a user message,
    # since Chat tool messages carry only text), then the user's own content.
    own: list[Text | Image] = []
    result_images: list[Text | Image] = []
    for part in message.parts:
        if isinstance(part, ToolResult):
            out.append({
                "role": "tool",
                "tool_call_id": part.call_id,
                "content": "\n".join(p.text for p in part.content if isinstance(p, Text)),
            })
            result_images.extend(p for p in part.content if isinstance(p, Image))
        elif isinstance(part, Text | Image):
            own.append(part)
    if result_images:
        out.append({"role": "user", "content": _content(result_images)})
    if own or not message.parts:
        out.append({"role": "user", "content": _content(own)})


def _assistant_message(message: Message, backend: BackendKind) -> JSONObject:
    calls = [p for p in message.parts if isinstance(p, ToolCall)]
    text = "".join(p.text for p in message.parts if isinstance(p, Text))
    out: JSONObject = {"role": "assistant", "content": text if text or not calls else None}
    field = REASONING_FIELD[backend]
    thinking = "".join(p.text for p in message.parts if isinstance(p, Reasoning))
    if field is not None and thinking:
        out[field] = thinking
    if calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": c.arguments_json}}
            for c in calls
        ]
    return out


def encode_messages(request: Request, backend: BackendKind) -> list[JSONObject]:
    """The Chat ``messages`` array for ``request``."""
    out: list[JSONObject] = []
    if request.system:
        out.append({"role": "system", "content": request.system})
    for message in request.messages:
        if message.role is Role.USER:
            _user_messages(message, out)
        else:
            out.append(_assistant_message(message, backend))
    return out


def _tool_choice(request: Request) -> object:
    choice = request.tool_choice
    if choice.kind is ToolChoiceKind.NAMED:
        return {"type": "function", "function": {"name": choice.name}}
    return choice.kind.value


def encode_request(
    request: Request, upstream_model: str, backend: BackendKind
) -> tuple[str, bytes]:
    """``(path, body)`` for ``/v1/chat/completions``. Parameters are sent only when present;
    a streamed request always asks for the usage chunk (Anthropic and Responses need usage)."""
    body: JSONObject = {
        "model": upstream_model,
        "messages": encode_messages(request, backend),
        "stream": request.stream,
    }
    if request.stream:
        body["stream_options"] = {"include_usage": True}
    if request.tools:
        body["tools"] = [
            {"type": "function", "function": {
                "name": t.name, "description": t.description or "", "parameters": t.parameters}}
            for t in request.tools
        ]
        body["tool_choice"] = _tool_choice(request)
        if not request.parallel_tool_calls:
            body["parallel_tool_calls"] = False
    params = request.params
    # OpenAI's own API refuses ``max_tokens`` for reasoning models; local servers all read it.
    max_name = "max_completion_tokens" if backend is BackendKind.OPENAI else "max_tokens"
    for name, value in (
        (max_name, params.max_tokens), ("temperature", params.temperature),
        ("top_p", params.top_p), ("seed", params.seed),
        ("frequency_penalty", params.frequency_penalty),
        ("presence_penalty", params.presence_penalty),
    ):
        if value is not None:
            body[name] = value
    if params.top_k is not None and backend in _EXTENDED:
        body["top_k"] = params.top_k
    if params.stop:
        body["stop"] = list(params.stop)
    fmt = request.response_format
    if fmt is not None and fmt.kind is FormatKind.JSON_OBJECT:
        body["response_format"] = {"type": "json_object"}
    elif fmt is not None:
        spec: JSONObject = {"name": fmt.name or "response", "schema": fmt.schema or {}}
        if fmt.strict is not None:
            spec["strict"] = fmt.strict
        body["response_format"] = {"type": "json_schema", "json_schema": spec}
    reasoning = request.reasoning
    if reasoning.effort is not None:
        body["reasoning_effort"] = EFFORT_LEVELS.get(reasoning.effort, reasoning.effort)
    if reasoning.enabled is not None and backend in (BackendKind.LLAMACPP, BackendKind.VLLM):
        body["chat_template_kwargs"] = {"enable_thinking": reasoning.enabled}
    return CHAT_PATH, orjson.dumps(body)


def reasoning_of(obj: JSONObject) -> str | None:
    """The reasoning text of a message or delta, under any of the three names."""
    for name in REASONING_FIELDS:
        value = obj.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def usage_of(value: object) -> Usage:
    """Usage from a Chat ``usage`` object; anything missing is 0."""
    if not isinstance(value, dict):
        return Usage()
    prompt = value.get("prompt_tokens")
    output = value.get("completion_tokens")
    details = value.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(
        input_tokens=prompt if isinstance(prompt, int) else 0,
        output_tokens=output if isinstance(output, int) else 0,
        cached_input_tokens=cached if isinstance(cached, int) else 0,
    )


def stop_reason_of(
    finish_reason: object, has_calls: bool, matched: object, stop_sequences: tuple[str, ...]
) -> tuple[StopReason, str | None]:
    """§6 stop mapping. ``matched`` is vLLM's ``stop_reason`` (the stop string that matched);
    when it is one of the client's sequences the reason is STOP_SEQUENCE with that string."""
    if has_calls and finish_reason in ("stop", "tool_calls", None):
        return StopReason.TOOL_USE, None
    reason = FINISH_REASONS.get(finish_reason, StopReason.END_TURN) if isinstance(
        finish_reason, str) else StopReason.END_TURN
    if reason is StopReason.TOOL_USE:  # "tool_calls" without any call: nothing to run
        return StopReason.END_TURN, None
    if reason is StopReason.END_TURN and isinstance(matched, str) and matched in stop_sequences:
        return StopReason.STOP_SEQUENCE, matched
    return reason, None


def decode_response(
    body: bytes, response_id: str, stop_sequences: tuple[str, ...] = ()
) -> Completion:
    """A whole ``chat.completion`` answer as a completion (first choice only)."""
    obj = load_object(body, what="upstream response")
    if obj.get("error") is not None:
        raise upstream_error(200, _detail(obj), "OpenAI-compatible")
    choices = get_list(obj, "choices") or []
    choice = as_obj(choices[0], "choices[0]") if choices else {}
    message = as_obj(choice.get("message") or {}, "choices[0].message")
    parts: list[Text | ToolCall | Reasoning] = []
    thinking = reasoning_of(message)
    if thinking:
        parts.append(Reasoning(text=thinking))
    content = message.get("content")
    if isinstance(content, str) and content:
        parts.append(Text(text=content))
    for i, raw in enumerate(get_list(message, "tool_calls", "message.tool_calls") or ()):
        call = as_obj(raw, "message.tool_calls")
        function = as_obj(call.get("function") or {}, "message.tool_calls.function")
        call_id = call.get("id")
        name = function.get("name")
        parts.append(ToolCall(
            id=call_id if isinstance(call_id, str) and call_id else tool_call_id(response_id, i),
            name=name if isinstance(name, str) else "",
            arguments_json=arguments_text(function.get("arguments"), "arguments"),
        ))
    has_calls = any(isinstance(p, ToolCall) for p in parts)
    reason, matched = stop_reason_of(
        choice.get("finish_reason"), has_calls, choice.get("stop_reason"), stop_sequences
    )
    return Completion(parts=tuple(parts), stop_reason=reason, usage=usage_of(obj.get("usage")),
                      stop_sequence=matched)


def _detail(obj: JSONObject) -> str | None:
    error = obj.get("error")
    if isinstance(error, dict):
        message = error.get("message")
        return message if isinstance(message, str) else None
    if isinstance(error, str):
        return error
    for key in ("message", "detail"):
        value = obj.get(key)
        if isinstance(value, str):
            return value
    return None


def decode_error(status: int, body: bytes) -> TranslationError:
    """An error status from the backend (``{"error":{...}}``, ``{"error":"..."}``, vLLM's
    ``{"object":"error","message":...}`` or FastAPI's ``{"detail":...}``) for the client."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        obj = None
    detail = _detail(obj) if isinstance(obj, dict) else None
    return upstream_error(status, detail, "OpenAI-compatible")


def decode_models(body: bytes) -> list[str]:
    """Model ids from ``/v1/models``."""
    obj = load_object(body, what="upstream response")
    return [
        raw["id"] for raw in get_list(obj, "data", limit=10_000) or ()
        if isinstance(raw, dict) and isinstance(raw.get("id"), str)
    ]


def _row_index(row: JSONObject) -> int:
    index = row.get("index")
    return index if isinstance(index, int) else 0


def decode_embeddings(body: bytes) -> tuple[list[list[float]], int]:
    """``(embeddings in index order, prompt tokens)`` from a ``/v1/embeddings`` answer."""
    obj = load_object(body, what="upstream response")
    rows = [r for r in get_list(obj, "data", limit=100_000) or () if isinstance(r, dict)]
    rows.sort(key=_row_index)
    vectors = [r.get("embedding") for r in rows]
    if not all(isinstance(v, list) for v in vectors):
        raise TranslationError(ErrorKind.UPSTREAM, "the backend sent embeddings in an "
                               "unexpected encoding")
    return [v for v in vectors if isinstance(v, list)], usage_of(obj.get("usage")).input_tokens
