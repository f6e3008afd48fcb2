"""OpenAI Chat Completions client codec (``POST /v1/chat/completions``).

Call :func:`decode_request` on the client's body, hand the :class:`~tokios_translate.ir.Request`
to an upstream codec, then :func:`encode_response` on the upstream codec's
:class:`~tokios_translate.ir.Completion`; :func:`encode_error` shapes any failure.
"""

from __future__ import annotations

import orjson

from .._common import StopReason, StreamContext
from .._parse import (
    MAX_MESSAGES,
    MAX_PARTS,
    MAX_TOOLS,
    JSONObject,
    arguments_text,
    as_obj,
    check_depth,
    get_bool,
    get_float,
    get_int,
    get_list,
    get_obj,
    get_str,
    image_from_url,
    invalid,
    load_object,
    need_str,
    stop_list,
)
from ..ids import chat_completion_id
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
    ToolCall,
    ToolChoice,
    ToolChoiceKind,
    ToolResult,
)
from ._openai import encode_error
from ._responses_tools import ToolNames, custom_arguments, custom_input
from ._turns import Turns, unreadable

__all__ = ["FINISH_REASON", "decode_request", "encode_error", "encode_response"]

#: IR stop reason -> Chat ``finish_reason`` (docs/translation.md, Stop reasons).
FINISH_REASON: dict[StopReason, str] = {
    StopReason.END_TURN: "stop",
    StopReason.STOP_SEQUENCE: "stop",
    StopReason.MAX_TOKENS: "length",
    StopReason.TOOL_USE: "tool_calls",
    StopReason.CONTENT_FILTER: "content_filter",
}

#: Non-standard assistant fields that carry reasoning, accepted on the way in.
REASONING_FIELDS = ("reasoning_content", "reasoning", "thinking")


def _content_parts(value: object, param: str, *, images: bool) -> list[Text | Image]:
    """A Chat ``content`` (string, null or array of parts) as IR parts."""
    if value is None:
        return []
    if isinstance(value, str):
        return [Text(text=value)]
    if not isinstance(value, list):
        raise invalid(f"`{param}` must be a string or an array of content parts", param)
    if len(value) > MAX_PARTS:
        raise invalid(f"`{param}` has more than {MAX_PARTS} parts", param)
    parts: list[Text | Image] = []
    for i, raw in enumerate(value):
        where = f"{param}[{i}]"
        item = as_obj(raw, where)
        kind = item.get("type")
        if kind == "text":
            parts.append(Text(text=need_str(item, "text", f"{where}.text")))
        elif kind == "image_url" and images:
            image = item.get("image_url")
            url = image if isinstance(image, str) else get_str(as_obj(image, where), "url")
            if url is None:
                raise invalid(f"`{where}.image_url.url` is required", where)
            parts.append(image_from_url(url, f"{where}.image_url.url"))
        elif kind == "refusal":
            parts.append(Text(text=need_str(item, "refusal", f"{where}.refusal")))
        elif kind == "file":
            file = get_obj(item, "file", f"{where}.file") or {}
            name = get_str(file, "filename", f"{where}.file.filename")
            parts.append(unreadable("a file" + (f" ({name})" if name else "")))
        elif kind == "input_audio":
            parts.append(unreadable("an audio clip"))
        else:
            raise invalid(f"content part type {kind!s:.40} is not supported here", f"{where}.type")
    return parts


def _assistant(item: JSONObject, where: str) -> Message:
    parts: list[Part] = []
    for field in REASONING_FIELDS:
        thought = item.get(field)
        if isinstance(thought, str) and thought:
            parts.append(Reasoning(text=thought))
            break
    parts.extend(_content_parts(item.get("content"), f"{where}.content", images=False))
    for j, raw in enumerate(get_list(item, "tool_calls", f"{where}.tool_calls") or ()):
        call_where = f"{where}.tool_calls[{j}]"
        call = as_obj(raw, call_where)
        if call.get("type") == "custom":
            custom = as_obj(call.get("custom"), f"{call_where}.custom")
            parts.append(ToolCall(
                id=need_str(call, "id", f"{call_where}.id"),
                name=need_str(custom, "name", f"{call_where}.custom.name"),
                arguments_json=custom_arguments(
                    need_str(custom, "input", f"{call_where}.custom.input")),
            ))
            continue
        function = as_obj(call.get("function"), f"{call_where}.function")
        parts.append(
            ToolCall(
                id=need_str(call, "id", f"{call_where}.id"),
                name=need_str(function, "name", f"{call_where}.function.name"),
                arguments_json=arguments_text(
                    function.get("arguments"), f"{call_where}.function.arguments"
                ),
            )
        )
    return Message(role=Role.ASSISTANT, parts=tuple(parts))


