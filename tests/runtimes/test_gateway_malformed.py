"""Malformed requests get a quick, clear answer in the client's own format (issue 11, item 4).

The real gateway, over TLS as a client connects, driven with raw bytes (HTTP/1.1) and a raw
h2 connection (HTTP/2) that sends what a well-behaved client library would refuse to: bad and
oversized chunk sizes, bodies shorter or longer than their content-length, non-ASCII and
oversized headers, invalid UTF-8 and invalid JSON. Each answer must be the envelope of the API
the path belongs to (OpenAI, Anthropic, Ollama), arrive at once (or at the body timeout for a
stalled body) and, on HTTP/2, leave the connection usable.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import orjson
import pytest

from tests.runtimes.test_gateway_flow import Stack, make_stack, run

BODY_TIMEOUT = 0.6


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed: float

    def json(self) -> Any:
        return orjson.loads(self.body)


def client_tls(stack: Stack, alpn: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    stack.ca.configure_trust(ctx)
    ctx.set_alpn_protocols([alpn])
    return ctx


def assert_error(reply: Reply, api: str, status: int, fragment: str) -> None:
    """``reply`` is ``status`` in ``api``'s error envelope, its message holding ``fragment``."""
    assert reply.status == status, (reply.status, reply.body)
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    assert reply.headers["x-request-id"].startswith("req_")
    body = reply.json()
    if api == "openai":
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param",
                                                                  "code"}, body
        message = body["error"]["message"]
    elif api == "anthropic":
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
        message = body["error"]["message"]
    else:
        assert api == "ollama" and set(body) == {"error"}, body
        message = body["error"]
    assert isinstance(message, str) and fragment in message, message


# ---- HTTP/1.1 over TLS ---------------------------------------------------------------------


