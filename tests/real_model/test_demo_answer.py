"""The quick start's first answer makes sense: Gemma 3 270M answers the demo question with a
sentence, not an echo of it, directly and through the tunnel.

The demo's GGUF is the pretrained model, so the engine gets a plain ``Question:`` / ``Answer:``
chat template (:mod:`runtimes.quickstart.engine`); these tests pin that the template is what
the engine applies (a chat request gets exactly the answer of the hand-rendered transcript
sent as a raw completion) and that Tokios changes nothing on the way (greedy sampling: the same
request gets the same words through the gateway as from the engine itself).
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from runtimes.quickstart import engine, options
from runtimes.quickstart.run import DEMO_SAMPLING
from tests.real_model.conftest import DEPLOYMENT, RealModelStack

DEMO_PROMPT: str = options.parse([]).prompt
WORD = re.compile(r"[A-Za-z][A-Za-z'-]*[.,;:!?]?")


def problems(prompt: str, answer: str) -> list[str]:
    """What makes ``answer`` not look like a sensible one-sentence answer to ``prompt``
    (empty when it does)."""
    text = answer.strip()
    found = []
    if not text:
        return ["empty"]
    if prompt.lower().rstrip("?.!") in text.lower():
        found.append("repeats the prompt")
    tokens = text.split()
    words = [t for t in tokens if WORD.fullmatch(t)]
    if len(words) < 4:
        found.append(f"only {len(words)} words")
    if len(words) < 0.9 * len(tokens):
        found.append("not mostly plain words")
    if sum(ch.isascii() for ch in text) < 0.98 * len(text):
        found.append("not mostly ASCII")
    lowered = [w.lower().strip(".,;:!?") for w in words]
    trigrams = [tuple(lowered[i:i + 3]) for i in range(len(lowered) - 2)]
    if len(set(trigrams)) < len(trigrams):
        found.append("repeats itself")
    if "\n" in text or len(text) > 300:
        found.append("not one line")
    if not text.endswith((".", "!", "?")):
        found.append("no end of sentence")
    return found


def render(messages: list[dict[str, str]]) -> str:
    """The transcript the engine's template should make of ``messages`` (an independent
    reference for :data:`engine.CHAT_TEMPLATE`, without the BOS token)."""
    lines = [f"{m['content']}\n\n" if m["role"] == "system" else f"Question: {m['content']}\n"
             for m in messages]
    return "".join(lines) + "Answer:"


def engine_post(stack: RealModelStack, path: str, body: dict[str, Any]) -> dict[str, Any]:
    with httpx.Client(timeout=120) as http:
        response = http.post(f"{stack.engine_url}{path}",
                             json={"model": engine.MODEL_ALIAS, **body})
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


def settle(stack: RealModelStack) -> None:
    """Leave the engine's prompt cache in one known state. llama-cpp-python reuses the longest
    prefix of the previous prompt and evaluates only the rest, and a different split can flip
    a greedy near-tie; two requests compared word for word each come right after this."""
    engine_post(stack, "/v1/completions", {"prompt": "Zebra", "max_tokens": 1})


def direct_demo_answer(stack: RealModelStack) -> str:
    settle(stack)
    body = engine_post(stack, "/v1/chat/completions", {
        "messages": [{"role": "user", "content": DEMO_PROMPT}], **DEMO_SAMPLING})
    text: str = body["choices"][0]["message"]["content"]
    return text


def test_the_checker_rejects_what_the_demo_used_to_print() -> None:
    # Gemma's chat turns given to the pretrained model: the answers the quick start printed.
    before = "in one sentence: what is a tunnel? vuonna\nIn the following sentences, I'm going"
    assert "repeats the prompt" in problems("In one sentence: what is a tunnel?", before)
    greedy = "What is a tunnel? wnętr\nWhat is a tunnel? wnętr\nWhat is a tunnel? wnętr\n"
    assert {"repeats the prompt", "not mostly ASCII", "repeats itself", "not one line"} <= set(
        problems("What is a tunnel?", greedy))
    assert "repeats itself" in problems("Hi", "A tunnel is a tunnel is a tunnel is a hole.")
    assert problems("Hi", "") == ["empty"]
    assert problems("What is a tunnel?", "A tunnel is an underground passage.") == []


@pytest.mark.real_model
def test_the_engine_applies_the_transcript_template(real_stack: RealModelStack) -> None:
    messages = [{"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": DEMO_PROMPT}]
    settle(real_stack)
    chat = engine_post(real_stack, "/v1/chat/completions",
                       {"messages": messages, **DEMO_SAMPLING})
    settle(real_stack)
    raw = engine_post(real_stack, "/v1/completions",
                      {"prompt": render(messages), "stop": [engine.ANSWER_END], **DEMO_SAMPLING})
    assert chat["choices"][0]["message"]["content"] == raw["choices"][0]["text"]
    assert chat["usage"]["prompt_tokens"] == raw["usage"]["prompt_tokens"]


@pytest.mark.real_model
def test_the_demo_answer_from_the_engine_is_a_sentence(real_stack: RealModelStack) -> None:
    answer = direct_demo_answer(real_stack)
    assert problems(DEMO_PROMPT, answer) == [], answer
    assert direct_demo_answer(real_stack) == answer, "greedy sampling should be deterministic"


@pytest.mark.real_model
def test_the_demo_answer_through_tokios_is_the_engines(real_stack: RealModelStack) -> None:
    direct = direct_demo_answer(real_stack)
    settle(real_stack)
    with real_stack.openai() as client:  # as the quick start sends it: streamed, openai SDK
        stream = client.chat.completions.create(
            model=DEPLOYMENT, messages=[{"role": "user", "content": DEMO_PROMPT}],
            stream=True, **DEMO_SAMPLING)
        texts = [c.choices[0].delta.content or "" for c in stream if c.choices]
    tunneled = "".join(texts)
    assert len([t for t in texts if t]) >= 3, "streamed token by token"
    assert tunneled == direct
    assert problems(DEMO_PROMPT, tunneled) == [], tunneled
    settle(real_stack)
    with real_stack.anthropic() as anthropic_client:
        message = anthropic_client.messages.create(
            model=DEPLOYMENT, max_tokens=DEMO_SAMPLING["max_tokens"],
            messages=[{"role": "user", "content": DEMO_PROMPT}],
            extra_body={"temperature": 0.0})  # this SDK has no temperature argument
    assert "".join(b.text for b in message.content if b.type == "text") == direct
    assert message.stop_reason == "end_turn"
