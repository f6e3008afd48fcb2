"""Seed corpora of the tunnel-core harnesses, built with the real encoders.

    .venv/bin/python fuzz/_proto_seeds.py      # (re)write fuzz/corpus/proto_*/<name>

Every seed is named after what it holds. Valid frames of every type, whole conversations
recorded from the in-memory pair (handshake, streams with data, window updates, pings,
GOAWAY), a few malformed inputs, and the test vectors of docs/protocol.md §11 (``vector-*``).
tests/proto/test_fuzz_seeds.py checks that the committed corpus holds every seed built here
with the encoders, and runs each harness over its corpus.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
ROOT = FUZZ_DIR.parent
for _entry in (str(ROOT), str(FUZZ_DIR)):
    if _entry not in sys.path:
        sys.path.insert(0, _entry)

from tokios_proto import (  # noqa: E402
    Config,
    ConnectorConnection,
    DataReceived,
    DeploymentHealth,
    FrameFlag,
    FrameType,
    GatewayConnection,
    GoAway,
    HealthReport,
    Reject,
    RejectReason,
    RequestHead,
    ResetCode,
    ResponseHead,
    Settings,
    UsageReport,
    Welcome,
    decode_frames,
    encode_frame,
)
from tokios_proto import _payloads as payloads  # noqa: E402
from tokios_proto._reports import encode_report  # noqa: E402

__all__ = ["build_seeds", "write_seeds"]

F = FrameType
END = int(FrameFlag.END_STREAM)
u32 = payloads.encode_u32


def _frame(frame_type: int, stream_id: int = 0, payload: bytes = b"", flags: int = 0) -> bytes:
    return encode_frame(frame_type, flags, stream_id, payload)


def _goaway(last: int, code: int, reason: str = "") -> bytes:
    return _frame(F.GOAWAY, 0, payloads.encode_goaway(GoAway(last_stream_id=last, code=code,
                                                             reason=reason)))


def _hello(versions: tuple[int, ...] = (1,)) -> bytes:
    from tests.proto.pair import make_hello

    return _frame(F.HELLO, 0, payloads.encode_hello(make_hello(versions=versions), Settings()))


def _welcome(**settings: int) -> bytes:
    welcome = Welcome(version=1, session_id="sess-1", deployments=("llama",),
                      settings=Settings(**settings))
    return _frame(F.WELCOME, 0, payloads.encode_welcome(welcome))


def _open(stream_id: int, path: str = "/v1/chat/completions") -> bytes:
    head = RequestHead(method="POST", path=path, headers=(("content-type", "application/json"),),
                       deployment="llama", request_id=f"req-{stream_id}")
    return _frame(F.OPEN, stream_id, payloads.encode_request_head(head))


def _response(stream_id: int, status: int = 200) -> bytes:
    head = ResponseHead(status=status, headers=(("content-type", "text/event-stream"),))
    return _frame(F.RESPONSE, stream_id, payloads.encode_response_head(head))


def _ping(n: int = 1) -> bytes:
    return _frame(F.PING, 0, n.to_bytes(8, "big"))


def _pong(n: int = 1) -> bytes:
    return _frame(F.PONG, 0, n.to_bytes(8, "big"))


def _window(stream_id: int, increment: int) -> bytes:
    return _frame(F.WINDOW_UPDATE, stream_id, u32(increment))


def _reset(stream_id: int, code: int = ResetCode.CANCELLED) -> bytes:
    return _frame(F.RESET, stream_id, u32(code))


def _data(stream_id: int, body: bytes, end: bool = False) -> bytes:
    return _frame(F.DATA, stream_id, body, END if end else 0)


def _settings(max_streams: int) -> bytes:
    return _frame(F.SETTINGS, 0, payloads.encode_settings_update(max_streams))


def _usage(stream_id: int, input_tokens: int = 5, output_tokens: int = 7,
           estimated: bool = False) -> bytes:
    return _frame(F.REPORT, 0, encode_report(UsageReport(
        stream_id=stream_id, input_tokens=input_tokens, output_tokens=output_tokens,
        estimated=estimated)))


def _health(*entries: tuple[str, bool, tuple[str, ...] | None]) -> bytes:
    return _frame(F.REPORT, 0, encode_report(HealthReport(deployments=tuple(
        DeploymentHealth(name=name, healthy=healthy, models=models)
        for name, healthy, models in entries))))


def _reject() -> bytes:
    reject = Reject(reason=RejectReason.OVERLOADED, retryable=True, message="busy",
                    retry_after=2.5)
    return _frame(F.REJECT, 0, payloads.encode_reject(reject))


def _bad_version(frame: bytes) -> bytes:
    return bytes([9]) + frame[1:]


def _oversized_header() -> bytes:
    return _frame(F.DATA, 1)[:8] + (2**24).to_bytes(4, "big")


def recorded_transcripts() -> tuple[bytes, bytes]:
    """Everything each end sent in a full conversation: (connector -> gateway, gateway ->
    connector). Handshake (version 2), two streams with bodies both ways, a reset, window
    updates, a ping each way, a SETTINGS, usage and health reports, then a graceful GOAWAY
    and drain."""
    from tests.proto.pair import make_hello

    small = Config(settings=Settings(initial_stream_window=1024,
                                     initial_connection_window=2048, max_frame_size=1024))
    gateway = GatewayConnection(small)
    connector = ConnectorConnection(small, hello=make_hello())
    to_gateway, to_connector = bytearray(), bytearray()

    def flush() -> None:
        for _ in range(50):
            up, down = connector.data_to_send(), gateway.data_to_send()
            to_gateway.extend(up)
            to_connector.extend(down)
            gateway.receive_data(up, 0.0)
            connector.receive_data(down, 0.0)
            for conn in (gateway, connector):
                while (event := conn.next_event()) is not None:
                    if isinstance(event, DataReceived):
                        conn.acknowledge_received_data(
                            stream_id=event.stream_id,
                            acknowledged_size=event.flow_controlled_length)
            if not up and not down:
                return

    gateway.start(0.0)
    connector.start(0.0)
    flush()
    gateway.accept("sess-1", ("llama",), 0.0)
    flush()
    head = RequestHead(method="POST", path="/v1/chat/completions", deployment="llama")
    first, second, third = (gateway.open_stream(head) for _ in range(3))
    gateway.send_data(first, b'{"model":"llama","stream":true}' * 20)
    flush()
    gateway.send_data(first, b"x" * 500, end_stream=True)
    gateway.send_data(second, b"{}", end_stream=True)
    flush()
    connector.send_response(first, 200, (("content-type", "text/event-stream"),))
    connector.send_data(first, b"data: {}\n\n" * 80)
    connector.send_response(second, 404)
    connector.send_data(second, b"{}", end_stream=True)
    connector.report_usage(second, input_tokens=2, output_tokens=0)
    connector.report_health([DeploymentHealth(name="llama", healthy=True,
                                              models=("llama3:8b", "qwen2.5:7b"))])
    gateway.reset_stream(third)
    flush()
    connector.report_usage(third, input_tokens=9, output_tokens=4, estimated=True)
    connector.send_data(first, b"data: [DONE]\n\n", end_stream=True)
    connector.report_usage(first, input_tokens=30, output_tokens=81)
    connector.update_settings(max_concurrent_streams=8)
    gateway.ping(0.0)
    connector.ping(0.0)
    flush()
    gateway.goaway()
    flush()
    return bytes(to_gateway), bytes(to_connector)


def _shift_streams(transcript: bytes, by: int) -> bytes:
    """The frames of ``transcript`` with every non-zero stream id raised by ``by`` (so a
    recorded conversation continues after the streams an established scenario opened)."""
    return b"".join(encode_frame(f.type, f.flags, f.stream_id + by if f.stream_id else 0,
                                 f.payload) for f in decode_frames(transcript))


def _split_handshake(transcript: bytes, first: FrameType) -> tuple[bytes, bytes]:
    """(the handshake frame, everything after it) of a recorded transcript."""
    assert transcript[1] == first
    size = 12 + int.from_bytes(transcript[8:12], "big")
    return transcript[:size], transcript[size:]


#: Which end receives each frame type of a docs/protocol.md §11 vector (else: both).
_TO_GATEWAY = {"HELLO", "SETTINGS", "RESPONSE", "REPORT"}
_TO_CONNECTOR = {"WELCOME", "REJECT", "OPEN"}


def spec_vectors(doc: Path = ROOT / "docs" / "protocol.md") -> list[tuple[str, str, bytes]]:
    """(name, type name, frame bytes) of every test vector in docs/protocol.md §11."""
    if not doc.is_file():
        return []
    vectors = []
    for block in re.findall(r"```vector\n(.*?)```", doc.read_text(encoding="utf-8"), re.S):
        fields: dict[str, str] = {}
        lines = block.splitlines()
        for i, line in enumerate(lines):
            key, _, value = line.partition(":")
            if key == "hex":
                fields["hex"] = " ".join(lines[i + 1:])
                break
            fields[key] = value.strip()
        vectors.append((fields["name"], fields["type"], bytes.fromhex(fields["hex"])))
    return vectors


def vector_seeds() -> dict[str, dict[str, bytes]]:
    """docs/protocol.md's vectors, each to the harnesses whose receiver may get it, alone and
    (for the established ones) all of a direction in a row. Kept apart from
    :func:`build_seeds` so that editing the spec never makes the corpus look stale."""
    up = [(n, d) for n, t, d in spec_vectors() if t not in _TO_CONNECTOR]
    down = [(n, d) for n, t, d in spec_vectors() if t not in _TO_GATEWAY]
    seeds: dict[str, dict[str, bytes]] = {
        "proto_receive_gateway": {f"vector-{n}": d for n, d in up if n == "hello"},
        "proto_receive_connector": {f"vector-{n}": d for n, d in down if n in ("welcome",
                                                                               "reject")},
        "proto_established_gateway": {f"vector-{n}": d for n, d in up},
        "proto_established_connector": {f"vector-{n}": d for n, d in down},
    }
    handshake = {"hello", "welcome", "reject"}
    in_row_up = b"".join(d for n, d in up if n not in handshake)
    in_row_down = b"".join(d for n, d in down if n not in handshake)
    if in_row_up:
        seeds["proto_established_gateway"]["vectors-all"] = in_row_up
    if in_row_down:  # the vectors use stream 1: move them past the scenario's streams
        seeds["proto_established_connector"]["vectors-all"] = _shift_streams(in_row_down, 8)
    return seeds


def build_seeds() -> dict[str, dict[str, bytes]]:
    """{harness name: {seed name: bytes}}, built with the encoders."""
    up, down = recorded_transcripts()
    hello, up_after = _split_handshake(up, F.HELLO)
    welcome, down_after = _split_handshake(down, F.WELCOME)
    ignorable = _frame(0x42, 0, b"future", int(FrameFlag.IGNORABLE))
    unknown = _frame(0x42, 0, b"future")
    receive_gateway = {
        "empty": b"",
        "hello": hello,
        "hello-settings-ping": hello + _settings(4) + _ping(),
        "hello-unsupported-version": _hello(versions=(7,)),
        "hello-bad-json": _frame(F.HELLO, 0, b'{"credential": '),
        "hello-not-object": _frame(F.HELLO, 0, b"[1, 2]"),
        "hello-on-stream-1": encode_frame(F.HELLO, 0, 1, hello[12:]),
        "hello-twice": hello + hello,
        "hello-truncated": hello[:-5],
        "ignorable-then-hello": ignorable + hello,
        "unknown-type": unknown,
        "bad-version": _bad_version(hello),
        "oversized-length": _oversized_header(),
        "goaway-before-hello": _goaway(0, 0, "bye"),
        "goaway-error-then-junk": _goaway(0, 1) + bytes(12),
        "data-before-hello": _data(1, b"x"),
        "hello-then-report": hello + _usage(1),
        "ping-before-hello": _ping(),
        "transcript-connector": up,
        **{f"frame-{t.name.lower()}": _frame(t, 0, u32(1)) for t in FrameType},
    }
    receive_connector = {
        "empty": b"",
        "welcome": welcome,
        "welcome-small-windows": _welcome(initial_stream_window=1024,
                                          initial_connection_window=1024,
                                          max_frame_size=1024),
        "welcome-exceeds-proposal": _welcome(max_frame_size=1024 * 1024),
        "welcome-bad-json": _frame(F.WELCOME, 0, b"{"),
        "welcome-open-data-end": (_welcome() + _open(1) + _data(1, b'{"stream":true}')
                                  + _data(1, b"", end=True)),
        "welcome-ping-window-goaway": (_welcome() + _ping(7) + _window(0, 4096)
                                       + _goaway(0, 0, "drain")),
        "welcome-goaway-error": _welcome() + _goaway(0, 2, "internal"),
        "reject": _reject(),
        "reject-bad-reason": _frame(F.REJECT, 0, b'{"reason": "nope", "retryable": 3}'),
        "open-before-welcome": _open(1),
        "ignorable-then-welcome": ignorable + welcome,
        "bad-version": _bad_version(welcome),
        "oversized-length": _oversized_header(),
        "transcript-gateway": down,
    }
    established_gateway = {
        "empty": b"",
        "response-on-3": _response(3) + _data(3, b"data: {}\n\n") + _data(3, b"", end=True),
        "data-end-on-1": _data(1, b"data: [DONE]\n\n", end=True),
        "data-on-3-before-response": _data(3, b"early"),
        "response-twice-on-1": _response(1),
        "response-head-too-large": _frame(F.RESPONSE, 3, b'{"status":200,"headers":[["x","'
                                          + b"v" * 1100 + b'"]]}'),
        "data-overruns-windows": _response(3) + _data(3, b"x" * 1000) + _data(3, b"y" * 100),
        "response-bad-status": _frame(F.RESPONSE, 3, b'{"status": "ok"}'),
        "response-bad-json": _frame(F.RESPONSE, 3, b"{"),
        "data-after-end-on-7": _data(7, b"late"),
        "data-on-closed-5": _data(5, b"discarded"),
        "data-on-unopened-9": _data(9, b"x"),
        "data-on-even-2": _data(2, b"x"),
        "settings-lower": _settings(2),
        "settings-above-welcome": _settings(10**6),
        "settings-on-stream-1": encode_frame(F.SETTINGS, 0, 1, b'{"max_concurrent_streams":1}'),
        "window-updates": _window(0, 65536) + _window(1, 1) + _window(3, 1024),
        "window-zero": _window(1, 0),
        "window-overflow-stream": _window(3, 2**31 - 1),
        "window-overflow-connection": _window(0, 2**31 - 1),
        "window-short-payload": _frame(F.WINDOW_UPDATE, 0, b"\x00\x01"),
        "ping-pong": _ping(3) + _pong(99),
        "ping-on-stream-1": encode_frame(F.PING, 0, 1, bytes(8)),
        "pong-short": _frame(F.PONG, 0, b"\x01"),
        "reset-1-unknown-code": _reset(1, 0xFFFF),
        "reset-3-and-7": _reset(3) + _reset(7, ResetCode.UPSTREAM_FAILED),
        "goaway-graceful": _goaway(0, 0, "maintenance"),
        "goaway-error": _goaway(7, 1, "bad"),
        "goaway-drains-then-bad-ping": _goaway(0, 0) + encode_frame(F.PING, 0, 1, bytes(8)),
        "goaway-bad-utf8": _frame(F.GOAWAY, 0, bytes(8) + b"\xff\xfe"),
        "ignorable-unknown": _frame(0x42, 3, b"?", int(FrameFlag.IGNORABLE)),
        "unknown-type": unknown,
        "open-from-connector": _open(9),
        "welcome-again": welcome,
        "transcript-connector-after-hello": up_after,
        "report-usage-closed-5-duplicate": _usage(5),
        "report-usage-live-1-3-7": _usage(1) + _usage(3, 0, 0, True) + _usage(7, 10, 2**53 - 1),
        "report-usage-unopened-9": _usage(9),
        "report-usage-even": _frame(F.REPORT, 0, b'{"kind":"usage","stream_id":2,'
                                              b'"input_tokens":0,"output_tokens":0}'),
        "report-usage-negative": _frame(F.REPORT, 0, b'{"kind":"usage","stream_id":1,'
                                                  b'"input_tokens":-1,"output_tokens":0}'),
        "report-usage-missing-field": _frame(F.REPORT, 0, b'{"kind":"usage","stream_id":1}'),
        "report-health": _health(("llama", True, ("a", "b")), ("qwen", False, None),
                                 ("not-granted", True, ())),
        "report-health-duplicate-name": _frame(F.REPORT, 0, b'{"kind":"health","deployments":'
                                                         b'[{"name":"llama","healthy":true},'
                                                         b'{"name":"llama","healthy":false}]}'),
        "report-health-bad-models": _frame(F.REPORT, 0, b'{"kind":"health","deployments":'
                                                     b'[{"name":"llama","healthy":true,'
                                                     b'"models":[1]}]}'),
        "report-unknown-kind": _frame(F.REPORT, 0, b'{"kind":"future","x":1}'),
        "report-not-json": _frame(F.REPORT, 0, b"{"),
        "report-on-stream-1": encode_frame(F.REPORT, 0, 1, _usage(1)[12:]),
        "report-too-large": _frame(F.REPORT, 0, b'{"kind":"future","pad":"' + b"p" * 1100
                                   + b'"}'),
        "report-then-goaway-drain": (_usage(7) + _goaway(1, 0) + _data(1, b"", end=True)
                                     + _usage(1) + _ping()),
    }
    established_connector = {
        "empty": b"",
        "open-9-data-end": _open(9) + _data(9, b'{"messages":[]}') + _data(9, b"", end=True),
        "open-9-then-11": _open(9) + _open(11) + _reset(9),
        "open-over-the-limit": b"".join(_open(n) for n in range(9, 22, 2)),
        "data-overruns-stream-window": _data(3, b"x" * 1000) + _data(3, b"y" * 100),
        "data-overruns-connection-window": b"".join(_data(n, b"z" * 1000) for n in (1, 3, 7)),
        "data-over-max-frame-size": _data(3, b"x" * 1100),
        "open-even-10": _open(10),
        "open-not-rising-3": _open(3),
        "open-bad-json": _frame(F.OPEN, 9, b"{"),
        "open-large-bad-json": _frame(F.OPEN, 9, b" " * 3000),
        "data-end-on-3": _data(3, b" more", end=True),
        "data-on-1-after-end": _data(1, b"late"),
        "data-on-closed-5": _data(5, b"discarded"),
        "data-on-7": _data(7, b"more request body"),
        "data-on-unopened-9": _data(9, b"x"),
        "window-updates": _window(0, 65536) + _window(1, 4096) + _window(3, 1),
        "window-overflow-stream": _window(1, 2**31 - 1),
        "window-on-unopened": _window(21, 5),
        "reset-3": _reset(3, ResetCode.CLIENT_GONE),
        "reset-short": _frame(F.RESET, 1, b"\x00"),
        "ping-pong": _ping(5) + _pong(1),
        "goaway-graceful-last-7": _goaway(7, 0, "restart"),
        "goaway-graceful-last-1": _goaway(1, 0),
        "goaway-error": _goaway(0, 6, "load"),
        "goaway-on-stream-3": encode_frame(F.GOAWAY, 0, 3, bytes(8)),
        "response-from-gateway": _response(1),
        "settings-from-gateway": _settings(3),
        "report-from-gateway": _usage(1),
        "welcome-again": welcome,
        "reject-after-welcome": _reject(),
        "ignorable-unknown": _frame(0x99, 0, b"", int(FrameFlag.IGNORABLE)),
        "bad-version-after-ping": _ping() + _bad_version(_ping()),
        "oversized-length": _oversized_header(),
        "transcript-gateway-after-welcome": _shift_streams(down_after, 8),
    }
    return {
        "proto_receive_gateway": receive_gateway,
        "proto_receive_connector": receive_connector,
        "proto_established_gateway": established_gateway,
        "proto_established_connector": established_connector,
    }


def write_seeds(corpus: Path = FUZZ_DIR / "corpus") -> int:
    """Write every seed; return how many files changed."""
    changed = 0
    built, vectors = build_seeds(), vector_seeds()
    for harness, seeds in built.items():
        directory = corpus / harness
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in {**seeds, **vectors.get(harness, {})}.items():
            path = directory / name
            if not path.is_file() or path.read_bytes() != data:
                path.write_bytes(data)
                changed += 1
    return changed


if __name__ == "__main__":
    print(f"{write_seeds()} seed file(s) written")
