"""OpenAI's legacy text completions as a client format (``POST /v1/completions``).

Call :func:`decode_request` on the client's body (a
:class:`~tokios_translate.prompt.PromptRequest`), hand it to
:mod:`tokios_translate.backends.prompt`, then :func:`encode_response` on the
:class:`~tokios_translate.ir.Completion`; errors use OpenAI's envelope (``_openai.encode_error``).
Streams: stream/encoders/completions.py.

Served: one prompt (a string or a list of one string), ``suffix``, ``max_tokens``,
``temperature``, ``top_p``, ``seed``, ``stop``, penalties, ``stream`` and
``stream_options.include_usage``. Refused with a 400: token-array prompts, several prompts,
``n`` or ``best_of`` above 1, ``echo: true`` and ``logprobs`` (no backend path returns them).
Dropped: ``logit_bias``, ``user``.
"""

from __future__ import annotations

import orjson

from .._common import StreamContext
from .._parse import (
    JSONObject,
    get_bool,
    get_float,
    get_int,
    get_obj,
    get_str,
    invalid,
    load_object,
    need_str,
    stop_list,
)
from ..ir import Completion, Params, Text
from ..prompt import PromptRequest
from ._openai import encode_error
from .chat import FINISH_REASON

__all__ = ["completion_text_id", "decode_request", "encode_error", "encode_response"]


def completion_text_id(response_id: str) -> str:
    """``id`` of a text completion (and of each of its stream chunks)."""
    return f"cmpl-{response_id}"


def _prompt(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    if isinstance(value, list) and len(value) > 1 and all(isinstance(v, str) for v in value):
        raise invalid("only one prompt per request is supported", "prompt")
    raise invalid("`prompt` must be a string or a list of one string (token arrays are not "
                  "supported)", "prompt")


def decode_request(body: bytes | JSONObject) -> PromptRequest:
    """The client's ``/v1/completions`` body as a prompt request (raises TranslationError)."""
    obj = load_object(body)
    model = need_str(obj, "model")
    prompt = _prompt(obj.get("prompt"))
    for name in ("n", "best_of"):
        count = get_int(obj, name)
        if count is not None and count != 1:
            raise invalid(f"only `{name}` = 1 is supported", name)
    if get_bool(obj, "echo"):
        raise invalid("`echo` is not supported", "echo")
    if obj.get("logprobs") is not None:
        raise invalid("`logprobs` is not supported", "logprobs")
    stream_options = get_obj(obj, "stream_options") or {}
    return PromptRequest(
        model=model,
        prompt=prompt,
        suffix=get_str(obj, "suffix"),
        params=Params(
            max_tokens=get_int(obj, "max_tokens"),
            temperature=get_float(obj, "temperature"),
            top_p=get_float(obj, "top_p"),
            seed=get_int(obj, "seed"),
            stop=stop_list(obj.get("stop"), "stop"),
            frequency_penalty=get_float(obj, "frequency_penalty"),
            presence_penalty=get_float(obj, "presence_penalty"),
        ),
        stream=bool(get_bool(obj, "stream")),
        include_usage=bool(
            get_bool(stream_options, "include_usage", "stream_options.include_usage")),
    )


def encode_response(completion: Completion, ctx: StreamContext) -> bytes:
    """The ``text_completion`` object; reasoning, if the backend sent any, has no field here
    and is dropped."""
    usage = completion.usage
    return orjson.dumps({
        "id": completion_text_id(ctx.response_id),
        "object": "text_completion",
        "created": ctx.created,
        "model": ctx.model,
        "choices": [{
            "text": "".join(p.text for p in completion.parts if isinstance(p, Text)),
            "index": 0,
            "logprobs": None,
            "finish_reason": FINISH_REASON[completion.stop_reason],
        }],
        "usage": {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
                  "total_tokens": usage.total_tokens},
    })