async def h1(stack: Stack, data: bytes, *, timeout: float = 5.0) -> Reply:
    """Send raw bytes on a fresh TLS connection; read one response."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", stack.gateway.port, ssl=client_tls(stack, "http/1.1"),
        server_hostname="localhost")
    try:
        started = time.monotonic()
        writer.write(data)
        async with asyncio.timeout(timeout):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
        return Reply(int(lines[0].split()[1]), headers, body, time.monotonic() - started)
    finally:
        writer.close()


def h1_post(path: str, head: str, body: bytes = b"") -> bytes:
    return f"POST {path} HTTP/1.1\r\nhost: localhost\r\n{head}\r\n".encode() + body


def anthropic_head(stack: Stack) -> str:
    return f"x-api-key: {stack.key}\r\nanthropic-version: 2023-06-01\r\n"


def bearer(stack: Stack) -> str:
    return f"authorization: Bearer {stack.key}\r\n"


def test_h1_chunked_body_errors_are_answered_at_once_in_the_clients_format(tmp_path: Path
                                                                           ) -> None:
    async def main() -> None:
        async with make_stack(tmp_path, connect=False, max_body_bytes=1 << 20) as stack:
            chunked = "transfer-encoding: chunked\r\ncontent-type: application/json\r\n"
            # a chunk size that is not hexadecimal: 400, not a dropped connection
            reply = await h1(stack, h1_post("/v1/messages", anthropic_head(stack) + chunked,
                                            b"5\r\n{\"a\":\r\nzz\r\n"))
            assert_error(reply, "anthropic", 400, "chunk size is not hexadecimal")
            assert reply.headers["connection"] == "close"
            # a chunk size of a terabyte: 413 as soon as the size line is read (no byte of the
            # chunk is ever sent), not a wait for the body timeout
            reply = await h1(stack, h1_post("/v1/chat/completions", bearer(stack) + chunked,
                                            b"10000000000\r\n"))
            assert_error(reply, "openai", 413, "exceeds 1048576 bytes")
            assert reply.elapsed < 2
            assert reply.json()["error"]["code"] == "request_too_large"
            # the announced sizes add up: small chunks, then one that crosses the limit
            reply = await h1(stack, h1_post("/api/chat", bearer(stack) + chunked,
                                            b"4\r\n{\"a\"\r\n100000\r\n"))
            assert_error(reply, "ollama", 413, "exceeds 1048576 bytes")
            # a chunk that does not end with CRLF
            reply = await h1(stack, h1_post("/v1/responses", bearer(stack) + chunked,
                                            b"2\r\n{}XX0\r\n\r\n"))
            assert_error(reply, "openai", 400, "chunked body is malformed")

    run(main())


def test_h1_body_shorter_than_its_content_length_gets_408_at_the_body_timeout(tmp_path: Path
                                                                              ) -> None:
    async def main() -> None:
        async with make_stack(tmp_path, connect=False, body_timeout=BODY_TIMEOUT) as stack:
            for path, api, head in (("/api/chat", "ollama", bearer(stack)),
                                    ("/v1/messages", "anthropic", anthropic_head(stack))):
                reply = await h1(stack, h1_post(path, head + "content-length: 100\r\n",
                                                b'{"model":'))
                assert_error(reply, api, 408, f"nothing arrived for {BODY_TIMEOUT:g} s")
                assert BODY_TIMEOUT * 0.8 < reply.elapsed < BODY_TIMEOUT + 1.5
                assert reply.headers["connection"] == "close"

    run(main())


def test_h1_malformed_and_oversized_heads_are_answered_in_the_clients_format(tmp_path: Path
                                                                             ) -> None:
    async def main() -> None:
        async with make_stack(tmp_path, connect=False, header_timeout=0.5) as stack:
            # a non-ASCII header name (h11 rejects it before any handler runs)
            reply = await h1(stack, b"POST /v1/messages HTTP/1.1\r\nhost: x\r\n"
                             + "x-caf\u00e9: 1\r\n".encode() + b"content-length: 0\r\n\r\n")
            assert_error(reply, "anthropic", 400, "header line is malformed")
            reply = await h1(stack, b"GET /api/tags HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n")
            assert_error(reply, "ollama", 400, "header line is malformed")
            # an unknown path: OpenAI's envelope, Anthropic's with anthropic-version
            reply = await h1(stack, b"GET /nope HTTP/1.1\r\nhost: x\r\nanthropic-version: 1\r\n"
                             b"x-\xff: 1\r\n\r\n")
            assert_error(reply, "anthropic", 400, "header line is malformed")
            # a 20 KiB header: 431
            big = "x-big: " + "a" * 20_000 + "\r\n"
            reply = await h1(stack, h1_post("/v1/chat/completions", bearer(stack) + big))
            assert_error(reply, "openai", 431, "too large")
            reply = await h1(stack, h1_post("/api/generate", big))
            assert_error(reply, "ollama", 431, "too large")
            # no Host, a bad content-length, an unsupported transfer-encoding
            reply = await h1(stack, b"POST /v1/responses HTTP/1.1\r\ncontent-length: 0\r\n\r\n")
            assert_error(reply, "openai", 400, "Host")
            reply = await h1(stack, h1_post("/v1/messages", "content-length: -1\r\n"))
            assert_error(reply, "anthropic", 400, "Content-Length")
            reply = await h1(stack, h1_post("/api/chat", "transfer-encoding: gzip\r\n"))
            assert_error(reply, "ollama", 501, "chunked")
            # a head that never completes: 408 after --header-timeout
            reply = await h1(stack, b"POST /v1/messages HTTP/1.1\r\nhost: x\r\n")
            assert_error(reply, "anthropic", 408, "did not arrive within 0.5 s")
            assert 0.4 < reply.elapsed < 2

    run(main())


def test_h1_invalid_utf8_and_invalid_json_bodies(tmp_path: Path) -> None:
    async def main() -> None:
        async with make_stack(tmp_path, connect=False) as stack:
            cases = [
                ("/v1/chat/completions", "openai", b'{"model": "coder\xff"}', "not valid UTF-8"),
                ("/v1/messages", "anthropic", b'{"model": "coder",}', "line 1, column 18"),
                ("/api/chat", "ollama", b"", "body is empty"),
            ]
            for path, api, body, fragment in cases:
                head = anthropic_head(stack) if api == "anthropic" else bearer(stack)
                reply = await h1(stack, h1_post(path, head + f"content-length: {len(body)}\r\n",
                                                body))
                assert_error(reply, api, 400, fragment)
                assert reply.headers.get("connection") != "close"  # a normal answer

    run(main())


# ---- HTTP/2 over TLS -----------------------------------------------------------------------


class H2Client:
    """A raw h2 client that sends headers as given (no validation, no normalisation)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False, validate_inbound_headers=False))
        self.conn.initiate_connection()
        self.flush()
        self.replies: dict[int, dict[str, Any]] = {}

    @classmethod
    async def connect(cls, stack: Stack) -> H2Client:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", stack.gateway.port, ssl=client_tls(stack, "h2"),
            server_hostname="localhost")
        return cls(reader, writer)

    def flush(self) -> None:
        if data := self.conn.data_to_send():
            self.writer.write(data)

    def send(self, method: str, path: str, headers: list[tuple[bytes, bytes]],
             body: bytes | None = None, *, end: bool = True) -> int:
        stream_id: int = self.conn.get_next_available_stream_id()
        block = [(b":method", method.encode()), (b":scheme", b"https"),
                 (b":authority", b"localhost"), (b":path", path.encode()), *headers]
        self.conn.send_headers(stream_id, block, end_stream=body is None and end)
        if body is not None:
            self.conn.send_data(stream_id, body, end_stream=end)
        self.flush()
        self.replies[stream_id] = {"started": time.monotonic(), "body": b""}
        return stream_id

    async def reply(self, stream_id: int, timeout: float = 5.0) -> Reply:
        state = self.replies[stream_id]
        async with asyncio.timeout(timeout):
            while "ended" not in state:
                data = await self.reader.read(65536)
                assert data, "the server closed the connection"
                for event in self.conn.receive_data(data):
                    self._on(event)
                self.flush()
        assert state["ended"] == "end", f"stream {stream_id}: {state['ended']}"
        return Reply(state["status"], state["headers"], state["body"],
                     state["at"] - state["started"])

    def _on(self, event: h2.events.Event) -> None:
        stream_id = getattr(event, "stream_id", 0)
        state = self.replies.get(stream_id)
        if isinstance(event, h2.events.ConnectionTerminated):
            raise AssertionError(f"GOAWAY {event.error_code!r}")
        if state is None:
            return
        if isinstance(event, h2.events.ResponseReceived):
            headers = {n.decode(): v.decode() for n, v in event.headers}
            state["status"], state["headers"] = int(headers.pop(":status")), headers
        elif isinstance(event, h2.events.DataReceived):
            state["body"] += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            state["ended"], state["at"] = "end", time.monotonic()
        elif isinstance(event, h2.events.StreamReset):
            state.setdefault("ended", f"reset {event.error_code!r}")
            state.setdefault("at", time.monotonic())

    def close(self) -> None:
        self.writer.close()


