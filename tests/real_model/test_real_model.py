"""A real model through the tunnel: llama-cpp-python + Gemma 3 270M behind gateway + connector.

The official SDKs (on their own HTTP clients, trusting the test CA) talk to the gateway; the
connector calls the real llama.cpp server. Answers are real text, so the tests assert behaviour
(non-empty text, finish reasons, usage, streaming in several chunks), never exact words.
"""

from __future__ import annotations

import pytest

from tests.real_model.conftest import DEPLOYMENT, RealModelStack

pytestmark = pytest.mark.real_model

PROMPT = "Name three colours of the rainbow."


def test_openai_chat_whole_answer(real_stack: RealModelStack) -> None:
    with real_stack.openai() as client:
        answer = client.chat.completions.create(
            model=DEPLOYMENT, messages=[{"role": "user", "content": PROMPT}], max_tokens=24,
        )
    assert answer.model == DEPLOYMENT
    assert answer.object == "chat.completion"
    [choice] = answer.choices
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert answer.usage is not None
    assert answer.usage.prompt_tokens > 5
    assert 0 < answer.usage.completion_tokens <= 24
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_openai_chat_cut_by_max_tokens(real_stack: RealModelStack) -> None:
    with real_stack.openai() as client:
        answer = client.chat.completions.create(
            model=DEPLOYMENT,
            messages=[{"role": "user", "content": "Write a long story about the sea."}],
            max_tokens=3,
        )
    [choice] = answer.choices
    assert choice.finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 3
    assert choice.message.content


def test_openai_chat_streamed(real_stack: RealModelStack) -> None:
    with real_stack.openai() as client:
        stream = client.chat.completions.create(
            model=DEPLOYMENT, messages=[{"role": "user", "content": PROMPT}], max_tokens=24,
            stream=True, stream_options={"include_usage": True},
        )
        chunks = list(stream)
    choices = [c.choices[0] for c in chunks if c.choices]
    texts = [choice.delta.content for choice in choices if choice.delta.content]
    assert len(texts) >= 3, "the answer should arrive token by token, in several chunks"
    assert "".join(texts).strip()
    finishes = [choice.finish_reason for choice in choices if choice.finish_reason]
    assert finishes in (["stop"], ["length"])
    assert all(c.model == DEPLOYMENT for c in chunks)
    assert len({c.id for c in chunks}) == 1
    # include_usage asks for a last chunk with usage. llama-cpp-python's server does not count
    # streamed tokens (it has no stream_options), so the counts can be 0; never made up.
    assert chunks[-1].usage is not None and not chunks[-1].choices
    assert chunks[-1].usage.completion_tokens in (0, *range(1, 25))


def test_anthropic_messages_whole_answer(real_stack: RealModelStack) -> None:
    with real_stack.anthropic() as client:
        message = client.messages.create(
            model=DEPLOYMENT, max_tokens=24, messages=[{"role": "user", "content": PROMPT}],
        )
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == DEPLOYMENT
    assert message.stop_reason in ("end_turn", "max_tokens")
    text = "".join(block.text for block in message.content if block.type == "text")
    assert text.strip()
    assert message.usage.input_tokens > 5
    assert 0 < message.usage.output_tokens <= 24


def test_anthropic_messages_streamed(real_stack: RealModelStack) -> None:
    with real_stack.anthropic() as client, client.messages.stream(
        model=DEPLOYMENT, max_tokens=24, system="Answer briefly.",
        messages=[{"role": "user", "content": PROMPT}],
    ) as stream:
        deltas = list(stream.text_stream)
        final = stream.get_final_message()
    assert len([d for d in deltas if d]) >= 3
    text = "".join(block.text for block in final.content if block.type == "text")
    assert text == "".join(deltas)
    assert text.strip()
    assert final.stop_reason in ("end_turn", "max_tokens")
    # llama-cpp-python reports no usage when streaming (see test_openai_chat_streamed).
    assert final.usage.output_tokens in (0, *range(1, 25))


def test_anthropic_max_tokens_stop_reason(real_stack: RealModelStack) -> None:
    with real_stack.anthropic() as client:
        message = client.messages.create(
            model=DEPLOYMENT, max_tokens=2,
            messages=[{"role": "user", "content": "Write a long story about the sea."}],
        )
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 2
