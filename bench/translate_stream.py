"""µs per translated stream event, for every backend codec × client format.

Run: ``.venv/bin/python bench/translate_stream.py [--events N]``. Prints a markdown table. The
upstream stream is a realistic answer (reasoning, then text, then a tool call streamed in
fragments, then the end), delivered one upstream event per read as a local server sends it;
the figure is the translator's wall time divided by the number of upstream events. Target:
≤ 20 µs per event in pure Python.

Where litellm is importable (optional, bench-only), its OpenAI-chunk → Anthropic-event adapter
is timed on the same OpenAI-compatible stream and printed alongside; otherwise it is skipped.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import orjson

from tokios_translate._common import BackendKind, ClientFormat, StreamContext
from tokios_translate.stream import open_stream_translator

WORDS = ["Hello", " world", ",", " this", " is", " a", " streamed", " tokén", " 👋", "\n"]


def ollama_stream(events: int) -> list[bytes]:
    out = []
    for i in range(events - 3):
        kind = "thinking" if i < events // 10 else "content"
        line = {"model": "qwen3:8b", "created_at": "2025-07-07T20:22:19.184Z",
                "message": {"role": "assistant", "content": "", kind: WORDS[i % len(WORDS)]},
                "done": False}
        out.append(orjson.dumps(line) + b"\n")
    out.append(orjson.dumps({"model": "qwen3:8b", "message": {"role": "assistant", "content": "",
        "tool_calls": [{"id": "call_1", "function": {"index": 0, "name": "get_weather",
                                                      "arguments": {"city": "Paris"}}}]},
        "done": False}) + b"\n")
    out.append(orjson.dumps({"model": "qwen3:8b", "message": {"role": "assistant", "content": ""},
                             "done": False}) + b"\n")
    out.append(orjson.dumps({"model": "qwen3:8b", "message": {"role": "assistant", "content": ""},
                             "done": True, "done_reason": "stop", "prompt_eval_count": 100,
                             "eval_count": events}) + b"\n")
    return out


def openai_chunks(events: int) -> list[dict[str, Any]]:
    base = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunks = []
    for i in range(events - 6):
        field = "reasoning_content" if i < events // 10 else "content"
        chunks.append({**base, "choices": [{"index": 0, "delta": {field: WORDS[i % len(WORDS)]},
                                            "finish_reason": None}]})
    call = {"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": ""}}
    chunks.append({**base, "choices": [{"index": 0, "delta": {"tool_calls": [call]},
                                        "finish_reason": None}]})
    chunks.extend(
        {**base, "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": piece}}]}, "finish_reason": None}]}
        for piece in ('{"city"', ': "Pa', 'ris"}')
    )
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    chunks.append({**base, "choices": [], "usage": {"prompt_tokens": 100,
                                                    "completion_tokens": events,
                                                    "total_tokens": 100 + events}})
    return chunks


def sse_stream(events: int) -> list[bytes]:
    return [b"data: " + orjson.dumps(c) + b"\n\n" for c in openai_chunks(events)] + [
        b"data: [DONE]\n\n"
    ]


def best_of(repeats: int, run: Callable[[], int]) -> float:
    """Best µs per event over ``repeats`` runs (the least disturbed by the machine)."""
    figures = []
    for _ in range(repeats):
        start = time.perf_counter()
        count = run()
        figures.append((time.perf_counter() - start) * 1e6 / count)
    return min(figures)


def tokios_figure(backend: BackendKind, client: ClientFormat, reads: list[bytes],
                  repeats: int) -> float:
    ctx = StreamContext(client=client, backend=backend, model="dep", response_id="b1",
                        created=1, stream=True, include_usage=True, estimated_input_tokens=100)

    def run() -> int:
        translator = open_stream_translator(ctx)
        feed = translator.feed
        for read in reads:
            feed(read)
        translator.finish()
        assert translator.done
        return len(reads)

    return best_of(repeats, run)


def litellm_figure(events: int, repeats: int) -> float | None:
    """litellm's OpenAI-chunk → Anthropic adapter on the same stream, or None if unavailable."""
    try:
        import litellm
        from litellm.llms.anthropic.experimental_pass_through.adapters.streaming_iterator import (
            AnthropicStreamWrapper,
        )
    except Exception:
        return None
    try:
        raw = openai_chunks(events)

        def run() -> int:
            chunks = [litellm.ModelResponseStream(**chunk) for chunk in raw if chunk["choices"]]
            wrapper = AnthropicStreamWrapper(completion_stream=iter(chunks), model="m")
            for _ in wrapper:
                pass
            return len(raw)

        return best_of(repeats, run)
    except Exception:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2000, help="upstream events per stream")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    upstreams = {
        "Ollama NDJSON": (BackendKind.OLLAMA, ollama_stream(args.events)),
        "OpenAI-compatible SSE (llama.cpp, vLLM, LM Studio)": (
            BackendKind.LLAMACPP,
            sse_stream(args.events),
        ),
    }
    litellm = litellm_figure(args.events, args.repeats)
    header = "| backend codec | client format | µs / event |"
    if litellm is not None:
        header += " litellm µs / event |"
    print(f"{args.events} upstream events per stream, one event per read; target ≤ 20 µs\n")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for label, (backend, reads) in upstreams.items():
        for client in ClientFormat:
            figure = tokios_figure(backend, client, reads, args.repeats)
            row = f"| {label} | {client.value} | {figure:.2f} |"
            if litellm is not None:
                same = client is ClientFormat.MESSAGES and not backend.speaks_ollama
                row += f" {litellm:.2f} |" if same else " |"
            print(row)


if __name__ == "__main__":
    main()
