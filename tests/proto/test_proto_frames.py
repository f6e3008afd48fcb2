"""Framing and payload codecs: every frame type encodes and decodes, bad headers fail."""

from __future__ import annotations

import orjson
import pytest

from tokios_proto import (
    FRAME_VERSION,
    HEADER_SIZE,
    DataReceived,
    DeploymentOffer,
    ErrorCode,
    Frame,
    FrameFlag,
    FrameReader,
    FrameType,
    GoAway,
    Hello,
    LocalProtocolError,
    Reject,
    RejectReason,
    RemoteProtocolError,
    RequestHead,
    ResponseHead,
    Secret,
    Settings,
    StreamEnded,
    Welcome,
    WindowUpdated,
    decode_frames,
    encode_frame,
)
from tokios_proto import _payloads as payloads


def test_header_layout_is_big_endian_12_bytes() -> None:
    raw = encode_frame(FrameType.DATA, FrameFlag.END_STREAM, 0x01020304, b"ab")
    assert HEADER_SIZE == 12
    assert raw == bytes([FRAME_VERSION, 0x07, 0x00, 0x01, 1, 2, 3, 4, 0, 0, 0, 2]) + b"ab"
    assert decode_frames(raw) == [Frame(FrameType.DATA, 1, 0x01020304, b"ab")]


@pytest.mark.parametrize("frame_type", list(FrameType))
def test_every_frame_type_round_trips_at_the_frame_level(frame_type: FrameType) -> None:
    frame = Frame(frame_type, 0x8001, 7, bytes(range(20)))
    (decoded,) = decode_frames(frame.encode())
    assert decoded == frame
    assert isinstance(decoded.type, FrameType)


def test_unknown_type_decodes_as_int() -> None:
    (frame,) = decode_frames(encode_frame(0x7F, 0, 0, b"x"))
    assert frame.type == 0x7F and not isinstance(frame.type, FrameType)


def test_bad_version_is_a_remote_error() -> None:
    raw = bytearray(encode_frame(FrameType.PING, 0, 0, bytes(8)))
    raw[0] = 2
    with pytest.raises(RemoteProtocolError, match="version"):
        decode_frames(bytes(raw))


def test_oversized_length_fails_before_the_payload_arrives() -> None:
    reader = FrameReader(max_payload=100)
    header = encode_frame(FrameType.DATA, 0, 1, b"")[:8] + (101).to_bytes(4, "big")
    assert reader.feed(header) == []
    assert reader.error is not None and reader.error.code == ErrorCode.FRAME_SIZE_ERROR
    assert reader.buffered == 0 and reader.feed(b"more") == []


def test_frames_before_a_bad_header_are_still_returned() -> None:
    good = encode_frame(FrameType.PING, 0, 0, bytes(8))
    reader = FrameReader(max_payload=100)
    frames = reader.feed(good + b"\x09" + good[1:])
    assert len(frames) == 1 and reader.error is not None
    with pytest.raises(RemoteProtocolError, match="version"):
        decode_frames(good + b"\x09" + good[1:])


def test_trailing_partial_frame_is_an_error_for_decode_frames() -> None:
    with pytest.raises(RemoteProtocolError, match="partial"):
        decode_frames(encode_frame(FrameType.DATA, 0, 1, b"abc")[:-1])


def test_reader_handles_every_split_and_keeps_at_most_one_partial_frame() -> None:
    raw = b"".join(encode_frame(FrameType.DATA, 0, i, bytes([i]) * i) for i in range(1, 6))
    for cut in range(len(raw) + 1):
        reader = FrameReader(max_payload=64)
        frames = reader.feed(raw[:cut]) + reader.feed(raw[cut:])
        assert [(t, s, bytes(p)) for t, _, s, p in frames] == [
            (FrameType.DATA, i, bytes([i]) * i) for i in range(1, 6)]
        assert reader.buffered == 0
    reader = FrameReader(max_payload=64)
    collected = []
    for i in range(len(raw)):
        collected += reader.feed(raw[i:i + 1])
        assert reader.buffered <= HEADER_SIZE + 64
    assert len(collected) == 5


def test_reader_accepts_bytearray_and_memoryview() -> None:
    raw = encode_frame(FrameType.PING, 0, 0, bytes(8))
    assert len(FrameReader(64).feed(bytearray(raw))) == 1
    assert len(FrameReader(64).feed(memoryview(raw))) == 1


def hello() -> Hello:
    return Hello(credential=Secret("s3cr3t-value"), connector_id="c", software_version="1",
                 deployments=(DeploymentOffer(name="d", upstream_model="m"),), versions=(1, 2))


def test_hello_round_trip_and_wire_fields() -> None:
    raw = payloads.encode_hello(hello(), Settings())
    obj = orjson.loads(raw)
    assert obj["credential"] == "s3cr3t-value"
    assert obj["versions"] == [1, 2]
    assert obj["deployments"] == [{"name": "d", "upstream_model": "m"}]
    decoded, proposal = payloads.decode_hello(raw)
    assert decoded == hello()
    assert proposal == Settings()


