"""Gateway + asyncio connector + test model servers in one process, over real loopback
sockets with real TLS (trustme): routing errors, streamed and whole answers, cancellation,
revocation, tunnel rejection and the connector's reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trustme

from runtimes.connector.app import EXIT_PERMANENT, Connector, ConnectorSettings
from runtimes.gateway.options import ListenAddress, ServeOptions
from runtimes.gateway.server import Gateway
from runtimes.store import open_store
from tests.upstreams.model_servers import OllamaServer, OpenAICompatServer
from tokios_translate import BackendKind

UPSTREAM_MODEL = "llama3.2:1b"


def run(coro: Coroutine[Any, Any, None], timeout: float = 40) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro, timeout)

    asyncio.run(bounded())


@dataclass
class Stack:
    tmp: Path
    gateway: Gateway
    upstream: OllamaServer | OpenAICompatServer
    key: str
    other_key: str
    token: str
    token_id: str
    ca: trustme.CA
    connectors: list[tuple[Connector, asyncio.Task[int]]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        scheme = "https" if self.gateway.secure else "http"
        return f"{scheme}://127.0.0.1:{self.gateway.port}"

    def client(self, *, http2: bool = False, timeout: float = 20) -> httpx.AsyncClient:
        ctx: ssl.SSLContext | bool = False
        if self.gateway.secure:
            ctx = ssl.create_default_context()
            self.ca.configure_trust(ctx)
        return httpx.AsyncClient(base_url=self.base_url, verify=ctx, http2=http2,
                                 timeout=timeout)

    def settings(self, token: str | None = None,
                 models: dict[str, str] | None = None) -> ConnectorSettings:
        scheme = "wss" if self.gateway.secure else "ws"
        return ConnectorSettings(
            tunnel_url=f"{scheme}://localhost:{self.gateway.tunnel_port}/v1/tunnel",
            token=token or self.token, upstream=self.upstream.base_url,
            backend=(BackendKind.OLLAMA if isinstance(self.upstream, OllamaServer)
                     else BackendKind.LLAMACPP),
            models=models or {"coder": UPSTREAM_MODEL}, ca_file=str(self.tmp / "ca.pem"),
            max_concurrent_streams=8)

    def start_connector(self, token: str | None = None, **kwargs: Any) -> Connector:
        connector = Connector(self.settings(token, **kwargs))
        self.connectors.append((connector, asyncio.create_task(connector.run())))
        return connector

    async def wait_served(self, count: int = 1, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while len(self.gateway.tunnels.registry) < count:
            assert time.monotonic() < deadline, "no tunnel registered"
            await asyncio.sleep(0.02)

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"authorization": f"Bearer {key or self.key}"}


@asynccontextmanager
async def make_stack(tmp: Path, *, backend: str = "ollama", tls: bool = True,
                     connect: bool = True, grace: float = 5.0,
                     **serve_options: Any) -> AsyncIterator[Stack]:
    data = tmp / "data"
    store = open_store(data)
    store.add_tenant("acme")
    store.add_deployment("acme", "coder")
    store.add_deployment("acme", "unserved")
    store.add_tenant("globex")
    store.add_deployment("globex", "secret-model")
    key = store.add_key("acme")[1]
    other_key = store.add_key("globex")[1]
    token_info, token = store.add_connector_token("acme", ["coder"])
    store.close()
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp / "server.pem"))
    options = ServeOptions(
        data_dir=data, listen=ListenAddress(host="127.0.0.1", port=0),
        tls_cert=tmp / "server.pem" if tls else None, tls_key=None, insecure_http=not tls,
        allow_insecure_non_loopback=False, tunnel_listen=None, loop="asyncio",
        grace_period=grace, **serve_options)
    gateway = Gateway(options)
    await gateway.start()
    upstream: OllamaServer | OpenAICompatServer = (
        OllamaServer(model_names=(UPSTREAM_MODEL,)) if backend == "ollama"
        else OpenAICompatServer(model_names=(UPSTREAM_MODEL,)))
    await upstream.__aenter__()
    stack = Stack(tmp, gateway, upstream, key, other_key, token, token_info.id, ca)
    try:
        if connect:
            stack.start_connector()
            await stack.wait_served()
        yield stack
    finally:
        for _, task in stack.connectors:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        await gateway.stop(0.5)
        await upstream.__aexit__(None, None, None)


CHAT = {"model": "coder", "messages": [{"role": "user", "content": "hello there"}]}


@pytest.mark.parametrize("backend", ["ollama", "llamacpp"])
def test_whole_and_streamed_chat_through_the_tunnel(tmp_path: Path, backend: str) -> None:
    async def main() -> None:
        async with make_stack(tmp_path, backend=backend) as stack, stack.client() as client:
            resp = await client.post("/v1/chat/completions", json=CHAT, headers=stack.auth())
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert body["model"] == "coder"
            assert body["choices"][0]["message"]["content"] == "Echo: hello there"
            assert resp.headers["x-request-id"].startswith("req_")
            # the upstream saw its own model name, not the deployment
            assert stack.upstream.requests[-1]["model"] == UPSTREAM_MODEL

            text = ""
            async with client.stream("POST", "/v1/chat/completions",
                                     json={**CHAT, "stream": True},
                                     headers=stack.auth()) as streamed:
                assert streamed.status_code == 200
                assert streamed.headers["content-type"] == "text/event-stream"
                async for line in streamed.aiter_lines():
                    if line.startswith("data: {"):
                        delta = orjson.loads(line[6:])["choices"]
                        if delta:
                            text += delta[0]["delta"].get("content") or ""
            assert text == "Echo: hello there"

            messages = await client.post(
                "/v1/messages?beta=true",
                json={"model": "coder", "max_tokens": 50,
                      "messages": [{"role": "user", "content": "hi"}]},
                headers={"x-api-key": stack.key, "anthropic-version": "2023-06-01",
                         "anthropic-beta": "tools-2024-04-04"})
            assert messages.status_code == 200, messages.text
            assert messages.json()["content"][0]["text"] == "Echo: hi"
            assert messages.json()["model"] == "coder"

    run(main())


def test_routing_errors_use_the_endpoint_envelope(tmp_path: Path) -> None:
    async def main() -> None:
        async with make_stack(tmp_path) as stack, stack.client() as client:
            resp = await client.post("/v1/chat/completions", json=CHAT,
                                     headers=stack.auth("sk-tokios-wrong"))
            assert resp.status_code == 401
            assert resp.json()["error"]["type"] == "authentication_error"
            resp = await client.post("/v1/messages", json=CHAT)
            assert resp.status_code == 401
            assert resp.json()["type"] == "error"
            assert resp.json()["error"]["type"] == "authentication_error"
            # another tenant's deployment and an unknown one: the same 404
            other = await client.post("/v1/chat/completions",
                                      json={**CHAT, "model": "secret-model"},
                                      headers=stack.auth())
            unknown = await client.post("/v1/chat/completions",
                                        json={**CHAT, "model": "nope"}, headers=stack.auth())
            assert other.status_code == unknown.status_code == 404
            assert "secret-model" not in unknown.text
            # visible but no connector serves it
            resp = await client.post("/v1/chat/completions",
                                     json={**CHAT, "model": "unserved"}, headers=stack.auth())
            assert resp.status_code == 503
            assert "no connector is serving deployment unserved" in resp.text
            resp = await client.post("/v1/messages", json={**CHAT, "model": "unserved"},
                                     headers={"x-api-key": stack.key,
                                              "anthropic-version": "2023-06-01"})
            assert resp.status_code == 503  # not Anthropic's 529: the gateway's contract
            assert resp.json()["error"]["type"] == "overloaded_error"
            # too large (the limit is the default 16 MiB: send a declared 17 MiB body)
            big = b'{"model":"coder","x":"' + b"a" * (17 * 1024 * 1024) + b'"}'
            resp = await client.post("/v1/chat/completions", content=big,
                                     headers=stack.auth())
            assert resp.status_code == 413
            resp = await client.post("/v1/chat/completions", content=b"{not json",
                                     headers=stack.auth())
            assert resp.status_code == 400
            resp = await client.post("/v1/chat/completions", json={"messages": []},
                                     headers=stack.auth())
            assert resp.status_code == 400
            resp = await client.get("/v1/chat/completions", headers=stack.auth())
            assert resp.status_code == 405
            resp = await client.get("/nowhere", headers=stack.auth())
            assert resp.status_code == 404
            assert (await client.get("/healthz")).status_code == 200
            ready = await client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["tunnels"] == 1
            # models: scoped to the key, OpenAI and Anthropic shapes
            models = await client.get("/v1/models", headers=stack.auth())
            assert sorted(m["id"] for m in models.json()["data"]) == ["coder", "unserved"]
            anthropic = await client.get("/v1/models", headers={
                "x-api-key": stack.other_key, "anthropic-version": "2023-06-01"})
            assert [m["id"] for m in anthropic.json()["data"]] == ["secret-model"]
            assert anthropic.json()["data"][0]["type"] == "model"

    run(main())


def test_http2_client_streams(tmp_path: Path) -> None:
    async def main() -> None:
        async with make_stack(tmp_path) as stack, stack.client(http2=True) as client:
            resp = await client.post("/v1/responses",
                                     json={"model": "coder", "input": "over h2"},
                                     headers=stack.auth())
            assert resp.http_version == "HTTP/2"
            assert resp.status_code == 200, resp.text
            assert resp.json()["output"][-1]["content"][0]["text"] == "Echo: over h2"

    run(main())


def test_client_cancel_reaches_the_upstream_within_a_second(tmp_path: Path) -> None:
    async def main() -> None:
        async with make_stack(tmp_path) as stack:
            stack.upstream.slow = 0.05
            stack.upstream.events = 400
            async with stack.client() as client:
                async with client.stream("POST", "/v1/chat/completions",
                                         json={**CHAT, "stream": True},
                                         headers=stack.auth()) as streamed:
                    got = 0
                    async for _ in streamed.aiter_bytes():
                        got += 1
                        if got >= 3:
                            break
                closed_at = time.monotonic()
                # h1: leaving the stream early closes the connection (httpx's way to abort)
                while not stack.upstream.disconnects:
                    assert time.monotonic() - closed_at < 1.0, "the upstream kept generating"
                    await asyncio.sleep(0.01)
                assert stack.upstream.disconnects[0].events_sent < 400
                await asyncio.sleep(0.2)
                assert not stack.gateway.tunnels.in_flight

    run(main())


def test_h2_stream_reset_reaches_the_upstream_and_the_connection_lives_on(
        tmp_path: Path) -> None:
    """httpx never sends RST_STREAM, so this client speaks h2 itself."""
    import h2.config
    import h2.connection
    import h2.events

    async def main() -> None:
        async with make_stack(tmp_path) as stack:
            stack.upstream.slow = 0.05
            stack.upstream.events = 400
            ctx = ssl.create_default_context()
            stack.ca.configure_trust(ctx)
            ctx.set_alpn_protocols(["h2"])
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", stack.gateway.port, ssl=ctx, server_hostname="localhost")
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()

            def request(stream_id: int, body: dict[str, Any]) -> None:
                data = orjson.dumps(body)
                conn.send_headers(stream_id, [
                    (":method", "POST"), (":path", "/v1/chat/completions"),
                    (":scheme", "https"), (":authority", "localhost"),
                    ("authorization", f"Bearer {stack.key}"),
                    ("content-type", "application/json"),
                    ("content-length", str(len(data)))])
                conn.send_data(stream_id, data, end_stream=True)
                writer.write(conn.data_to_send())

            async def events_until(done: Any) -> list[Any]:
                seen: list[Any] = []
                while not done(seen):
                    chunk = await reader.read(65536)
                    assert chunk, "the gateway closed the connection"
                    for event in conn.receive_data(chunk):
                        seen.append(event)
                        if isinstance(event, h2.events.DataReceived):
                            conn.acknowledge_received_data(event.flow_controlled_length,
                                                           event.stream_id)
                    writer.write(conn.data_to_send())
                return seen

            request(1, {**CHAT, "stream": True})
            await events_until(lambda seen: sum(
                isinstance(e, h2.events.DataReceived) for e in seen) >= 3)
            conn.reset_stream(1)
            writer.write(conn.data_to_send())
            reset_at = time.monotonic()
            while not stack.upstream.disconnects:
                assert time.monotonic() - reset_at < 1.0, "the upstream kept generating"
                await asyncio.sleep(0.01)
            stack.upstream.slow = 0
            stack.upstream.events = 0
            request(3, CHAT)  # the same connection still serves
            seen = await events_until(lambda seen: any(
                isinstance(e, h2.events.StreamEnded) and e.stream_id == 3 for e in seen))
            status = [dict(e.headers)[b":status"] for e in seen
                      if isinstance(e, h2.events.ResponseReceived) and e.stream_id == 3]
            assert status == [b"200"]
            writer.close()

    run(main())


def test_revoking_the_token_closes_the_tunnel_and_the_connector_exits(tmp_path: Path) -> None:
    async def main() -> None:
        async with make_stack(tmp_path) as stack:
            _, task = stack.connectors[0]
            admin = open_store(tmp_path / "data")  # another connection, as the CLI would
            admin.revoke_connector_token(stack.token_id)
            admin.close()
            revoked_at = time.monotonic()
            code = await asyncio.wait_for(task, 5)
            assert code == EXIT_PERMANENT
            assert time.monotonic() - revoked_at < 3
            assert len(stack.gateway.tunnels.registry) == 0

    run(main())


def test_bad_token_and_disallowed_deployments_are_permanent(tmp_path: Path) -> None:
    async def main() -> None:
        async with make_stack(tmp_path, connect=False) as stack:
            bad = Connector(stack.settings("tkct-not-a-real-token"))
            assert await asyncio.wait_for(bad.run(), 5) == EXIT_PERMANENT
            wrong = Connector(stack.settings(models={"unserved": "x"}))
            assert await asyncio.wait_for(wrong.run(), 5) == EXIT_PERMANENT
            assert len(stack.gateway.tunnels.registry) == 0

    run(main())


def test_connector_reconnects_after_gateway_loses_it_and_503_meanwhile(tmp_path: Path) -> None:
    async def main() -> None:
        async with make_stack(tmp_path, tls=False) as stack, stack.client() as client:
            connector, _ = stack.connectors[0]
            connector.backoff.base = connector.backoff.cap = 0.05
            while connector.sessions < 1:  # the gateway registers before WELCOME arrives
                await asyncio.sleep(0.01)
            for tunnel in list(stack.gateway.tunnels.tunnels):
                tunnel.pump.ws.abort()  # the tunnel drops
            deadline = time.monotonic() + 15  # generous: CI machines are busy
            while connector.sessions < 2:
                assert time.monotonic() < deadline, "the connector did not come back"
                await asyncio.sleep(0.02)
            await stack.wait_served()
            resp = await client.post("/v1/chat/completions", json=CHAT, headers=stack.auth())
            assert resp.status_code == 200

    run(main())


def test_two_connectors_share_load_and_a_dead_one_is_retried(tmp_path: Path) -> None:
    async def main() -> None:
        async with make_stack(tmp_path) as stack, stack.client() as client:
            stack.start_connector()
            await stack.wait_served(2)
            results = await asyncio.gather(*(
                client.post("/v1/chat/completions", json=CHAT, headers=stack.auth())
                for _ in range(6)))
            assert all(r.status_code == 200 for r in results)
            # kill one tunnel's socket: the next requests go to the other
            victim = next(iter(stack.gateway.tunnels.tunnels))
            victim.pump.ws.abort()
            resp = await client.post("/v1/chat/completions", json=CHAT, headers=stack.auth())
            assert resp.status_code == 200

    run(main())


def test_graceful_shutdown_lets_a_stream_finish(tmp_path: Path) -> None:
    async def main() -> None:
        async with make_stack(tmp_path) as stack:
            stack.upstream.slow = 0.02
            stack.upstream.events = 30
            async with stack.client() as client:
                request = asyncio.create_task(client.post(
                    "/v1/chat/completions", json={**CHAT, "stream": True},
                    headers=stack.auth()))
                while not stack.gateway.tunnels.in_flight:
                    await asyncio.sleep(0.01)
                await stack.gateway.stop(5)
                resp = await request
                assert resp.status_code == 200
                assert resp.text.rstrip().endswith("data: [DONE]")

    run(main())


@pytest.mark.parametrize("http2", [False, True])
def test_tunnel_lost_mid_stream_ends_the_client_stream_with_an_error(tmp_path: Path,
                                                                     http2: bool) -> None:
    """The tunnel dies mid-stream: the client's body still ends properly (no read error),
    with the Chat error chunk then [DONE] after the last whole event."""
    async def main() -> None:
        async with make_stack(tmp_path) as stack, stack.client(http2=http2) as client:
            stack.upstream.slow = 0.05
            stack.upstream.events = 200
            body = b""
            async with client.stream("POST", "/v1/chat/completions",
                                     json={**CHAT, "stream": True},
                                     headers=stack.auth()) as streamed:
                assert streamed.status_code == 200
                got = 0
                async for piece in streamed.aiter_raw():  # a cut body raises here
                    body += piece
                    got += 1
                    if got == 2:
                        for tunnel in list(stack.gateway.tunnels.tunnels):
                            tunnel.pump.ws.abort()
            events = body.rstrip(b"\n").split(b"\n\n")
            assert events[-1] == b"data: [DONE]"
            error = orjson.loads(events[-2].removeprefix(b"data: "))["error"]
            assert error["type"] == "server_error"
            assert "disconnected before the answer ended" in error["message"]
            assert b"w199" not in body
            # the gateway itself is fine afterwards
            assert (await client.get("/healthz")).status_code == 200

    run(main())


def test_separate_tunnel_port_embeddings_and_count_tokens(tmp_path: Path) -> None:
    async def main() -> None:
        async with make_stack(tmp_path, connect=False) as base:
            # a second gateway on the same data dir, with --tunnel-listen
            options = ServeOptions(
                data_dir=tmp_path / "data", listen=ListenAddress(host="127.0.0.1", port=0),
                tls_cert=tmp_path / "server.pem", tls_key=None, insecure_http=False,
                allow_insecure_non_loopback=False,
                tunnel_listen=ListenAddress(host="127.0.0.1", port=0), loop="asyncio")
            gateway = Gateway(options)
            await gateway.start()
            try:
                assert gateway.tunnel_port != gateway.port
                assert f"wss://127.0.0.1:{gateway.tunnel_port}/v1/tunnel" in gateway.banner()
                stack = Stack(tmp_path, gateway, base.upstream, base.key, base.other_key,
                              base.token, base.token_id, base.ca)
                stack.start_connector()
                await stack.wait_served()
                async with stack.client() as client:
                    tunnel_port = f"https://127.0.0.1:{gateway.tunnel_port}"
                    only = await client.post(f"{tunnel_port}/v1/chat/completions", json=CHAT,
                                             headers=stack.auth())
                    assert only.status_code == 404  # the API is not on the tunnel port
                    assert (await client.get(f"{tunnel_port}/healthz")).status_code == 200
                    emb = await client.post("/v1/embeddings",
                                            json={"model": "coder", "input": ["a", "b"]},
                                            headers=stack.auth())
                    assert emb.status_code == 200, emb.text
                    assert len(emb.json()["data"]) == 2
                    assert emb.json()["model"] == "coder"
                    count = await client.post(
                        "/v1/messages/count_tokens",
                        json={"model": "coder",
                              "messages": [{"role": "user", "content": "count me " * 20}]},
                        headers={"x-api-key": stack.key, "anthropic-version": "2023-06-01"})
                    assert count.status_code == 200, count.text
                    assert count.json()["input_tokens"] > 0
                    err = await client.post(
                        "/v1/chat/completions",
                        json={**CHAT, "messages": [{"role": "user",
                                                    "content": "upstream-error please"}]},
                        headers=stack.auth())
                    assert err.status_code >= 500
                    assert "error" in err.json()
            finally:
                for _, task in stack.connectors:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
                await gateway.stop(0.5)

    run(main())


def test_per_key_concurrency_limit_answers_429(tmp_path: Path) -> None:
    async def main() -> None:
        async with make_stack(tmp_path) as stack, stack.client() as client:
            stack.gateway.api.max_streams_per_key = 1
            stack.upstream.slow = 0.05
            stack.upstream.events = 20
            first = asyncio.create_task(client.post(
                "/v1/chat/completions", json={**CHAT, "stream": True}, headers=stack.auth()))
            while not stack.gateway.tunnels.in_flight:
                await asyncio.sleep(0.01)
            second = await client.post("/v1/chat/completions", json=CHAT, headers=stack.auth())
            assert second.status_code == 429
            assert second.headers["retry-after"]
            assert second.json()["error"]["type"]
            assert (await first).status_code == 200

    run(main())


def test_a_slow_client_stops_the_upstream_read(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Backpressure end to end: while the client reads nothing, the connector stops reading
    the upstream (its translator is fed nothing more), then resumes when the client reads."""
    from runtimes.connector import serving

    fed = [0]
    real_open = serving.open_stream_translator

    def counting_open(ctx: Any) -> Any:
        translator = real_open(ctx)
        real_feed = translator.feed

        def feed(chunk: bytes) -> bytes:
            fed[0] += len(chunk)
            return real_feed(chunk)

        return type("Counting", (), {"feed": staticmethod(feed),
                                      "finish": translator.finish, "fail": translator.fail,
                                      "open": translator.open,
                                      "keepalive": translator.keepalive,
                                      "upstream_error": translator.upstream_error,
                                      "answering": property(lambda _: translator.answering),
                                      "done": property(lambda _: translator.done)})()

    monkeypatch.setattr(serving, "open_stream_translator", counting_open)

    async def main() -> None:
        async with make_stack(tmp_path, connect=False) as stack:
            stack.upstream.events = 150_000
            settings = dataclasses.replace(stack.settings(), stream_window=16 * 1024,
                                           connection_window=64 * 1024)
            connector = Connector(settings)
            stack.connectors.append((connector, asyncio.create_task(connector.run())))
            await stack.wait_served()
            async with stack.client() as client, client.stream(
                    "POST", "/v1/chat/completions", json={**CHAT, "stream": True},
                    headers=stack.auth()) as streamed:
                chunks = streamed.aiter_bytes()
                await chunks.__anext__()
                # the client reads nothing: the socket buffers fill, then everything stops
                previous, deadline = -1, time.monotonic() + 15
                while fed[0] != previous:
                    assert time.monotonic() < deadline, "the connector kept reading upstream"
                    previous = fed[0]
                    await asyncio.sleep(0.4)
                stalled_at = fed[0]
                # ~18 MB of NDJSON upstream; only socket buffers and windows' worth was read
                assert stalled_at < 9_000_000
                assert not stack.upstream.disconnects
                received = 0
                async for chunk in chunks:  # reading again lets the upstream go on
                    received += len(chunk)
                    if fed[0] > stalled_at:
                        break
                assert fed[0] > stalled_at

    run(main())


