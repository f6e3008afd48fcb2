"""What the HTTP/1.1 and WebSocket libraries cost per request, warm, in one process.

Every request through the tunnel crosses h11 twice (the gateway parses the client's request
and serialises the answer; the connector serialises the upstream request and parses its
answer) and wsproto twice (one message each way, framed at one end and parsed at the other;
masked when the connector sends). This measures those exact cycles in a loop, with bodies the
size of the bench's small chat, so docs/performance.md can say how much of the per-request
CPU they are.

    python -m bench http_codecs
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime

import h11
import orjson
import wsproto
import wsproto.connection
import wsproto.events

REQUEST_BODY = orjson.dumps({"model": "coder", "messages": [{"role": "user", "content": "hi"}],
                             "max_tokens": 16})
ANSWER_BODY = orjson.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "coder",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
TUNNEL_MESSAGE = b"x" * 300  # a request head + body frame, about what a small chat takes


def h11_server_cycle() -> Callable[[], None]:
    """The gateway's side: parse a POST with its body, answer with a content-length."""
    conn = h11.Connection(h11.SERVER)
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:8443\r\n"
               b"authorization: Bearer sk-tokios-0123456789abcdef\r\n"
               b"content-type: application/json\r\ncontent-length: %d\r\n\r\n"
               % len(REQUEST_BODY)) + REQUEST_BODY
    head = [(b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(ANSWER_BODY)),
            (b"x-request-id", b"req_0123456789abcdef01234567")]

    def cycle() -> None:
        conn.receive_data(request)
        for _ in range(3):  # Request, Data, EndOfMessage
            conn.next_event()
        conn.send(h11.Response(status_code=200, headers=head))
        conn.send(h11.Data(data=ANSWER_BODY))
        conn.send(h11.EndOfMessage())
        conn.start_next_cycle()

    return cycle


def h11_client_cycle() -> Callable[[], None]:
    """The connector's side: send the upstream request, parse the answer."""
    conn = h11.Connection(h11.CLIENT)
    answer = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
              b"content-length: %d\r\n\r\n" % len(ANSWER_BODY)) + ANSWER_BODY
    head = [(b"host", b"127.0.0.1:8080"), (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(REQUEST_BODY))]

    def cycle() -> None:
        conn.send(h11.Request(method=b"POST", target=b"/v1/chat/completions", headers=head))
        conn.send(h11.Data(data=REQUEST_BODY))
        conn.send(h11.EndOfMessage())
        conn.receive_data(answer)
        for _ in range(3):  # Response, Data, EndOfMessage
            conn.next_event()
        conn.start_next_cycle()

    return cycle


def wsproto_message(sender: wsproto.ConnectionType) -> Callable[[], None]:
    """One binary message framed by ``sender`` and parsed by the other end."""
    other = (wsproto.ConnectionType.CLIENT if sender is wsproto.ConnectionType.SERVER
             else wsproto.ConnectionType.SERVER)
    out = wsproto.connection.Connection(sender)
    into = wsproto.connection.Connection(other)

    def cycle() -> None:
        into.receive_data(out.send(wsproto.events.BytesMessage(data=TUNNEL_MESSAGE)))
        for _ in into.events():
            pass

    return cycle


def per_call_us(cycle: Callable[[], None], seconds: float = 1.0) -> float:
    """Best of three runs of ``seconds`` each, in µs per call."""
    best = float("inf")
    for _ in range(3):
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            for _ in range(200):
                cycle()
            calls += 200
        best = min(best, elapsed / calls)
    return best * 1e6


def main() -> None:
    print(f"h11 and wsproto per request, warm, one process: CPython "
          f"{platform.python_version()} on {platform.system()} {platform.machine()}, "
          f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; best of 3\n")
    rows = [
        ("h11, gateway side (parse request + body, send answer)", h11_server_cycle()),
        ("h11, connector side (send upstream request, parse answer)", h11_client_cycle()),
        ("wsproto, gateway -> connector message (unmasked)",
         wsproto_message(wsproto.ConnectionType.SERVER)),
        ("wsproto, connector -> gateway message (masked)",
         wsproto_message(wsproto.ConnectionType.CLIENT)),
    ]
    total = 0.0
    print("| step | µs per request |")
    print("|---|---|")
    for name, cycle in rows:
        us = per_call_us(cycle)
        total += us
        print(f"| {name} | {us:.1f} |")
    print(f"| **all four, per request through the tunnel** | **{total:.1f}** |")


if __name__ == "__main__":
    main()
