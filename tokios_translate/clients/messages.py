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
from ._turns import Turns, unreadable

__all__ = [
    "ERROR_TYPE",
    "STOP_REASON",
    "count_tokens_body",
    "decode_request",
    "encode_error",
    "encode_response",
    "error_object",
]

#: IR stop reason -> Anthropic ``stop_reason`` (docs/translation.md, Stop reasons).
STOP_REASON: dict[StopReason, str] = {
    StopReason.END_TURN: "end_turn",
    StopReason.STOP_SEQUENCE: "stop_sequence",
    StopReason.MAX_TOKENS: "max_tokens",
    StopReason.TOOL_USE: "tool_use",
    StopReason.CONTENT_FILTER: "refusal",
}

#: Error kind -> (Anthropic error ``type``, HTTP status), as Anthropic's error types are.
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


#: Content blocks of Anthropic's server tools (and other server-side state) in history: the
#: server ran them, a local model cannot, and their results are Anthropic's to render: dropped.
_SERVER_BLOCKS = frozenset({
    "server_tool_use", "web_search_tool_result", "web_fetch_tool_result",
    "code_execution_tool_result", "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result", "tool_search_tool_result",
    "advisor_tool_result", "mcp_tool_use", "mcp_tool_result", "mcp_tool_listing",
    "container_upload", "fallback", "redacted_thinking",
})
#: Mid-conversation tool changes (``tool_addition``/``tool_removal``): they change the tool set
#: (:class:`_ToolSet`), not the conversation text.
_TOOL_CHANGES = frozenset({"tool_addition", "tool_removal"})


def _document(block: JSONObject, where: str) -> Text:
    """A ``document`` block: plain-text and content sources as text, anything else (a PDF,
    a URL, a file id) as a placeholder."""
    source = as_obj(block.get("source"), f"{where}.source")
    kind = source.get("type")
    title = get_str(block, "title", f"{where}.title")
    head = f"{title}\n\n" if title else ""
    if kind == "text":
        return Text(text=head + need_str(source, "data", f"{where}.source.data"))
    if kind == "content":
        content = source.get("content")
        if isinstance(content, str):
            return Text(text=head + content)
        texts = [need_str(as_obj(b, f"{where}.source.content[{k}]"), "text",
                          f"{where}.source.content[{k}].text")
                 for k, b in enumerate(get_list(source, "content", f"{where}.source.content")
                                       or ()) if isinstance(b, dict) and b.get("type") == "text"]
        return Text(text=head + "\n\n".join(texts))
    if kind not in ("base64", "url", "file"):
        raise invalid("`source.type` must be base64, text, content, url or file",
                      f"{where}.source.type")
    media = get_str(source, "media_type", f"{where}.source.media_type")
    return unreadable(f"a document ({title or media or kind})")


def _search_result(block: JSONObject, where: str) -> Text:
    """A ``search_result`` block as text: title, source, then its text blocks."""
    texts = [need_str(as_obj(b, f"{where}.content[{k}]"), "text", f"{where}.content[{k}].text")
             for k, b in enumerate(get_list(block, "content", f"{where}.content") or ())]
    head = [get_str(block, "title", f"{where}.title") or "",
            get_str(block, "source", f"{where}.source") or ""]
    return Text(text="\n".join(h for h in head if h) + "\n\n" + "\n\n".join(texts))


