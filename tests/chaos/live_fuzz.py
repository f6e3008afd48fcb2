"""Fuzzing the LIVE gateway over raw sockets: mutated valid requests, HTTP/1.1 and HTTP/2, over
TLS and plain TCP, against real gateway processes with a connector and a scripted model server.

    result = LiveFuzz(stack, plain_port).run(seconds=20, seed=1)
    assert not result.failures

Each case takes a valid request (raw HTTP/1.1 bytes, or an HTTP/2 exchange written by the
``h2`` library), mutates it a few times (bytes flipped, inserted from a dictionary of
HTTP-significant tokens, deleted, duplicated, numbers in lengths and chunk sizes replaced,
cut short), sends it in random pieces and reads what comes back for a short while. A case
fails when the gateway answers with a 5xx status (but 501 and 505, which HTTP prescribes for
an unknown transfer coding and an unsupported version). After the run, the gateway must still be
alive, its log must hold no traceback and no "handler failed", and its RSS must be within a
margin of where it started. Nothing here mocks: the bytes go to the product's processes.
"""

from __future__ import annotations

import random
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import hpack
import orjson
from hyperframe.frame import Frame, HeadersFrame

#: How long one case waits for an answer (a cut request gets none: the server waits for more).
READ_FOR = 1.0
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})")
#: 5xx statuses HTTP itself prescribes for a malformed request, not server failures: 501 for a
#: transfer coding the server does not implement (RFC 9112 §6.1), 505 for an HTTP version it
#: does not support.
PROTOCOL_STATUSES = frozenset({501, 505})
#: Tokens that mean something to an HTTP parser, inserted by the mutator.
DICTIONARY = [
    b"\r\n", b"\r\n\r\n", b":", b" ", b"\x00", b"\xff\xfe", b"0\r\n\r\n", b"ffffffffffff\r\n",
    b"-1", b"99999999999999999999", b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 5\r\n", b"Content-Length: 18446744073709551616\r\n",
    b"Expect: 100-continue\r\n",
    b"Connection: close\r\n", b"Upgrade: websocket\r\n", b"\xc3\x28", b"\"", b"{", b"}", b"[",
    b"\\u0000", b"A" * 5000, b"\t", b";ext=1", b"HTTP/1.0", b"HTTP/2.0", b"PRI * HTTP/2.0",
]


@dataclass
class FuzzResult:
    cases: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        by_status = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        return f"{self.cases} cases; statuses {by_status or 'none'}; failures {len(self.failures)}"


def h1_seeds(key: str, model: str) -> list[bytes]:
    """Valid HTTP/1.1 requests the gateway answers 200 (or 404 for the unknown path)."""
    def post(path: str, body: dict[str, object], headers: str = "",
             chunked: bool = False) -> bytes:
        data = orjson.dumps(body)
        head = (f"POST {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {key}\r\n"
                f"Content-Type: application/json\r\n{headers}")
        if chunked:
            half = len(data) // 2
            return (head.encode() + b"Transfer-Encoding: chunked\r\n\r\n"
                    + f"{half:x}\r\n".encode() + data[:half] + b"\r\n"
                    + f"{len(data) - half:x}\r\n".encode() + data[half:] + b"\r\n0\r\n\r\n")
        return head.encode() + f"Content-Length: {len(data)}\r\n\r\n".encode() + data

    messages = [{"role": "user", "content": "fuzz me"}]
    return [
        post("/v1/chat/completions", {"model": model, "messages": messages}),
        post("/v1/chat/completions", {"model": model, "messages": messages, "stream": True},
             chunked=True),
        post("/v1/messages", {"model": model, "max_tokens": 20, "messages": messages},
             headers="anthropic-version: 2023-06-01\r\n"),
        post("/v1/responses", {"model": model, "input": "fuzz me", "stream": True}),
        post("/api/chat", {"model": model, "messages": messages}, chunked=True),
        f"GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {key}\r\n\r\n".encode(),
        b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n",
        f"GET /v1/models/{model}?x=1 HTTP/1.1\r\nHost: gw\r\nx-api-key: {key}\r\n\r\n".encode(),
    ]


