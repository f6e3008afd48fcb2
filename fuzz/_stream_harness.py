"""The stream-translator fuzz invariant, shared by the ``stream_*`` harnesses.

For any upstream bytes: no exception escapes the translator, it is ``done`` after ``finish()``,
its output is a valid stream of the client format (parsed and accumulated with the official
openai / anthropic SDK types and stream helpers), and feeding the input one byte at a time gives
exactly the same output as feeding it whole.

In strict mode (``TOKIOS_FUZZ_STRICT=1``, set by ``fuzz/run --strict``, which CI uses) the
translators run with ``StreamContext(strict=True)``: an internal error (a bug) re-raises instead
of becoming a well-formed in-stream error, so it is a finding. Malformed upstream data still
ends the stream with the in-stream error in both modes.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "translate" / "stream"))

from stream_client_apis_check import check_completions, check_ollama
from stream_sdk_check import check_chat, check_messages, check_responses

from tokios_translate._common import BackendKind, ClientFormat, StreamContext
from tokios_translate.stream import open_stream_translator

#: Inputs are cut to this length so the byte-at-a-time replay stays cheap.
MAX_INPUT = 4096

_CHECKS: dict[ClientFormat, Callable[[bytes], object]] = {
    ClientFormat.CHAT: lambda body: check_chat(body, run_client=False),
    ClientFormat.RESPONSES: lambda body: check_responses(body, run_client=False),
    ClientFormat.MESSAGES: lambda body: check_messages(body, run_client=False),
    ClientFormat.OLLAMA_CHAT: lambda body: check_ollama(body, chat=True),
    ClientFormat.OLLAMA_GENERATE: lambda body: check_ollama(body, chat=False),
    ClientFormat.COMPLETIONS: check_completions,
}


def strict_mode() -> bool:
    """Whether the harnesses run the translators strictly (``TOKIOS_FUZZ_STRICT=1``)."""
    return os.environ.get("TOKIOS_FUZZ_STRICT") == "1"


def for_mode(ctx: StreamContext) -> StreamContext:
    """``ctx``, made strict in strict mode."""
    return dataclasses.replace(ctx, strict=True) if strict_mode() else ctx


def make_harness(backend: BackendKind, client: ClientFormat) -> Callable[[bytes], None]:
    """A ``TestOneInput`` for the (backend codec, client format) translator."""
    contexts = [
        StreamContext(
            client=client,
            backend=backend,
            model="fuzz",
            response_id="f1",
            created=1,
            stream=True,
            include_usage=include_usage,
            estimated_input_tokens=5,
            parallel_tool_calls=parallel,
        )
        for include_usage, parallel in ((True, True), (False, False))
    ]
    check = _CHECKS[client]

    def run(ctx: StreamContext, pieces: list[bytes]) -> bytes:
        translator = open_stream_translator(for_mode(ctx))
        out = [translator.feed(piece) for piece in pieces]
        out.append(translator.finish())
        assert translator.done, "translator not done after finish()"
        return b"".join(out)

    def test_one_input(data: bytes) -> None:
        data = data[:MAX_INPUT]
        ctx = contexts[len(data) % 2]
        whole = run(ctx, [data])
        check(whole)
        assert run(ctx, [data[i : i + 1] for i in range(len(data))]) == whole, "split differs"

    return test_one_input
