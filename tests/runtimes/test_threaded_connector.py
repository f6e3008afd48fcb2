"""The threaded connector against a real gateway (TLS via trustme) and test model servers on
loopback: the gateway and the upstream run on an asyncio loop in a background thread, the
connector in the threads it starts itself, driven from the test's (synchronous) thread."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trustme

from runtimes.connector import serving as stream_work
from runtimes.connector import threaded
from runtimes.connector.settings import EXIT_OK, EXIT_PERMANENT, ConnectorSettings
from runtimes.connector.settings import ConnectorSettings as _Settings
from runtimes.connector.threaded import ThreadedConnector
from runtimes.gateway.options import ListenAddress, ServeOptions
from runtimes.gateway.server import Gateway
from runtimes.store import open_store
from tests.e2e.stack import BackgroundLoop, wait_for
from tests.upstreams.model_servers import OllamaServer, OpenAICompatServer
from tokios_proto import Config, RequestHead
from tokios_translate import BackendKind

pytestmark = pytest.mark.timeout(60)

UPSTREAM_MODEL = "llama3.2:1b"
CHAT = {"model": "coder", "messages": [{"role": "user", "content": "hello there"}]}


@dataclass
class World:
    tmp: Path
    bg: BackgroundLoop
    gateway: Gateway
    upstream: OllamaServer | OpenAICompatServer
    ca: trustme.CA
    key: str
    token: str
    token_id: str
    gateway_stopped: bool = False

    def settings(self, token: str | None = None, **changes: Any) -> ConnectorSettings:
        settings = ConnectorSettings(
            tunnel_url=f"wss://localhost:{self.gateway.tunnel_port}/v1/tunnel",
            token=token or self.token, upstream=self.upstream.base_url,
            backend=(BackendKind.OLLAMA if isinstance(self.upstream, OllamaServer)
                     else BackendKind.LLAMACPP),
            models={"coder": UPSTREAM_MODEL}, ca_file=str(self.tmp / "ca.pem"),
            max_concurrent_streams=8)
        return dataclasses.replace(settings, **changes)

    def client(self, timeout: float = 20) -> httpx.Client:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return httpx.Client(base_url=f"https://127.0.0.1:{self.gateway.port}", verify=ctx,
                            timeout=timeout, headers={"authorization": f"Bearer {self.key}"})

    def tunnels(self) -> int:
        return len(self.gateway.tunnels.registry)


@contextmanager
def world(tmp: Path, backend: str = "ollama") -> Iterator[World]:
    store = open_store(tmp / "data")
    store.add_tenant("acme")
    store.add_deployment("acme", "coder")
    key = store.add_key("acme")[1]
    token_info, token = store.add_connector_token("acme", ["coder"])
    store.close()
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(tmp / "server.pem"))
    options = ServeOptions(
        data_dir=tmp / "data", listen=ListenAddress(host="127.0.0.1", port=0),
        tls_cert=tmp / "server.pem", tls_key=None, insecure_http=False,
        allow_insecure_non_loopback=False, tunnel_listen=None, loop="asyncio",
        grace_period=1.0)
    bg = BackgroundLoop()
    gateway = bg.run(_start_gateway(options))
    upstream: OllamaServer | OpenAICompatServer = (
        OllamaServer(model_names=(UPSTREAM_MODEL,)) if backend == "ollama"
        else OpenAICompatServer(model_names=(UPSTREAM_MODEL,)))
    bg.run(upstream.__aenter__())
    built = World(tmp, bg, gateway, upstream, ca, key, token, token_info.id)
    try:
        yield built
    finally:
        if not built.gateway_stopped:
            bg.run(gateway.stop(0.5))
        bg.run(upstream.__aexit__(None, None, None))
        bg.run(_finish_tasks())
        bg.stop()


async def _finish_tasks() -> None:
    """Cancel what still runs on the loop (upstream handlers of kept-alive connections), so no
    coroutine is left to be finalised after the loop is gone."""
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


@contextmanager
def serving(w: World, settings: ConnectorSettings, **options: Any) -> Iterator[ThreadedConnector]:
    """A started ThreadedConnector whose tunnel the gateway registered; stopped on exit."""
    connector = ThreadedConnector(settings, **options).start()
    try:
        wait_for(lambda: w.tunnels() == 1, 10, "the tunnel")
        yield connector
    finally:
        connector.stop()


async def _start_gateway(options: ServeOptions) -> Gateway:
    gateway = Gateway(options)
    await gateway.start()
    return gateway


def _stream_text(raw: bytes) -> str:
    text = ""
    for line in raw.decode().splitlines():
        if line.startswith("data: {"):
            for choice in orjson.loads(line[6:])["choices"]:
                text += choice["delta"].get("content") or ""
    return text


@pytest.mark.parametrize("backend", ["ollama", "llamacpp"])
def test_start_serve_and_stop_cleanly_from_a_thread(tmp_path: Path, backend: str) -> None:
    with world(tmp_path, backend) as w:
        connector = ThreadedConnector(w.settings()).start()
        wait_for(lambda: w.tunnels() == 1, 10, "the tunnel")
        with w.client() as client:
            whole = client.post("/v1/chat/completions", json=CHAT)
            assert whole.status_code == 200, whole.text
            assert whole.json()["choices"][0]["message"]["content"] == "Echo: hello there"
            streamed = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
            assert streamed.status_code == 200
            assert streamed.headers["content-type"].startswith("text/event-stream")
            assert _stream_text(streamed.content) == "Echo: hello there"
            assert streamed.content.rstrip().endswith(b"data: [DONE]")
        assert connector.sessions == 1
        stopped_at = time.monotonic()
        assert connector.stop(timeout=5) == EXIT_OK
        assert time.monotonic() - stopped_at < 3
        assert not connector.running
        wait_for(lambda: w.tunnels() == 0, 5, "the gateway to drop the tunnel")
        wait_for(lambda: not [t for t in threading.enumerate() if t.name.startswith("tokios")],
                 5, "the connector's threads to end")


def test_permanent_rejection_ends_run_with_exit_3(tmp_path: Path) -> None:
    with world(tmp_path) as w:
        started = time.monotonic()
        assert ThreadedConnector(w.settings("tkct-not-a-real-token")).run() == EXIT_PERMANENT
        wrong = ThreadedConnector(w.settings(models={"unserved": "x"}))
        assert wrong.run() == EXIT_PERMANENT
        assert time.monotonic() - started < 5
        assert w.tunnels() == 0


def test_revoking_the_token_ends_the_connector(tmp_path: Path) -> None:
    with world(tmp_path) as w:
        connector = ThreadedConnector(w.settings()).start()
        wait_for(lambda: w.tunnels() == 1, 10, "the tunnel")
        admin = open_store(tmp_path / "data")
        admin.revoke_connector_token(w.token_id)
        admin.close()
        assert connector.wait(5) == EXIT_PERMANENT


def test_reconnects_after_the_tunnel_drops(tmp_path: Path) -> None:
    with world(tmp_path) as w:
        connector = ThreadedConnector(w.settings(), rng=lambda: 0.0).start()
        try:
            wait_for(lambda: connector.sessions == 1, 10, "the first session")
            session = connector.current
            assert session is not None
            session.ws.abort()  # the link drops under the connector
            wait_for(lambda: connector.sessions == 2 and w.tunnels() == 1, 10, "a reconnect")
            with w.client() as client:
                assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
        finally:
            assert connector.stop() == EXIT_OK


def test_client_cancel_aborts_the_upstream_within_a_second(tmp_path: Path) -> None:
    with world(tmp_path) as w:
        w.upstream.slow = 0.05
        w.upstream.events = 400
        with serving(w, w.settings()):
            with w.client() as client, client.stream(
                    "POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as streamed:
                for got, _ in enumerate(streamed.iter_bytes(), 1):
                    if got >= 3:
                        break
            closed_at = time.monotonic()
            wait_for(lambda: bool(w.upstream.disconnects), 1.0, "the upstream to be aborted")
            assert w.upstream.disconnects[0].at - closed_at < 1.0
            assert w.upstream.disconnects[0].events_sent < 400


def test_a_slow_client_stops_the_upstream_read(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Backpressure: while the client reads nothing, the worker stops reading the upstream
    (its translator is fed nothing more), then resumes when the client reads again."""
    fed = [0]
    real_open = stream_work.open_stream_translator

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

    monkeypatch.setattr(stream_work, "open_stream_translator", counting_open)
    with world(tmp_path) as w:
        w.upstream.events = 150_000
        settings = w.settings(stream_window=16 * 1024, connection_window=64 * 1024)
        with serving(w, settings), w.client() as client, client.stream(
                "POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as streamed:
            chunks = streamed.iter_bytes()
            next(chunks)
            previous, deadline = -1, time.monotonic() + 15
            while fed[0] != previous:
                assert time.monotonic() < deadline, "the connector kept reading upstream"
                previous = fed[0]
                time.sleep(0.4)
            stalled_at = fed[0]
            assert stalled_at < 9_000_000  # of ~18 MB: only buffers' and windows' worth
            assert not w.upstream.disconnects
            for _ in chunks:
                if fed[0] > stalled_at:
                    break
            assert fed[0] > stalled_at


def test_max_workers_bounds_the_stream_threads(tmp_path: Path) -> None:
    with world(tmp_path) as w:
        w.upstream.slow = 0.02
        w.upstream.events = 20
        with serving(w, w.settings(), max_workers=2):
            peak = [0]
            results: list[int] = []

            def one() -> None:
                with w.client() as client:
                    results.append(client.post("/v1/chat/completions",
                                               json={**CHAT, "stream": True}).status_code)

            clients = [threading.Thread(target=one) for _ in range(6)]
            for thread in clients:
                thread.start()
            while any(thread.is_alive() for thread in clients):
                peak[0] = max(peak[0], sum(t.name.startswith("tokios-stream")
                                           for t in threading.enumerate()))
                time.sleep(0.005)
            assert results == [200] * 6  # all served, two at a time
            assert 1 <= peak[0] <= 2


def test_heartbeats_from_the_core_timer_keep_a_quiet_tunnel_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader thread fires get_timer(): with a 0.2 s heartbeat and a 0.6 s idle timeout,
    a tunnel with no traffic for 2 s stays up only because PINGs go out and PONGs come back."""
    real_config_for = threaded.config_for

    def quick(settings: _Settings) -> Config:
        config = real_config_for(settings)
        return dataclasses.replace(config, settings=dataclasses.replace(
            config.settings, heartbeat_interval=0.2, idle_timeout=0.6))

    monkeypatch.setattr(threaded, "config_for", quick)
    with world(tmp_path) as w, serving(w, w.settings()) as connector:
        time.sleep(2.0)
        session = connector.current
        assert session is not None and session.conn.rtt is not None  # a PONG came back
        assert connector.sessions == 1 and w.tunnels() == 1


def test_goaway_lets_the_stream_in_flight_finish(tmp_path: Path) -> None:
    """The gateway shuts down gracefully mid-stream: GOAWAY, the stream still completes."""
    with world(tmp_path) as w:
        w.upstream.slow = 0.02
        w.upstream.events = 50
        with serving(w, w.settings()):
            with w.client() as client, client.stream(
                    "POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as streamed:
                chunks = streamed.iter_bytes()
                body = next(chunks)
                stopping = asyncio.run_coroutine_threadsafe(w.gateway.stop(5.0), w.bg.loop)
                w.gateway_stopped = True
                for chunk in chunks:
                    body += chunk
            assert body.rstrip().endswith(b"data: [DONE]")
            stopping.result(10)
            # the whole answer was read (a close after the last event is not a cancellation)
            assert all(gone.events_sent >= 50 for gone in w.upstream.disconnects)


def test_refusals_in_the_client_envelope(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A body over the limit is 413 and a deployment the connector does not serve is 404, in
    the client format's own error envelope (streams opened on the gateway's tunnel directly),
    and the tunnel keeps serving."""
    real_init = threaded._Stream.__init__

    def small_limit(self: Any, head: RequestHead) -> None:
        real_init(self, head)
        self.limit = 1000

    monkeypatch.setattr(threaded._Stream, "__init__", small_limit)

    async def ask(w: World, deployment: str, path: str, body: bytes) -> tuple[int, bytes]:
        tunnel = next(iter(w.gateway.tunnels.tunnels))
        stream = tunnel.open_stream(RequestHead(method="POST", path=path,
                                                deployment=deployment))
        await stream.send_body(body)
        status, _ = await stream.wait_head()
        data = b""
        while (item := await stream.next_data()) is not None:
            data += item[0]
            stream.acknowledge(item[1])
        return status, data

    with world(tmp_path) as w, serving(w, w.settings()):
        status, body = w.bg.run(ask(w, "other", "/v1/messages", orjson.dumps(CHAT)))
        assert status == 404 and orjson.loads(body)["type"] == "error"
        status, body = w.bg.run(ask(w, "coder", "/v1/chat/completions",
                                    b'{"model":"coder","x":"' + b"a" * 5000 + b'"}'))
        assert status == 413 and "error" in orjson.loads(body)
        status, _ = w.bg.run(ask(w, "coder", "/v1/chat/completions", orjson.dumps(CHAT)))
        assert status == 200
        assert not w.upstream.requests[:-1]  # only the last one reached the model


def test_an_untrusted_gateway_certificate_is_retried_and_said(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with world(tmp_path) as w:
        other_ca = trustme.CA()
        other_ca.cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
        connector = ThreadedConnector(w.settings(ca_file=str(tmp_path / "other-ca.pem")))
        connector.backoff.base = connector.backoff.cap = 0.05
        with caplog.at_level("WARNING", logger="tokios.connector"):
            connector.start()
            time.sleep(0.5)
            assert connector.running  # keeps trying (the certificate may be fixed)
            assert w.tunnels() == 0 and connector.sessions == 0
            assert connector.stop() == EXIT_OK
        assert "TLS certificate is not trusted" in caplog.text


def test_many_streams_some_abandoned_leave_nothing_behind(tmp_path: Path) -> None:
    """Twenty concurrent streams, every other one abandoned after its first bytes: the rest
    complete, every abandoned one is aborted upstream, and the session ends up empty."""
    with world(tmp_path) as w:
        w.upstream.slow = 0.01
        w.upstream.events = 60
        with serving(w, w.settings(max_concurrent_streams=32)) as connector:
            outcomes: list[str] = []

            def one(abandon: bool) -> None:
                with w.client() as client, client.stream(
                        "POST", "/v1/chat/completions",
                        json={**CHAT, "stream": True}) as streamed:
                    body = b""
                    for chunk in streamed.iter_bytes():
                        body += chunk
                        if abandon:
                            outcomes.append("abandoned")
                            return
                    outcomes.append("done" if body.rstrip().endswith(b"[DONE]") else "cut")

            clients = [threading.Thread(target=one, args=(i % 2 == 0,)) for i in range(20)]
            for thread in clients:
                thread.start()
            for thread in clients:
                thread.join(30)
            assert sorted(outcomes) == ["abandoned"] * 10 + ["done"] * 10
            # (a completed stream may close its connection too, after all 60 events)
            wait_for(lambda: sum(gone.events_sent < 60 for gone in w.upstream.disconnects)
                     == 10, 5, "every abandoned upstream call to be aborted")
            session = connector.current
            assert session is not None
            wait_for(lambda: not session.streams, 5, "the session to forget its streams")
            assert not w.gateway.tunnels.in_flight


def test_started_and_stopped_from_other_threads_runs_once(tmp_path: Path) -> None:
    """An embedding program's threads: one starts the connector, another stops it."""
    with world(tmp_path) as w:
        connector = ThreadedConnector(w.settings())
        starter = threading.Thread(target=connector.start)
        starter.start()
        starter.join(5)
        wait_for(lambda: w.tunnels() == 1, 10, "the tunnel")
        with w.client() as client:
            assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
        codes: list[int | None] = []
        stopper = threading.Thread(target=lambda: codes.append(connector.stop()))
        stopper.start()
        stopper.join(10)
        assert codes == [EXIT_OK] and not connector.running
        with pytest.raises(RuntimeError):
            connector.start()
        with pytest.raises(RuntimeError):
            connector.run()
