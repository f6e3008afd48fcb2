"""REPORT frames (protocol version 2): usage and health reports, version negotiation with
version 1 peers, the drain that waits for usage reports, and the bounds."""

from __future__ import annotations

import pytest

from tests.proto.pair import Pair, make_hello
from tokios_proto import (
    Config,
    ConnectionState,
    ConnectionTerminated,
    DeploymentHealth,
    ErrorCode,
    FrameType,
    HealthReported,
    LocalProtocolError,
    RemoteProtocolError,
    RequestHead,
    ResetCode,
    Settings,
    StreamReset,
    UsageReport,
    UsageReported,
    decode_frames,
    encode_frame,
)
from tokios_proto._reports import HealthReport, decode_report, encode_report

HEAD = RequestHead(method="POST", path="/v1/chat/completions", deployment="llama")


def v2_pair(**kwargs: object) -> Pair:
    pair = Pair(**kwargs)  # type: ignore[arg-type]
    pair.handshake(deployments=("llama", "qwen"))
    assert pair.gateway.version == pair.connector.version == 2
    return pair


def usage_frame(stream_id: int, payload: bytes | None = None) -> bytes:
    payload = payload if payload is not None else encode_report(
        UsageReport(stream_id=stream_id, input_tokens=1, output_tokens=2))
    return encode_frame(FrameType.REPORT, 0, 0, payload)


def finished_stream(pair: Pair) -> int:
    """A stream served to the end at both halves (CLOSED at both ends)."""
    sid = pair.gateway.open_stream(HEAD)
    pair.gateway.send_data(sid, b"{}", end_stream=True)
    pair.flush()
    pair.connector.send_response(sid, 200)
    pair.connector.send_data(sid, b"answer", end_stream=True)
    pair.flush()
    return sid


# ---------------------------------------------------------------- versions


@pytest.mark.parametrize(("connector_versions", "gateway_versions"), [((1,), (1, 2)),
                                                                      ((1, 2), (1,))])
def test_a_version_1_peer_on_either_side_gets_version_1_and_no_reports(
        connector_versions: tuple[int, ...], gateway_versions: tuple[int, ...]) -> None:
    pair = Pair(hello=make_hello(versions=connector_versions),
                connector_config=Config(versions=connector_versions),
                gateway_config=Config(versions=gateway_versions))
    pair.handshake()
    assert pair.gateway.version == pair.connector.version == 1
    assert not pair.gateway.reports_supported and not pair.connector.reports_supported
    sid = finished_stream(pair)
    with pytest.raises(LocalProtocolError, match="version 1"):
        pair.connector.report_usage(sid, input_tokens=1, output_tokens=1)
    with pytest.raises(LocalProtocolError, match="version 1"):
        pair.connector.report_health([DeploymentHealth(name="llama", healthy=True)])
    # streams work as in version 1, and the drain does not wait for reports
    pair.gateway.goaway()
    pair.flush()
    assert pair.gateway.state is pair.connector.state is ConnectionState.CLOSED
    # a version 1 gateway treats a REPORT as a connection error
    pair2 = Pair(hello=make_hello(versions=connector_versions),
                 connector_config=Config(versions=connector_versions),
                 gateway_config=Config(versions=gateway_versions))
    pair2.handshake()
    sid = finished_stream(pair2)
    with pytest.raises(RemoteProtocolError, match="version 2") as info:
        pair2.gateway.receive_data(usage_frame(sid), 0.0)
    assert info.value.code == ErrorCode.PROTOCOL_ERROR


@pytest.mark.parametrize("version", [1, 2])
def test_the_connector_core_reports_nothing_generated_for_an_open_it_refuses(
        version: int) -> None:
    versions = tuple(range(1, version + 1))
    pair = Pair(hello=make_hello(versions=versions), connector_config=Config(versions=versions))
    pair.handshake()
    pair.connector.receive_data(encode_frame(FrameType.OPEN, 0, 1, b'{"method": 5}'), 0.0)
    frames = decode_frames(pair.connector.data_to_send())
    assert [f.type for f in frames] == [FrameType.RESET] + [FrameType.REPORT] * (version - 1)