def h2_auth(stack: Stack, api: str) -> list[tuple[bytes, bytes]]:
    if api == "anthropic":
        return [(b"x-api-key", stack.key.encode()), (b"anthropic-version", b"2023-06-01")]
    return [(b"authorization", f"Bearer {stack.key}".encode())]


async def healthy(client: H2Client) -> None:
    """The connection still serves requests after the malformed one."""
    reply = await client.reply(client.send("GET", "/healthz", []))
    assert reply.status == 200


def test_h2_malformed_headers_get_a_stream_error_answer_and_the_connection_lives(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with make_stack(tmp_path, connect=False) as stack:
            client = await H2Client.connect(stack)
            cases = [
                ("/v1/messages", "anthropic", [("x-caf\u00e9".encode(), b"1")],
                 400, "header name is malformed"),
                ("/v1/chat/completions", "openai", [(b"X-Upper", b"1")], 400,
                 "header name is malformed"),
                ("/api/chat", "ollama", [(b"x-a", b"bad\nvalue")], 400,
                 "header value is malformed"),
                ("/v1/responses", "openai", [(b"connection", b"keep-alive")], 400,
                 "connection-specific"),
                ("/v1/messages", "anthropic", [(b"x-big", b"a" * 20_000)], 431, "too large"),
                ("/api/generate", "ollama", [(b"x-big", b"a" * 20_000)], 431, "too large"),
            ]
            for path, api, extra, status, fragment in cases:
                stream_id = client.send("POST", path, h2_auth(stack, api) + extra, b"{}")
                reply = await client.reply(stream_id)
                assert_error(reply, api, status, fragment)
                assert reply.elapsed < 2
                await healthy(client)
            client.close()

    run(main())


def test_h2_body_length_errors_and_a_stalled_body(tmp_path: Path) -> None:
    async def main() -> None:
        async with make_stack(tmp_path, connect=False, body_timeout=BODY_TIMEOUT) as stack:
            client = await H2Client.connect(stack)
            # shorter than its content-length, then END_STREAM: 400 on this stream only
            stream_id = client.send("POST", "/v1/messages",
                                    [*h2_auth(stack, "anthropic"), (b"content-length", b"100")],
                                    b'{"model":"coder"}')
            assert_error(await client.reply(stream_id), "anthropic", 400, "content-length")
            await healthy(client)
            # longer than its content-length
            stream_id = client.send("POST", "/api/chat",
                                    [*h2_auth(stack, "ollama"), (b"content-length", b"2")],
                                    b'{"model":"coder"}')
            assert_error(await client.reply(stream_id), "ollama", 400, "content-length")
            await healthy(client)
            # a body that stops arriving: 408 at the body timeout
            stream_id = client.send("POST", "/v1/chat/completions",
                                    [*h2_auth(stack, "openai"), (b"content-length", b"100")],
                                    b'{"model":', end=False)
            reply = await client.reply(stream_id)
            assert_error(reply, "openai", 408, f"nothing arrived for {BODY_TIMEOUT:g} s")
            assert BODY_TIMEOUT * 0.8 < reply.elapsed < BODY_TIMEOUT + 1.5
            await healthy(client)
            client.close()

    run(main())


@pytest.mark.parametrize(("body", "fragment"), [(b'{"model": "\xff"}', "not valid UTF-8"),
                                                (b'{"model" "coder"}', "line 1, column 10")])
def test_h2_invalid_utf8_and_invalid_json(tmp_path: Path, body: bytes, fragment: str) -> None:
    async def main() -> None:
        async with make_stack(tmp_path, connect=False) as stack:
            client = await H2Client.connect(stack)
            for path, api in (("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic"),
                              ("/api/chat", "ollama")):
                reply = await client.reply(client.send("POST", path, h2_auth(stack, api), body))
                assert_error(reply, api, 400, fragment)
            client.close()

    run(main())
