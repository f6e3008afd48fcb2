"""Token usage per key through the real gateway, from the connector's usage reports (protocol
version 2): stored per key and deployment, also for a stream the client cancelled (estimated),
counted in the metrics, charged against tokens-per-minute limits, written at shutdown and
shown by ``tokios-gateway usage``.

The connector is scripted but real: it dials the gateway over wss://, speaks the tunnel
protocol through tokios_proto's ConnectorConnection, answers each request with a whole Chat
Completions body (or, for a streamed request, an opening and then nothing until the client
leaves) and reports each stream's usage as the product's connector will.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from runtimes.connector.settings import config_for, hello_for
from runtimes.netio import connect_websocket
from runtimes.store import open_store
from runtimes.tunnel.pump import Pump
from tests.runtimes.test_gateway_flow import CHAT, Stack, make_stack, run
from tokios_proto import (
    Accepted,
    ConnectorConnection,
    DataReceived,
    Event,
    StreamEnded,
    StreamOpened,
    StreamReset,
)

REPO = Path(__file__).resolve().parents[2]
INPUT, OUTPUT = 11, 7
ANSWER = orjson.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "coder",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "hi"}}],
    "usage": {"prompt_tokens": INPUT, "completion_tokens": OUTPUT,
              "total_tokens": INPUT + OUTPUT}})


class ReportingConnector:
    """Answers whole requests at once and reports (INPUT, OUTPUT); a streamed request gets its
    head and one comment, and when the client leaves (RESET) an estimated (INPUT, 2)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.bodies: dict[int, bytes] = {}
        self.accepted = asyncio.Event()

    async def start(self) -> None:
        settings = self.stack.settings()
        ctx = ssl.create_default_context()
        self.stack.ca.configure_trust(ctx)
        self.ws = await connect_websocket(settings.tunnel_url, ssl_context=ctx)
        self.conn = ConnectorConnection(config_for(settings), hello=hello_for(settings))
        self.pump = Pump(self.ws, self.conn, self._on_event)
        self.conn.start(self.pump.now())
        self.task = asyncio.ensure_future(self.pump.run())
        await asyncio.wait_for(self.accepted.wait(), 5)
        assert self.conn.reports_supported

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Accepted):
            self.accepted.set()
        elif isinstance(event, StreamOpened):
            self.bodies[event.stream_id] = b""
        elif isinstance(event, DataReceived):
            self.bodies[event.stream_id] += event.data
            self.conn.acknowledge_received_data(
                stream_id=event.stream_id, acknowledged_size=event.flow_controlled_length)
        elif isinstance(event, StreamEnded) and event.stream_id in self.bodies:
            stream_id = event.stream_id
            if orjson.loads(self.bodies[stream_id]).get("stream"):
                self.conn.send_response(stream_id, 200, (("content-type",
                                                          "text/event-stream"),))
                self.conn.send_data(stream_id, b": opening\n\n")
            else:
                self.conn.send_response(stream_id, 200, (("content-type",
                                                          "application/json"),))
                self.conn.send_data(stream_id, ANSWER, end_stream=True)
                self.conn.report_usage(stream_id, input_tokens=INPUT, output_tokens=OUTPUT)
        elif isinstance(event, StreamReset):  # the client left: count what was generated
            self.conn.report_usage(event.stream_id, input_tokens=INPUT, output_tokens=2,
                                   estimated=True)

    async def stop(self) -> None:
        self.ws.abort()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def test_usage_is_counted_per_key_stored_and_shown(tmp_path: Path) -> None:
    async def main() -> None:
        async with make_stack(tmp_path, connect=False) as stack, stack.client() as client:
            connector = ReportingConnector(stack)
            await connector.start()
            await stack.wait_served()
            for _ in range(3):
                answer = await client.post("/v1/chat/completions", json=CHAT,
                                           headers=stack.auth())
                assert answer.status_code == 200, answer.text
            # a streamed request whose client goes away: the gateway resets the stream and
            # the connector reports what it had generated, estimated
            with pytest.raises(httpx.ReadTimeout):
                await client.post("/v1/chat/completions", json={**CHAT, "stream": True},
                                  headers=stack.auth(), timeout=0.5)
            gateway = stack.gateway
            for _ in range(100):
                if sum(r[0] for r in gateway.usage._buffer.values()) == 4:
                    break
                await asyncio.sleep(0.02)
            metrics = gateway.metrics.registry
            assert metrics.get_sample_value("tokios_tokens_total", {
                "tenant": "acme", "deployment": "coder", "direction": "input"}) == 4 * INPUT
            assert metrics.get_sample_value("tokios_tokens_total", {
                "tenant": "acme", "deployment": "coder", "direction": "output"}) == 3 * OUTPUT + 2
            await connector.stop()
        # the gateway stopped: what it counted is in the store
        with open_store(tmp_path / "data") as store:
            (total,) = store.usage("acme", by="deployment")
            assert (total.group, total.requests, total.input_tokens, total.output_tokens) == (
                "coder", 4, 4 * INPUT, 3 * OUTPUT + 2)
            assert (total.estimated_requests, total.estimated_output_tokens) == (1, 2)
            key_id = store.list_keys("acme")[0].id
        shown = subprocess.run(
            [sys.executable, "-m", "runtimes.gateway.cli", "usage", "acme", "--by", "key",
             "--json", "--data", str(tmp_path / "data")],
            cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
        usage = orjson.loads(shown.stdout)
        assert [(row["key_id"], row["requests"], row["total_tokens"]) for row in usage["usage"]] \
            == [(key_id, 4, 4 * INPUT + 3 * OUTPUT + 2)]
        assert usage["total"]["estimated_requests"] == 1

    run(main())


def test_tokens_per_minute_are_charged_from_the_reports(tmp_path: Path) -> None:
    async def main() -> None:
        async with make_stack(tmp_path, connect=False) as stack, stack.client() as client:
            info, key = stack.gateway.store.add_key("acme", tpm=2 * (INPUT + OUTPUT) - 1)
            connector = ReportingConnector(stack)
            await connector.start()
            await stack.wait_served()
            headers = stack.auth(key)
            for _ in range(2):  # the first leaves 17 of 35, the second goes 1 into debt
                assert (await client.post("/v1/chat/completions", json=CHAT,
                                          headers=headers)).status_code == 200
            await asyncio.sleep(0.1)  # the second report arrives after its answer
            limited = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
            assert limited.status_code == 429, limited.text
            assert "35 tokens per minute for this key" in limited.json()["error"]["message"]
            assert limited.headers["retry-after"] in ("1", "2")  # <= 1 token at 35 a minute
            assert (await client.post("/v1/chat/completions", json=CHAT,
                                      headers=stack.auth())).status_code == 200  # other key
            assert stack.gateway.metrics.registry.get_sample_value(
                "tokios_rate_limited_total", {"tenant": "acme", "reason": "key_tpm"}) == 1
            await connector.stop()
            assert info.tpm == 35

    run(main())
