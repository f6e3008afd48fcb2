"""Ollama's native API as a client format: ``/api/chat``, ``/api/generate`` and the small
endpoints (``/api/tags``, ``/api/show``, ``/api/version``, ``/api/embed``), so a tool that speaks
only Ollama can use any backend.

Call :func:`decode_chat_request` (``/api/chat``) or, for ``/api/generate``,
:func:`decode_generate_prompt` first (a :class:`~tokios_translate.prompt.PromptRequest` when
the body asks for ``raw`` or a ``suffix``, else None) and then :func:`decode_generate_request`
(the prompt as one user turn of a chat). Encode the IR completion with
:func:`encode_chat_response` / :func:`encode_generate_response`; :func:`encode_error` shapes
failures as Ollama does (``{"error": "..."}`` with the status). Streams: stream/encoders/ollama.py.

Documented drops (docs/translation.md): ``keep_alive``, ``template``, ``context``, ``truncate``,
options other than num_predict/temperature/top_p/top_k/seed/stop/penalties (``num_ctx`` is the
connector's), and the durations of the answer (the translator has no clock: they are 0).
"""

from __future__ import annotations

import orjson

from .._common import StopReason, StreamContext, TranslationError
from .._parse import (
    MAX_MESSAGES,
    MAX_PARTS,
    MAX_TOOLS,
    JSONObject,
    arguments_object,
    arguments_text,
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
    ToolResult,
)
from ..models import _rfc3339
from ..prompt import PromptRequest

__all__ = [
    "OLLAMA_VERSION",
    "created_at",
    "decode_chat_request",
    "decode_generate_prompt",
    "decode_generate_request",
    "done_reason",
    "embed_body",
    "encode_chat_response",
    "encode_error",
    "encode_generate_response",
    "show_body",
    "tags_body",
    "version_body",
]

#: The Ollama API version the gateway answers ``/api/version`` with (the API level it speaks:
#: ``think`` levels, tool-call ids, ``/api/embed``).
OLLAMA_VERSION = "0.12.6"

#: ``think`` strings Ollama accepts.
THINK_LEVELS = frozenset({"low", "medium", "high"})

#: Base64 openings of the image formats Ollama's vision models take (Ollama sends no type).
_IMAGE_MAGIC = (("iVBORw0KGgo", "image/png"), ("/9j/", "image/jpeg"), ("R0lGOD", "image/gif"),
                ("UklGR", "image/webp"))


def created_at(ctx: StreamContext) -> str:
    """The ``created_at`` of an answer: RFC 3339, UTC."""
    return _rfc3339(ctx.created)


def done_reason(stop: StopReason) -> str:
    """Ollama's ``done_reason``: ``length`` for a cut-off, else ``stop`` (tool calls too)."""
    return "length" if stop is StopReason.MAX_TOKENS else "stop"


# -- requests ------------------------------------------------------------------------------------

def _images(item: JSONObject, where: str) -> list[Image]:
    raw = get_list(item, "images", f"{where}.images", limit=MAX_PARTS) or []
    images: list[Image] = []
    for i, value in enumerate(raw):
        if not isinstance(value, str) or not value:
            raise invalid(f"`{where}.images[{i}]` must be a base64 string", f"{where}.images")
        data = value
        if value.startswith("data:"):  # some clients send data: URLs; take the payload
            header, _, data = value[5:].partition(",")
            media = header.removesuffix(";base64") or "image/png"
        else:
            media = next((m for magic, m in _IMAGE_MAGIC if value.startswith(magic)),
                         "image/png")
        images.append(Image(media_type=media, data_b64=data))
    return images


