"""OpenAI Responses client codec (``POST /v1/responses``), stateless.

Call :func:`decode_request` on the client's body (and :func:`echo_fields` for the request fields
the response object repeats), hand the request to an upstream codec, then :func:`encode_response`
on the :class:`~tokios_translate.ir.Completion`; :func:`encode_error` shapes any failure.
``previous_response_id`` and ``conversation`` need server-side state and are refused clearly.
"""

from __future__ import annotations

import orjson

from .._common import StopReason, StreamContext
from .._parse import (
    MAX_MESSAGES,
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
)
from ..ids import responses_id, responses_item_id
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
from ._openai import encode_error

__all__ = ["decode_request", "echo_fields", "encode_error", "encode_response", "response_object"]

_TEXT_PARTS = ("input_text", "output_text", "text", "summary_text", "reasoning_text")


def _parts(value: object, where: str) -> list[Text | Image]:
    if isinstance(value, str):
        return [Text(text=value)]
    parts: list[Text | Image] = []
    for j, raw in enumerate(get_list({"c": value}, "c", where) or ()):
        pw = f"{where}[{j}]"
        item = as_obj(raw, pw)
        kind = item.get("type")
        if kind in _TEXT_PARTS:
            parts.append(Text(text=need_str(item, "text", f"{pw}.text")))
        elif kind == "refusal":
            parts.append(Text(text=need_str(item, "refusal", f"{pw}.refusal")))
        elif kind == "input_image":
            url = get_str(item, "image_url", f"{pw}.image_url")
            if url is None:
                raise invalid("input_image needs an inline image_url (file_id needs a store)",
                              f"{pw}.image_url")
            parts.append(image_from_url(url, f"{pw}.image_url"))
        else:
            raise invalid(f"content part type {kind!s:.40} is not supported", f"{pw}.type")
    return parts


class _Builder:
    """Groups the flat item list into turns: consecutive assistant items (reasoning, message,
    function_call) form one assistant turn, consecutive outputs and user items one user turn."""

    def __init__(self) -> None:
        self.system: list[str] = []
        self.messages: list[Message] = []
        self.names: dict[str, str] = {}

    def add(self, role: Role, part: Part) -> None:
        if self.messages and self.messages[-1].role is role:
            last = self.messages[-1]
            self.messages[-1] = Message(role=role, parts=(*last.parts, part))
        else:
            self.messages.append(Message(role=role, parts=(part,)))

    def item(self, item: JSONObject, where: str) -> None:
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            parts = _parts(item.get("content"), f"{where}.content")
            if role in ("system", "developer"):
                self.system.append("".join(p.text for p in parts if isinstance(p, Text)))
            elif role in ("user", "assistant"):
                if not parts:
                    self.add(Role(role), Text(text=""))
                for part in parts:
                    self.add(Role(role), part)
            else:
                raise invalid("`role` must be user, assistant, system or developer",
                              f"{where}.role")
        elif kind == "function_call":
            call = ToolCall(
                id=need_str(item, "call_id", f"{where}.call_id"),
                name=need_str(item, "name", f"{where}.name"),
                arguments_json=arguments_text(item.get("arguments"), f"{where}.arguments"),
            )
            self.names[call.id] = call.name
            self.add(Role.ASSISTANT, call)
        elif kind == "function_call_output":
            call_id = need_str(item, "call_id", f"{where}.call_id")
            output = item.get("output")
            content = tuple(_parts(output if output is not None else "", f"{where}.output"))
            self.add(Role.USER, ToolResult(call_id=call_id, name=self.names.get(call_id),
                                           content=content))
        elif kind == "reasoning":
            texts = [
                need_str(as_obj(s, f"{where}.summary"), "text", f"{where}.summary.text")
                for s in get_list(item, "summary", f"{where}.summary") or ()
            ] or [
                need_str(as_obj(s, f"{where}.content"), "text", f"{where}.content.text")
                for s in get_list(item, "content", f"{where}.content") or ()
            ]
            if texts:
                self.add(Role.ASSISTANT, Reasoning(text="\n\n".join(texts)))
        elif kind == "item_reference":
            raise invalid("item_reference needs server-side state; send the full item",
                          f"{where}.type")
        else:
            raise invalid(f"input item type {kind!s:.40} is not supported", f"{where}.type")


