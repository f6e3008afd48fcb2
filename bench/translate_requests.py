"""µs per request translation for each client format × backend path, and per whole-answer
translation, printed as a table. Run: ``.venv/bin/python bench/translate_requests.py``.

The input is agent-sized: a system prompt, 20 tools, 12 turns with tool calls and results.
When litellm is installed (optional, bench-only), its Anthropic -> OpenAI request translation of
the same input is timed alongside.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "translate"))

from translate_convo import (
    WEATHER,
    Answer,
    Convo,
    ollama_answer,
    openai_answer,
    to_chat,
    to_messages,
    to_responses,
)

from tokios_translate import (
    BackendKind,
    ClientFormat,
    translate_request,
    translate_response,
)


def agent_convo() -> Convo:
    tools = [{**WEATHER, "name": f"tool_{i}", "description": "Does a thing. " * 10}
             for i in range(20)]
    turns: list[tuple[str, list[Any]]] = [("user", [("text", "Fix the failing test. " * 20)])]
    for i in range(5):
        turns.append(("assistant", [("thinking", "Let me look. " * 10), ("text", "Reading."),
                                    ("call", f"call_{i}", f"tool_{i}", {"city": "x" * 30})]))
        turns.append(("user", [("result", f"call_{i}", "line\n" * 80, False)]))
    turns.append(("user", [("text", "Go on.")]))
    return Convo(system="You are a coding agent. " * 100, tools=tools, turns=turns)


def per_call(fn: Any, *, budget: float = 0.3) -> float:
    """Mean µs per call, measured over ~``budget`` seconds."""
    fn()
    n, start = 0, time.perf_counter()
    while True:
        for _ in range(20):
            fn()
        n += 20
        elapsed = time.perf_counter() - start
        if elapsed >= budget:
            return elapsed / n * 1e6


def main() -> None:
    convo = agent_convo()
    bodies = {
        ClientFormat.CHAT: orjson.dumps(to_chat(convo, max_tokens=4096)),
        ClientFormat.RESPONSES: orjson.dumps(to_responses(convo, max_output_tokens=4096)),
        ClientFormat.MESSAGES: orjson.dumps(to_messages(convo)),
    }
    answer = Answer(text="Done. " * 50, thinking="Thinking. " * 30,
                    calls=[("call_a", "tool_1", {"city": "Paris"})])
    answers = {"ollama": orjson.dumps(ollama_answer(answer)),
               "openai": orjson.dumps(openai_answer(answer))}
    print(f"request bodies: {', '.join(f'{c.value} {len(b)} B' for c, b in bodies.items())}")
    print(f"{'client':<10} {'backend':<9} {'request µs':>11} {'response µs':>12}")
    for client, body in bodies.items():
        for backend in (BackendKind.OLLAMA, BackendKind.LLAMACPP):
            def request(client: ClientFormat = client, body: bytes = body,
                        backend: BackendKind = backend) -> Any:
                return translate_request(client, body, backend=backend, upstream_model="m",
                                         deployment="d", response_id="r", created=0)
            ctx = request().context
            raw = answers["ollama" if backend is BackendKind.OLLAMA else "openai"]
            request_us = per_call(request)
            response_us = per_call(lambda ctx=ctx, raw=raw: translate_response(ctx, 200, raw))
            print(f"{client.value:<10} {backend.value:<9} {request_us:>11.1f} {response_us:>12.1f}")
    litellm_row(bodies[ClientFormat.MESSAGES], answers["openai"])


def _litellm_adapter() -> Any:
    import importlib

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import
    for module in ("litellm.llms.anthropic.pass_through.adapters.transformation",
                   "litellm.llms.anthropic.experimental_pass_through.adapters.transformation"):
        try:
            return importlib.import_module(module).LiteLLMAnthropicMessagesAdapter()
        except ImportError:
            continue
    return None


def litellm_row(messages_body: bytes, openai_body: bytes) -> None:
    """litellm's Anthropic -> OpenAI-chat request translation and OpenAI -> Anthropic answer
    translation of the same inputs. It works on decoded dicts / objects, so its figures exclude
    the JSON parsing and serialisation that ours include."""
    adapter = _litellm_adapter()
    if adapter is None:
        print("litellm: not installed (optional, bench-only); no comparison row")
        return
    import litellm

    obj = orjson.loads(messages_body)
    answer = litellm.ModelResponse(**orjson.loads(openai_body))
    try:
        request_us = per_call(lambda: adapter.translate_anthropic_to_openai(obj))
        response_us = per_call(lambda: adapter.translate_openai_response_to_anthropic(answer))
    except Exception as err:
        print(f"litellm: comparison failed ({type(err).__name__})")
        return
    print(f"{'messages':<10} {'litellm':<9} {request_us:>11.1f} {response_us:>12.1f}"
          "  (litellm adapter, dict in/out: no JSON parsing or encoding counted)")


if __name__ == "__main__":
    main()