def _tools(raw_tools: list[object]) -> ToolNames:
    """Function tools as they are and custom (freeform) tools as a function with one string
    argument (the same flattening as Responses, :mod:`._responses_tools`)."""
    flat: list[tuple[JSONObject, str]] = []
    for i, raw in enumerate(raw_tools):
        where = f"tools[{i}]"
        item = as_obj(raw, where)
        kind = item.get("type", "function")
        if kind not in ("function", "custom"):
            raise invalid("`type` must be function or custom", f"{where}.type")
        flat.append(({**as_obj(item.get(kind), f"{where}.{kind}"), "type": kind},
                     f"{where}.{kind}"))
    tools = ToolNames()
    tools.add_items(flat)
    return tools


def _tool_choice(value: object) -> ToolChoice:
    if value is None or value == "auto":
        return ToolChoice()
    if value == "none":
        return ToolChoice(kind=ToolChoiceKind.NONE)
    if value == "required":
        return ToolChoice(kind=ToolChoiceKind.REQUIRED)
    if isinstance(value, dict) and value.get("type") in ("function", "custom"):
        kind = str(value["type"])
        named = as_obj(value.get(kind), f"tool_choice.{kind}")
        return ToolChoice(
            kind=ToolChoiceKind.NAMED, name=need_str(named, "name", f"tool_choice.{kind}.name")
        )
    if isinstance(value, dict) and value.get("type") == "allowed_tools":
        allowed = get_obj(value, "allowed_tools", "tool_choice.allowed_tools") or {}
        required = allowed.get("mode") == "required"
        return ToolChoice(kind=ToolChoiceKind.REQUIRED) if required else ToolChoice()
    raise invalid("`tool_choice` must be none, auto, required or a named function", "tool_choice")


def _response_format(value: JSONObject | None) -> ResponseFormat | None:
    if value is None:
        return None
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat(kind=FormatKind.JSON_OBJECT)
    if kind == "json_schema":
        spec = get_obj(value, "json_schema", "response_format.json_schema") or {}
        schema = get_obj(spec, "schema", "response_format.json_schema.schema") or {}
        check_depth(schema, "response_format.json_schema.schema")
        return ResponseFormat(
            kind=FormatKind.JSON_SCHEMA,
            schema=schema,
            name=get_str(spec, "name", "response_format.json_schema.name"),
            strict=get_bool(spec, "strict", "response_format.json_schema.strict"),
        )
    raise invalid("`response_format.type` must be text, json_object or json_schema",
                  "response_format.type")