def test_unknown_json_fields_are_ignored() -> None:
    obj = orjson.loads(payloads.encode_hello(hello(), Settings()))
    obj["future_field"] = {"x": 1}
    obj["settings"]["future_setting"] = 5
    decoded, _ = payloads.decode_hello(orjson.dumps(obj))
    assert decoded == hello()


def test_welcome_names_the_gateway_node_only_when_there_is_one() -> None:
    """An optional field, compatible both ways: a lone gateway's WELCOME is unchanged (an old
    connector sees the same bytes), a node's WELCOME adds ``node_id``, which an old connector
    ignores as any unknown field, and a WELCOME without it (an old gateway) decodes to ""."""
    lone = Welcome(version=2, session_id="s", deployments=("d",), settings=Settings())
    assert b"node_id" not in payloads.encode_welcome(lone)
    assert payloads.decode_welcome(payloads.encode_welcome(lone)).node_id == ""
    node = Welcome(version=2, session_id="s", deployments=("d",), settings=Settings(),
                   node_id="n" * 64)
    assert payloads.decode_welcome(payloads.encode_welcome(node)) == node
    obj = orjson.loads(payloads.encode_welcome(node))
    assert obj["node_id"] == "n" * 64
    del obj["node_id"]
    assert payloads.decode_welcome(orjson.dumps(obj)) == lone


def test_welcome_reject_heads_round_trip() -> None:
    welcome = Welcome(version=1, session_id="s", deployments=("d",), settings=Settings())
    assert payloads.decode_welcome(payloads.encode_welcome(welcome)) == welcome
    reject = Reject(reason=RejectReason.REVOKED, retryable=False, message="m", retry_after=2.5)
    assert payloads.decode_reject(payloads.encode_reject(reject)) == reject
    head = RequestHead(method="GET", path="/v1/models", query="a=1",
                       headers=(("accept", "*/*"),), deployment="d", request_id="r")
    assert payloads.decode_request_head(payloads.encode_request_head(head)) == head
    response = ResponseHead(status=200, headers=(("x", "y"),))
    assert payloads.decode_response_head(payloads.encode_response_head(response)) == response
    assert payloads.decode_settings_update(payloads.encode_settings_update(3)) == 3


def test_reject_with_unknown_reason_and_integer_retry_after() -> None:
    raw = orjson.dumps({"reason": "quota", "retryable": True, "retry_after": 3})
    reject = payloads.decode_reject(raw)
    assert reject.reason is RejectReason.UNKNOWN and reject.retry_after == 3.0


def test_goaway_and_u32_codecs() -> None:
    goaway = GoAway(last_stream_id=9, code=ErrorCode.NO_ERROR, reason="bye ✓")
    assert payloads.decode_goaway(payloads.encode_goaway(goaway), 1024) == goaway
    unknown = payloads.decode_goaway(b"\0\0\0\1\0\0\1\0", 16)
    assert unknown.code == 256 and not isinstance(unknown.code, ErrorCode)
    assert payloads.decode_u32(payloads.encode_u32(2**32 - 1), "x") == 2**32 - 1
    with pytest.raises(LocalProtocolError):
        payloads.decode_u32(b"\0\0\0", "x")
    with pytest.raises(LocalProtocolError):
        payloads.decode_goaway(b"\0" * 7, 16)
    with pytest.raises(LocalProtocolError):
        payloads.decode_goaway(b"\0" * 8 + b"x" * 17, 16)
    with pytest.raises(LocalProtocolError, match="utf-8"):
        payloads.decode_goaway(b"\0" * 8 + b"\xff", 16)


@pytest.mark.parametrize("raw", [
    b"not json", b"[1]", b'{"versions": 1}', b'{"versions": [1], "deployments": [1]}',
    b'{"versions": [], "credential": "x"}', b'{"versions": [1], "credential": 5}',
    b'{"versions": [true], "credential": "x"}',
    b'{"versions": [1], "credential": "x", "settings": {"max_frame_size": "big"}}',
    b'{"versions": [1], "credential": "x", "settings": {"max_frame_size": 10}}',
    b'{"versions": [1], "credential": "x", "settings": []}',
    b'{"versions": [1], "credential": "x", "deployments": [{"name": ""}]}',
    b'{"versions": [1], "credential": "x", "deployments": [{"name": "a"}, {"name": "a"}]}',
])
def test_malformed_hello_is_rejected(raw: bytes) -> None:
    with pytest.raises(LocalProtocolError):
        payloads.decode_hello(raw)


