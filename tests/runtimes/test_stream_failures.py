"""A stream that cannot finish ends as a well-formed answer with an error (issue: faults end
cleanly), through the real gateway over TLS, on HTTP/1.1 and HTTP/2, read with the official
openai, anthropic and ollama clients.

The connector here is scripted but real: it dials the gateway over wss://, speaks the tunnel
protocol through tokios_proto's ConnectorConnection, translates each request with
tokios_translate as the product's connector does and sends the real opening of its stream
and a first token; then it breaks the stream as the test says: RESET(UPSTREAM_FAILED), or the
tunnel is lost (its socket aborted). A gateway draining past its grace period is driven with
the product's own connector and a slow model server.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import orjson
import pytest

from runtimes.connector.handling import NDJSON_STREAM_HEADERS, STREAM_HEADERS
from runtimes.connector.settings import ConnectorSettings, config_for, hello_for
from runtimes.netio import connect_websocket
from runtimes.tunnel.pump import Pump
from tests.runtimes.test_gateway_flow import Stack, make_stack, run
from tokios_proto import (
    Accepted,
    ConnectorConnection,
    DataReceived,
    Event,
    ResetCode,
    StreamEnded,
    StreamOpened,
)
from tokios_translate import BackendKind, ClientFormat, open_stream_translator, translate_request

CLIENT_OF_PATH = {
    "/v1/chat/completions": ClientFormat.CHAT,
    "/v1/responses": ClientFormat.RESPONSES,
    "/v1/messages": ClientFormat.MESSAGES,
    "/api/chat": ClientFormat.OLLAMA_CHAT,
}
FIRST_TOKEN = b'{"model":"m","message":{"role":"assistant","content":"partial "},"done":false}\n'
LOST = "the connector serving this deployment disconnected before the answer ended"
RESET = "the model server behind the connector failed"


class ScriptedConnector:
    """Answers each stream with the opening and a first token, then ``break_stream``."""

    def __init__(self, stack: Stack, action: str, *, body_first: bool = True) -> None:
        self.stack = stack
        self.action = action  # "reset" or "lost"
        self.body_first = body_first  # False: break after the head, before any body byte
        self.bodies: dict[int, bytes] = {}
        self.paths: dict[int, str] = {}
        self.accepted = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()

    def settings(self) -> ConnectorSettings:
        return self.stack.settings()

    async def start(self) -> None:
        settings = self.settings()
        ctx = ssl.create_default_context()
        self.stack.ca.configure_trust(ctx)
        self.ws = await connect_websocket(settings.tunnel_url, ssl_context=ctx)
        self.conn = ConnectorConnection(config_for(settings), hello=hello_for(settings))
        self.pump = Pump(self.ws, self.conn, self._on_event)
        self.conn.start(self.pump.now())
        self.run_task = asyncio.ensure_future(self.pump.run())
        await asyncio.wait_for(self.accepted.wait(), 5)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Accepted):
            self.accepted.set()
        elif isinstance(event, StreamOpened):
            self.bodies[event.stream_id] = b""
            self.paths[event.stream_id] = event.head.path
        elif isinstance(event, DataReceived):
            self.bodies[event.stream_id] += event.data
            self.conn.acknowledge_received_data(
                stream_id=event.stream_id, acknowledged_size=event.flow_controlled_length)
        elif isinstance(event, StreamEnded) and event.stream_id in self.bodies:
            task = asyncio.ensure_future(self._answer(event.stream_id))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _answer(self, stream_id: int) -> None:
        client = CLIENT_OF_PATH[self.paths[stream_id]]
        body = orjson.loads(self.bodies[stream_id])
        upstream = translate_request(client, self.bodies[stream_id], backend=BackendKind.OLLAMA,
                                     upstream_model="m", deployment="coder",
                                     response_id="r1", created=1_750_000_000)
        headers = NDJSON_STREAM_HEADERS if client.speaks_ollama else STREAM_HEADERS
        if not body.get("stream", client.speaks_ollama):
            headers = (("content-type", "application/json"),)
        self.conn.send_response(stream_id, 200, headers)
        if self.body_first and upstream.context is not None and upstream.context.stream:
            translator = open_stream_translator(upstream.context)
            self.conn.send_data(stream_id, translator.open() + translator.feed(FIRST_TOKEN))
        self.pump.kick()
        await asyncio.sleep(0.2)  # the client has read the first token by now
        if self.action == "reset":
            self.conn.reset_stream(stream_id, ResetCode.UPSTREAM_FAILED)
            self.pump.kick()
        else:
            self.ws.abort()


def trust(stack: Stack) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    stack.ca.configure_trust(ctx)
    return ctx


def trusting(stack: Stack, http2: bool) -> httpx.AsyncClient:
    return httpx.AsyncClient(verify=trust(stack), http2=http2, timeout=20)


def anthropic_client(stack: Stack, http2: bool) -> anthropic.AsyncAnthropic:
    """The SDK on its own HTTP client (it ships its own httpx fork), trusting the test CA."""
    http = anthropic.DefaultAsyncHttpxClient(verify=trust(stack), http2=http2, timeout=20)
    return anthropic.AsyncAnthropic(base_url=stack.base_url, api_key=stack.key,
                                    http_client=http, max_retries=0)


async def chat(stack: Stack, http2: bool) -> tuple[str, str]:
    client = openai.AsyncOpenAI(base_url=f"{stack.base_url}/v1", api_key=stack.key,
                                http_client=trusting(stack, http2), max_retries=0)
    text = ""
    stream = await client.chat.completions.create(
        model="coder", stream=True, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.APIError) as caught:
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    return text, caught.value.message


async def responses(stack: Stack, http2: bool) -> tuple[str, str]:
    client = openai.AsyncOpenAI(base_url=f"{stack.base_url}/v1", api_key=stack.key,
                                http_client=trusting(stack, http2), max_retries=0)
    text, kinds, message = "", [], ""
    async for event in await client.responses.create(model="coder", input="hi", stream=True):
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
        elif event.type == "error":
            message = event.message
        elif event.type == "response.failed":
            assert event.response.error is not None
            assert event.response.error.message == message
    numbers_ok = kinds[:2] == ["response.created", "response.in_progress"]
    assert numbers_ok and kinds[-2:] == ["error", "response.failed"], kinds
    return text, message


async def messages(stack: Stack, http2: bool) -> tuple[str, str]:
    client = anthropic_client(stack, http2)
    text = ""
    with pytest.raises(anthropic.APIStatusError) as caught:
        async with client.messages.stream(
                model="coder", max_tokens=50,
                messages=[{"role": "user", "content": "hi"}]) as stream:
            async for delta in stream.text_stream:
                text += delta
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "api_error"
    return text, body["error"]["message"]


async def ollama_chat(stack: Stack, http2: bool) -> tuple[str, str]:
    client = ollama.AsyncClient(host=stack.base_url, headers=stack.auth(), verify=trust(stack),
                                timeout=20)
    text = ""
    with pytest.raises(ollama.ResponseError) as caught:
        async for part in await client.chat(model="coder", stream=True,
                                            messages=[{"role": "user", "content": "hi"}]):
            text += part.message.content or ""
    return text, caught.value.error


READERS: dict[str, Callable[[Stack, bool], Any]] = {
    "chat": chat, "responses": responses, "messages": messages, "ollama": ollama_chat}


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
@pytest.mark.parametrize("action", ["reset", "lost"])
@pytest.mark.parametrize("reader", list(READERS))
def test_a_broken_stream_ends_with_the_formats_error(
        tmp_path: Path, reader: str, action: str, http2: bool) -> None:
    if reader == "ollama" and http2:
        pytest.skip("the ollama client speaks HTTP/1.1")

    async def main() -> None:
        async with make_stack(tmp_path, connect=False) as stack:
            connector = ScriptedConnector(stack, action)
            await connector.start()
            await stack.wait_served()
            text, message = await READERS[reader](stack, http2)
            assert text == "partial "
            assert message == (RESET if action == "reset" else LOST)

    run(main())


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
def test_a_broken_stream_ends_its_body_properly(tmp_path: Path, http2: bool) -> None:
    """Raw bytes: the body ends with the last chunk / END_STREAM (no read error), the error
    chunk and [DONE] are its last events, and the connection stays usable."""
    async def main() -> None:
        async with make_stack(tmp_path, connect=False) as stack:
            connector = ScriptedConnector(stack, "reset")
            await connector.start()
            await stack.wait_served()
            async with trusting(stack, http2) as http:
                request = {"model": "coder", "stream": True,
                           "messages": [{"role": "user", "content": "hi"}]}
                for _ in range(2):  # the second request reuses the connection
                    resp = await http.post(f"{stack.base_url}/v1/chat/completions",
                                           json=request, headers=stack.auth())
                    assert resp.status_code == 200
                    events = resp.content.rstrip(b"\n").split(b"\n\n")
                    assert events[-1] == b"data: [DONE]"
                    assert orjson.loads(events[-2][6:])["error"]["message"] == RESET
                    assert resp.http_version == ("HTTP/2" if http2 else "HTTP/1.1")

    run(main())


@pytest.mark.parametrize("action", ["reset", "lost"])
def test_a_whole_answer_that_breaks_before_its_body_is_a_502(tmp_path: Path,
                                                               action: str) -> None:
    async def main() -> None:
        async with make_stack(tmp_path, connect=False) as stack:
            connector = ScriptedConnector(stack, action, body_first=False)
            await connector.start()
            await stack.wait_served()
            client = anthropic_client(stack, False)
            with pytest.raises(anthropic.APIStatusError) as caught:
                await client.messages.create(model="coder", max_tokens=5,
                                             messages=[{"role": "user", "content": "hi"}])
            assert caught.value.status_code == 502
            assert caught.value.body["error"] == {  # type: ignore[index]
                "type": "api_error", "message": RESET if action == "reset" else LOST}

    run(main())


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
def test_drain_past_the_grace_period_ends_streams_with_overloaded(tmp_path: Path,
                                                                   http2: bool) -> None:
    """The product's connector and a model that streams for 10 s; the gateway stops with a
    0.5 s grace period: the client gets the tokens so far, then overloaded_error."""
    async def main() -> None:
        async with make_stack(tmp_path, grace=0.5) as stack:
            stack.upstream.slow = 0.25
            stack.upstream.events = 40
            client = anthropic_client(stack, http2)
            text = ""

            async def read() -> anthropic.APIStatusError:
                nonlocal text
                with pytest.raises(anthropic.APIStatusError) as caught:
                    async with client.messages.stream(
                            model="coder", max_tokens=50,
                            messages=[{"role": "user", "content": "hi"}]) as stream:
                        async for delta in stream.text_stream:
                            text += delta
                return caught.value

            reader = asyncio.ensure_future(read())
            while "hi" not in text:
                await asyncio.sleep(0.05)
            await stack.gateway.stop(0.5)
            error = await asyncio.wait_for(reader, 5)
            assert text.startswith("Echo: hi") and not text.endswith("w39")
            assert isinstance(error.body, dict)
            assert error.body["error"] == {"type": "overloaded_error",
                                           "message": "the gateway is shutting down; "
                                                      "retry the request"}
            # the connector was told to stop: the model server saw the stream abandoned
            deadline = asyncio.get_running_loop().time() + 5
            while not stack.upstream.disconnects:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)

    run(main())