def decode_request(body: bytes | JSONObject) -> Request:
    """The Chat request ``body`` as an IR request. Unknown fields are ignored; unsupported ones
    (``n`` > 1, remote image URLs, non-function tools) raise :class:`TranslationError`."""
    obj = load_object(body)
    raw_messages = get_list(obj, "messages", limit=MAX_MESSAGES)
    if not raw_messages:
        raise invalid("`messages` must be a non-empty array", "messages")
    n = get_int(obj, "n")
    if n is not None and n != 1:
        raise invalid("only `n` = 1 is supported", "n")
    modalities = get_list(obj, "modalities") or []
    if "audio" in modalities or obj.get("audio") is not None:
        raise invalid("this model cannot produce audio: ask for `modalities: [\"text\"]`",
                      "modalities")
    turns = Turns()
    names: dict[str, str] = {}
    for i, raw in enumerate(raw_messages):
        where = f"messages[{i}]"
        item = as_obj(raw, where)
        role = item.get("role")
        if role in ("system", "developer"):
            parts = _content_parts(item.get("content"), f"{where}.content", images=False)
            turns.system("".join(p.text for p in parts if isinstance(p, Text)))
        elif role == "user":
            parts = _content_parts(item.get("content"), f"{where}.content", images=True)
            turns.message(Message(role=Role.USER, parts=tuple(parts)))
        elif role == "assistant":
            message = _assistant(item, where)
            names.update((p.id, p.name) for p in message.parts if isinstance(p, ToolCall))
            turns.message(message)
        elif role == "tool":
            call_id = need_str(item, "tool_call_id", f"{where}.tool_call_id")
            content = _content_parts(item.get("content"), f"{where}.content", images=True)
            result = ToolResult(call_id=call_id, name=names.get(call_id), content=tuple(content))
            messages = turns.messages
            if messages and messages[-1].role is Role.USER and all(
                isinstance(p, ToolResult) for p in messages[-1].parts
            ):
                messages[-1] = Message(role=Role.USER, parts=(*messages[-1].parts, result))
            else:
                turns.message(Message(role=Role.USER, parts=(result,)))
        else:
            raise invalid("`role` must be system, developer, user, assistant or tool",
                          f"{where}.role")
    tools = _tools(get_list(obj, "tools", limit=MAX_TOOLS) or [])
    max_tokens = get_int(obj, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = get_int(obj, "max_tokens")
    effort = get_str(obj, "reasoning_effort")
    stream_options = get_obj(obj, "stream_options") or {}
    return Request(
        model=need_str(obj, "model"),
        system=turns.system_text,
        messages=tuple(turns.messages),
        tools=tools.tools,
        tool_choice=_tool_choice(obj.get("tool_choice")),
        params=Params(
            max_tokens=max_tokens,
            temperature=get_float(obj, "temperature"),
            top_p=get_float(obj, "top_p"),
            top_k=get_int(obj, "top_k"),
            seed=get_int(obj, "seed"),
            stop=stop_list(obj.get("stop"), "stop"),
            frequency_penalty=get_float(obj, "frequency_penalty"),
            presence_penalty=get_float(obj, "presence_penalty"),
        ),
        response_format=_response_format(get_obj(obj, "response_format")),
        reasoning=ReasoningConfig(
            enabled=None if effort is None else effort != "none",
            effort=None if effort in (None, "none") else effort,
        ),
        stream=bool(get_bool(obj, "stream")),
        include_usage=bool(
            get_bool(stream_options, "include_usage", "stream_options.include_usage")
        ),
        parallel_tool_calls=get_bool(obj, "parallel_tool_calls") is not False,
        user=get_str(obj, "user") or get_str(obj, "safety_identifier"),
        tool_origins=dict(tools.origins),
    )


def usage_object(completion: Completion) -> dict[str, object]:
    """The Chat ``usage`` object."""
    usage = completion.usage
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
    }


def encode_response(completion: Completion, ctx: StreamContext) -> bytes:
    """The ``chat.completion`` object for ``completion``. Reasoning goes in the non-standard
    ``message.reasoning_content``; a tool-only turn has ``content: null``."""
    text = "".join(p.text for p in completion.parts if isinstance(p, Text))
    reasoning = "".join(p.text for p in completion.parts if isinstance(p, Reasoning))
    calls = [
        {"id": p.id, "type": "custom",
         "custom": {"name": p.name, "input": custom_input(p.arguments_json)}}
        if p.name in ctx.tool_origins else
        {"id": p.id, "type": "function",
         "function": {"name": p.name, "arguments": p.arguments_json}}
        for p in completion.parts
        if isinstance(p, ToolCall)
    ]
    message: dict[str, object] = {
        "role": "assistant",
        "content": text if text or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = reasoning
    return orjson.dumps(
        {
            "id": chat_completion_id(ctx.response_id),
            "object": "chat.completion",
            "created": ctx.created,
            "model": ctx.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": FINISH_REASON[completion.stop_reason],
                    "logprobs": None,
                }
            ],
            "usage": usage_object(completion),
        }
    )