def _result_content(value: object, where: str, tools: _ToolSet) -> tuple[Text | Image, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (Text(text=value),)
    parts: list[Text | Image] = []
    for j, raw in enumerate(get_list({"c": value}, "c", where) or ()):
        bw = f"{where}[{j}]"
        block = as_obj(raw, bw)
        kind = block.get("type")
        if kind == "text":
            parts.append(Text(text=need_str(block, "text", f"{bw}.text")))
        elif kind == "image":
            parts.append(_image(block, bw))
        elif kind == "document":
            parts.append(_document(block, bw))
        elif kind == "search_result":
            parts.append(_search_result(block, bw))
        elif kind == "tool_reference":  # tool search found it: the tool is offered from now on
            name = need_str(block, "tool_name", f"{bw}.tool_name")
            tools.activate(name)
            parts.append(Text(text=f"Tool available: {name}"))
        else:
            raise invalid(f"tool_result block type {kind!s:.40} is not supported", f"{bw}.type")
    return tuple(parts)


def _blocks(value: object, where: str, names: dict[str, str], tools: _ToolSet) -> tuple[Part, ...]:
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
                    content=_result_content(block.get("content"), f"{bw}.content", tools),
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
        elif kind == "document":
            parts.append(_document(block, bw))
        elif kind == "search_result":
            parts.append(_search_result(block, bw))
        elif kind == "compaction":  # a summary of the compacted history: the model reads it
            summary = get_str(block, "content", f"{bw}.content")
            for k, change in enumerate(get_list(block, "tool_changes", f"{bw}.tool_changes")
                                       or ()):
                tools.change(as_obj(change, f"{bw}.tool_changes[{k}]"),
                             f"{bw}.tool_changes[{k}]")
            if summary:
                parts.append(Text(text=summary))
        elif kind in _TOOL_CHANGES:
            tools.change(block, bw)
        elif kind in _SERVER_BLOCKS:
            continue  # documented drop (see _SERVER_BLOCKS)
        else:
            raise invalid(f"content block type {kind!s:.40} is not supported", f"{bw}.type")
    return tuple(parts)


def _system_texts(value: object, where: str, tools: _ToolSet) -> list[str]:
    """The texts of a system prompt or ``system`` message (string or blocks); tool changes
    among its blocks go to ``tools``."""
    if isinstance(value, str):
        return [value]
    texts = []
    for j, raw in enumerate(get_list({"s": value}, "s", where) or ()):
        block = as_obj(raw, f"{where}[{j}]")
        kind = block.get("type")
        if kind in _TOOL_CHANGES:
            tools.change(block, f"{where}[{j}]")
        elif kind != "text":
            raise invalid("system blocks must be text blocks", f"{where}[{j}].type")
        else:
            texts.append(need_str(block, "text", f"{where}[{j}].text"))
    return texts


def _tool(item: JSONObject, where: str) -> Tool | None:
    """A client tool, or None for a server tool (it runs on Anthropic's side: dropped)."""
    kind = get_str(item, "type", f"{where}.type")
    if kind not in (None, "custom"):
        return None
    schema = get_obj(item, "input_schema", f"{where}.input_schema") or {}
    check_depth(schema, f"{where}.input_schema")
    return Tool(
        name=need_str(item, "name", f"{where}.name"),
        description=get_str(item, "description", f"{where}.description"),
        parameters=schema,
    )


class _ToolSet:
    """The tools the model is offered for its next turn: the request's ``tools`` without
    server tools and without deferred ones (``defer_loading``), plus what the conversation
    added (a ``tool_reference`` found by tool search, a ``tool_addition``), minus what it
    removed (``tool_removal``), in the order of the request."""

    def __init__(self, raw_tools: list[object]) -> None:
        self.declared: dict[str, Tool] = {}
        self.active: dict[str, None] = {}  # an ordered set
        for i, raw in enumerate(raw_tools):
            item = as_obj(raw, f"tools[{i}]")
            tool = _tool(item, f"tools[{i}]")
            if tool is None:
                continue
            self.declared[tool.name] = tool
            if get_bool(item, "defer_loading", f"tools[{i}].defer_loading") is not True:
                self.active[tool.name] = None

    def activate(self, name: str) -> None:
        if name in self.declared:
            self.active[name] = None

    def change(self, block: JSONObject, where: str) -> None:
        """A ``tool_addition`` or ``tool_removal`` block."""
        ref = as_obj(block.get("tool"), f"{where}.tool")
        if ref.get("type") == "tool_definition":
            definition = as_obj(ref.get("definition"), f"{where}.tool.definition")
            tool = _tool(definition, f"{where}.tool.definition")
            if tool is not None and block.get("type") == "tool_addition":
                self.declared[tool.name] = tool
                self.active[tool.name] = None
            return
        name = get_str(ref, "name", f"{where}.tool.name")
        if name is None:  # an MCP tool or toolset: MCP servers are not reachable from here
            return
        if block.get("type") == "tool_addition":
            self.activate(name)
        else:
            self.active.pop(name, None)

    def tools(self) -> tuple[Tool, ...]:
        return tuple(self.declared[name] for name in self.active)


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
    waives ``max_tokens``.

    Accepted and dropped (docs/translation.md): unknown fields (``cache_control``,
    ``context_management``, ``container``, ``mcp_servers``, ``service_tier``, beta fields),
    server tools and their blocks in history, ``redacted_thinking``. ``system`` messages in
    ``messages`` are placed as :mod:`._turns` says; one with ``clear_at: next_user_message``
    is left out once a later user turn exists. Remote images and unknown block types raise
    :class:`TranslationError`."""
    obj = load_object(body)
    raw_messages = get_list(obj, "messages", limit=MAX_MESSAGES)
    if not raw_messages:
        raise invalid("`messages` must be a non-empty array", "messages")
    max_tokens = get_int(obj, "max_tokens")
    if max_tokens is None and not count_only:
        raise invalid("`max_tokens` is required", "max_tokens")
    tools = _ToolSet(get_list(obj, "tools", limit=MAX_TOOLS) or [])
    names: dict[str, str] = {}
    turns = Turns()
    if obj.get("system") is not None:
        turns.system_parts.extend(_system_texts(obj.get("system"), "system", tools))
    last_user = max((i for i, m in enumerate(raw_messages)
                     if isinstance(m, dict) and m.get("role") == "user"), default=-1)
    for i, raw in enumerate(raw_messages):
        item = as_obj(raw, f"messages[{i}]")
        role = item.get("role")
        if role == "system":
            texts = _system_texts(item.get("content"), f"messages[{i}].content", tools)
            cleared = item.get("clear_at") == "next_user_message" and i < last_user
            if not cleared:
                for text in texts:
                    turns.system(text)
            continue
        if role not in ("user", "assistant"):
            raise invalid("`role` must be user, assistant or system", f"messages[{i}].role")
        turns.parts(Role(role), _blocks(item.get("content"), f"messages[{i}].content", names,
                                        tools))
    tool_choice, parallel = _tool_choice(get_obj(obj, "tool_choice"))
    metadata = get_obj(obj, "metadata") or {}
    return Request(
        model=need_str(obj, "model"),
        system=turns.system_text,
        messages=tuple(turns.messages),
        tools=tools.tools(),
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
