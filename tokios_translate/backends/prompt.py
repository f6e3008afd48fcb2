"""The upstream codec of a prompt request (:class:`~tokios_translate.prompt.PromptRequest`).

Ollama: ``POST /api/generate`` with ``raw: true`` (no chat template), or with the template when
a ``suffix`` asks for fill-in-the-middle (the model's template places the suffix). OpenAI-
compatible servers (llama.cpp, vLLM, LM Studio): ``POST /v1/completions`` with ``prompt``. A
``suffix`` goes to llama.cpp's own ``POST /infill`` (``input_prefix``/``input_suffix``; its
native answer shape: ``content``, ``stop_type``, ``tokens_predicted``); the other
OpenAI-compatible servers get none (vLLM refuses it), so a suffix there is a clean 400.

Call :func:`encode_request`, send the body to the path it returns, then :func:`decode_response`
on a whole answer (errors: ``ollama.decode_error`` / ``openai_compat.decode_error``, the same
bodies as for a chat). Streams go through ``tokios_translate.stream`` (``ctx.prompt`` is set).
"""

from __future__ import annotations

import orjson

from .._common import BackendKind, StopReason, TranslationError, Usage
from .._parse import JSONObject, as_obj, get_list, invalid, load_object
from ..ir import Completion, FormatKind, Reasoning, Text
from ..prompt import PromptRequest
from . import ollama, openai_compat
from ._errors import upstream_error

GENERATE_PATH = "/api/generate"
COMPLETIONS_PATH = "/v1/completions"
INFILL_PATH = "/infill"

#: llama.cpp's native ``stop_type`` -> IR stop reason (``word``: a stop sequence matched).
INFILL_STOP = {"eos": StopReason.END_TURN, "limit": StopReason.MAX_TOKENS,
               "word": StopReason.STOP_SEQUENCE}

#: Backends that take ``top_k`` at the top level of a completions body.
_TOP_K = frozenset({BackendKind.LLAMACPP, BackendKind.VLLM, BackendKind.LMSTUDIO})


def _ollama_body(request: PromptRequest, upstream_model: str,
                 num_ctx: int | None) -> JSONObject:
    body: JSONObject = {"model": upstream_model, "prompt": request.prompt,
                        "stream": request.stream}
    if request.suffix is not None:
        body["suffix"] = request.suffix
    else:
        body["raw"] = True
    fmt = request.response_format
    if fmt is not None:
        body["format"] = "json" if fmt.kind is FormatKind.JSON_OBJECT else (fmt.schema or "json")
    reasoning = request.reasoning
    if reasoning.enabled is False:
        body["think"] = False
    elif reasoning.effort in ollama.THINK_LEVELS:
        body["think"] = reasoning.effort
    elif reasoning.enabled or reasoning.effort:
        body["think"] = True
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
    return body


def _infill_body(request: PromptRequest, upstream_model: str) -> JSONObject:
    """llama.cpp ``/infill``: the prompt before the cursor and the suffix after it."""
    body: JSONObject = {"model": upstream_model, "input_prefix": request.prompt,
                        "input_suffix": request.suffix, "prompt": "", "stream": request.stream}
    params = request.params
    for name, value in (
        ("n_predict", params.max_tokens), ("temperature", params.temperature),
        ("top_p", params.top_p), ("top_k", params.top_k), ("seed", params.seed),
        ("frequency_penalty", params.frequency_penalty),
        ("presence_penalty", params.presence_penalty),
    ):
        if value is not None:
            body[name] = value
    if params.stop:
        body["stop"] = list(params.stop)
    return body


def _openai_body(request: PromptRequest, upstream_model: str,
                 backend: BackendKind) -> JSONObject:
    if request.suffix is not None:
        raise invalid("`suffix` (fill-in-the-middle) is served by the Ollama and llama.cpp "
                      "backends only; this deployment's backend has no infill", "suffix")
    body: JSONObject = {"model": upstream_model, "prompt": request.prompt,
                        "stream": request.stream}
    if request.stream:
        body["stream_options"] = {"include_usage": True}
    params = request.params
    for name, value in (
        ("max_tokens", params.max_tokens), ("temperature", params.temperature),
        ("top_p", params.top_p), ("seed", params.seed),
        ("frequency_penalty", params.frequency_penalty),
        ("presence_penalty", params.presence_penalty),
    ):
        if value is not None:
            body[name] = value
    if params.top_k is not None and backend in _TOP_K:
        body["top_k"] = params.top_k
    if params.stop:
        body["stop"] = list(params.stop)
    fmt = request.response_format
    if fmt is not None and fmt.kind is FormatKind.JSON_OBJECT:
        body["response_format"] = {"type": "json_object"}
    elif fmt is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": fmt.name or "response", "schema": fmt.schema or {}}}
    return body