def test_two_version_2_ends_support_reports_only_once_open() -> None:
    pair = Pair()
    assert pair.gateway.version is None and not pair.connector.reports_supported
    pair.connector.start(0.0)
    with pytest.raises(LocalProtocolError):
        pair.connector.report_health([])
    pair.flush()
    pair.gateway.accept("s", ("llama",), 0.0)
    pair.flush()
    assert pair.gateway.reports_supported and pair.connector.reports_supported
    pair.connector.goaway(ErrorCode.INTERNAL_ERROR)
    assert not pair.connector.reports_supported
    with pytest.raises(LocalProtocolError):
        pair.connector.report_health([])


def test_a_report_before_welcome_is_a_connection_error() -> None:
    pair = Pair()
    pair.connector.start(0.0)
    pair.flush()
    with pytest.raises(RemoteProtocolError, match="REPORT"):
        pair.gateway.receive_data(usage_frame(1), 0.0)


def test_a_report_from_the_gateway_is_a_connection_error() -> None:
    pair = v2_pair()
    with pytest.raises(RemoteProtocolError, match="REPORT") as info:
        pair.connector.receive_data(usage_frame(1), 0.0)
    assert info.value.code == ErrorCode.PROTOCOL_ERROR


# ---------------------------------------------------------------- usage


def test_usage_after_the_end_of_a_stream() -> None:
    pair = v2_pair()
    sid = finished_stream(pair)
    assert pair.gateway.open_stream_ids == ()
    pair.connector.report_usage(sid, input_tokens=21, output_tokens=34)
    pair.flush()
    assert pair.events_of("gateway", UsageReported) == [UsageReported(
        stream_id=sid, input_tokens=21, output_tokens=34, estimated=False)]


def test_usage_of_a_stream_the_gateway_reset_because_its_client_left() -> None:
    pair = v2_pair()
    sid = pair.gateway.open_stream(HEAD)
    pair.gateway.end_stream(sid)
    pair.flush()
    pair.connector.send_response(sid, 200)
    pair.connector.send_data(sid, b"partial")
    pair.gateway.reset_stream(sid, ResetCode.CLIENT_GONE)
    pair.flush()
    assert StreamReset(stream_id=sid, code=ResetCode.CLIENT_GONE) in pair.connector_events
    pair.connector.report_usage(sid, input_tokens=9, output_tokens=3, estimated=True)
    pair.flush()
    assert pair.events_of("gateway", UsageReported) == [UsageReported(
        stream_id=sid, input_tokens=9, output_tokens=3, estimated=True)]


def test_usage_once_the_response_ended_while_the_request_body_still_flows() -> None:
    pair = v2_pair()
    sid = pair.gateway.open_stream(HEAD)
    pair.flush()
    pair.connector.send_response(sid, 413)
    with pytest.raises(LocalProtocolError, match="has not ended"):
        pair.connector.report_usage(sid, input_tokens=0, output_tokens=0)
    pair.connector.end_stream(sid)
    pair.connector.report_usage(sid, input_tokens=0, output_tokens=0)
    pair.flush()
    assert pair.gateway.open_stream_ids == (sid,)  # the request half is still open
    assert [e.stream_id for e in pair.events_of("gateway", UsageReported)] == [sid]  # type: ignore[attr-defined]


def test_usage_of_a_stream_still_answering_is_refused_locally() -> None:
    pair = v2_pair()
    sid = pair.gateway.open_stream(HEAD)
    pair.flush()
    with pytest.raises(LocalProtocolError, match="has not ended"):
        pair.connector.report_usage(sid, input_tokens=1, output_tokens=1)
    with pytest.raises(LocalProtocolError, match="never opened"):
        pair.connector.report_usage(sid + 2, input_tokens=1, output_tokens=1)
    with pytest.raises(LocalProtocolError, match="input_tokens"):
        pair.connector.report_usage(sid, input_tokens=-1, output_tokens=1)
    with pytest.raises(LocalProtocolError, match="stream_id"):
        pair.connector.report_usage(2, input_tokens=1, output_tokens=1)
    assert pair.connector.data_to_send() == b""


def test_duplicates_are_counted_once_and_crash_nothing() -> None:
    pair = v2_pair()
    sid = finished_stream(pair)
    for _ in range(3):
        pair.connector.report_usage(sid, input_tokens=4, output_tokens=5)
    pair.flush()
    assert len(pair.events_of("gateway", UsageReported)) == 1
    assert pair.gateway.state is ConnectionState.OPEN