@pytest.mark.parametrize(("decoder", "raw"), [
    (payloads.decode_welcome, b'{"version": 1, "session_id": "", "deployments": []}'),
    (payloads.decode_welcome, b'{"version": 1, "session_id": "s", "deployments": "d"}'),
    (payloads.decode_welcome, b'{"version": "1", "session_id": "s"}'),
    (payloads.decode_welcome, b'{"version": 1, "session_id": "s", "deployments": [1]}'),
    (payloads.decode_welcome, b'{"version": 1, "session_id": "s", "node_id": 7}'),
    (payloads.decode_welcome, b'{"version": 1, "session_id": "s", "node_id": "' + b"n" * 65
     + b'"}'),
    (payloads.decode_reject, b'{"reason": "revoked", "retryable": "no"}'),
    (payloads.decode_reject, b'{"reason": "revoked", "retryable": false, "retry_after": -1}'),
    (payloads.decode_reject, b'{"reason": "revoked", "retryable": false, "message": 1}'),
    (payloads.decode_request_head, b'{"method": ""}'),
    (payloads.decode_request_head, b'{"method": "GET", "path": 1}'),
    (payloads.decode_request_head, b'{"method": "GET", "headers": [["a"]]}'),
    (payloads.decode_request_head, b'{"method": "GET", "headers": {"a": "b"}}'),
    (payloads.decode_response_head, b'{"status": 99}'),
    (payloads.decode_response_head, b'{"status": true}'),
    (payloads.decode_response_head, b'{"status": 200, "headers": [["a", 1]]}'),
    (payloads.decode_settings_update, b'{"max_concurrent_streams": 0}'),
    (payloads.decode_settings_update, b'{}'),
])
def test_malformed_payloads_are_rejected(decoder: object, raw: bytes) -> None:
    with pytest.raises(LocalProtocolError):
        decoder(raw)  # type: ignore[operator]


def test_secret_never_shows() -> None:
    secret = Secret("hunter2-very-secret")
    for text in (repr(secret), str(secret), repr(hello()), str(hello()),
                 f"{secret}", repr(Hello(credential=secret, connector_id="c",
                                         software_version="v"))):
        assert "hunter2" not in text and "s3cr3t" not in text
    assert repr(secret) == "Secret('***')"
    assert secret.reveal() == "hunter2-very-secret"
    assert secret == Secret("hunter2-very-secret") and secret != Secret("other")
    assert secret != "hunter2-very-secret"
    assert hash(secret) == hash(Secret("hunter2-very-secret"))
    import pickle
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    with pytest.raises(LocalProtocolError):
        Secret(b"bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [
    {"credential": "plain"}, {"connector_id": 1}, {"deployments": [DeploymentOffer(name="d",
                                                                                   upstream_model="m")]},
    {"versions": ()}, {"versions": (0,)}, {"versions": (True,)},
])
def test_hello_validation(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"credential": Secret("x"), "connector_id": "c",
                               "software_version": "v"}
    base.update(kwargs)
    with pytest.raises(LocalProtocolError):
        Hello(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [
    {"name": ""}, {"name": "x" * 257}, {"upstream_model": 3},
])
def test_deployment_offer_validation(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"name": "d", "upstream_model": "m"}
    base.update(kwargs)
    with pytest.raises(LocalProtocolError):
        DeploymentOffer(**base)  # type: ignore[arg-type]


def test_value_type_validation() -> None:
    with pytest.raises(LocalProtocolError):
        RequestHead(method="GET", path="/", headers=[("a", "b")])  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        RequestHead(method="GET", path=None)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        ResponseHead(status=200, headers=[])  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        Reject(reason="revoked", retryable=False)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        Reject(reason=RejectReason.REVOKED, retryable=False, message="x" * 1025)
    with pytest.raises(LocalProtocolError):
        Welcome(version=0, session_id="s", deployments=(), settings=Settings())
    with pytest.raises(LocalProtocolError):
        Welcome(version=1, session_id="s", deployments=["d"],  # type: ignore[arg-type]
                settings=Settings())
    with pytest.raises(LocalProtocolError):
        Welcome(version=1, session_id="s", deployments=(), settings=Settings(),
                node_id=None)  # type: ignore[arg-type]


def test_events_validate_stream_ids_and_never_show_bodies() -> None:
    for bad in (0, -1, 2**32, "1"):
        with pytest.raises(LocalProtocolError, match="stream_id"):
            StreamEnded(stream_id=bad)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="stream_id"):
        WindowUpdated(stream_id=-1, delta=1)
    WindowUpdated(stream_id=0, delta=1)  # stream 0 is the connection
    event = DataReceived(stream_id=1, data=b"secret prompt", flow_controlled_length=13)
    assert repr(event) == ("DataReceived(stream_id=1, data=<13 bytes>, "
                           "flow_controlled_length=13)")
    assert "secret" not in str(event)


def test_request_heads_need_a_method() -> None:
    with pytest.raises(LocalProtocolError, match="method"):
        RequestHead(method="", path="/")