def encode_request(request: PromptRequest, upstream_model: str, backend: BackendKind, *,
                   num_ctx: int | None = None) -> tuple[str, bytes]:
    """``(path, body)`` of ``request`` for ``backend``. Raises :class:`TranslationError`
    (a ``suffix`` on an OpenAI-compatible backend)."""
    if backend.speaks_ollama:
        return GENERATE_PATH, orjson.dumps(_ollama_body(request, upstream_model, num_ctx))
    if request.suffix is not None and backend is BackendKind.LLAMACPP:
        return INFILL_PATH, orjson.dumps(_infill_body(request, upstream_model))
    return COMPLETIONS_PATH, orjson.dumps(_openai_body(request, upstream_model, backend))


def decode_response(body: bytes, backend: BackendKind,
                    stop_sequences: tuple[str, ...] = ()) -> Completion:
    """A whole upstream answer (``/api/generate`` or ``/v1/completions``) as a completion."""
    obj = load_object(body, what="upstream response")
    if backend.speaks_ollama:
        error = obj.get("error")
        if error is not None:
            raise upstream_error(200, str(error), "ollama")
        parts: list[Text | Reasoning] = []
        thinking = obj.get("thinking")
        if isinstance(thinking, str) and thinking:
            parts.append(Reasoning(text=thinking))
        text = obj.get("response")
        if isinstance(text, str) and text:
            parts.append(Text(text=text))
        return Completion(parts=tuple(parts),
                          stop_reason=ollama.stop_reason_of(obj.get("done_reason"), False),
                          usage=ollama.usage_of(obj))
    if obj.get("error") is not None:
        raise _openai_error(obj)
    if "choices" not in obj and "content" in obj:  # llama.cpp's native /infill answer
        return _infill_completion(obj)
    choices = get_list(obj, "choices") or []
    choice = as_obj(choices[0], "choices[0]") if choices else {}
    text = choice.get("text")
    reason, matched = openai_compat.stop_reason_of(
        choice.get("finish_reason"), False, choice.get("stop_reason"), stop_sequences)
    return Completion(
        parts=(Text(text=text),) if isinstance(text, str) and text else (),
        stop_reason=reason if reason is not StopReason.TOOL_USE else StopReason.END_TURN,
        usage=openai_compat.usage_of(obj.get("usage")),
        stop_sequence=matched,
    )


def infill_stop(obj: JSONObject) -> tuple[StopReason, str | None]:
    """The stop reason (and matched stop word) of llama.cpp's native final answer."""
    reason = INFILL_STOP.get(str(obj.get("stop_type")), StopReason.END_TURN)
    word = obj.get("stopping_word")
    if reason is StopReason.STOP_SEQUENCE and isinstance(word, str) and word:
        return reason, word
    return (StopReason.END_TURN if reason is StopReason.STOP_SEQUENCE else reason), None


def infill_usage(obj: JSONObject) -> Usage:
    """Usage of llama.cpp's native answer: ``tokens_evaluated`` in, ``tokens_predicted`` out."""
    evaluated, predicted = obj.get("tokens_evaluated"), obj.get("tokens_predicted")
    return Usage(input_tokens=evaluated if isinstance(evaluated, int) else 0,
                 output_tokens=predicted if isinstance(predicted, int) else 0)


def _infill_completion(obj: JSONObject) -> Completion:
    text = obj.get("content")
    reason, word = infill_stop(obj)
    return Completion(parts=(Text(text=text),) if isinstance(text, str) and text else (),
                      stop_reason=reason, usage=infill_usage(obj), stop_sequence=word)


def _openai_error(obj: JSONObject) -> TranslationError:
    return openai_compat.decode_error(200, orjson.dumps(obj))
