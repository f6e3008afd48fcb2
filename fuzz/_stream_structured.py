"""Structure-aware stream fuzzing: fuzz bytes drive a sequence of well-formed upstream chunks.

Raw-byte fuzzing spends most inputs on JSON syntax errors. Here each input byte picks the next
upstream chunk (text, reasoning under any of the three field names, a tool-call fragment with or
without id/name/index, a finish reason, a usage chunk, an error, ``[DONE]``, a comment, a
truncation), so the fuzzer explores the decoders' state (interleaved calls, late names, fragments
after a call closed, missing ends). The rendered stream then goes through every client format
with the same invariant as the raw harnesses (see ``_stream_harness``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from _stream_harness import _CHECKS, for_mode

from tokios_translate._common import BackendKind, ClientFormat, StreamContext
from tokios_translate.stream import open_stream_translator

WORDS = ["", "a", "é", "👋", "{", "}", '"', "\\", "\n", "x y", '{"k":', "1}", "[DONE]"]
NAMES = ["", "f", "get_weather", "g"]
FINISH = ["stop", "length", "tool_calls", "content_filter", "function_call", "weird", None]
MAX_OPS = 48


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, modulo: int) -> int:
        if self.at >= len(self.data):
            return 0
        value = self.data[self.at]
        self.at += 1
        return value % modulo

    @property
    def left(self) -> bool:
        return self.at < len(self.data)


def _oa(delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def render_sse(data: bytes) -> bytes:
    src = _Bytes(data)
    out = []
    for _ in range(MAX_OPS):
        if not src.left:
            break
        op = src.take(12)
        if op <= 2:
            out.append(_oa({"content": WORDS[src.take(len(WORDS))]}))
        elif op == 3:
            field = ("reasoning_content", "reasoning", "thinking")[src.take(3)]
            out.append(_oa({field: WORDS[src.take(len(WORDS))]}))
        elif op <= 6:
            call: dict[str, Any] = {}
            flags = src.take(16)
            if flags & 1:
                call["index"] = src.take(4)
            if flags & 2:
                call["id"] = f"id{src.take(3)}"
            function: dict[str, Any] = {}
            if flags & 4:
                function["name"] = NAMES[src.take(len(NAMES))]
            if flags & 8:
                function["arguments"] = WORDS[src.take(len(WORDS))]
            call["function"] = function
            out.append(_oa({"tool_calls": [call]}))
        elif op == 7:
            out.append(_oa({}, FINISH[src.take(len(FINISH))]))
        elif op == 8:
            usage = {"prompt_tokens": src.take(50), "completion_tokens": src.take(50)}
            out.append(b"data: " + orjson.dumps({"choices": [], "usage": usage}) + b"\n\n")
        elif op == 9:
            error = b'data: {"error":{"message":"e"}}\n\n'
            out.append(b"data: [DONE]\n\n" if src.take(4) else error)
        elif op == 10:
            out.append(b": ping\n\n" if src.take(2) else b"event: other\ndata: x\n\n")
        else:
            out.append(_oa({"content": "t", "tool_calls": []}))
    body = b"".join(out)
    if src.take(5) == 0 and body:  # sometimes cut the stream anywhere
        body = body[: src.take(256) * len(body) // 256]
    return body


def render_ollama(data: bytes) -> bytes:
    src = _Bytes(data)
    out = []
    for _ in range(MAX_OPS):
        if not src.left:
            break
        op = src.take(8)
        message: dict[str, Any] = {"role": "assistant", "content": ""}
        line: dict[str, Any] = {"model": "m", "done": False, "message": message}
        if op <= 2:
            message["content"] = WORDS[src.take(len(WORDS))]
        elif op == 3:
            message["thinking"] = WORDS[src.take(len(WORDS))]
        elif op == 4:
            calls = []
            for _ in range(1 + src.take(3)):
                call: dict[str, Any] = {"function": {"name": NAMES[1 + src.take(3)],
                                                     "arguments": {"k": src.take(9)}}}
                if src.take(2):
                    call["id"] = f"id{src.take(3)}"
                calls.append(call)
            message["tool_calls"] = calls
        elif op == 5:
            line.update(done=True, done_reason=("stop", "length", "load")[src.take(3)])
            if src.take(2):
                line["prompt_eval_count"] = src.take(50)
                line["eval_count"] = src.take(50)
        elif op == 6:
            line = {"error": "e"}
        else:
            message["content"] = WORDS[src.take(len(WORDS))]
            message["thinking"] = WORDS[src.take(len(WORDS))]
        out.append(orjson.dumps(line) + b"\n")
    body = b"".join(out)
    if src.take(5) == 0 and body:
        body = body[: src.take(256) * len(body) // 256]
    return body


def make_structured_harness(backend: BackendKind) -> Callable[[bytes], None]:
    """A ``TestOneInput`` rendering a structured upstream stream and checking every client."""
    render = render_ollama if backend.speaks_ollama else render_sse

    def run(ctx: StreamContext, pieces: list[bytes]) -> bytes:
        translator = open_stream_translator(for_mode(ctx))
        out = [translator.feed(piece) for piece in pieces]
        out.append(translator.finish())
        assert translator.done, "translator not done after finish()"
        return b"".join(out)

    def test_one_input(data: bytes) -> None:
        upstream = render(data[:512])
        parallel = not (data[:1] and data[0] & 1)
        for client in ClientFormat:
            ctx = StreamContext(client=client, backend=backend, model="fuzz", response_id="s1",
                                created=1, stream=True, include_usage=parallel,
                                estimated_input_tokens=5, parallel_tool_calls=parallel)
            whole = run(ctx, [upstream])
            _CHECKS[client](whole)
            step = 1 if len(upstream) < 1500 else 7
            pieces = [upstream[i : i + step] for i in range(0, len(upstream), step)]
            assert run(ctx, pieces) == whole, "split differs"

    return test_one_input
