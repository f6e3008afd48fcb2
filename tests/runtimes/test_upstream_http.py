"""The sans-I/O half both upstream pools share (runtimes/upstream_http.py): the base URL, the
request bytes, and reading h11's events for the head and the body."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import h11
import pytest

from runtimes import blocking, netio
from runtimes.upstream_http import (
    AnswerReader,
    Failure,
    Received,
    ResponseHead,
    UpstreamError,
    WholeAnswer,
    decode_head,
    encode_request,
    may_resend,
    next_body,
    next_head,
    parse_origin,
)


def test_both_pools_raise_the_same_error_class() -> None:
    assert netio.UpstreamError is blocking.UpstreamError is UpstreamError


@pytest.mark.parametrize(("url", "host_header", "port", "prefix"), [
    ("http://127.0.0.1:11434", b"127.0.0.1:11434", 11434, ""),
    ("http://localhost/", b"localhost", 80, ""),
    ("https://models.internal/v1/", b"models.internal", 443, "/v1"),
    ("http://[::1]:8080/base", b"[::1]:8080", 8080, "/base"),
])
def test_parse_origin(url: str, host_header: bytes, port: int, prefix: str) -> None:
    origin = parse_origin(url)
    assert (origin.host_header, origin.port, origin.prefix) == (host_header, port, prefix)
    assert origin.secure is url.startswith("https")


@pytest.mark.parametrize("url", ["ftp://x", "localhost:11434", "http://"])
def test_parse_origin_refuses_what_is_not_an_http_origin(url: str) -> None:
    with pytest.raises(ValueError, match="base_url"):
        parse_origin(url)


def test_encode_request_writes_its_own_framing_headers() -> None:
    conn = h11.Connection(h11.CLIENT)
    out = encode_request(conn, parse_origin("http://127.0.0.1:8080/api"), "POST", "/chat",
                         headers=[("Host", "evil"), ("Content-Length", "1"),
                                  ("Transfer-Encoding", "chunked"), ("Content-Type", "x/y")],
                         body=b"{}")
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /api/chat HTTP/1.1"
    assert sorted(lines[1:]) == [b"content-length: 2", b"content-type: x/y",
                                 b"host: 127.0.0.1:8080"]
    assert body == b"{}"
    assert conn.our_state is h11.DONE


def _client_after_request() -> h11.Connection:
    conn = h11.Connection(h11.CLIENT)
    encode_request(conn, parse_origin("http://127.0.0.1:1"), "GET", "/", headers=[], body=b"")
    return conn


def test_head_and_chunked_body_as_bytes_arrive() -> None:
    conn = _client_after_request()
    assert next_head(conn) is None  # nothing read yet
    conn.receive_data(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-A: 1\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    head = next_head(conn)  # the 1xx answer is skipped
    assert head is not None
    status, reason, headers = decode_head(head)
    assert (status, reason) == (200, "OK")
    assert ("x-a", "1") in headers
    assert next_body(conn) == b"abc"
    assert next_body(conn) is h11.NEED_DATA
    conn.receive_data(b"0\r\n\r\n")
    assert next_body(conn) is None  # the end


def test_an_upstream_that_closes_or_breaks_the_protocol_is_an_upstream_error() -> None:
    conn = _client_after_request()
    conn.receive_data(b"")  # EOF before any answer
    with pytest.raises(UpstreamError):
        next_head(conn)
    broken = _client_after_request()
    broken.receive_data(b"NOT HTTP\r\n\r\n")
    with pytest.raises(UpstreamError, match="malformed response head"):
        next_head(broken)
    cut = _client_after_request()
    cut.receive_data(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
    assert next_head(cut) is not None
    assert next_body(cut) == b"abc"
    cut.receive_data(b"")  # the body is cut short
    with pytest.raises(UpstreamError):
        next_body(cut)


def test_the_answer_reader_gives_head_bytes_end_and_names_an_early_close() -> None:
    reader = AnswerReader(_client_after_request())
    assert reader.next_event() is None and reader.received == 0
    reader.feed(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhel")
    head = reader.next_event()
    assert isinstance(head, ResponseHead) and head.header("Content-Length") == "5"
    assert reader.next_event() == b"hel"
    assert reader.next_event() is None
    reader.feed(b"lo")
    assert reader.next_event() == b"lo"
    assert reader.next_event() is Received.END
    closed = AnswerReader(_client_after_request())
    closed.feed(b"")  # the upstream closed before saying anything
    with pytest.raises(UpstreamError) as early:
        closed.next_event()
    assert early.value.failure is Failure.CLOSED
    cut = AnswerReader(_client_after_request())
    cut.feed(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
    assert isinstance(cut.next_event(), ResponseHead) and cut.next_event() == b"abc"
    cut.feed(b"")
    with pytest.raises(UpstreamError) as late:
        cut.next_event()
    assert late.value.failure is Failure.CLOSED and cut.received > 0


def test_a_request_goes_again_only_when_it_provably_never_reached_the_model() -> None:
    closed = UpstreamError("closed", Failure.CLOSED)
    write = UpstreamError("write failed", Failure.WRITE)
    assert may_resend(closed, reused=True, received=0)  # an idle keep-alive closed by the server
    assert may_resend(write, reused=True, received=0)
    assert not may_resend(closed, reused=False, received=0)  # a fresh connection: it is news
    assert not may_resend(closed, reused=True, received=12)  # the answer had begun
    for failure in (Failure.CONNECT, Failure.PROTOCOL, Failure.LOCAL):
        assert not may_resend(UpstreamError("x", failure), reused=True, received=0)


def test_a_whole_answer_has_a_limit_and_a_deadline() -> None:
    whole = WholeAnswer(5)
    assert not whole.add(ResponseHead(200, "OK", []))
    assert not whole.add(b"abc") and not whole.add(b"de")
    assert whole.add(Received.END) and whole.body == b"abcde"
    with pytest.raises(UpstreamError, match="exceeds 5 bytes"):
        WholeAnswer(5).add(b"abcdef")
    with pytest.raises(UpstreamError, match="timed out"):
        WholeAnswer(5).add(Received.IDLE)


@contextmanager
def full_backlog() -> Iterator[int]:
    """A port whose listener never accepts and whose backlog is full: connecting hangs (the
    kernel drops the SYNs), as a model server host that is down or firewalled does."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    try:
        yield port
    finally:
        for sock in (*fillers, server):
            sock.close()


def test_both_pools_give_up_connecting_after_the_connect_timeout() -> None:
    with full_backlog() as port:
        started = time.monotonic()
        with pytest.raises(UpstreamError, match="connect timed out") as threaded:
            blocking.UpstreamPool(f"http://127.0.0.1:{port}", connect_timeout=0.5).fetch(
                "GET", "/", limit=10)
        assert threaded.value.failure is Failure.CONNECT
        assert 0.5 <= time.monotonic() - started < 2

        async def asyncio_pool() -> None:
            pool = netio.UpstreamPool(f"http://127.0.0.1:{port}", connect_timeout=0.5)
            with pytest.raises(UpstreamError, match="connect timed out") as caught:
                await pool.fetch("GET", "/", limit=10)
            assert caught.value.failure is Failure.CONNECT
            await pool.aclose()

        started = time.monotonic()
        asyncio.run(asyncio_pool())
        assert 0.5 <= time.monotonic() - started < 2
