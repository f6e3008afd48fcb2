"""One test matrix over both connector shells, asyncio and threaded: each check runs on each,
against a gateway scripted frame by frame (connector_matrix_rig.py) and a scripted
OpenAI-compatible model server. The shells share their logic (the serving core, the message
layer, the reconnect policy), so every behaviour here must be the same on both: how long a
refused connector waits, what a WebSocket protocol error and a ping get, how a stream waits
for credit, that a reset stops the model, keep-alives during a slow prefill, and the answers
when things fail."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import wsproto.events as ws_events

from runtimes.connector.settings import EXIT_PERMANENT
from runtimes.tunnel.headers import RETRYABLE_HEADER as RETRYABLE
from tests.e2e.stack import BackgroundLoop, wait_for
from tests.runtimes.connector_matrix_rig import SHELLS, ScriptedGateway, run_shell
from tests.upstreams.model_servers import OpenAICompatServer
from tokios_proto import (
    ErrorCode,
    GatewayConnection,
    HealthReported,
    RejectReason,
    ResetCode,
    UsageReported,
)

pytestmark = pytest.mark.timeout(60)

CHAT = {"model": "coder", "messages": [{"role": "user", "content": "hello there"}]}
MESSAGES = {"model": "coder", "max_tokens": 50, "stream": True,
            "messages": [{"role": "user", "content": "hello there"}]}


@dataclass
class World:
    bg: BackgroundLoop
    gateway: ScriptedGateway
    model: OpenAICompatServer


@pytest.fixture(params=SHELLS)
def shell_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _world(window: int = 4 * 1024 * 1024) -> Iterator[World]:
    bg = BackgroundLoop()
    gateway = ScriptedGateway(bg, window=window)
    model = OpenAICompatServer(model_names=("m",))
    bg.run(gateway.start())
    bg.run(model.__aenter__())
    try:
        yield World(bg, gateway, model)
    finally:
        bg.run(gateway.stop())
        bg.run(model.__aexit__(None, None, None))
        bg.stop()


@pytest.fixture
def world() -> Iterator[World]:
    yield from _world()


@pytest.fixture
def small_window() -> Iterator[World]:
    yield from _world(window=16 * 1024)


def test_a_refusal_with_retry_after_waits_it_plus_the_jittered_backoff(world: World,
                                                                      shell_name: str) -> None:
    def busy(conn: GatewayConnection) -> None:
        conn.reject(RejectReason.OVERLOADED, "busy", retryable=True, retry_after=0.6)

    world.gateway.verdicts.append(busy)
    # the back-off draw is at the top of its range: 0.999 * 0.5 s on the first attempt
    with run_shell(shell_name, world.gateway, world.model.base_url, rng=lambda: 0.999,
                   backoff_base=0.5) as shell:
        second = world.gateway.live()
        first = world.gateway.tunnels[0]
        assert first is not second and not first.accepted
        assert first.hello_at is not None and second.hello_at is not None
        waited = second.hello_at - first.hello_at
        assert 0.6 + 0.45 < waited < 0.6 + 0.5 + 1.5, waited  # retry_after PLUS the back-off
        wait_for(lambda: shell.sessions == 1, 5, "the accepted session")


def test_a_websocket_protocol_error_gets_a_close_frame_then_a_new_session(
        world: World, shell_name: str) -> None:
    with run_shell(shell_name, world.gateway, world.model.base_url) as shell:
        tunnel = world.gateway.live()
        # a server must not mask its frames (RFC 6455 5.1): this one does
        world.gateway.call(lambda: tunnel.send_frames(b"\x82\x85abcd" + bytes(
            b ^ b"abcd"[i % 4] for i, b in enumerate(b"hello"))))
        wait_for(tunnel.closed.is_set, 5, "the connector to close the tunnel")
        assert tunnel.close_code == 1002  # it said why, with a close frame
        wait_for(lambda: shell.sessions == 2, 10, "a new session")


def test_websocket_pings_are_answered(world: World, shell_name: str) -> None:
    with run_shell(shell_name, world.gateway, world.model.base_url):
        tunnel = world.gateway.live()
        world.gateway.call(lambda: tunnel.send_frames(
            tunnel.ws.send(ws_events.Ping(payload=b"are you there"))))
        wait_for(lambda: tunnel.pongs == [b"are you there"], 5, "the pong")


@pytest.mark.parametrize("when", ["prefill", "streaming"])
def test_a_reset_stream_aborts_the_upstream_call(world: World, shell_name: str,
                                                 when: str) -> None:
    if when == "prefill":
        world.model.first_delay = 30  # the model is silent: only an abort can stop it
    world.model.slow, world.model.events = 0.05, 200
    with run_shell(shell_name, world.gateway, world.model.base_url):
        tunnel, stream_id = world.gateway.open("/v1/chat/completions", {**CHAT, "stream": True})
        log = tunnel.streams[stream_id]
        if when == "prefill":
            wait_for(lambda: bool(world.model.paths), 10, "the request at the model")
        else:
            wait_for(lambda: len(log.arrivals) >= 3, 10, "the first tokens")
        world.gateway.call(lambda: (tunnel.conn.reset_stream(stream_id, ResetCode.CLIENT_GONE),
                                    tunnel.flush()))
        reset_at = time.monotonic()
        wait_for(lambda: bool(world.model.disconnects), 2, "the model server to be dropped")
        assert world.model.disconnects[0].at - reset_at < 1.0
        assert world.model.disconnects[0].events_sent < 200


def test_a_stream_sends_within_its_credit_and_resumes_when_it_grows(
        small_window: World, shell_name: str) -> None:
    world = small_window
    world.model.events = 3000  # about 450 KB of SSE: many windows
    with run_shell(shell_name, world.gateway, world.model.base_url):
        tunnel, stream_id = world.gateway.open("/v1/chat/completions",
                                               {**CHAT, "stream": True}, acknowledge=False)
        log = tunnel.streams[stream_id]
        wait_for(lambda: len(log.data) == 16 * 1024, 10, "the first window")
        time.sleep(0.5)
        assert len(log.data) == 16 * 1024 and not log.done  # it waits: not a byte beyond
        world.gateway.call(lambda: tunnel.read_everything(stream_id))
        world.gateway.answer(tunnel, stream_id, 20)
        assert log.ended and bytes(log.data).rstrip().endswith(b"data: [DONE]")
        assert bytes(log.data).count(b'"content":"w') == 3000 - 3  # every word, once


def test_keepalives_flow_while_the_model_prefills(world: World, shell_name: str) -> None:
    world.model.first_delay = 1.2  # nothing at all, not even the head, before the first token
    with run_shell(shell_name, world.gateway, world.model.base_url, keepalive_interval=0.2,
                   head_hold=0.3):
        tunnel, stream_id = world.gateway.open("/v1/messages", MESSAGES)
        log = world.gateway.answer(tunnel, stream_id)
    assert log.status == 200 and log.head_at is not None
    assert 0.3 <= log.head_at - log.opened_at < 0.3 + 0.4  # the head and opening after the hold
    body = bytes(log.data)
    assert body.startswith(b"event: message_start")
    first_token = body.index(b"event: content_block_start")
    assert body[:first_token].count(b"event: ping") >= 4  # the opening's ping, then keep-alives
    assert b"event: ping" not in body[first_token:]
    assert body.rstrip().endswith(b'{"type":"message_stop"}')


def test_failures_are_answers_in_the_clients_format(world: World, shell_name: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        nowhere = f"http://127.0.0.1:{probe.getsockname()[1]}"  # nothing listens there now
    with run_shell(shell_name, world.gateway, nowhere):
        tunnel, whole = world.gateway.open("/v1/chat/completions", CHAT)
        _, streamed = world.gateway.open("/v1/messages", MESSAGES)
        _, unserved = world.gateway.open("/v1/messages", MESSAGES, deployment="other")
        for stream_id in (whole, streamed, unserved):
            world.gateway.answer(tunnel, stream_id)
    answer = tunnel.streams[whole]
    assert answer.status == 502 and answer.headers[RETRYABLE] == "1"
    assert answer.json()["error"]["message"] == "the model server could not be reached"
    stream = tunnel.streams[streamed]  # refused before any byte: a whole error, even for a stream
    assert stream.status == 502 and stream.headers[RETRYABLE] == "1"
    assert stream.json()["error"]["message"] == "the model server could not be reached"
    refused = tunnel.streams[unserved]
    assert refused.status == 404 and refused.json()["type"] == "error"
    assert RETRYABLE not in refused.headers


@pytest.mark.parametrize("body", [CHAT, {**CHAT, "stream": True}], ids=["whole", "stream"])
def test_a_5xx_before_any_byte_is_the_models_error_marked_retryable(
        world: World, shell_name: str, body: dict[str, object]) -> None:
    world.model.error_status = 503
    with run_shell(shell_name, world.gateway, world.model.base_url):
        tunnel, stream_id = world.gateway.open("/v1/chat/completions", body)
        log = world.gateway.answer(tunnel, stream_id)
    assert log.status == 503 and log.headers[RETRYABLE] == "1"
    assert "Loading model" in log.json()["error"]["message"]  # the model server's own words


def test_no_first_byte_in_time_is_a_504_marked_retryable_or_an_in_stream_timeout(
        world: World, shell_name: str) -> None:
    world.model.first_delay = 30
    with run_shell(shell_name, world.gateway, world.model.base_url, first_byte_timeout=1.0,
                   head_hold=0.2, keepalive_interval=0.3):
        tunnel, whole = world.gateway.open("/v1/chat/completions", CHAT)
        _, streamed = world.gateway.open("/v1/messages", MESSAGES)
        for stream_id in (whole, streamed):
            log = world.gateway.answer(tunnel, stream_id)
            assert 1.0 <= time.monotonic() - log.opened_at < 1.0 + 1.0
        wait_for(lambda: len(world.model.disconnects) == 2, 2, "the model to be dropped")
    answer = tunnel.streams[whole]
    assert answer.status == 504 and answer.headers[RETRYABLE] == "1"
    assert "did not start answering within 1 s" in answer.json()["error"]["message"]
    stream = tunnel.streams[streamed]
    assert stream.status == 200 and stream.ended  # it had started: the format's error
    assert b"event: error" in stream.data and b"did not start answering within 1 s" in stream.data


def test_a_silence_mid_answer_and_a_too_long_answer_are_timeouts(world: World,
                                                                 shell_name: str) -> None:
    world.model.stall_after = 3
    with run_shell(shell_name, world.gateway, world.model.base_url, idle_timeout=1.0):
        tunnel, hung = world.gateway.open("/v1/chat/completions", {**CHAT, "stream": True})
        log = world.gateway.answer(tunnel, hung)
        wait_for(lambda: bool(world.model.disconnects), 2, "the model to be dropped")
    assert log.status == 200 and b"sent nothing for 1 s" in log.data
    assert log.data.rstrip().endswith(b"data: [DONE]")
    world.model.stall_after, world.model.slow, world.model.events = None, 0.1, 100
    with run_shell(shell_name, world.gateway, world.model.base_url, request_timeout=1.5):
        tunnel, slow = world.gateway.open("/v1/chat/completions", {**CHAT, "stream": True})
        log = world.gateway.answer(tunnel, slow)
    assert time.monotonic() - log.opened_at >= 1.5
    assert b"took longer than 1.5 s" in log.data and b'"content":"w' in log.data


def test_a_request_timed_out_on_a_reused_connection_is_not_sent_again(
        world: World, shell_name: str) -> None:
    with run_shell(shell_name, world.gateway, world.model.base_url, first_byte_timeout=1.0,
                   health_interval=0):  # (the checks' own connection is not counted here)
        tunnel, first = world.gateway.open("/v1/chat/completions", CHAT)
        assert world.gateway.answer(tunnel, first).status == 200  # a kept-alive connection
        world.model.first_delay = 30
        _, second = world.gateway.open("/v1/chat/completions", CHAT)
        assert world.gateway.answer(tunnel, second).status == 504
        time.sleep(0.5)
        world.model.first_delay = 0
        _, third = world.gateway.open("/v1/chat/completions", CHAT)
        assert world.gateway.answer(tunnel, third).status == 200
    assert world.model.paths == ["/v1/chat/completions"] * 3  # each reached the model once
    assert world.model.connections_accepted == 2  # the timed-out one was dropped, not reused


def test_a_revoked_token_ends_the_connector_for_good(world: World, shell_name: str) -> None:
    with run_shell(shell_name, world.gateway, world.model.base_url) as shell:
        tunnel = world.gateway.live()
        world.gateway.call(lambda: (tunnel.conn.goaway(ErrorCode.REJECTED, "revoked"),
                                    tunnel.flush()))
        assert shell.exit_code(10) == EXIT_PERMANENT
        assert len(world.gateway.tunnels) == 1  # it did not dial again


def test_each_stream_is_reported_once_and_a_busy_pool_does_not_fail_the_health_check(
        world: World, shell_name: str) -> None:
    world.model.slow, world.model.events = 0.05, 80  # 8 answers of about 4 s at once
    with run_shell(shell_name, world.gateway, world.model.base_url, health_interval=0.2):
        tunnel = world.gateway.live()
        ids = [world.gateway.call(lambda: tunnel.open(
            "/v1/chat/completions", {**CHAT, "stream": True})) for _ in range(8)]
        wait_for(lambda: world.model.in_flight == 8, 10, "every stream at the model")
        checks = len(world.model.gets)
        time.sleep(1.0)  # every pooled connection busy: the checks go on, on their own
        assert len(world.model.gets) >= checks + 3 and world.model.in_flight == 8
        world.gateway.call(lambda: (tunnel.conn.reset_stream(ids[0], ResetCode.CLIENT_GONE),
                                    tunnel.flush()))
        for stream_id in ids[1:]:
            world.gateway.answer(tunnel, stream_id, 20)

        def usage() -> dict[int, tuple[int, int, bool]]:
            return {r.stream_id: (r.input_tokens, r.output_tokens, r.estimated)
                    for r in list(tunnel.reports) if isinstance(r, UsageReported)}

        wait_for(lambda: len(usage()) == 8, 10, "a usage report per stream")
        counted = usage()
        assert sum(isinstance(r, UsageReported) for r in tunnel.reports) == 8  # once each
        assert counted[ids[0]][2] and 0 < counted[ids[0]][1] < 80  # the one cut short
        assert {counted[i] for i in ids[1:]} == {(counted[ids[1]][0], 80, False)}
        health = [r for r in tunnel.reports if isinstance(r, HealthReported)]
        # reported healthy at connect, never unhealthy while every pooled connection was busy
        assert [[(d.name, d.healthy, d.models) for d in r.deployments] for r in health] == [
            [("coder", True, ("m",))]]