def _options(obj: JSONObject) -> Params:
    options = get_obj(obj, "options") or {}
    predict = get_int(options, "num_predict", "options.num_predict")
    return Params(
        max_tokens=predict if predict is not None and predict > 0 else None,  # -1, -2: no limit
        temperature=get_float(options, "temperature", "options.temperature"),
        top_p=get_float(options, "top_p", "options.top_p"),
        top_k=get_int(options, "top_k", "options.top_k"),
        seed=get_int(options, "seed", "options.seed"),
        stop=stop_list(options.get("stop"), "options.stop"),
        frequency_penalty=get_float(options, "frequency_penalty", "options.frequency_penalty"),
        presence_penalty=get_float(options, "presence_penalty", "options.presence_penalty"),
    )


def _format(value: object) -> ResponseFormat | None:
    if value is None or value == "":
        return None
    if value == "json":
        return ResponseFormat(kind=FormatKind.JSON_OBJECT)
    if isinstance(value, dict):
        check_depth(value, "format")
        return ResponseFormat(kind=FormatKind.JSON_SCHEMA, schema=value)
    raise invalid('`format` must be "json" or a JSON schema object', "format")


def _think(value: object) -> ReasoningConfig:
    if value is None:
        return ReasoningConfig()
    if isinstance(value, bool):
        return ReasoningConfig(enabled=value)
    if isinstance(value, str) and value in THINK_LEVELS:
        return ReasoningConfig(enabled=True, effort=value)
    raise invalid("`think` must be a boolean or one of low, medium, high", "think")


def _tool(raw: object, where: str) -> Tool:
    item = as_obj(raw, where)
    if item.get("type", "function") != "function":
        raise invalid("only function tools are supported", f"{where}.type")
    function = as_obj(item.get("function"), f"{where}.function")
    parameters = get_obj(function, "parameters", f"{where}.function.parameters") or {}
    check_depth(parameters, f"{where}.function.parameters")
    return Tool(name=need_str(function, "name", f"{where}.function.name"),
                description=get_str(function, "description", f"{where}.function.description"),
                parameters=parameters)


def _assistant(item: JSONObject, index: int, where: str) -> Message:
    parts: list[Part] = []
    thinking = get_str(item, "thinking", f"{where}.thinking")
    if thinking:
        parts.append(Reasoning(text=thinking))
    content = get_str(item, "content", f"{where}.content")
    if content:
        parts.append(Text(text=content))
    for j, raw in enumerate(get_list(item, "tool_calls", f"{where}.tool_calls") or ()):
        call_where = f"{where}.tool_calls[{j}]"
        call = as_obj(raw, call_where)
        function = as_obj(call.get("function"), f"{call_where}.function")
        # Ollama's clients often send calls without an id: make one the tool results can use.
        call_id = get_str(call, "id", f"{call_where}.id") or f"call_{index}_{j}"
        parts.append(ToolCall(
            id=call_id, name=need_str(function, "name", f"{call_where}.function.name"),
            arguments_json=arguments_text(function.get("arguments"),
                                          f"{call_where}.function.arguments")))
    return Message(role=Role.ASSISTANT, parts=tuple(parts))


def _result_id(item: JSONObject, index: int, where: str, name: str | None,
               pending: list[ToolCall]) -> str:
    """The call a ``tool`` message answers: its ``tool_call_id``, else the first unanswered
    call of the last assistant turn with its ``tool_name``, else the first unanswered one."""
    call_id = get_str(item, "tool_call_id", f"{where}.tool_call_id")
    match = next((c for c in pending if c.id == call_id), None) if call_id else None
    if match is None and call_id is None:
        match = next((c for c in pending if c.name == name), pending[0] if pending else None)
    if match is not None:
        pending.remove(match)
        return match.id
    return call_id or f"call_{index}"


