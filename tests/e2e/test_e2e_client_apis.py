"""End to end: the extra client APIs through gateway (TLS) -> tunnel -> connector -> model server.

Ollama's native API with the official ``ollama`` client, OpenAI's legacy ``/v1/completions``
with the official openai SDK (``client.completions.create``), ``GET /v1/models/{id}`` and the
base-URL probes, on every stack of tests/e2e/conftest.py (Ollama and llama.cpp backends). The
model servers answer ``"Echo: " + prompt`` (tests/upstreams/model_servers.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from tests.e2e.stack import Stack

pytestmark = pytest.mark.timeout(180)

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}


@pytest.fixture
def ollama_client(stack: Stack) -> Iterator[ollama.Client]:
    client = ollama.Client(host=stack.base_url, verify=stack.ssl_context(), timeout=30,
                           headers={"authorization": f"Bearer {stack.key}"})
    yield client
    client._client.close()


def _upstream(stack: Stack) -> dict[str, Any]:
    assert stack.upstream is not None
    return stack.upstream.requests[-1]


# -- probes and one model -----------------------------------------------------------------------

def test_root_answers_get_and_head_without_a_key(stack: Stack) -> None:
    with stack.http() as http:
        got = http.get(f"{stack.base_url}/")
        head = http.head(f"{stack.base_url}/")
    assert got.status_code == 200 and b"Tokios" in got.content
    assert head.status_code == 200 and head.content == b""


def test_one_model_by_id(stack: Stack, openai_client: openai.OpenAI) -> None:
    model = openai_client.models.retrieve(stack.deployment)
    assert (model.id, model.object, model.owned_by) == (stack.deployment, "model", "tokios")
    with pytest.raises(openai.NotFoundError) as caught:
        openai_client.models.retrieve("secret-model")  # another tenant's: not visible
    assert caught.value.status_code == 404
    assert "secret-model" in caught.value.message
    with stack.anthropic() as claude:
        assert claude.models.retrieve(stack.deployment).id == stack.deployment
        with pytest.raises(anthropic.NotFoundError):
            claude.models.retrieve("nope")


# -- Ollama's native API ------------------------------------------------------------------------

def test_ollama_chat(stack: Stack, ollama_client: ollama.Client) -> None:
    answer = ollama_client.chat(model=stack.deployment, stream=False, options={
        "temperature": 0.5, "num_predict": 40},
        messages=[{"role": "user", "content": "hello world"}])
    assert answer.message.content == "Echo: hello world"
    assert answer.done and answer.done_reason == "stop"
    assert answer.model == stack.deployment
    assert (answer.prompt_eval_count or 0) > 0 and (answer.eval_count or 0) > 0
    assert answer.total_duration is not None
    sent = _upstream(stack)
    if stack.backend == "ollama":
        assert sent["options"]["num_predict"] == 40 and sent["options"]["temperature"] == 0.5
    else:
        assert sent["max_tokens"] == 40 and sent["temperature"] == 0.5


def test_ollama_chat_streams_ndjson(stack: Stack, ollama_client: ollama.Client) -> None:
    chunks = list(ollama_client.chat(model=stack.deployment, stream=True, think=True,
                                     messages=[{"role": "user", "content": "one two three"}]))
    assert "".join(c.message.content or "" for c in chunks) == "Echo: one two three"
    assert "".join(c.message.thinking or "" for c in chunks).strip() == "Let me think."
    assert len(chunks) > 3 and not any(c.done for c in chunks[:-1])
    last = chunks[-1]
    assert last.done and last.done_reason == "stop" and (last.eval_count or 0) > 0


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
def test_ollama_streams_are_labelled_ndjson(stack: Stack, path: str) -> None:
    """Ollama's streams are NDJSON, and say so (the gateway's stream guard relies on it)."""
    body = {"model": stack.deployment, "stream": True,
            **({"prompt": "hi"} if path == "/api/generate"
               else {"messages": [{"role": "user", "content": "hi"}]})}
    with stack.http() as http:
        resp = http.post(f"{stack.base_url}{path}", json=body,
                         headers={"authorization": f"Bearer {stack.key}"})
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/x-ndjson"
    assert resp.text.endswith("\n") and '"done":true' in resp.text.splitlines()[-1]


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_chat_with_tools(stack: Stack, ollama_client: ollama.Client, stream: bool) -> None:
    messages: list[Any] = [{"role": "user", "content": "what is the weather in Paris?"}]
    if stream:
        chunks = list(ollama_client.chat(model=stack.deployment, messages=messages,
                                         tools=[WEATHER_TOOL], stream=True))
        calls = [call for c in chunks for call in c.message.tool_calls or []]
    else:
        answer = ollama_client.chat(model=stack.deployment, messages=messages,
                                    tools=[WEATHER_TOOL], stream=False)
        calls = list(answer.message.tool_calls or [])
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"})]
    # The result goes back as Ollama's clients send it: a tool message naming the tool, no id.
    messages += [{"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "tool_name": "get_weather", "content": "sunny, 21 C"},
        {"role": "user", "content": "thanks"}]
    follow = ollama_client.chat(model=stack.deployment, messages=messages, tools=[WEATHER_TOOL],
                                stream=False)
    assert follow.message.content == "Echo: thanks"
    sent = _upstream(stack)["messages"]
    tool = next(m for m in sent if m["role"] == "tool")
    call = next(m for m in sent if m.get("tool_calls"))["tool_calls"][0]
    assert tool["tool_call_id"] == call["id"] and tool["content"] == "sunny, 21 C"


def test_ollama_tags_show_and_version(stack: Stack, ollama_client: ollama.Client) -> None:
    names = {m.model for m in ollama_client.list().models}
    assert names == {stack.deployment, "unserved"}  # the key's deployments, nobody else's
    shown = ollama_client.show(stack.deployment)
    assert shown.capabilities is not None and "tools" in shown.capabilities
    with pytest.raises(ollama.ResponseError) as caught:
        ollama_client.show("secret-model")
    assert caught.value.status_code == 404
    with stack.http() as http:
        version = http.get(f"{stack.base_url}/api/version",
                           headers={"authorization": f"Bearer {stack.key}"})
        anonymous = http.get(f"{stack.base_url}/api/version")
    assert version.status_code == 200 and version.json()["version"]
    assert anonymous.status_code == 401 and set(anonymous.json()) == {"error"}


def test_ollama_errors_are_ollamas(stack: Stack, ollama_client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        ollama_client.chat(model="secret-model", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 404 and "secret-model" in caught.value.error
    with pytest.raises(ollama.ResponseError) as caught:
        ollama_client.chat(model=stack.deployment, stream=False,
                           messages=[{"role": "user", "content": "upstream-error"}])
    assert caught.value.status_code == 502
    with pytest.raises(ollama.ResponseError) as caught:  # in-stream error line
        list(ollama_client.chat(model=stack.deployment, stream=True,
                                messages=[{"role": "user", "content": "midstream-error"}]))
    with stack.http() as http:
        bad = http.post(f"{stack.base_url}/api/chat", json={"model": stack.deployment},
                        headers={"authorization": f"Bearer {stack.key}"})
    assert bad.status_code == 400 and set(bad.json()) == {"error"}


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_generate(stack: Stack, ollama_client: ollama.Client, stream: bool) -> None:
    if stream:
        chunks = list(ollama_client.generate(model=stack.deployment, prompt="why is the sky",
                                             system="Be brief.", stream=True))
        text, last = "".join(c.response or "" for c in chunks), chunks[-1]
    else:
        last = ollama_client.generate(model=stack.deployment, prompt="why is the sky",
                                      system="Be brief.", stream=False)
        text = last.response or ""
    assert text == "Echo: why is the sky"
    assert last.done and last.done_reason == "stop" and (last.eval_count or 0) > 0
    assert _upstream(stack)["messages"][0] == {"role": "system", "content": "Be brief."}


def test_ollama_generate_raw_and_suffix(stack: Stack, ollama_client: ollama.Client) -> None:
    raw = ollama_client.generate(model=stack.deployment, prompt="<s>def f(", raw=True,
                                 stream=False, options={"num_predict": 8, "stop": ["\n\n"]})
    assert raw.response == "Echo: <s>def f("
    sent = _upstream(stack)
    assert sent["prompt"] == "<s>def f(" and "messages" not in sent
    if stack.backend == "ollama":
        assert sent["raw"] is True and sent["options"]["stop"] == ["\n\n"]
    else:
        assert sent["max_tokens"] == 8 and sent["stop"] == ["\n\n"]
    fim = ollama_client.generate(model=stack.deployment, prompt="def f(", suffix="return x",
                                 stream=False)
    assert fim.response == "Echo: def f( <FIM> return x"
    assert stack.upstream is not None
    assert stack.upstream.paths[-1] == ("/api/generate" if stack.backend == "ollama"
                                        else "/infill")


def test_ollama_embed(stack: Stack, ollama_client: ollama.Client) -> None:
    answer = ollama_client.embed(model=stack.deployment, input=["abcd", "abcdefgh"])
    assert [len(v) for v in answer.embeddings] == [3, 3]
    assert answer.embeddings[1][0] == pytest.approx(0.8)
    assert answer.model == stack.deployment


# -- OpenAI's legacy completions ----------------------------------------------------------------

def test_completions(stack: Stack, openai_client: openai.OpenAI) -> None:
    completion = openai_client.completions.create(
        model=stack.deployment, prompt="def add(a, b):", max_tokens=32, temperature=0.1,
        stop=["\n\n"])
    choice = completion.choices[0]
    assert choice.text == "Echo: def add(a, b):" and choice.finish_reason == "stop"
    assert completion.object == "text_completion" and completion.model == stack.deployment
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    sent = _upstream(stack)
    assert sent["prompt"] == "def add(a, b):"
    assert stack.upstream is not None
    assert stack.upstream.paths[-1] == (
        "/api/generate" if stack.backend == "ollama" else "/v1/completions")


def test_completions_stream(stack: Stack, openai_client: openai.OpenAI) -> None:
    chunks = list(openai_client.completions.create(
        model=stack.deployment, prompt=["import os"], max_tokens=32, stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == "Echo: import os"
    assert all(c.object == "text_completion" for c in chunks)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and not any(finishes[:-1])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
def test_completions_fill_in_the_middle(stack: Stack, openai_client: openai.OpenAI,
                                        stream: bool) -> None:
    """Ollama: ``suffix`` through /api/generate; llama.cpp: its native /infill."""
    if stream:
        chunks = list(openai_client.completions.create(
            model=stack.deployment, prompt="def f(", suffix="return x", max_tokens=16,
            stream=True))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    else:
        completion = openai_client.completions.create(
            model=stack.deployment, prompt="def f(", suffix="return x", max_tokens=16)
        text, finish = completion.choices[0].text, completion.choices[0].finish_reason
    assert (text, finish) == ("Echo: def f( <FIM> return x", "stop")
    sent = _upstream(stack)
    if stack.backend == "ollama":
        assert sent["suffix"] == "return x" and "raw" not in sent
    else:
        assert (sent["input_prefix"], sent["input_suffix"]) == ("def f(", "return x")
        assert sent["n_predict"] == 16
        cut = openai_client.completions.create(model=stack.deployment, prompt="def f(",
                                               suffix="return x", max_tokens=2)
        assert cut.choices[0].finish_reason == "length" and cut.choices[0].text == "Echo: def "


@pytest.mark.parametrize("options", [{"echo": True}, {"n": 2}, {"best_of": 3},
                                     {"logprobs": 2}])
def test_completions_refuse_what_no_backend_serves(stack: Stack, openai_client: openai.OpenAI,
                                                   options: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.completions.create(model=stack.deployment, prompt="x", **options)
    assert caught.value.status_code == 400
    assert caught.value.body is not None


def test_completions_need_a_key(stack: Stack) -> None:
    with stack.http() as http:
        answer = http.post(f"{stack.base_url}/v1/completions",
                           json={"model": stack.deployment, "prompt": "x"})
    assert answer.status_code == 401
    assert answer.json()["error"]["type"] == "authentication_error"
    assert isinstance(answer, httpx.Response)
