"""OpenAI Responses client codec (``POST /v1/responses``), stateless.

Call :func:`decode_request` on the client's body (and :func:`echo_fields` for the request fields
the response object repeats), hand the request to an upstream codec, then :func:`encode_response`
on the :class:`~tokios_translate.ir.Completion`; :func:`encode_error` shapes any failure.
``previous_response_id`` and ``conversation`` need server-side state and are refused clearly.
"""

from __future__ import annotations

import orjson

from .._common import StopReason, StreamContext, ToolOrigin
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
    Params,
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

__all__ = ["decode_request", "echo_fields", "encode_error", "encode_response", "response_object"]

_TEXT_PARTS = ("input_text", "output_text", "text", "summary_text", "reasoning_text")

#: Input items of hosted tools the server ran (and other server-side state): a local model
#: cannot use them, and their results are the server's to render: dropped (documented).
_SERVER_ITEMS = frozenset({
    "web_search_call", "file_search_call", "image_generation_call", "code_interpreter_call",
    "mcp_call", "mcp_list_tools", "mcp_approval_request", "mcp_approval_response",
    "tool_search_call", "tool_search_output", "compaction", "compaction_trigger",
    "configuration_update", "program", "program_output",
})
#: Client-run hosted tools' calls in history -> (the arguments' field, the tool name shown).
_CLIENT_CALLS = {"local_shell_call": "action", "shell_call": "action",
                 "apply_patch_call": "operation", "computer_call": "action"}
_CLIENT_OUTPUTS = frozenset({"local_shell_call_output", "shell_call_output",
                             "apply_patch_call_output", "computer_call_output"})


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
        elif kind in ("input_image", "computer_screenshot"):
            url = get_str(item, "image_url", f"{pw}.image_url")
            if url is None:
                raise invalid("input_image needs an inline image_url (file_id needs a store)",
                              f"{pw}.image_url")
            parts.append(image_from_url(url, f"{pw}.image_url"))
        elif kind == "input_file":
            name = get_str(item, "filename", f"{pw}.filename")
            parts.append(unreadable("a file" + (f" ({name})" if name else "")))
        elif kind == "input_audio":
            parts.append(unreadable("an audio clip"))
        else:
            raise invalid(f"content part type {kind!s:.40} is not supported", f"{pw}.type")
    return parts


def _output_parts(value: object, where: str) -> tuple[Text | Image, ...]:
    """A tool output: a string, a list of content parts, or (client-run hosted tools) any
    JSON value, given to the model as JSON text."""
    if value is None:
        return (Text(text=""),)
    if isinstance(value, str):
        return (Text(text=value),)
    if isinstance(value, list) and all(isinstance(v, dict) and v.get("type") in (
            *_TEXT_PARTS, "input_image", "input_file") for v in value):
        return tuple(_parts(value, where))
    if isinstance(value, dict) and value.get("type") == "computer_screenshot":
        return tuple(_parts([value], where))
    check_depth(value, where)
    return (Text(text=orjson.dumps(value).decode()),)


class _Builder:
    """Groups the flat item list into turns: consecutive assistant items (reasoning, message,
    function_call) form one assistant turn, consecutive outputs and user items one user turn."""

    def __init__(self, tools: ToolNames) -> None:
        self.turns = Turns()
        self.tools = tools
        self.names: dict[str, str] = {}

    def call(self, call_id: str, name: str, arguments_json: str) -> None:
        self.names[call_id] = name
        self.turns.part(Role.ASSISTANT, ToolCall(id=call_id, name=name,
                                                 arguments_json=arguments_json))

    def result(self, call_id: str, content: tuple[Text | Image, ...]) -> None:
        self.turns.part(Role.USER, ToolResult(call_id=call_id, name=self.names.get(call_id),
                                              content=content))

    def item(self, item: JSONObject, where: str) -> None:
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            parts = _parts(item.get("content"), f"{where}.content")
            if role in ("system", "developer"):
                self.turns.system("".join(p.text for p in parts if isinstance(p, Text)))
            elif role in ("user", "assistant"):
                if not parts:
                    self.turns.part(Role(role), Text(text=""))
                for part in parts:
                    self.turns.part(Role(role), part)
            else:
                raise invalid("`role` must be user, assistant, system or developer",
                              f"{where}.role")
        elif kind == "function_call":
            name = self.tools.model_name(get_str(item, "namespace", f"{where}.namespace"),
                                         need_str(item, "name", f"{where}.name"))
            self.call(need_str(item, "call_id", f"{where}.call_id"), name,
                      arguments_text(item.get("arguments"), f"{where}.arguments"))
        elif kind == "custom_tool_call":
            name = self.tools.model_name(get_str(item, "namespace", f"{where}.namespace"),
                                         need_str(item, "name", f"{where}.name"))
            self.call(need_str(item, "call_id", f"{where}.call_id"), name,
                      custom_arguments(need_str(item, "input", f"{where}.input")))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            self.result(need_str(item, "call_id", f"{where}.call_id"),
                        _output_parts(item.get("output"), f"{where}.output"))
        elif kind in _CLIENT_CALLS:
            action = item.get(_CLIENT_CALLS[kind])
            check_depth(action, f"{where}.{_CLIENT_CALLS[kind]}")
            call_id = get_str(item, "call_id", f"{where}.call_id") or need_str(
                item, "id", f"{where}.id")
            self.call(call_id, kind.removesuffix("_call"), orjson.dumps(action or {}).decode())
        elif kind in _CLIENT_OUTPUTS:
            call_id = get_str(item, "call_id", f"{where}.call_id") or need_str(
                item, "id", f"{where}.id")
            self.result(call_id, _output_parts(item.get("output"), f"{where}.output"))
        elif kind == "reasoning":
            texts = [
                need_str(as_obj(s, f"{where}.summary"), "text", f"{where}.summary.text")
                for s in get_list(item, "summary", f"{where}.summary") or ()
            ] or [
                need_str(as_obj(s, f"{where}.content"), "text", f"{where}.content.text")
                for s in get_list(item, "content", f"{where}.content") or ()
            ]
            if texts:  # encrypted_content alone is the server's: nothing a model can read
                self.turns.part(Role.ASSISTANT, Reasoning(text="\n\n".join(texts)))
        elif kind == "item_reference":
            raise invalid("item_reference needs server-side state; send the full item",
                          f"{where}.type")
        elif kind in _SERVER_ITEMS or kind == "additional_tools":
            return  # dropped (see _SERVER_ITEMS); additional_tools were read before the turns
        else:
            raise invalid(f"input item type {kind!s:.40} is not supported", f"{where}.type")