def test_a_usage_report_for_a_stream_never_opened_is_a_connection_error() -> None:
    pair = v2_pair()
    sid = finished_stream(pair)
    with pytest.raises(RemoteProtocolError, match="never opened") as info:
        pair.gateway.receive_data(usage_frame(sid + 2), 0.0)
    assert info.value.code == ErrorCode.PROTOCOL_ERROR


@pytest.mark.parametrize("payload", [
    b'{"kind":"usage","stream_id":1,"input_tokens":1}',
    b'{"kind":"usage","stream_id":1,"input_tokens":1.5,"output_tokens":0}',
    b'{"kind":"usage","stream_id":1,"input_tokens":1,"output_tokens":9007199254740992}',
    b'{"kind":"usage","stream_id":1,"input_tokens":1,"output_tokens":1,"estimated":"no"}',
    b'{"kind":"usage","stream_id":0,"input_tokens":1,"output_tokens":1}',
    b'{"kind":"usage","stream_id":2147483649,"input_tokens":1,"output_tokens":1}',
    b'{"kind":"health"}',
    b'{"kind":"health","deployments":[1]}',
    b'{"kind":"health","deployments":[{"name":"","healthy":true}]}',
    b'{"kind":"health","deployments":[{"name":"llama","healthy":1}]}',
    b'{"kind":"health","deployments":[{"name":"llama","healthy":true,"models":"x"}]}',
    b"[]",
    b"not json",
])
def test_a_malformed_report_is_a_connection_error(payload: bytes) -> None:
    pair = v2_pair()
    finished_stream(pair)
    with pytest.raises(RemoteProtocolError) as info:
        pair.gateway.receive_data(usage_frame(1, payload), 0.0)
    assert info.value.code == ErrorCode.PROTOCOL_ERROR
    assert pair.gateway.state is ConnectionState.CLOSED


def test_unknown_kinds_and_fields_are_ignored() -> None:
    pair = v2_pair()
    sid = finished_stream(pair)
    pair.gateway.receive_data(usage_frame(0, b'{"kind":"carbon","grams":3}'), 0.0)
    pair.gateway.receive_data(usage_frame(0, b'{"stream_id":1}'), 0.0)
    pair.gateway.receive_data(usage_frame(0, b'{"kind":"usage","stream_id":%d,"input_tokens":1,'
                                             b'"output_tokens":2,"cached_tokens":7}' % sid), 0.0)
    pair.drain_events()
    assert pair.events_of("gateway", UsageReported) == [UsageReported(
        stream_id=sid, input_tokens=1, output_tokens=2, estimated=False)]
    assert pair.gateway.state is ConnectionState.OPEN


# ---------------------------------------------------------------- health


def test_health_reports_only_granted_deployments_both_ways() -> None:
    pair = Pair()
    pair.handshake(deployments=("llama",))
    pair.connector.report_health([
        DeploymentHealth(name="llama", healthy=False, models=("llama3:8b", "llama3:70b")),
        DeploymentHealth(name="qwen", healthy=True)])  # offered, not granted: left out
    (frame,) = decode_frames(pair.connector.data_to_send())
    assert decode_report(frame.payload) == HealthReport(deployments=(
        DeploymentHealth(name="llama", healthy=False, models=("llama3:8b", "llama3:70b")),))
    forged = encode_report(HealthReport(deployments=(
        DeploymentHealth(name="qwen", healthy=True), DeploymentHealth(name="llama",
                                                                      healthy=True))))
    pair.gateway.receive_data(frame.encode() + usage_frame(0, forged), 0.0)
    pair.drain_events()
    assert pair.events_of("gateway", HealthReported) == [
        HealthReported(deployments=(DeploymentHealth(name="llama", healthy=False,
                                                     models=("llama3:8b", "llama3:70b")),)),
        HealthReported(deployments=(DeploymentHealth(name="llama", healthy=True),))]


def test_health_values_are_bounded() -> None:
    with pytest.raises(LocalProtocolError, match="1000"):
        DeploymentHealth(name="llama", healthy=True, models=tuple(str(n) for n in range(1001)))
    with pytest.raises(LocalProtocolError, match="1000"):
        DeploymentHealth(name="llama", healthy=True, models=("x" * 257,))
    DeploymentHealth(name="llama", healthy=True, models=tuple("m" * 256 for _ in range(1000)))
    with pytest.raises(LocalProtocolError, match="must be 1"):
        DeploymentHealth(name="", healthy=True)
    with pytest.raises(LocalProtocolError, match="unique"):
        HealthReport(deployments=(DeploymentHealth(name="a", healthy=True),) * 2)
    with pytest.raises(LocalProtocolError):
        HealthReport(deployments=["a"])  # type: ignore[arg-type]