def test_tunnel_dying_before_the_head_is_retried_on_another(tmp_path: Path) -> None:
    async def main() -> None:
        hung: list[asyncio.StreamWriter] = []

        async def never_answers(reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
            hung.append(writer)
            await reader.read(65536)
            await asyncio.sleep(30)

        black_hole = await asyncio.start_server(never_answers, "127.0.0.1", 0)
        port = black_hole.sockets[0].getsockname()[1]
        try:
            async with make_stack(tmp_path, connect=False) as stack, stack.client() as client:
                stuck = Connector(dataclasses.replace(stack.settings(),
                                                      upstream=f"http://127.0.0.1:{port}"))
                stack.connectors.append((stuck, asyncio.create_task(stuck.run())))
                await stack.wait_served()
                request = asyncio.create_task(
                    client.post("/v1/chat/completions", json=CHAT, headers=stack.auth()))
                while not hung:
                    await asyncio.sleep(0.01)
                stuck_tunnel = next(iter(stack.gateway.tunnels.tunnels))
                stack.start_connector()
                await stack.wait_served(2)
                stuck_tunnel.pump.ws.abort()
                resp = await request
                assert resp.status_code == 200, resp.text
                assert resp.json()["choices"][0]["message"]["content"] == "Echo: hello there"
        finally:
            black_hole.close()

    run(main())


def test_beyond_every_connectors_limit_requests_wait_or_get_429_with_no_queue(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with make_stack(tmp_path, connect=False) as stack, stack.client() as client:
            connector = Connector(dataclasses.replace(stack.settings(),
                                                      max_concurrent_streams=1))
            stack.connectors.append((connector, asyncio.create_task(connector.run())))
            await stack.wait_served()
            stack.upstream.slow = 0.05
            stack.upstream.events = 20
            first = asyncio.create_task(client.post(
                "/v1/chat/completions", json={**CHAT, "stream": True}, headers=stack.auth()))
            while not stack.gateway.tunnels.in_flight:
                await asyncio.sleep(0.01)
            # the one stream is busy: the next request waits its turn, then is answered
            second = await client.post("/v1/chat/completions", json=CHAT, headers=stack.auth())
            assert second.status_code == 200, second.text
            assert (await first).status_code == 200
            # with no queue, the same situation is an instant 429
            stack.gateway.store.set_deployment("acme", "coder", queue_size=0)
            stack.gateway.auth.clear()
            stack.gateway.api._warm.clear()
            first = asyncio.create_task(client.post(
                "/v1/chat/completions", json={**CHAT, "stream": True}, headers=stack.auth()))
            while not stack.gateway.tunnels.in_flight:
                await asyncio.sleep(0.01)
            third = await client.post("/v1/chat/completions", json=CHAT, headers=stack.auth())
            assert third.status_code == 429, third.text
            assert third.headers["retry-after"] == "1"
            assert "waiting" in third.json()["error"]["message"]
            assert (await first).status_code == 200
            fourth = await client.post("/v1/chat/completions", json=CHAT, headers=stack.auth())
            assert fourth.status_code == 200

    run(main())


def test_connector_refuses_ungranted_deployments_and_oversized_bodies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runtimes.connector import app as connector_app
    from tokios_proto import RequestHead

    monkeypatch.setattr(connector_app, "MAX_REQUEST_BODY", 1000)

    async def ask(stack: Stack, deployment: str, path: str, body: bytes) -> tuple[int, bytes]:
        tunnel = next(iter(stack.gateway.tunnels.tunnels))
        stream = tunnel.open_stream(RequestHead(method="POST", path=path,
                                                deployment=deployment))
        await stream.send_body(body)
        status, _ = await stream.wait_head()
        data = b""
        while (item := await stream.next_data()) is not None:
            data += item[0]
            stream.acknowledge(item[1])
        return status, data

    async def main() -> None:
        async with make_stack(tmp_path) as stack:
            status, body = await ask(stack, "other", "/v1/messages", orjson.dumps(CHAT))
            assert status == 404 and orjson.loads(body)["type"] == "error"
            status, body = await ask(stack, "coder", "/v1/chat/completions",
                                     b'{"model":"coder","x":"' + b"a" * 5000 + b'"}')
            assert status == 413 and "error" in orjson.loads(body)
            status, _ = await ask(stack, "coder", "/v1/chat/completions", orjson.dumps(CHAT))
            assert status == 200

    run(main())


def test_connector_does_not_trust_an_unknown_ca(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with make_stack(tmp_path, connect=False) as stack:
            other_ca = trustme.CA()
            other_ca.cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
            connector = Connector(dataclasses.replace(stack.settings(),
                                                      ca_file=str(tmp_path / "other-ca.pem")))
            connector.backoff.base = connector.backoff.cap = 0.05
            task = asyncio.create_task(connector.run())
            await asyncio.sleep(0.5)
            assert not task.done()  # keeps trying (the certificate may be fixed)
            assert len(stack.gateway.tunnels.registry) == 0
            assert connector.sessions == 0
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    with caplog.at_level("WARNING", logger="tokios.connector"):
        run(main())
    assert "TLS certificate is not trusted" in caplog.text
