"""End to end: official SDKs -> gateway (TLS) -> tunnel -> connector -> test model server.

Each test runs against both backends (Ollama native and llama.cpp's OpenAI-compatible SSE).
The model servers answer ``"Echo: " + last user text``; see tests/upstreams/model_servers.py.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from tests.e2e.stack import Stack, admin, connections_to, listening_sockets, wait_for

pytestmark = pytest.mark.timeout(180)

# The suite drives the real programs; it is collected once both exist.
pytest.importorskip("runtimes.gateway.server")
pytest.importorskip("runtimes.connector.cli")

WEATHER_TOOL_OPENAI: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
WEATHER_TOOL_ANTHROPIC: Any = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


# -- the three client formats, streamed and not -------------------------------------------


def test_chat_completion(stack: Stack, openai_client: openai.OpenAI) -> None:
    completion = openai_client.chat.completions.create(
        model=stack.deployment,
        messages=[{"role": "user", "content": "hello world"}],
    )
    assert completion.choices[0].message.content == "Echo: hello world"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == stack.deployment  # clients never see the upstream model
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    # the connector mapped the deployment to the upstream model name
    assert stack.upstream is not None
    assert stack.upstream.requests[-1]["model"] == stack.upstream_model


def test_chat_completion_stream(stack: Stack, openai_client: openai.OpenAI) -> None:
    stream = openai_client.chat.completions.create(
        model=stack.deployment,
        stream=True,
        stream_options={"include_usage": True},
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "one two three"},
        ],
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: one two three"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 3
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


def test_responses(stack: Stack, openai_client: openai.OpenAI) -> None:
    response = openai_client.responses.create(model=stack.deployment, input="what now")
    assert response.output_text == "Echo: what now"
    assert response.status == "completed"
    assert response.model == stack.deployment


def test_responses_stream(stack: Stack, openai_client: openai.OpenAI) -> None:
    with openai_client.responses.stream(model=stack.deployment, input="stream me") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "Echo: stream me"
    assert final.output_text == "Echo: stream me"


def test_messages(stack: Stack, anthropic_client: anthropic.Anthropic) -> None:
    message = anthropic_client.messages.create(
        model=stack.deployment,
        max_tokens=100,
        system="You are terse.",
        messages=[{"role": "user", "content": "hi claude"}],
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == "Echo: hi claude"
    assert message.stop_reason == "end_turn"
    assert message.model == stack.deployment
    assert message.usage.input_tokens > 0


def test_messages_stream_with_beta_query_and_headers(stack: Stack) -> None:
    with (
        stack.anthropic(
            default_headers={"anthropic-beta": "fine-grained-tool-streaming-2025-05-14"},
            default_query={"beta": "true"},  # what Claude Code sends
        ) as client,
        client.messages.stream(
            model=stack.deployment,
            max_tokens=100,
            messages=[{"role": "user", "content": "stream please"}],
        ) as stream,
    ):
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Echo: stream please"
    assert final.stop_reason == "end_turn"


# -- tools, thinking, embeddings ------------------------------------------------------------


def test_chat_tool_calls_round_trip(stack: Stack, openai_client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "weather in both cities?"}]
    completion = openai_client.chat.completions.create(
        model=stack.deployment,
        messages=messages,
        tools=[WEATHER_TOOL_OPENAI],
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather", "get_weather"]
    assert [orjson.loads(c.function.arguments) for c in calls] == [
        {"city": "Paris"},
        {"city": "Tokyo"},
    ]
    assert len({c.id for c in calls}) == 2
    # send the results back: the tool turn must translate without error
    messages.append(choice.message.model_dump(exclude_none=True))
    messages += [{"role": "tool", "tool_call_id": c.id, "content": "15C"} for c in calls]
    messages.append({"role": "user", "content": "thanks"})
    follow_up = openai_client.chat.completions.create(
        model=stack.deployment, messages=messages, tools=[WEATHER_TOOL_OPENAI]
    )
    assert follow_up.choices[0].message.content == "Echo: thanks"


def test_messages_tool_use_stream(stack: Stack, anthropic_client: anthropic.Anthropic) -> None:
    with anthropic_client.messages.stream(
        model=stack.deployment,
        max_tokens=200,
        tools=[WEATHER_TOOL_ANTHROPIC],
        messages=[{"role": "user", "content": "what is the weather?"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    tool_uses = [b for b in final.content if b.type == "tool_use"]
    assert len(tool_uses) == 1
    assert tool_uses[0].name == "get_weather" and tool_uses[0].input == {"city": "Paris"}


def test_messages_thinking(stack: Stack, anthropic_client: anthropic.Anthropic) -> None:
    with anthropic_client.messages.stream(
        model=stack.deployment,
        max_tokens=2000,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "think first"}],
    ) as stream:
        final = stream.get_final_message()
    kinds = [b.type for b in final.content]
    assert kinds[0] == "thinking", kinds
    assert "Let me think." in final.content[0].thinking  # type: ignore[union-attr]
    assert final.content[-1].type == "text"
    assert final.content[-1].text == "Echo: think first"  # type: ignore[union-attr]


def test_embeddings(stack: Stack, openai_client: openai.OpenAI) -> None:
    result = openai_client.embeddings.create(model=stack.deployment, input=["abc", "abcdefghij"])
    assert [d.index for d in result.data] == [0, 1]
    assert result.data[0].embedding == pytest.approx([0.3, 0.5, -0.25])
    assert result.data[1].embedding == pytest.approx([1.0, 0.5, -0.25])
    assert result.model == stack.deployment


def test_models_list_is_scoped_to_the_key(stack: Stack, openai_client: openai.OpenAI) -> None:
    ids = {m.id for m in openai_client.models.list()}
    assert ids == {stack.deployment, "unserved"}
    with stack.openai(api_key=stack.other_key) as other:
        assert {m.id for m in other.models.list()} == {"secret-model"}


# -- errors, in each client's own envelope ---------------------------------------------------


def test_wrong_key_is_401_in_each_format(stack: Stack) -> None:
    with (
        stack.http() as http,
        stack.openai(api_key="sk-tokios-nope") as bad_openai,
        stack.anthropic(api_key="sk-tokios-nope") as bad_anthropic,
    ):
        with pytest.raises(openai.AuthenticationError) as oe:
            bad_openai.chat.completions.create(
                model=stack.deployment, messages=[{"role": "user", "content": "x"}]
            )
        assert oe.value.status_code == 401
        with pytest.raises(anthropic.AuthenticationError) as ae:
            bad_anthropic.messages.create(
                model=stack.deployment, max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        body: Any = ae.value.body
        assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
        no_key = http.post(f"{stack.base_url}/v1/chat/completions", json={"model": "x"})
        assert no_key.status_code == 401


def test_other_tenants_deployment_looks_like_an_unknown_model(
    stack: Stack, openai_client: openai.OpenAI
) -> None:
    with pytest.raises(openai.NotFoundError) as theirs:
        openai_client.chat.completions.create(
            model="secret-model", messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(openai.NotFoundError) as unknown:
        openai_client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )
    assert theirs.value.status_code == unknown.value.status_code == 404
    assert str(theirs.value.message).replace("secret-model", "M") == str(
        unknown.value.message
    ).replace("no-such-model", "M")


def test_deployment_without_connector_is_503(
    stack: Stack, anthropic_client: anthropic.Anthropic
) -> None:
    with pytest.raises(anthropic.APIStatusError) as err:
        anthropic_client.messages.create(
            model="unserved", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert err.value.status_code == 503


def test_upstream_error_becomes_a_server_error(stack: Stack, openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as err:
        openai_client.chat.completions.create(
            model=stack.deployment, messages=[{"role": "user", "content": "upstream-error"}]
        )
    assert 500 <= err.value.status_code < 600
    body: Any = err.value.body
    assert isinstance(body, dict) and "message" in body


def test_body_over_the_limit_is_413(stack: Stack) -> None:
    big = b'{"model":"coder","messages":[{"role":"user","content":"' + b"a" * (17 << 20) + b'"}]}'
    with stack.http() as http:
        resp = http.post(
            f"{stack.base_url}/v1/messages",
            content=big,
            headers={
                "x-api-key": stack.key,
                "content-type": "application/json",
                "anthropic-version": "2023-06-01",
            },
        )
    assert resp.status_code == 413
    assert resp.json()["type"] == "error"


def test_revoked_key_is_refused_within_a_second(stack: Stack) -> None:
    created = admin(stack.data, "key", "add", "acme", "--name", "short-lived")
    headers = {"authorization": f"Bearer {created['key']}"}
    body = {"model": stack.deployment, "messages": [{"role": "user", "content": "x"}]}
    with stack.http() as http:
        assert (
            http.post(
                f"{stack.base_url}/v1/chat/completions", headers=headers, json=body
            ).status_code
            == 200
        )
        admin(stack.data, "key", "revoke", created["id"])  # another process
        revoked_at = time.monotonic()
        wait_for(
            lambda: (
                http.post(
                    f"{stack.base_url}/v1/chat/completions", headers=headers, json=body
                ).status_code
                == 401
            ),
            1.5,
            "the revoked key to fail",
        )
        assert time.monotonic() - revoked_at < 1.5


# -- transport ---------------------------------------------------------------------------


def test_http2_streaming(stack: Stack) -> None:
    with (
        stack.http(http2=True) as http,
        http.stream(
            "POST",
            f"{stack.base_url}/v1/chat/completions",
            headers={"authorization": f"Bearer {stack.key}"},
            json={
                "model": stack.deployment,
                "stream": True,
                "messages": [{"role": "user", "content": "over h2"}],
            },
        ) as resp,
    ):
        assert resp.http_version == "HTTP/2"
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    text = "".join(
        orjson.loads(e[6:])["choices"][0]["delta"].get("content") or ""
        for e in events[:-1]
        if orjson.loads(e[6:])["choices"]
    )
    assert text == "Echo: over h2"


def test_client_disconnect_stops_the_upstream_within_a_second(stack: Stack) -> None:
    assert stack.upstream is not None
    stack.upstream.slow, stack.upstream.events = 0.05, 400
    before = len(stack.upstream.disconnects)
    try:
        with (
            stack.http() as http,
            http.stream(
                "POST",
                f"{stack.base_url}/v1/chat/completions",
                headers={"authorization": f"Bearer {stack.key}"},
                json={
                    "model": stack.deployment,
                    "stream": True,
                    "messages": [{"role": "user", "content": "long story"}],
                },
            ) as resp,
        ):
            for _ in resp.iter_raw():
                break  # the first bytes arrived: now walk away
        left_at = time.monotonic()
        wait_for(
            lambda: len(stack.upstream.disconnects) > before,
            1.0,  # type: ignore[union-attr]
            "the upstream to see the cancellation",
        )
        gone = stack.upstream.disconnects[-1]
        assert gone.at - left_at < 1.0
        assert gone.events_sent < 400
    finally:
        stack.upstream.slow, stack.upstream.events = 0.0, 0


# -- security properties --------------------------------------------------------------------


def test_connector_holds_no_listening_socket(stack: Stack) -> None:
    assert stack.connector is not None and stack.connector.alive()
    assert listening_sockets(stack.connector.pid) == []
    assert stack.gateway is not None
    assert listening_sockets(stack.gateway.pid) != []  # the check itself can see listeners


def test_no_secret_is_stored_in_clear(stack: Stack) -> None:
    raw = b"".join(p.read_bytes() for p in stack.data.rglob("*") if p.is_file())
    for secret in (stack.key, stack.token, stack.other_key):
        assert secret.encode() not in raw
        tail = secret.split("_", 1)[-1]
        assert tail.encode() not in raw
    tables = sqlite3.connect(f"file:{stack.data / 'tokios.db'}?mode=ro", uri=True)
    try:
        dumped = "\n".join(tables.iterdump())
    finally:
        tables.close()
    assert stack.key not in dumped and stack.token not in dumped


def test_no_prompt_or_completion_text_in_any_log(
    stack: Stack, openai_client: openai.OpenAI, anthropic_client: anthropic.Anthropic
) -> None:
    canary = "canary-7f3a9e-prompt-text"
    openai_client.chat.completions.create(
        model=stack.deployment, messages=[{"role": "user", "content": canary}]
    )
    list(
        openai_client.chat.completions.create(
            model=stack.deployment, stream=True, messages=[{"role": "user", "content": canary}]
        )
    )
    anthropic_client.messages.create(
        model=stack.deployment, max_tokens=50, messages=[{"role": "user", "content": canary}]
    )
    with pytest.raises(openai.APIStatusError):
        openai_client.chat.completions.create(
            model=stack.deployment,
            messages=[{"role": "user", "content": f"{canary} upstream-error"}],
        )
    time.sleep(0.3)
    logs = stack.logs()
    assert logs, "the processes should log something (startup lines at least)"
    assert canary not in logs
    assert stack.key not in logs and stack.token not in logs


def test_readyz_and_healthz(stack: Stack) -> None:
    with stack.http() as http:
        assert http.get(f"{stack.base_url}/healthz").status_code == 200
        assert http.get(f"{stack.base_url}/readyz").status_code == 200
        missing = http.get(
            f"{stack.base_url}/v1/nothing-here", headers={"authorization": f"Bearer {stack.key}"}
        )
        assert missing.status_code == 404
        assert isinstance(missing.json().get("error"), dict)


def test_concurrent_streams_share_one_tunnel(stack: Stack) -> None:
    """40 requests at once over HTTP/2 reach the model at the same time through the
    connector's single tunnel (one TCP connection to the gateway, before, during and after)."""
    assert stack.connector is not None and stack.upstream is not None
    gateway_port = int(stack.base_url.rsplit(":", 1)[1])
    assert connections_to(stack.connector.pid, gateway_port) == 1
    delay = 0.5
    counted: list[int] = []

    async def one(client: httpx.AsyncClient, i: int) -> str:
        resp = await client.post(
            f"{stack.base_url}/v1/chat/completions",
            headers={"authorization": f"Bearer {stack.key}"},
            json={"model": stack.deployment, "messages": [{"role": "user", "content": f"n{i}"}]},
        )
        return str(resp.json()["choices"][0]["message"]["content"])

    async def many() -> list[str]:
        import asyncio

        async def count_tunnels() -> None:
            await asyncio.sleep(delay / 2)  # every request is held by the model now
            counted.append(connections_to(stack.connector.pid, gateway_port))  # type: ignore[union-attr]

        async with httpx.AsyncClient(verify=stack.ssl_context(), http2=True, timeout=30) as c:
            answers, _ = await asyncio.gather(asyncio.gather(*(one(c, i) for i in range(40))),
                                              count_tunnels())
            return answers

    import asyncio
    import time

    stack.upstream.max_in_flight = 0
    stack.upstream.first_delay = delay  # the model holds each request: concurrency shows
    try:
        started = time.monotonic()
        assert asyncio.run(many()) == [f"Echo: n{i}" for i in range(40)]
        elapsed = time.monotonic() - started
    finally:
        stack.upstream.first_delay = 0.0
    assert counted == [1]
    assert connections_to(stack.connector.pid, gateway_port) == 1
    assert stack.upstream.max_in_flight >= 16, stack.upstream.max_in_flight
    assert elapsed < 40 * delay / 4, elapsed  # far from one request after the other