def _tool(raw: object, where: str) -> Tool:
    item = as_obj(raw, where)
    if item.get("type") != "function":
        raise invalid("only function tools are supported", f"{where}.type")
    parameters = get_obj(item, "parameters", f"{where}.parameters") or {}
    check_depth(parameters, f"{where}.parameters")
    return Tool(
        name=need_str(item, "name", f"{where}.name"),
        description=get_str(item, "description", f"{where}.description"),
        parameters=parameters,
    )


def _tool_choice(value: object) -> ToolChoice:
    if value is None or value == "auto":
        return ToolChoice()
    if value == "none":
        return ToolChoice(kind=ToolChoiceKind.NONE)
    if value == "required":
        return ToolChoice(kind=ToolChoiceKind.REQUIRED)
    if isinstance(value, dict) and value.get("type") == "function":
        return ToolChoice(kind=ToolChoiceKind.NAMED,
                          name=need_str(value, "name", "tool_choice.name"))
    raise invalid("`tool_choice` must be none, auto, required or a named function", "tool_choice")


def _format(obj: JSONObject) -> ResponseFormat | None:
    text = get_obj(obj, "text") or {}
    fmt = get_obj(text, "format", "text.format")
    if fmt is None or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_object":
        return ResponseFormat(kind=FormatKind.JSON_OBJECT)
    if fmt.get("type") == "json_schema":
        schema = get_obj(fmt, "schema", "text.format.schema") or {}
        check_depth(schema, "text.format.schema")
        return ResponseFormat(kind=FormatKind.JSON_SCHEMA, schema=schema,
                              name=get_str(fmt, "name", "text.format.name"),
                              strict=get_bool(fmt, "strict", "text.format.strict"))
    raise invalid("`text.format.type` must be text, json_object or json_schema",
                  "text.format.type")


def decode_request(body: bytes | JSONObject) -> Request:
    """The Responses request ``body`` as an IR request. ``previous_response_id`` and
    ``conversation`` raise :class:`TranslationError` (this endpoint keeps no state)."""
    obj = load_object(body)
    for stateful in ("previous_response_id", "conversation"):
        if obj.get(stateful) is not None:
            raise invalid(
                f"`{stateful}` is not supported: this endpoint is stateless; send the whole "
                "conversation in `input` (with store: false)",
                stateful,
            )
    builder = _Builder()
    instructions = get_str(obj, "instructions")
    if instructions:
        builder.system.append(instructions)
    raw_input = obj.get("input")
    if isinstance(raw_input, str):
        builder.add(Role.USER, Text(text=raw_input))
    else:
        items = get_list(obj, "input", limit=MAX_MESSAGES)
        if not items:
            raise invalid("`input` must be a string or a non-empty array of items", "input")
        for i, raw in enumerate(items):
            builder.item(as_obj(raw, f"input[{i}]"), f"input[{i}]")
    tools = tuple(
        _tool(t, f"tools[{i}]") for i, t in enumerate(get_list(obj, "tools", limit=MAX_TOOLS) or ())
    )
    reasoning = get_obj(obj, "reasoning") or {}
    effort = get_str(reasoning, "effort", "reasoning.effort")
    return Request(
        model=need_str(obj, "model"),
        system="\n\n".join(builder.system) if builder.system else None,
        messages=tuple(builder.messages),
        tools=tools,
        tool_choice=_tool_choice(obj.get("tool_choice")),
        params=Params(
            max_tokens=get_int(obj, "max_output_tokens"),
            temperature=get_float(obj, "temperature"),
            top_p=get_float(obj, "top_p"),
            top_k=get_int(obj, "top_k"),
            seed=get_int(obj, "seed"),
        ),
        response_format=_format(obj),
        reasoning=ReasoningConfig(
            enabled=None if effort is None else effort != "none",
            effort=None if effort in (None, "none") else effort,
        ),
        stream=bool(get_bool(obj, "stream")),
        include_usage=True,
        parallel_tool_calls=get_bool(obj, "parallel_tool_calls") is not False,
        user=get_str(obj, "user") or get_str(obj, "safety_identifier"),
    )


