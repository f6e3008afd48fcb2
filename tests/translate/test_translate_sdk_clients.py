"""The official SDK clients talk to the translators end to end, in process: the SDK builds the
request, the translator turns it into a backend request, a fake backend answers, the translator
turns the answer back, and the SDK parses it (or raises its own exception class for errors).

No sockets: httpx2.MockTransport (the SDKs' own HTTP package) hands each request to a handler
that runs the translators.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import httpx2 as httpx  # the transport package both SDKs are built on
import openai
import orjson
import pytest
from translate_convo import Answer, ollama_answer, openai_answer

from tokios_translate import (
    BackendKind,
    ClientFormat,
    TranslationError,
    count_tokens,
    error_response,
    translate_embeddings_request,
    translate_embeddings_response,
    translate_models,
    translate_request,
    translate_response,
)

BACKENDS = [BackendKind.OLLAMA, BackendKind.LLAMACPP]
CLIENT_BY_PATH = {"/v1/chat/completions": ClientFormat.CHAT,
                  "/v1/responses": ClientFormat.RESPONSES, "/v1/messages": ClientFormat.MESSAGES}
WEATHER_TOOL = {"name": "get_weather", "description": "weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


class FakeGateway:
    """Runs the translators on each SDK request; ``backend_answer`` plays the model server."""

    def __init__(self, backend: BackendKind, answer: Answer,
                 upstream_status: int = 200) -> None:
        self.backend = backend
        self.answer = answer
        self.upstream_status = upstream_status
        self.upstream_bodies: list[dict[str, Any]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/messages/count_tokens":
            out = count_tokens(request.content)
        elif path == "/v1/models":
            tags = orjson.dumps({"models": [{"name": "qwen3:8b", "model": "qwen3:8b"}]})
            out = translate_models(ClientFormat.CHAT, BackendKind.OLLAMA, 200, tags, created=7,
                                   names={"qwen3:8b": "dep"})
        elif path == "/v1/embeddings":
            call, ctx = translate_embeddings_request(request.content, backend=self.backend,
                                                     upstream_model="e", deployment="dep")
            assert call.path == ("/api/embed" if self.backend is BackendKind.OLLAMA
                                 else "/v1/embeddings")
            answer = ({"embeddings": [[0.5, 0.25]], "prompt_eval_count": 2}
                      if self.backend is BackendKind.OLLAMA else
                      {"data": [{"index": 0, "embedding": [0.5, 0.25]}],
                       "usage": {"prompt_tokens": 2}})
            out = translate_embeddings_response(ctx, 200, orjson.dumps(answer))
        else:
            client = CLIENT_BY_PATH[path]
            try:
                upstream = translate_request(client, request.content, backend=self.backend,
                                             upstream_model="qwen3:8b", deployment="dep",
                                             response_id="r1", created=1_750_000_000)
            except TranslationError as err:
                out = error_response(client, err)
            else:
                self.upstream_bodies.append(orjson.loads(upstream.body))
                if self.upstream_status != 200:
                    raw = b'{"error":"the backend failed"}'
                else:
                    builder = (ollama_answer if self.backend is BackendKind.OLLAMA
                               else openai_answer)
                    raw = orjson.dumps(builder(self.answer))
                out = translate_response(upstream.context, self.upstream_status, raw)
        return httpx.Response(out.status, headers=list(out.headers), content=out.body)

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(api_key="sk-tokios-test", base_url="http://gw/v1", max_retries=0,
                             http_client=httpx.Client(transport=httpx.MockTransport(self.handle)))

    def anthropic(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            api_key="sk-tokios-test", base_url="http://gw", max_retries=0,
            http_client=httpx.Client(transport=httpx.MockTransport(self.handle)))


TOOL_ANSWER = Answer(text="Let me check.", thinking="Need the weather.",
                     calls=[("call_1", "get_weather", {"city": "Paris"})])


@pytest.mark.parametrize("backend", BACKENDS)
def test_openai_chat_sdk(backend: BackendKind) -> None:
    gateway = FakeGateway(backend, TOOL_ANSWER)
    completion = gateway.openai().chat.completions.create(
        model="dep", messages=[{"role": "system", "content": "be brief"},
                               {"role": "user", "content": "weather in Paris?"}],
        tools=[{"type": "function", "function": WEATHER_TOOL}], max_completion_tokens=50,
        temperature=0.1)
    choice = completion.choices[0]
    assert completion.model == "dep" and choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert (call.id, call.function.name, call.function.arguments) == (  # type: ignore[union-attr]
        "call_1", "get_weather", '{"city":"Paris"}')
    assert completion.usage is not None and completion.usage.total_tokens == 18
    sent = gateway.upstream_bodies[0]
    assert sent["messages"][0] == {"role": "system", "content": "be brief"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_openai_responses_sdk(backend: BackendKind) -> None:
    gateway = FakeGateway(backend, TOOL_ANSWER)
    response = gateway.openai().responses.create(
        model="dep", instructions="be brief", input="weather in Paris?",
        tools=[{"type": "function", "strict": False, **WEATHER_TOOL}],  # type: ignore[list-item]
        max_output_tokens=50, store=False, reasoning={"effort": "low"})
    assert response.status == "completed"
    assert [item.type for item in response.output] == ["reasoning", "message", "function_call"]
    assert response.output_text == "Let me check."
    assert response.usage is not None and response.usage.total_tokens == 18
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.openai().responses.create(model="dep", input="more",
                                          previous_response_id="resp_r1")
    assert "previous_response_id" in caught.value.message


@pytest.mark.parametrize("backend", BACKENDS)
def test_anthropic_messages_sdk(backend: BackendKind) -> None:
    gateway = FakeGateway(backend, TOOL_ANSWER)
    message = gateway.anthropic().messages.create(
        model="dep", max_tokens=50, system=[{"type": "text", "text": "be brief"}],
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[{"name": "get_weather", "description": "weather",
                "input_schema": WEATHER_TOOL["parameters"]}],  # type: ignore[typeddict-item]
        thinking={"type": "enabled", "budget_tokens": 1024})
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    assert message.stop_reason == "tool_use"
    assert message.content[0].signature  # type: ignore[union-attr]
    assert message.content[2].input == {"city": "Paris"}  # type: ignore[union-attr]
    # The next turn echoes the thinking block (with its placeholder signature) and the result.
    follow_up = gateway.anthropic().messages.create(
        model="dep", max_tokens=50,
        messages=[{"role": "user", "content": "weather in Paris?"},
                  {"role": "assistant", "content": [b.model_dump() for b in message.content]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1",
                                                "content": "15C"}]}])
    assert follow_up.content[-1].type == "tool_use"
    sent = gateway.upstream_bodies[-1]["messages"]
    tool = next(m for m in sent if m["role"] == "tool")
    assert tool["content"] == "15C"
    if backend is BackendKind.OLLAMA:
        assert tool["tool_name"] == "get_weather"
        assert sent[1]["thinking"] == "Need the weather."
    tokens = gateway.anthropic().messages.count_tokens(
        model="dep", messages=[{"role": "user", "content": "x" * 400}])
    assert tokens.input_tokens == 101


ERRORS: list[tuple[int, type[Exception], type[Exception]]] = [
    (404, openai.NotFoundError, anthropic.NotFoundError),
    (429, openai.RateLimitError, anthropic.RateLimitError),
    (400, openai.BadRequestError, anthropic.BadRequestError),
    (500, openai.InternalServerError, anthropic.InternalServerError),
]


@pytest.mark.parametrize(("upstream", "openai_error", "anthropic_error"), ERRORS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_upstream_errors_raise_the_sdks_own_exceptions(
    backend: BackendKind, upstream: int, openai_error: type[Exception],
    anthropic_error: type[Exception],
) -> None:
    gateway = FakeGateway(backend, Answer(), upstream_status=upstream)
    calls: list[Callable[[], Any]] = [
        lambda: gateway.openai().chat.completions.create(
            model="dep", messages=[{"role": "user", "content": "hi"}]),
        lambda: gateway.openai().responses.create(model="dep", input="hi"),
    ]
    for call in calls:
        with pytest.raises(openai_error) as caught:
            call()
        assert "the backend failed" in str(caught.value)
    with pytest.raises(anthropic_error) as caught_a:
        gateway.anthropic().messages.create(model="dep", max_tokens=5,
                                            messages=[{"role": "user", "content": "hi"}])
    assert "the backend failed" in str(caught_a.value)


def test_overloaded_is_the_anthropic_sdks_overloaded_error() -> None:
    gateway = FakeGateway(BackendKind.OLLAMA, Answer(), upstream_status=503)
    with pytest.raises(anthropic.OverloadedError):
        gateway.anthropic().messages.create(model="dep", max_tokens=5,
                                            messages=[{"role": "user", "content": "hi"}])


def test_remote_image_is_a_bad_request_in_each_sdk() -> None:
    gateway = FakeGateway(BackendKind.OLLAMA, Answer())
    with pytest.raises(openai.BadRequestError):
        gateway.openai().chat.completions.create(model="dep", messages=[
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}])
    with pytest.raises(anthropic.BadRequestError):
        gateway.anthropic().messages.create(model="dep", max_tokens=5, messages=[
            {"role": "user", "content": [{"type": "image", "source": {
                "type": "url", "url": "https://x/y.png"}}]}])


@pytest.mark.parametrize("backend", BACKENDS)
def test_models_and_embeddings_sdk(backend: BackendKind) -> None:
    gateway = FakeGateway(backend, Answer())
    client = gateway.openai()
    assert [m.id for m in client.models.list()] == ["dep"]
    for fmt in ("float", "base64"):
        result = client.embeddings.create(model="dep", input="hello",
                                          encoding_format=fmt)  # type: ignore[arg-type]
        assert result.model == "dep"
        if fmt == "float":
            assert result.data[0].embedding == [0.5, 0.25]
    # The SDK asks for base64 by default and decodes it itself.
    assert client.embeddings.create(model="dep", input="hello").data[0].embedding == [0.5, 0.25]