def decode_chat_request(body: bytes | JSONObject) -> Request:
    """An ``/api/chat`` body as an IR request. ``stream`` defaults to true, as in Ollama."""
    obj = load_object(body)
    raw_messages = get_list(obj, "messages", limit=MAX_MESSAGES)
    if not raw_messages:
        raise invalid("`messages` must be a non-empty array", "messages")
    system: list[str] = []
    messages: list[Message] = []
    pending: list[ToolCall] = []
    for i, raw in enumerate(raw_messages):
        where = f"messages[{i}]"
        item = as_obj(raw, where)
        role = item.get("role")
        if role == "system":
            system.append(get_str(item, "content", f"{where}.content") or "")
        elif role == "user":
            content = get_str(item, "content", f"{where}.content")
            user: list[Part] = [Text(text=content)] if content else []
            user.extend(_images(item, where))
            messages.append(Message(role=Role.USER, parts=tuple(user)))
        elif role == "assistant":
            message = _assistant(item, i, where)
            pending = [p for p in message.parts if isinstance(p, ToolCall)]
            messages.append(message)
        elif role == "tool":
            name = get_str(item, "tool_name", f"{where}.tool_name") or get_str(
                item, "name", f"{where}.name")
            call_id = _result_id(item, i, where, name, pending)
            content = get_str(item, "content", f"{where}.content") or ""
            result = ToolResult(call_id=call_id, name=name,
                                content=(Text(text=content), *_images(item, where)))
            if messages and messages[-1].role is Role.USER and messages[-1].parts and all(
                    isinstance(p, ToolResult) for p in messages[-1].parts):
                messages[-1] = Message(role=Role.USER, parts=(*messages[-1].parts, result))
            else:
                messages.append(Message(role=Role.USER, parts=(result,)))
        else:
            raise invalid("`role` must be system, user, assistant or tool", f"{where}.role")
    tools = tuple(_tool(t, f"tools[{i}]")
                  for i, t in enumerate(get_list(obj, "tools", limit=MAX_TOOLS) or ()))
    return Request(
        model=need_str(obj, "model"),
        system="\n\n".join(system) if system else None,
        messages=tuple(messages),
        tools=tools,
        params=_options(obj),
        response_format=_format(obj.get("format")),
        reasoning=_think(obj.get("think")),
        stream=get_bool(obj, "stream") is not False,
    )


def decode_generate_prompt(body: bytes | JSONObject) -> PromptRequest | None:
    """An ``/api/generate`` body as a prompt request when it has ``raw: true`` or a ``suffix``
    (no chat template may be applied), else None: then call :func:`decode_generate_request`."""
    obj = load_object(body)
    raw = get_bool(obj, "raw")
    suffix = get_str(obj, "suffix")
    if not raw and not suffix:
        return None
    if raw and (obj.get("system") or obj.get("template") or obj.get("context")):
        raise invalid("raw mode does not support template, system, or context", "raw")
    if get_list(obj, "images"):
        raise invalid("`images` need a chat prompt: send them without `raw` or `suffix`",
                      "images")
    return PromptRequest(
        model=need_str(obj, "model"),
        prompt=get_str(obj, "prompt") or "",
        suffix=suffix or None,
        params=_options(obj),
        response_format=_format(obj.get("format")),
        reasoning=_think(obj.get("think")),
        stream=get_bool(obj, "stream") is not False,
    )


def decode_generate_request(body: bytes | JSONObject) -> Request:
    """An ``/api/generate`` body (templated prompt) as a one-turn chat: ``system``, then the
    prompt and its ``images`` as the user's turn."""
    obj = load_object(body)
    prompt = get_str(obj, "prompt") or ""
    user: list[Part] = [Text(text=prompt)] if prompt else []
    user.extend(_images(obj, "request"))
    return Request(
        model=need_str(obj, "model"),
        system=get_str(obj, "system") or None,
        messages=(Message(role=Role.USER, parts=tuple(user)),),
        params=_options(obj),
        response_format=_format(obj.get("format")),
        reasoning=_think(obj.get("think")),
        stream=get_bool(obj, "stream") is not False,
    )


# -- answers -------------------------------------------------------------------------------------