#: Request fields a Responses object repeats, with their defaults when the client sent none.
_ECHO_DEFAULTS: dict[str, object] = {
    "instructions": None,
    "tools": [],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "temperature": None,
    "top_p": None,
    "max_output_tokens": None,
    "metadata": {},
    "text": {"format": {"type": "text"}},
    "reasoning": None,
    "truncation": "disabled",
    "store": False,
    "user": None,
}


def echo_fields(obj: JSONObject) -> dict[str, object]:
    """The request fields the response object repeats (pass as ``StreamContext.echo``)."""
    return {k: obj.get(k, default) if obj.get(k) is not None else default
            for k, default in _ECHO_DEFAULTS.items()}


def output_items(completion: Completion, response_id: str) -> list[dict[str, object]]:
    """The ``output`` items: a reasoning item, a message item per run of text, a function_call
    item per call, in order."""
    items: list[dict[str, object]] = []
    text: list[str] = []
    cut = completion.stop_reason in (StopReason.MAX_TOKENS, StopReason.CONTENT_FILTER)

    def flush_text() -> None:
        if text:
            item_id = responses_item_id(response_id, "msg", len(items))
            items.append({
                "type": "message", "id": item_id, "role": "assistant",
                "status": "incomplete" if cut else "completed",
                "content": [{"type": "output_text", "text": "".join(text), "annotations": [],
                             "logprobs": []}],
            })
            text.clear()

    for part in completion.parts:
        if isinstance(part, Text):
            if part.text:
                text.append(part.text)
        elif isinstance(part, Reasoning):
            flush_text()
            items.append({
                "type": "reasoning", "id": responses_item_id(response_id, "rs", len(items)),
                "summary": [{"type": "summary_text", "text": part.text}],
            })
        else:
            flush_text()
            items.append({
                "type": "function_call", "id": responses_item_id(response_id, "fc", len(items)),
                "call_id": part.id, "name": part.name, "arguments": part.arguments_json,
                "status": "completed",
            })
    flush_text()
    return items


def response_object(
    ctx: StreamContext, *, status: str, output: list[dict[str, object]],
    completion: Completion | None,
) -> dict[str, object]:
    """A Responses ``response`` object (also the payload of the stream's lifecycle events)."""
    incomplete = None
    if completion is not None and completion.stop_reason is StopReason.MAX_TOKENS:
        incomplete = {"reason": "max_output_tokens"}
    elif completion is not None and completion.stop_reason is StopReason.CONTENT_FILTER:
        incomplete = {"reason": "content_filter"}
    obj: dict[str, object] = {
        "id": responses_id(ctx.response_id),
        "object": "response",
        "created_at": ctx.created,
        "status": status,
        "model": ctx.model,
        "output": output,
        "error": None,
        "incomplete_details": incomplete,
        "previous_response_id": None,
        **(ctx.echo or _ECHO_DEFAULTS),
    }
    if completion is not None:
        usage = completion.usage
        obj["usage"] = {
            "input_tokens": usage.input_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_input_tokens,
                                     "cache_write_tokens": 0},
            "output_tokens": usage.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.total_tokens,
        }
    return obj


def encode_response(completion: Completion, ctx: StreamContext) -> bytes:
    """The ``response`` object for ``completion``: ``completed``, or ``incomplete`` with
    ``max_output_tokens`` / ``content_filter`` (api-formats.md §6)."""
    status = (
        "incomplete"
        if completion.stop_reason in (StopReason.MAX_TOKENS, StopReason.CONTENT_FILTER)
        else "completed"
    )
    return orjson.dumps(
        response_object(ctx, status=status, output=output_items(completion, ctx.response_id),
                        completion=completion)
    )
