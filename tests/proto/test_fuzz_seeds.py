"""The tunnel-core fuzz harnesses (fuzz/proto_*.py) over their seed corpora, in the normal run.

Each seed goes through the full harness: fed whole, one byte per call and split at every
offset (short seeds), with only RemoteProtocolError allowed out and chunking-independent
events. The other tests make sure the harness can fail, that the corpus is current, and that
fuzz/run picks the harnesses up.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokios_proto import (
    ConnectionTerminated,
    DataReceived,
    FrameType,
    GatewayConnection,
    GoAwayReceived,
    RemoteProtocolError,
    StreamOpened,
    StreamReset,
    WindowUpdated,
    encode_frame,
)

ROOT = Path(__file__).resolve().parents[2]
FUZZ = ROOT / "fuzz"
CORPUS = FUZZ / "corpus"
if str(FUZZ) not in sys.path:
    sys.path.insert(0, str(FUZZ))

import _proto_harness as harness  # noqa: E402
import _proto_seeds  # noqa: E402

HARNESSES = sorted(harness.SCENARIOS)


def corpus_of(name: str) -> list[Path]:
    return sorted(p for p in (CORPUS / name).iterdir() if p.is_file())


@pytest.mark.parametrize("name", HARNESSES)
def test_harness_accepts_every_seed(name: str) -> None:
    module = importlib.import_module(name)
    seeds = corpus_of(name)
    assert len(seeds) >= 10
    for seed in seeds:
        module.TestOneInput(seed.read_bytes())


def test_the_committed_corpus_holds_every_generated_seed() -> None:
    for name, seeds in _proto_seeds.build_seeds().items():
        for seed_name, data in seeds.items():
            path = CORPUS / name / seed_name
            assert path.is_file(), f"missing seed {path}: run fuzz/_proto_seeds.py"
            assert path.read_bytes() == data, f"stale seed {path}: run fuzz/_proto_seeds.py"


def test_fuzz_run_discovers_the_proto_harnesses_and_their_seeds() -> None:
    runner = importlib.import_module("_runner")
    names = runner.discover()
    for name in HARNESSES:
        assert name in names
        assert len(runner.seeds(name)) == len(corpus_of(name))


def _event_types(name: str) -> set[str]:
    make = harness.SCENARIOS[name]
    seen: set[str] = set()
    for seed in corpus_of(name):
        seen |= {type(e).__name__ for e in harness.feed(make, [seed.read_bytes()]).events}
    return seen


def test_established_seeds_reach_the_stream_and_flow_control_code() -> None:
    want_both = {t.__name__ for t in (DataReceived, WindowUpdated, StreamReset, GoAwayReceived,
                                      ConnectionTerminated)}
    gateway = _event_types("proto_established_gateway")
    connector = _event_types("proto_established_connector")
    assert want_both | {"ResponseReceived", "StreamEnded", "SettingsChanged", "UsageReported",
                        "HealthReported"} <= gateway
    assert want_both | {StreamOpened.__name__, "StreamEnded"} <= connector
    assert {"HelloReceived", "ConnectionTerminated"} <= _event_types("proto_receive_gateway")
    assert {"Accepted", "Rejected", "StreamOpened"} <= _event_types("proto_receive_connector")


@pytest.mark.parametrize("side", ["gateway", "connector"])
def test_a_snapshot_copy_behaves_like_a_freshly_built_connection(side: str) -> None:
    name = f"proto_established_{side}"
    fresh = getattr(harness, f"_established_{side}")
    copied = harness.SCENARIOS[name]
    for seed in corpus_of(name):
        data = seed.read_bytes()
        a, b = harness.feed(fresh, [data]), harness.feed(copied, [data])
        assert (a.events, a.state, a.output) == (b.events, b.state, b.output), seed.name
        assert (a.error is None) == (b.error is None), seed.name
    first, second = copied(), copied()
    assert first is not second and first._streams is not second._streams
    # frames fed to one copy change only that copy (handlers are looked up per class and
    # called with the connection, so a copy cannot act on the original)
    before = (second.state, second.data_to_send(), tuple(second._streams))
    with pytest.raises(RemoteProtocolError):
        first.receive_data(bytes(12), 0.0)  # a malformed frame: only `first` ends
    assert first.state is not before[0]
    assert (second.state, second.data_to_send(), tuple(second._streams)) == before


# -- the harness can fail --------------------------------------------------------------------------


class _LeakyGateway(GatewayConnection):
    """Lets a non-protocol exception escape on a PING frame, as a decoder bug would."""

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        if bytes(data).startswith(bytes([1, FrameType.PING])):
            raise KeyError("bug")
        super().receive_data(data, now)


class _ChunkSensitiveGateway(GatewayConnection):
    """Sees a stray PING whenever a call brings 12 bytes or more at once."""

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        if len(data) >= 12:
            super().receive_data(encode_frame(FrameType.PING, 0, 0, bytes(8)), now)
        super().receive_data(data, now)


def _started(cls: type[GatewayConnection]) -> Callable[[], GatewayConnection]:
    def make() -> GatewayConnection:
        conn = cls()
        conn.start(harness.NOW)
        return conn

    return make


def test_an_escaping_exception_is_a_finding() -> None:
    with pytest.raises(KeyError):
        harness.check(_started(_LeakyGateway), encode_frame(FrameType.PING, 0, 0, bytes(8)))


def test_chunking_dependent_events_are_a_finding() -> None:
    with pytest.raises(AssertionError, match="depend on chunking"):
        harness.check(_started(_ChunkSensitiveGateway),
                      (CORPUS / "proto_receive_gateway" / "hello").read_bytes())


def test_the_reference_run_is_one_byte_per_call() -> None:
    data = (CORPUS / "proto_receive_gateway" / "hello").read_bytes()
    outcome = harness.check(harness.SCENARIOS["proto_receive_gateway"], data)
    assert outcome.chunks == len(data)
    assert [type(e).__name__ for e in outcome.events] == ["HelloReceived"]


def test_a_framing_error_does_not_pre_empt_the_frames_before_it() -> None:
    data = (CORPUS / "proto_receive_gateway" / "goaway-error-then-junk").read_bytes()
    make = harness.SCENARIOS["proto_receive_gateway"]
    whole = harness.feed(make, [data])
    split = harness.feed(make, [data[:23], data[23:]])
    assert whole.events == split.events
    assert whole.error is None and split.error is None


def test_frames_after_a_draining_goaway_are_ignored_in_the_same_chunk_too() -> None:
    goaway = encode_frame(FrameType.GOAWAY, 0, 0, bytes(8))  # last stream 0, NO_ERROR
    bad_ping = encode_frame(FrameType.PING, 0, 1, bytes(8))  # a connection error if handled
    make = harness.SCENARIOS["proto_established_gateway"]
    split = harness.feed(make, [goaway, bad_ping])
    assert split.error is None and split.state.name == "CLOSED"
    harness.check(make, goaway + bad_ping)


# -- a little fuzzing in the normal run ---------------------------------------------------------


def _mutations(name: str) -> st.SearchStrategy[bytes]:
    seeds = [p.read_bytes() for p in corpus_of(name)]
    edits = st.lists(st.tuples(st.integers(0, 4096), st.binary(max_size=6), st.integers(0, 6)),
                     max_size=4)
    return st.builds(_mutate, st.sampled_from(seeds), edits)


def _mutate(seed: bytes, edits: list[tuple[int, bytes, int]]) -> bytes:
    data = bytearray(seed)
    for position, insert, delete in edits:
        at = position % (len(data) + 1)
        data[at:at + delete] = insert
    return bytes(data)


@pytest.mark.parametrize("name", HARNESSES)
def test_mutated_seeds_keep_the_invariants(name: str) -> None:
    make = harness.SCENARIOS[name]

    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(_mutations(name))
    def run(data: bytes) -> None:
        harness.check(make, data)

    run()
