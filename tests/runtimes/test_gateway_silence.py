"""The gateway never waits forever on a connector (runtimes/gateway/tunnels.py, the silence
check): a connector that takes a stream and then sends nothing for it - no head, no more body,
no credit - for --stream-silence-timeout seconds gets the stream reset, and the client an
answer in its format (a whole 504 before the answer began, the format's in-stream error
after). A client that is slow to read is not a silent connector. And a stream the gateway
resets with body bytes still queued (a failover) gives their credit back to the tunnel.

The connectors here are scripted but real: wss:// clients speaking the tunnel protocol through
tokios_proto's ConnectorConnection, answering as each test says and otherwise keeping still
(their tunnels stay alive: the cores exchange heartbeats).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from runtimes.connector.handling import STREAM_HEADERS
from runtimes.connector.settings import config_for, hello_for
from runtimes.netio import connect_websocket
from runtimes.tunnel.credit import Outbox
from runtimes.tunnel.headers import RETRYABLE_HEADER
from runtimes.tunnel.pump import Pump
from tests.runtimes.test_gateway_flow import CHAT, Stack, make_stack, run
from tokios_proto import (
    Accepted,
    ConnectorConnection,
    DataReceived,
    Event,
    StreamEnded,
    WindowUpdated,
)

SILENCE = 1.5
SILENT = "the connector serving this deployment sent nothing for 1.5 s"


class ScriptedConnector:
    """Takes every stream; once its request is whole, ``answer(self, stream_id)`` says what
    goes back (nothing, a head, bytes to send within the credit via :meth:`send`)."""

    def __init__(self, stack: Stack, answer: Callable[[ScriptedConnector, int], None],
                 **settings: Any) -> None:
        self.stack = stack
        self.answer = answer
        self.settings = dataclasses.replace(stack.settings(), **settings)
        self.accepted = asyncio.Event()
        self.outboxes: dict[int, Outbox] = {}
        self.ends: dict[int, bool] = {}
        self.answered: list[int] = []

    async def start(self) -> None:
        ctx = ssl.create_default_context()
        self.stack.ca.configure_trust(ctx)
        self.ws = await connect_websocket(self.settings.tunnel_url, ssl_context=ctx)
        self.conn = ConnectorConnection(config_for(self.settings), hello=hello_for(self.settings))
        self.pump = Pump(self.ws, self.conn, self._on_event)
        self.conn.start(self.pump.now())
        self.task = asyncio.ensure_future(self.pump.run())
        await asyncio.wait_for(self.accepted.wait(), 5)

    def send(self, stream_id: int, data: bytes, *, end: bool = True) -> None:
        """Send ``data`` within the credit (the rest as credit comes), then end the stream
        unless ``end`` is False."""
        outbox = Outbox(self.conn, stream_id)
        outbox.add(data)
        self.outboxes[stream_id] = outbox
        self.ends[stream_id] = end
        self._flush()

    def _flush(self) -> None:
        for stream_id, outbox in list(self.outboxes.items()):
            if outbox.send():
                del self.outboxes[stream_id]
                if self.ends.pop(stream_id):
                    self.conn.end_stream(stream_id)
        self.pump.kick()

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Accepted):
            self.accepted.set()
        elif isinstance(event, DataReceived):
            self.conn.acknowledge_received_data(
                stream_id=event.stream_id, acknowledged_size=event.flow_controlled_length)
        elif isinstance(event, StreamEnded) and event.stream_id not in self.answered:
            self.answered.append(event.stream_id)
            self.answer(self, event.stream_id)
            self.pump.kick()
        elif isinstance(event, WindowUpdated):
            self._flush()

    async def stop(self) -> None:
        self.ws.abort()
        await asyncio.gather(self.task, return_exceptions=True)


def test_a_connector_silent_before_the_head_ends_with_a_504(tmp_path: Path) -> None:
    async def main() -> None:
        async with make_stack(tmp_path, connect=False) as stack:
            stack.gateway.tunnels.silence_timeout = SILENCE
            quiet = ScriptedConnector(stack, lambda c, sid: None)
            await quiet.start()
            async with stack.client() as client:
                started = time.monotonic()
                answer = await client.post("/v1/chat/completions", json=CHAT,
                                           headers=stack.auth())
                took = time.monotonic() - started
            assert answer.status_code == 504, answer.text
            assert answer.json()["error"]["message"] == SILENT
            assert SILENCE <= took < SILENCE + 2.5
            assert quiet.ws.closed is None  # the tunnel itself is fine
            await quiet.stop()

    run(main())


def test_a_connector_silent_mid_stream_ends_it_with_the_formats_error(tmp_path: Path) -> None:
    def first_token_then_nothing(c: ScriptedConnector, stream_id: int) -> None:
        c.conn.send_response(stream_id, 200, STREAM_HEADERS)
        c.send(stream_id, b'data: {"id":"c","object":"chat.completion.chunk","created":1,'
                          b'"model":"coder","choices":[{"index":0,"delta":{"content":"Hel"},'
                          b'"finish_reason":null}]}\n\n', end=False)

    async def main() -> None:
        async with make_stack(tmp_path, connect=False) as stack:
            stack.gateway.tunnels.silence_timeout = SILENCE
            quiet = ScriptedConnector(stack, first_token_then_nothing)
            await quiet.start()
            async with stack.client() as client:
                answer = await client.post("/v1/chat/completions",
                                           json={**CHAT, "stream": True}, headers=stack.auth())
            assert answer.status_code == 200
            events = [line[6:] for line in answer.text.splitlines()
                      if line.startswith("data: ")]
            assert "Hel" in events[0]
            assert orjson.loads(events[-2])["error"]["message"] == SILENT
            assert events[-1] == "[DONE]"
            await quiet.stop()

    run(main())


def test_a_slow_client_is_not_a_silent_connector(tmp_path: Path) -> None:
    """The connector has 16 MiB to send and sends as the credit allows; the client reads
    nothing for longer than the silence timeout (the gateway waits on the client, and the
    connector on credit): the answer then arrives whole."""
    size = 16 * 1024 * 1024

    def a_big_body(c: ScriptedConnector, stream_id: int) -> None:
        c.conn.send_response(stream_id, 200, (("content-type", "application/octet-stream"),))
        c.send(stream_id, b"x" * size)

    async def main() -> None:
        async with make_stack(tmp_path, connect=False) as stack:
            stack.gateway.tunnels.silence_timeout = SILENCE
            busy = ScriptedConnector(stack, a_big_body, stream_window=1024 * 1024)
            await busy.start()
            async with stack.client(timeout=30) as client, client.stream(
                    "POST", "/v1/chat/completions", json=CHAT, headers=stack.auth()) as slow:
                await asyncio.sleep(3 * SILENCE + 1)  # reads nothing: everything stalls
                assert busy.outboxes  # the connector is still waiting for credit
                received = 0
                async for chunk in slow.aiter_bytes():
                    received += len(chunk)
            assert slow.status_code == 200 and received == size
            await busy.stop()

    run(main(), timeout=60)


def test_a_failover_reset_gives_the_queued_bodys_credit_back(tmp_path: Path) -> None:
    """The first connector answers a retryable 503 (head and body, which the gateway queues
    and then drops when it resets the stream to try the other connector): the credit of that
    body comes back, so the tunnel's connection window is whole again each time."""
    window = 64 * 1024
    body = b'{"error": {"message": "Loading model", "type": "server_error"}}'.ljust(8 * 1024)

    def loading(c: ScriptedConnector, stream_id: int) -> None:
        c.conn.send_response(stream_id, 503, (("content-type", "application/json"),
                                              (RETRYABLE_HEADER, "1")))
        c.send(stream_id, body)

    def fine(c: ScriptedConnector, stream_id: int) -> None:
        c.conn.send_response(stream_id, 200, (("content-type", "application/json"),))
        c.send(stream_id, b'{"ok": true}')

    async def main() -> None:
        async with make_stack(tmp_path, connect=False) as stack:
            failing = ScriptedConnector(stack, loading, connection_window=window)
            await failing.start()
            good = ScriptedConnector(stack, fine)
            await good.start()
            async with stack.client() as client:
                for _ in range(16):  # the failing one is tried first about half the time
                    answer = await client.post("/v1/chat/completions", json=CHAT,
                                               headers=stack.auth())
                    assert answer.status_code == 200 and answer.json() == {"ok": True}
                    await asyncio.sleep(0.05)  # the WINDOW_UPDATEs reach the connector
                    # credit returns in steps of half a window: never more is outstanding
                    assert failing.conn.connection_send_window > window // 2
            assert len(failing.answered) >= 5  # 40 KiB or more: a leak would show
            await failing.stop()
            await good.stop()

    run(main())
