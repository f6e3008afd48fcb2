"""The prompt answers' upstream decoders event by event (Ollama /api/generate NDJSON, OpenAI-
compatible /v1/completions SSE, llama.cpp's native /infill SSE): what the mutation run found
checked only through whole answers (docs/testing.md)."""

from __future__ import annotations

import pytest

from tokios_translate._common import BackendKind, ClientFormat, StopReason, StreamContext, Usage
from tokios_translate.stream.events import Finished, ReasoningDelta, TextDelta, UpstreamError
from tokios_translate.stream.prompt_decoders import (
    OllamaGenerateDecoder,
    OpenAICompletionsDecoder,
    open_prompt_decoder,
)


def ctx(backend: BackendKind, stops: tuple[str, ...] = ()) -> StreamContext:
    return StreamContext(client=ClientFormat.COMPLETIONS, backend=backend, model="m",
                         response_id="r", created=1, stream=True, prompt=True,
                         stop_sequences=stops, strict=True)


def test_the_decoder_follows_the_backend() -> None:
    assert type(open_prompt_decoder(ctx(BackendKind.OLLAMA))) is OllamaGenerateDecoder
    assert type(open_prompt_decoder(ctx(BackendKind.LLAMACPP))) is OpenAICompletionsDecoder


def test_ollama_generate_lines() -> None:
    decoder = OllamaGenerateDecoder(ctx(BackendKind.OLLAMA))
    events = decoder.feed(b'{"thinking":"hm","response":""}\n{"response":"hi"}\n'
                          b'{"response":"","done":true,"done_reason":"length",'
                          b'"prompt_eval_count":3,"eval_count":9}\n')
    assert events == [ReasoningDelta(text="hm"), TextDelta(text="hi"),
                      Finished(stop=StopReason.MAX_TOKENS,
                               usage=Usage(input_tokens=3, output_tokens=9))]
    done = OllamaGenerateDecoder(ctx(BackendKind.OLLAMA))
    assert done.feed(b'{"response":"","done":true,"done_reason":"stop"}\n') == [
        Finished(stop=StopReason.END_TURN, usage=Usage())]


@pytest.mark.parametrize(("line", "message"), [
    (b'{"error":"model not found"}\n', "model not found"),
    (b'{"error":{"message":"out of memory"}}\n', "out of memory"),
    (b"[1, 2]\n", "malformed upstream stream data"),
])
def test_ollama_generate_errors(line: bytes, message: str) -> None:
    decoder = OllamaGenerateDecoder(ctx(BackendKind.OLLAMA))
    assert decoder.feed(b'{"response":"a"}\n' + line) == [TextDelta(text="a"),
                                                         UpstreamError(message=message)]


def test_completions_sse() -> None:
    decoder = OpenAICompletionsDecoder(ctx(BackendKind.VLLM, stops=("END",)))
    events = decoder.feed(
        b'data: {"choices":[{"index":0,"text":"he"}]}\n\n'
        b'data: {"choices":[{"index":0,"text":"llo","finish_reason":"stop",'
        b'"stop_reason":"END"}]}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2}}\n\n'
        b"data: [DONE]\n\n")
    assert events == [TextDelta(text="he"), TextDelta(text="llo"),
                      Finished(stop=StopReason.STOP_SEQUENCE,
                               usage=Usage(input_tokens=4, output_tokens=2),
                               stop_sequence="END")]


@pytest.mark.parametrize(("reason", "stop"), [("length", StopReason.MAX_TOKENS),
                                              ("content_filter", StopReason.CONTENT_FILTER),
                                              ("stop", StopReason.END_TURN),
                                              ("eos", StopReason.END_TURN)])
def test_completions_finish_reasons_at_eof_without_done(reason: str, stop: StopReason) -> None:
    decoder = OpenAICompletionsDecoder(ctx(BackendKind.LLAMACPP, stops=("x",)))
    assert decoder.feed(b'data: {"choices":[{"text":"a","finish_reason":"%s",'
                        b'"stop_reason":"y"}]}\n\n' % reason.encode()) == [TextDelta(text="a")]
    assert decoder.finish() == [Finished(stop=stop, usage=None)]


@pytest.mark.parametrize(("data", "message"), [
    (b'event: error\ndata: {"message":"overloaded"}\n\n', "overloaded"),
    (b'data: {"error":{"message":"bad prompt"}}\n\n', "bad prompt"),
    (b'data: {"choices":{"text":"a"}}\n\n', "malformed upstream stream data"),
    (b'data: {"choices":["a"]}\n\n', "malformed upstream stream data"),
    (b'data: {"choices":[{"text":"a","finish_reason":7}]}\n\n',
     "malformed upstream stream data"),
    (b"data: [1]\n\n", "malformed upstream stream data"),
])
def test_completions_errors(data: bytes, message: str) -> None:
    decoder = OpenAICompletionsDecoder(ctx(BackendKind.LLAMACPP))
    events = decoder.feed(data)
    assert events[-1] == UpstreamError(message=message)


def test_completions_ignores_other_events_and_keep_alives() -> None:
    decoder = OpenAICompletionsDecoder(ctx(BackendKind.LLAMACPP))
    assert decoder.feed(b'event: ping\ndata: {"x":1}\n\n: comment\n\ndata: \n\n'
                        b'data: {"choices":[]}\n\n') == []
    assert decoder.feed(b"data: [DONE]\n\n") == [Finished(stop=StopReason.END_TURN, usage=None)]


@pytest.mark.parametrize(("stop_type", "word", "stop", "sequence"), [
    ("eos", "", StopReason.END_TURN, None), ("limit", "", StopReason.MAX_TOKENS, None),
    ("word", "###", StopReason.STOP_SEQUENCE, "###")])
def test_llamacpp_native_infill(stop_type: str, word: str, stop: StopReason,
                                sequence: str | None) -> None:
    decoder = OpenAICompletionsDecoder(ctx(BackendKind.LLAMACPP))
    events = decoder.feed(
        b'data: {"content":"def f","stop":false}\n\n'
        b'data: {"content":"","stop":true,"stop_type":"%s","stopping_word":"%s",'
        b'"tokens_evaluated":12,"tokens_predicted":3}\n\n' % (stop_type.encode(), word.encode()))
    assert events == [TextDelta(text="def f"),
                      Finished(stop=stop, usage=Usage(input_tokens=12, output_tokens=3),
                               stop_sequence=sequence)]