def _tool_choice(value: object, tools: ToolNames) -> ToolChoice:
    if value is None or value == "auto":
        return ToolChoice()
    if value == "none":
        return ToolChoice(kind=ToolChoiceKind.NONE)
    if value == "required":
        return ToolChoice(kind=ToolChoiceKind.REQUIRED)
    if not isinstance(value, dict):
        raise invalid("`tool_choice` must be none, auto, required or an object", "tool_choice")
    kind = value.get("type")
    if kind in ("function", "custom"):
        name = need_str(value, "name", "tool_choice.name")
        namespace = get_str(value, "namespace", "tool_choice.namespace")
        return ToolChoice(kind=ToolChoiceKind.NAMED, name=tools.model_name(namespace, name))
    if kind == "allowed_tools":  # its mode applies; the model still sees every tool
        mode = get_str(value, "mode", "tool_choice.mode")
        return ToolChoice(kind=ToolChoiceKind.REQUIRED) if mode == "required" else ToolChoice()
    if isinstance(kind, str):  # a hosted tool, which the model is not offered: auto
        return ToolChoice()
    raise invalid("`tool_choice.type` is required", "tool_choice.type")


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
    tools = ToolNames()
    tools.add(get_list(obj, "tools", limit=MAX_TOOLS) or [], "tools")
    raw_input = obj.get("input")
    items = None if isinstance(raw_input, str) else get_list(obj, "input", limit=MAX_MESSAGES)
    for i, raw in enumerate(items or ()):
        if isinstance(raw, dict) and raw.get("type") == "additional_tools":
            tools.add(get_list(raw, "tools", f"input[{i}].tools") or [], f"input[{i}].tools")
    builder = _Builder(tools)
    instructions = get_str(obj, "instructions")
    if instructions:
        builder.turns.system(instructions)
    if isinstance(raw_input, str):
        builder.turns.part(Role.USER, Text(text=raw_input))
    else:
        if not items:
            raise invalid("`input` must be a string or a non-empty array of items", "input")
        for i, raw in enumerate(items):
            builder.item(as_obj(raw, f"input[{i}]"), f"input[{i}]")
    reasoning = get_obj(obj, "reasoning") or {}
    effort = get_str(reasoning, "effort", "reasoning.effort")
    return Request(
        model=need_str(obj, "model"),
        system=builder.turns.system_text,
        messages=tuple(builder.turns.messages),
        tools=tools.tools,
        tool_choice=_tool_choice(obj.get("tool_choice"), tools),
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
        tool_origins=dict(tools.origins),
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


def call_item(item_id: str, call_id: str, name: str, arguments_json: str, *, status: str,
              origins: dict[str, ToolOrigin]) -> dict[str, object]:
    """The output item of a tool call, named as the client offered the tool: a
    ``function_call`` (with its ``namespace`` when it had one) or a ``custom_tool_call`` with
    the call's ``input`` text. The stream encoder sends the same item."""
    origin = origins.get(name)
    if origin is None:
        return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name,
                "arguments": arguments_json, "status": status}
    item: dict[str, object]
    if origin.custom:
        item = {"type": "custom_tool_call", "id": item_id, "call_id": call_id,
                "name": origin.name, "input": custom_input(arguments_json)}  # has no status
    else:
        item = {"type": "function_call", "id": item_id, "call_id": call_id, "name": origin.name,
                "arguments": arguments_json, "status": status}
    if origin.namespace is not None:
        item["namespace"] = origin.namespace
    return item


def output_items(completion: Completion, response_id: str,
                 origins: dict[str, ToolOrigin] | None = None) -> list[dict[str, object]]:
    """The ``output`` items: a reasoning item, a message item per run of text, a tool call
    item per call (:func:`call_item`), in order."""
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
            items.append(call_item(responses_item_id(response_id, "fc", len(items)), part.id,
                                   part.name, part.arguments_json, status="completed",
                                   origins=origins or {}))
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
    ``max_output_tokens`` / ``content_filter`` (docs/translation.md, Stop reasons)."""
    status = (
        "incomplete"
        if completion.stop_reason in (StopReason.MAX_TOKENS, StopReason.CONTENT_FILTER)
        else "completed"
    )
    return orjson.dumps(
        response_object(ctx, status=status, output=output_items(completion, ctx.response_id,
                                                                ctx.tool_origins),
                        completion=completion)
    )
