"""Anthropic Messages client codec (``POST /v1/messages`` and ``/v1/messages/count_tokens``).

Call :func:`decode_request` on the client's body, hand the request to an upstream codec, then
:func:`encode_response` on the :class:`~tokios_translate.ir.Completion`; :func:`encode_error`
shapes any failure; :func:`count_tokens_body` answers ``count_tokens``.
"""

from __future__ import annotations

import orjson

from .._common import ErrorKind, StopReason, StreamContext, TranslationError
from .._parse import (
    MAX_MESSAGES,
    MAX_TOOLS,
    JSONObject,
    arguments_object,
    as_obj,
    check_depth,
    get_bool,
    get_float,
    get_int,
    get_list,
    get_obj,
    get_str,
    invalid,
    load_object,
    need_str,
    stop_list,
)
from ..ids import SIGNATURE_PLACEHOLDER, anthropic_message_id
from ..ir import (
    Completion,
    FormatKind,
    Image,
    Message,
    Params,
    Part,
    Reasoning,
    ReasoningConfig,
    Request,
    ResponseFormat,
    Role,
    Text,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceKind,
    ToolResult,
)

__all__ = [
    "ERROR_TYPE",
    "STOP_REASON",
    "count_tokens_body",
    "decode_request",
    "encode_error",
    "encode_response",
    "error_object",
]

#: IR stop reason -> Anthropic ``stop_reason`` (api-formats.md §6).
STOP_REASON: dict[StopReason, str] = {
    StopReason.END_TURN: "end_turn",
    StopReason.STOP_SEQUENCE: "stop_sequence",
    StopReason.MAX_TOKENS: "max_tokens",
    StopReason.TOOL_USE: "tool_use",
    StopReason.CONTENT_FILTER: "refusal",
}

#: Error kind -> (Anthropic error ``type``, HTTP status) (api-formats.md §1.3).
ERROR_TYPE: dict[ErrorKind, tuple[str, int]] = {
    ErrorKind.INVALID_REQUEST: ("invalid_request_error", 400),
    ErrorKind.AUTHENTICATION: ("authentication_error", 401),
    ErrorKind.PERMISSION: ("permission_error", 403),
    ErrorKind.NOT_FOUND: ("not_found_error", 404),
    ErrorKind.REQUEST_TOO_LARGE: ("request_too_large", 413),
    ErrorKind.RATE_LIMITED: ("rate_limit_error", 429),
    ErrorKind.UPSTREAM: ("api_error", 502),
    ErrorKind.OVERLOADED: ("overloaded_error", 529),
    ErrorKind.TIMEOUT: ("timeout_error", 504),
    ErrorKind.INTERNAL: ("api_error", 500),
}

#: Anthropic server tools: they run on Anthropic's side, which a local model cannot do.
_SERVER_TOOL_PREFIXES = ("web_search", "web_fetch", "code_execution", "computer", "bash",
                         "text_editor", "memory", "tool_search", "mcp")


def _image(block: JSONObject, where: str) -> Image:
    source = as_obj(block.get("source"), f"{where}.source")
    if source.get("type") != "base64":
        raise invalid(
            "remote image URLs are not supported: send the image inline as base64 data",
            f"{where}.source.type",
        )
    return Image(
        media_type=need_str(source, "media_type", f"{where}.source.media_type"),
        data_b64=need_str(source, "data", f"{where}.source.data"),
    )