def final_fields(stop: StopReason, input_tokens: int, output_tokens: int) -> JSONObject:
    """The statistics of a final chunk (or whole answer). Durations are 0: no clock here."""
    return {
        "done": True,
        "done_reason": done_reason(stop),
        "total_duration": 0,
        "load_duration": 0,
        "prompt_eval_count": input_tokens,
        "prompt_eval_duration": 0,
        "eval_count": output_tokens,
        "eval_duration": 0,
    }


def tool_call_object(call_id: str, index: int, name: str, arguments_json: str) -> JSONObject:
    """One Ollama tool call: arguments as an object (a non-object becomes ``{}``)."""
    arguments = arguments_object(arguments_json)
    return {"id": call_id, "function": {
        "index": index, "name": name,
        "arguments": arguments if isinstance(arguments, dict) else {}}}


def encode_chat_response(completion: Completion, ctx: StreamContext) -> bytes:
    """The whole ``/api/chat`` answer (``stream: false``)."""
    message: JSONObject = {
        "role": "assistant",
        "content": "".join(p.text for p in completion.parts if isinstance(p, Text)),
    }
    thinking = "".join(p.text for p in completion.parts if isinstance(p, Reasoning))
    if thinking:
        message["thinking"] = thinking
    calls = [p for p in completion.parts if isinstance(p, ToolCall)]
    if calls:
        message["tool_calls"] = [tool_call_object(c.id, i, c.name, c.arguments_json)
                                 for i, c in enumerate(calls)]
    usage = completion.usage
    return orjson.dumps({
        "model": ctx.model, "created_at": created_at(ctx), "message": message,
        **final_fields(completion.stop_reason, usage.input_tokens, usage.output_tokens),
    })


def encode_generate_response(completion: Completion, ctx: StreamContext) -> bytes:
    """The whole ``/api/generate`` answer (``stream: false``); tool calls have no place in it."""
    body: JSONObject = {
        "model": ctx.model, "created_at": created_at(ctx),
        "response": "".join(p.text for p in completion.parts if isinstance(p, Text)),
    }
    thinking = "".join(p.text for p in completion.parts if isinstance(p, Reasoning))
    if thinking:
        body["thinking"] = thinking
    usage = completion.usage
    body.update(final_fields(completion.stop_reason, usage.input_tokens, usage.output_tokens))
    return orjson.dumps(body)


def encode_error(err: TranslationError) -> tuple[int, bytes]:
    """``(status, body)`` of an Ollama error: ``{"error": "..."}``."""
    return err.status, orjson.dumps({"error": err.message})


# -- the small endpoints -------------------------------------------------------------------------

_DETAILS: JSONObject = {"parent_model": "", "format": "", "family": "", "families": None,
                        "parameter_size": "", "quantization_level": ""}


def tags_body(names: list[str], *, created: int) -> bytes:
    """``GET /api/tags``: ``names`` (deployments) as Ollama models. Sizes and digests belong
    to the backend and are not known here: 0 and empty."""
    stamp = _rfc3339(created)
    return orjson.dumps({"models": [
        {"name": n, "model": n, "modified_at": stamp, "size": 0, "digest": "",
         "details": _DETAILS}
        for n in dict.fromkeys(names)]})


def show_body(*, created: int) -> bytes:
    """``POST /api/show`` for a deployment: what the gateway can say about it (the backend's
    template and parameters stay with the connector)."""
    return orjson.dumps({
        "modelfile": "", "parameters": "", "template": "", "details": _DETAILS,
        "model_info": {}, "capabilities": ["completion", "tools"],
        "modified_at": _rfc3339(created),
    })


def version_body() -> bytes:
    """``GET /api/version``."""
    return orjson.dumps({"version": OLLAMA_VERSION})


def embed_body(vectors: list[list[float]], prompt_tokens: int, *, model: str) -> bytes:
    """An ``/api/embed`` answer."""
    return orjson.dumps({"model": model, "embeddings": vectors, "total_duration": 0,
                         "load_duration": 0, "prompt_eval_count": prompt_tokens})