def test_a_report_larger_than_max_header_block_size() -> None:
    pair = v2_pair()
    huge = DeploymentHealth(name="llama", healthy=True, models=tuple("m" * 200 for _ in range(200)))
    with pytest.raises(LocalProtocolError, match="max_header_block_size"):
        pair.connector.report_health([huge])
    assert pair.connector.data_to_send() == b""
    too_big = usage_frame(0, b'{"kind":"future","pad":"' + b"p" * 40000 + b'"}')
    with pytest.raises(RemoteProtocolError) as info:
        pair.gateway.receive_data(too_big, 0.0)
    assert info.value.code == ErrorCode.FRAME_SIZE_ERROR


# ---------------------------------------------------------------- bounds


def test_a_report_flood_at_a_shell_that_does_not_keep_up_is_excessive_load() -> None:
    config = Config(settings=Settings(max_header_block_size=1024), max_pending_report_bytes=1024)
    pair = v2_pair(gateway_config=config)
    health = encode_frame(FrameType.REPORT, 0, 0, encode_report(HealthReport(deployments=(
        DeploymentHealth(name="llama", healthy=True, models=("m" * 40,)),))))
    size = len(health) - 12
    per_batch = 1024 // size
    for _ in range(3):  # a shell that takes its events keeps up with any number of reports
        pair.gateway.receive_data(health * per_batch, 0.0)
        pair.drain_events()
    assert len(pair.events_of("gateway", HealthReported)) == 3 * per_batch
    pair.gateway.receive_data(health * per_batch, 0.0)  # not taken ...
    with pytest.raises(RemoteProtocolError) as info:  # ... and one more is too many
        pair.gateway.receive_data(health, 0.0)
    assert info.value.code == ErrorCode.EXCESSIVE_LOAD


def test_a_peer_that_never_reports_costs_bounded_memory() -> None:
    pair = v2_pair(gateway_config=Config(max_unreported_streams=2))
    first = finished_stream(pair)
    for _ in range(2):
        finished_stream(pair)
    # the first stream's report was forgotten (the oldest beyond 2): it no longer counts
    pair.connector.report_usage(first, input_tokens=1, output_tokens=1)
    pair.flush()
    assert pair.events_of("gateway", UsageReported) == []


def test_report_limits_are_checked() -> None:
    with pytest.raises(LocalProtocolError, match="max_pending_report_bytes"):
        Config(max_pending_report_bytes=1024)  # below the default max_header_block_size
    with pytest.raises(LocalProtocolError, match="max_unreported_streams"):
        Config(max_unreported_streams=0)


# ---------------------------------------------------------------- drain


def test_a_drain_waits_for_the_report_of_a_stream_reset_for_a_client_that_left() -> None:
    pair = v2_pair()
    sid = pair.gateway.open_stream(HEAD)
    pair.flush()
    pair.gateway.goaway(reason="restart")
    pair.gateway.reset_stream(sid, ResetCode.CLIENT_GONE)
    pair.flush()
    assert pair.gateway.state is pair.connector.state is ConnectionState.DRAINING
    pair.connector.report_usage(sid, input_tokens=3, output_tokens=0, estimated=True)
    assert pair.connector.state is ConnectionState.CLOSED  # the report goes out first
    pair.flush()
    assert pair.gateway.state is ConnectionState.CLOSED
    assert pair.gateway_events[-2:] == [
        UsageReported(stream_id=sid, input_tokens=3, output_tokens=0, estimated=True),
        ConnectionTerminated(code=ErrorCode.NO_ERROR, reason="drained", remote=False)]


def test_streams_above_the_connectors_goaway_owe_no_report() -> None:
    pair = v2_pair()
    sid = pair.gateway.open_stream(HEAD)
    pair.gateway.reset_stream(sid, ResetCode.CLIENT_GONE)  # closed before the OPEN went out
    pair.gateway.data_to_send()
    goaway = encode_frame(FrameType.GOAWAY, 0, 0, bytes(8))  # the connector processed none
    pair.gateway.receive_data(goaway, 0.0)
    assert pair.gateway.state is ConnectionState.CLOSED