def h2_seed(key: str, model: str, stream: bool) -> bytes:
    """A valid HTTP/2 exchange (preface, SETTINGS, one POST), as the h2 library writes it."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    body = orjson.dumps({"model": model, "stream": stream,
                         "messages": [{"role": "user", "content": "fuzz me"}]})
    conn.send_headers(1, [(":method", "POST"), (":path", "/v1/chat/completions"),
                          (":scheme", "https"), (":authority", "gw"),
                          ("authorization", f"Bearer {key}"),
                          ("content-type", "application/json"),
                          ("content-length", str(len(body)))])
    conn.send_data(1, body, end_stream=True)
    return conn.data_to_send()


def mutate(data: bytes, rng: random.Random, *, keep: int = 0) -> bytes:
    """One to three mutations of ``data``, leaving its first ``keep`` bytes alone."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        if len(out) <= keep + 1:
            break
        at = rng.randrange(keep, len(out))
        kind = rng.randrange(7)
        if kind == 0:
            out[at] ^= 1 << rng.randrange(8)
        elif kind == 1:
            out[at:at] = rng.choice(DICTIONARY)
        elif kind == 2:
            del out[at:at + rng.randint(1, 16)]
        elif kind == 3:
            end = min(len(out), at + rng.randint(1, 64))
            out[at:at] = out[at:end]
        elif kind == 4:
            out = out[:at]
        elif kind == 5:
            out[at] = rng.randrange(256)
        else:
            match = re.search(rb"\d+", bytes(out[at:]))
            if match:
                start = at + match.start()
                out[start:at + match.end()] = str(rng.choice(
                    [0, 1, 2**31, 2**63, 10**30, -1])).encode()
    return bytes(out)


class LiveFuzz:
    """Sends mutated requests to ``tls_port`` (TLS, ALPN h2 or http/1.1) and ``plain_port``
    (plain TCP, HTTP/1.1 or h2c prior knowledge) on 127.0.0.1."""

    def __init__(self, *, key: str, model: str, tls_port: int, plain_port: int,
                 ca_file: Path) -> None:
        self.key = key
        self.model = model
        self.tls_port = tls_port
        self.plain_port = plain_port
        self.ca_file = ca_file
        self.h1 = h1_seeds(key, model)
        self.h2 = [h2_seed(key, model, stream) for stream in (False, True)]

    def run(self, *, seconds: float, seed: int, workers: int = 8) -> FuzzResult:
        """Fuzz for ``seconds`` with ``workers`` concurrent clients (each its own seeded
        random stream, so a run is repeatable up to timing)."""
        result = FuzzResult()
        lock = threading.Lock()
        deadline = time.monotonic() + seconds

        def work(index: int) -> None:
            rng = random.Random(seed * 1000 + index)
            while time.monotonic() < deadline:
                self._case(rng, result, lock)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return result

    def _case(self, rng: random.Random, result: FuzzResult, lock: threading.Lock) -> None:
        use_tls = rng.random() < 0.5
        use_h2 = rng.random() < 0.4
        if use_h2:
            data = mutate(rng.choice(self.h2), rng, keep=24)  # keep the preface: reach frames
        else:
            data = mutate(rng.choice(self.h1), rng)
        status = self._exchange(data, tls=use_tls, h2=use_h2, rng=rng)
        with lock:
            result.cases += 1
            if status is None:
                return
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status >= 500 and status not in PROTOCOL_STATUSES:
                result.failures.append(f"{status} for {'h2' if use_h2 else 'h1'} "
                                       f"{'tls' if use_tls else 'plain'}: {data[:300]!r}")

    def _connect(self, *, tls: bool, h2: bool) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.tls_port if tls else self.plain_port),
                                        timeout=5)
        if not tls:
            return sock
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.set_alpn_protocols(["h2"] if h2 else ["http/1.1"])
        return ctx.wrap_socket(sock, server_hostname="127.0.0.1")

    def _exchange(self, data: bytes, *, tls: bool, h2: bool, rng: random.Random) -> int | None:
        """Send ``data`` in random pieces; the status of the first answer, or None."""
        received = bytearray()
        try:
            with self._connect(tls=tls, h2=h2) as sock:
                view = memoryview(data)
                while view:
                    n = rng.randint(1, max(1, len(view)))
                    sock.sendall(view[:n])
                    view = view[n:]
                sock.settimeout(READ_FOR)
                end = time.monotonic() + READ_FOR
                while time.monotonic() < end:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    received += chunk
                    if _status(bytes(received), h2) is not None:
                        break
        except (OSError, ssl.SSLError):
            pass
        return _status(bytes(received), h2)


def _status(data: bytes, h2: bool) -> int | None:
    if not h2:
        match = _STATUS_LINE.match(data)
        return int(match.group(1)) if match else None
    decoder = hpack.Decoder()
    view = memoryview(data)
    while len(view) >= 9:
        try:
            frame, length = Frame.parse_frame_header(view[:9])
        except Exception:
            return None
        if len(view) < 9 + length:
            return None
        try:
            frame.parse_body(view[9:9 + length])
        except Exception:
            return None
        view = view[9 + length:]
        if isinstance(frame, HeadersFrame):
            try:
                headers = decoder.decode(frame.data)
            except Exception:
                return None
            for name, value in headers:
                if name in (b":status", ":status"):
                    return int(value)
    return None


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
