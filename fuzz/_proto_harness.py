"""Shared machinery of the tunnel-core receive-path harnesses (``fuzz/proto_*.py``).

Each harness names a *scenario*: a function building a connection in a known state (fresh,
or ESTABLISHED through the in-memory pair of ``tests/proto/pair.py``). :func:`check` feeds the
fuzz input to fresh copies of that scenario several ways and asserts the receive-path
invariants:

1. ``receive_data`` either returns or raises :class:`RemoteProtocolError`; nothing else escapes
   (not a ``LocalProtocolError``, not a ``KeyError``...). After it raised, the state is CLOSED,
   the last event is a :class:`ConnectionTerminated` with the error's code, the output ends with
   a GOAWAY carrying that code, and feeding more raises again.
2. The events do not depend on how the bytes were chunked. The input is fed whole, one byte per
   call, and (up to :data:`SPLIT_CAP` bytes) in two pieces split at every offset. The one-byte
   run is the reference, since it handles each frame as soon as it is complete. Every other run
   must give the same events, the same error (code and message) or none, the same final state
   and, without an error, the same output bytes. (This found that a bad header used to
   pre-empt the frames before it in the same chunk, fixed in 44cd982, and that a GOAWAY which
   drained the last stream let later frames of the same chunk through, fixed in e50095d.)
3. Every :class:`DataReceived` can be acknowledged (``acknowledge_received_data`` does not
   raise), as its docstring promises, even after the stream or connection ended.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tokios_proto import (
    Config,
    Connection,
    ConnectionState,
    ConnectionTerminated,
    ConnectorConnection,
    DataReceived,
    ErrorCode,
    Event,
    FrameType,
    GatewayConnection,
    RemoteProtocolError,
    RequestHead,
    Settings,
    decode_frames,
)

if TYPE_CHECKING:
    from tests.proto.pair import Pair

__all__ = ["SCENARIOS", "SPLIT_CAP", "Outcome", "check", "feed", "make_harness"]

#: Inputs up to this many bytes are also fed in two pieces split at every offset (quadratic).
SPLIT_CAP = 32
#: Larger inputs are cut to this size (libFuzzer's -max_len is 4096 already).
MAX_INPUT = 4096
#: The clock never moves in these harnesses: timers are not what they test.
NOW = 1.0


#: Limits of the established scenarios: the smallest windows and sizes the settings allow, and
#: 8 concurrent streams (the scenario holds 3 open, so 6 OPENs in a row hit the limit).
SMALL = Config(settings=Settings(initial_stream_window=1024, initial_connection_window=2048,
                                 max_frame_size=1024, max_header_block_size=1024,
                                 max_concurrent_streams=8))

# -- scenarios -----------------------------------------------------------------------------------


def fresh_gateway() -> Connection:
    """A gateway waiting for HELLO (no ``accept`` will follow: the shell never answers)."""
    gateway = GatewayConnection()
    gateway.start(NOW)
    return gateway


def fresh_connector() -> Connection:
    """A connector that has sent HELLO (the pair's) and waits for WELCOME or REJECT."""
    from tests.proto.pair import make_hello

    connector = ConnectorConnection(hello=make_hello())
    connector.start(NOW)
    connector.data_to_send()
    return connector


def established_pair() -> Pair:
    """A handshaken pair with streams in several states, output flushed, events drained.

    Both ends use :data:`SMALL` limits, so a few KiB of input can overrun a window, exceed
    ``max_frame_size`` or ``max_header_block_size``, or open one stream too many.

    Streams (ids as both ends see them):
    1. request ended, response head and 2 body bytes sent (REQUEST_DONE_RESPONDING);
    3. request open with 5 body bytes, no response (OPEN);
    5. reset by the connector (CLOSED, but known: frames on it are discarded), its usage
       reported (protocol version 2);
    7. request open, response head sent and response ended (RESPONSE_DONE).
    The next stream the gateway may open is 9. The usage reports of 1, 3 and 7 are awaited.
    """
    from tests.proto.pair import Pair

    pair = Pair(gateway_config=SMALL, connector_config=SMALL)
    pair.now = NOW
    pair.handshake()
    gateway, connector = pair.gateway, pair.connector
    ids = [gateway.open_stream(RequestHead(method="POST", path="/v1/chat/completions",
                                           deployment="llama", request_id=f"req-{n}"))
           for n in range(4)]
    gateway.send_data(ids[0], b"{}", end_stream=True)
    gateway.send_data(ids[1], b"hello")
    pair.flush()
    connector.send_response(ids[0], 200, (("content-type", "text/event-stream"),))
    connector.send_data(ids[0], b"hi")
    connector.reset_stream(ids[2])
    connector.report_usage(ids[2], input_tokens=3, output_tokens=1, estimated=True)
    connector.send_response(ids[3], 200)
    connector.end_stream(ids[3])
    pair.flush()
    return pair


def snapshot(build: Callable[[], Connection]) -> Callable[[], Connection]:
    """``build`` made cheaper: build once, then hand out deep copies (about twice as fast as
    running the pair again). Credentials (:class:`Secret` refuses to be copied) are shared,
    which is safe: they are immutable. tests/proto/test_fuzz_seeds.py checks that a copy
    behaves exactly like a freshly built connection."""
    template: list[Connection] = []

    def make() -> Connection:
        if not template:
            template.append(build())
        original = template[0]
        hello = getattr(original, "_hello", None)
        memo = {id(hello.credential): hello.credential} if hello is not None else {}
        return copy.deepcopy(original, memo)

    make.__doc__ = build.__doc__
    return make


def _established_gateway() -> Connection:
    """The gateway end of :func:`established_pair` (fuzz input plays the connector)."""
    return established_pair().gateway


def _established_connector() -> Connection:
    """The connector end of :func:`established_pair` (fuzz input plays the gateway)."""
    return established_pair().connector


established_gateway = snapshot(_established_gateway)
established_connector = snapshot(_established_connector)


SCENARIOS: dict[str, Callable[[], Connection]] = {
    "proto_receive_gateway": fresh_gateway,
    "proto_receive_connector": fresh_connector,
    "proto_established_gateway": established_gateway,
    "proto_established_connector": established_connector,
}


# -- running and checking ------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one way of feeding the input produced."""

    chunks: int
    events: list[Event]
    error: RemoteProtocolError | None
    state: ConnectionState
    output: bytes


def feed(make: Callable[[], Connection], chunks: Iterator[bytes] | list[bytes]) -> Outcome:
    """Feed ``chunks`` to a fresh connection, draining events after each; check invariant 1."""
    conn = make()
    events: list[Event] = []
    error: RemoteProtocolError | None = None
    count = 0
    for chunk in chunks:
        count += 1
        try:
            conn.receive_data(chunk, NOW)
        except RemoteProtocolError as exc:  # anything else propagates: a finding
            error = exc
        while (event := conn.next_event()) is not None:
            events.append(event)
        if error is not None:
            break
    output = conn.data_to_send()
    decode_frames(output)  # whatever a connection sends is whole, well-formed frames
    if error is not None:
        _check_failed(conn, error, events, output)
    else:
        _check_acknowledgements(conn, events)
    return Outcome(count, events, error, conn.state, output)


def _check_failed(conn: Connection, error: RemoteProtocolError, events: list[Event],
                  output: bytes) -> None:
    assert conn.state is ConnectionState.CLOSED, f"state {conn.state} after {error!r}"
    assert events, f"no ConnectionTerminated after {error!r}"
    last = events[-1]
    assert isinstance(last, ConnectionTerminated) and not last.remote, last
    assert last.code == error.code, (last, error)
    goaways = [f for f in decode_frames(output) if f.type == FrameType.GOAWAY]
    assert goaways, f"no GOAWAY queued after {error!r}"
    assert int.from_bytes(goaways[-1].payload[4:8], "big") == error.code, goaways[-1]
    try:
        conn.receive_data(b"", NOW)
    except RemoteProtocolError as again:
        assert again.code == error.code, (again, error)
    else:
        raise AssertionError("receive_data after a protocol error did not raise again")


def _check_acknowledgements(conn: Connection, events: list[Event]) -> None:
    for event in events:
        if isinstance(event, DataReceived):
            conn.acknowledge_received_data(stream_id=event.stream_id,
                                           acknowledged_size=event.flow_controlled_length)


def _describe(outcome: Outcome) -> str:
    return (f"{outcome.chunks} chunk(s): error={outcome.error!r} state={outcome.state.name} "
            f"events={outcome.events}")


def compare(reference: Outcome, other: Outcome) -> None:
    """Assert invariant 2 between the one-byte-per-call run and another run."""
    assert other.events == reference.events, (
        f"events depend on chunking:\n{_describe(reference)}\n{_describe(other)}")
    assert (other.error is None) == (reference.error is None), (
        f"error depends on chunking:\n{_describe(reference)}\n{_describe(other)}")
    if other.error is not None and reference.error is not None:
        assert (other.error.code, other.error.msg) == (reference.error.code,
                                                       reference.error.msg)
    assert other.state is reference.state
    if other.error is None:
        assert other.output == reference.output, "output depends on chunking"


def check(make: Callable[[], Connection], data: bytes) -> Outcome:
    """Run every invariant on ``data`` for the scenario ``make``; return the reference run."""
    data = data[:MAX_INPUT]
    reference = feed(make, (data[i:i + 1] for i in range(len(data))))
    compare(reference, feed(make, [data]))
    if len(data) <= SPLIT_CAP:
        for cut in range(1, len(data)):
            compare(reference, feed(make, [data[:cut], data[cut:]]))
    return reference


def make_harness(scenario: str) -> Callable[[bytes], None]:
    """The libFuzzer entry point for one scenario of :data:`SCENARIOS`."""
    make = SCENARIOS[scenario]

    def harness(data: bytes) -> None:
        check(make, data)

    harness.__name__ = f"fuzz_{scenario}"
    return harness


#: Connection-level codes a GOAWAY may carry; used by the seed generator.
GOAWAY_CODES = tuple(ErrorCode)