def _result_content(value: object, where: str) -> tuple[Text | Image, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (Text(text=value),)
    parts: list[Text | Image] = []
    for j, raw in enumerate(get_list({"c": value}, "c", where) or ()):
        block = as_obj(raw, f"{where}[{j}]")
        kind = block.get("type")
        if kind == "text":
            parts.append(Text(text=need_str(block, "text", f"{where}[{j}].text")))
        elif kind == "image":
            parts.append(_image(block, f"{where}[{j}]"))
        else:
            raise invalid(f"tool_result block type {kind!s:.40} is not supported",
                          f"{where}[{j}].type")
    return tuple(parts)


def _blocks(value: object, where: str, names: dict[str, str]) -> tuple[Part, ...]:
    if isinstance(value, str):
        return (Text(text=value),)
    parts: list[Part] = []
    for j, raw in enumerate(get_list({"c": value}, "c", where) or ()):
        bw = f"{where}[{j}]"
        block = as_obj(raw, bw)
        kind = block.get("type")
        if kind == "text":
            parts.append(Text(text=need_str(block, "text", f"{bw}.text")))
        elif kind == "image":
            parts.append(_image(block, bw))
        elif kind == "tool_use":
            call_input = block.get("input")
            check_depth(call_input, f"{bw}.input")
            call = ToolCall(
                id=need_str(block, "id", f"{bw}.id"),
                name=need_str(block, "name", f"{bw}.name"),
                arguments_json=orjson.dumps(call_input if call_input is not None else {}).decode(),
            )
            names[call.id] = call.name
            parts.append(call)
        elif kind == "tool_result":
            call_id = need_str(block, "tool_use_id", f"{bw}.tool_use_id")
            parts.append(
                ToolResult(
                    call_id=call_id,
                    name=names.get(call_id),
                    content=_result_content(block.get("content"), f"{bw}.content"),
                    is_error=bool(get_bool(block, "is_error", f"{bw}.is_error")),
                )
            )
        elif kind == "thinking":
            parts.append(
                Reasoning(
                    text=need_str(block, "thinking", f"{bw}.thinking"),
                    signature=get_str(block, "signature", f"{bw}.signature"),
                )
            )
        elif kind == "redacted_thinking":
            continue  # encrypted by Anthropic: no local model can read it (documented drop)
        else:
            raise invalid(f"content block type {kind!s:.40} is not supported", f"{bw}.type")
    return tuple(parts)


def _system(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    texts = []
    for j, raw in enumerate(get_list({"s": value}, "s", "system") or ()):
        block = as_obj(raw, f"system[{j}]")
        if block.get("type") != "text":
            raise invalid("system blocks must be text blocks", f"system[{j}].type")
        texts.append(need_str(block, "text", f"system[{j}].text"))
    return "\n\n".join(texts)


def _tool(raw: object, where: str) -> Tool:
    item = as_obj(raw, where)
    kind = get_str(item, "type", f"{where}.type")
    if kind not in (None, "custom") and kind.startswith(_SERVER_TOOL_PREFIXES):
        raise invalid("Anthropic server tools cannot run on a local model", f"{where}.type")
    schema = get_obj(item, "input_schema", f"{where}.input_schema") or {}
    check_depth(schema, f"{where}.input_schema")
    return Tool(
        name=need_str(item, "name", f"{where}.name"),
        description=get_str(item, "description", f"{where}.description"),
        parameters=schema,
    )


def _tool_choice(value: JSONObject | None) -> tuple[ToolChoice, bool]:
    if value is None:
        return ToolChoice(), True
    parallel = get_bool(value, "disable_parallel_tool_use",
                        "tool_choice.disable_parallel_tool_use") is not True
    kind = value.get("type")
    if kind == "auto":
        return ToolChoice(), parallel
    if kind == "any":
        return ToolChoice(kind=ToolChoiceKind.REQUIRED), parallel
    if kind == "none":
        return ToolChoice(kind=ToolChoiceKind.NONE), parallel
    if kind == "tool":
        return ToolChoice(kind=ToolChoiceKind.NAMED,
                          name=need_str(value, "name", "tool_choice.name")), parallel
    raise invalid("`tool_choice.type` must be auto, any, tool or none", "tool_choice.type")


def _reasoning(obj: JSONObject) -> ReasoningConfig:
    thinking = get_obj(obj, "thinking")
    output_config = get_obj(obj, "output_config") or {}
    effort = get_str(output_config, "effort", "output_config.effort")
    if thinking is None:
        return ReasoningConfig(enabled=True if effort else None, effort=effort)
    kind = thinking.get("type")
    if kind == "enabled":
        return ReasoningConfig(
            enabled=True,
            effort=effort,
            budget_tokens=get_int(thinking, "budget_tokens", "thinking.budget_tokens"),
        )
    if kind == "disabled":
        return ReasoningConfig(enabled=False)
    if kind == "adaptive":
        return ReasoningConfig(enabled=True, effort=effort)
    raise invalid("`thinking.type` must be enabled, disabled or adaptive", "thinking.type")


def _output_format(obj: JSONObject) -> ResponseFormat | None:
    output_config = get_obj(obj, "output_config") or {}
    fmt = get_obj(output_config, "format", "output_config.format")
    if fmt is None:
        return None
    if fmt.get("type") != "json_schema":
        raise invalid("`output_config.format.type` must be json_schema",
                      "output_config.format.type")
    schema = get_obj(fmt, "schema", "output_config.format.schema") or {}
    check_depth(schema, "output_config.format.schema")
    return ResponseFormat(kind=FormatKind.JSON_SCHEMA, schema=schema)


def decode_request(body: bytes | JSONObject, *, count_only: bool = False) -> Request:
    """The Messages request ``body`` as an IR request. ``count_only`` (for ``count_tokens``)
    waives ``max_tokens``. Unknown fields (``cache_control``, ``context_management``, ...) are
    ignored; server tools, remote images and other block types raise
    :class:`TranslationError`."""
    obj = load_object(body)
    raw_messages = get_list(obj, "messages", limit=MAX_MESSAGES)
    if not raw_messages:
        raise invalid("`messages` must be a non-empty array", "messages")
    max_tokens = get_int(obj, "max_tokens")
    if max_tokens is None and not count_only:
        raise invalid("`max_tokens` is required", "max_tokens")
    names: dict[str, str] = {}
    messages: list[Message] = []
    for i, raw in enumerate(raw_messages):
        item = as_obj(raw, f"messages[{i}]")
        role = item.get("role")
        if role not in ("user", "assistant"):
            raise invalid("`role` must be user or assistant", f"messages[{i}].role")
        parts = _blocks(item.get("content"), f"messages[{i}].content", names)
        if messages and messages[-1].role is Role(role):  # Anthropic merges same-role turns
            messages[-1] = Message(role=Role(role), parts=(*messages[-1].parts, *parts))
        else:
            messages.append(Message(role=Role(role), parts=parts))
    tools = tuple(
        _tool(t, f"tools[{i}]") for i, t in enumerate(get_list(obj, "tools", limit=MAX_TOOLS) or ())
    )
    tool_choice, parallel = _tool_choice(get_obj(obj, "tool_choice"))
    metadata = get_obj(obj, "metadata") or {}
    return Request(
        model=need_str(obj, "model"),
        system=_system(obj.get("system")),
        messages=tuple(messages),
        tools=tools,
        tool_choice=tool_choice,
        params=Params(
            max_tokens=max_tokens,
            temperature=get_float(obj, "temperature"),
            top_p=get_float(obj, "top_p"),
            top_k=get_int(obj, "top_k"),
            stop=stop_list(obj.get("stop_sequences"), "stop_sequences"),
        ),
        response_format=_output_format(obj),
        reasoning=_reasoning(obj),
        stream=bool(get_bool(obj, "stream")),
        parallel_tool_calls=parallel,
        user=get_str(metadata, "user_id", "metadata.user_id"),
    )


def _tool_input(arguments_json: str) -> object:
    value = arguments_object(arguments_json)
    return value if isinstance(value, dict) else {"_raw_arguments": arguments_json}


def encode_response(completion: Completion, ctx: StreamContext) -> bytes:
    """The ``message`` object for ``completion``: thinking blocks (with the signature
    placeholder) first, then text and tool_use blocks in order."""
    content: list[dict[str, object]] = [
        {"type": "thinking", "thinking": p.text, "signature": p.signature or SIGNATURE_PLACEHOLDER}
        for p in completion.parts
        if isinstance(p, Reasoning)
    ]
    for part in completion.parts:
        if isinstance(part, Text) and part.text:
            content.append({"type": "text", "text": part.text})
        elif isinstance(part, ToolCall):
            content.append(
                {"type": "tool_use", "id": part.id, "name": part.name,
                 "input": _tool_input(part.arguments_json)}
            )
    usage = completion.usage
    return orjson.dumps(
        {
            "id": anthropic_message_id(ctx.response_id),
            "type": "message",
            "role": "assistant",
            "model": ctx.model,
            "content": content,
            "stop_reason": STOP_REASON[completion.stop_reason],
            "stop_sequence": completion.stop_sequence
            if completion.stop_reason is StopReason.STOP_SEQUENCE
            else None,
            "usage": {
                # Anthropic counts cache reads apart from input_tokens (no double counting);
                # a backend that reported no prompt count gets the estimate (as when streamed).
                "input_tokens": max(
                    0, (usage.input_tokens or ctx.estimated_input_tokens)
                    - usage.cached_input_tokens),
                "output_tokens": usage.output_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": usage.cached_input_tokens,
            },
        }
    )


def error_object(err: TranslationError) -> dict[str, object]:
    """The ``error`` member of an Anthropic error body or ``event: error``."""
    return {"type": ERROR_TYPE[err.kind][0], "message": err.message}


def encode_error(err: TranslationError) -> tuple[int, bytes]:
    """``(status, body)`` of an Anthropic error: ``{"type":"error","error":{type,message}}``.
    Overloaded is 529, as Anthropic sends it (clients retry it)."""
    kind_status = ERROR_TYPE[err.kind][1]
    status = err.status if err.kind is not ErrorKind.OVERLOADED else kind_status
    return status, orjson.dumps({"type": "error", "error": error_object(err)})


def count_tokens_body(input_tokens: int) -> bytes:
    """The ``count_tokens`` answer."""
    return orjson.dumps({"input_tokens": input_tokens})
