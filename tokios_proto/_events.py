"""Events: what ``Connection.next_event()`` returns. Frozen, slotted, keyword-only dataclasses.

Peer-originated events have past-tense names. No event holds a secret except
:class:`HelloReceived`, whose credential is a :class:`Secret` that never prints.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._codes import ErrorCode, RejectReason, ResetCode
from ._config import Settings
from ._errors import LocalProtocolError
from ._payloads import Headers, Hello, RequestHead
from ._reports import DeploymentHealth

__all__ = [
    "Accepted", "ConnectionTerminated", "DataReceived", "Event", "GoAwayReceived",
    "HealthReported", "HelloReceived", "PongReceived", "Rejected", "ResponseReceived",
    "SettingsChanged", "StreamEnded", "StreamOpened", "StreamReset", "UsageReported",
    "WindowUpdated",
]


def _stream_id(value: int, *, allow_zero: bool = False) -> None:
    if type(value) is not int or not (0 if allow_zero else 1) <= value < 2**32:
        raise LocalProtocolError("stream_id out of range")


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base class of all events."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HelloReceived(Event):
    """Gateway: a connector said HELLO. Check ``hello.credential`` (it is a :class:`Secret`),
    then call ``accept(...)`` or ``reject(...)`` before ``handshake_timeout`` runs out."""

    hello: Hello
    #: The version that ``accept`` will choose (the highest common one).
    version: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted(Event):
    """Connector: the gateway accepted; the connection is OPEN. ``node_id`` names the gateway
    node that accepted (``""`` from a gateway of one process or an older gateway): two tunnels
    with the same non-empty ``node_id`` end on the same node."""

    session_id: str
    version: int
    deployments: tuple[str, ...]
    settings: Settings
    node_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejected(Event):
    """Connector: the gateway refused; a :class:`ConnectionTerminated` follows.
    Reconnect only if ``retryable``, not before ``retry_after`` seconds if given."""

    reason: RejectReason
    retryable: bool
    message: str
    retry_after: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SettingsChanged(Event):
    """Gateway: the connector changed ``max_concurrent_streams``; ``settings`` is the result."""

    settings: Settings


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamOpened(Event):
    """Connector: the gateway opened a stream. Call ``send_response`` then ``send_data``."""

    stream_id: int
    head: RequestHead

    def __post_init__(self) -> None:
        _stream_id(self.stream_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseReceived(Event):
    """Gateway: the response head of a stream arrived."""

    stream_id: int
    status: int
    headers: Headers

    def __post_init__(self) -> None:
        _stream_id(self.stream_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class DataReceived(Event):
    """Body bytes arrived. When they are consumed, call
    ``acknowledge_received_data(stream_id=..., acknowledged_size=flow_controlled_length)``
    to return the credit."""

    stream_id: int
    data: bytes
    flow_controlled_length: int

    def __post_init__(self) -> None:
        _stream_id(self.stream_id)

    def __repr__(self) -> str:  # never show body bytes (prompts / completions)
        return (f"DataReceived(stream_id={self.stream_id}, data=<{len(self.data)} bytes>, "
                f"flow_controlled_length={self.flow_controlled_length})")


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamEnded(Event):
    """The peer ended its half of the stream: no more data will come on it."""

    stream_id: int

    def __post_init__(self) -> None:
        _stream_id(self.stream_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamReset(Event):
    """The stream is closed abnormally. ``remote`` is True if the peer sent the RESET, False
    if this end reset it because the peer broke a stream rule (the RESET is queued)."""

    stream_id: int
    code: ResetCode
    remote: bool = True

    def __post_init__(self) -> None:
        _stream_id(self.stream_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowUpdated(Event):
    """Send credit grew (stream 0 = connection): check ``available_to_send`` again."""

    stream_id: int
    delta: int

    def __post_init__(self) -> None:
        _stream_id(self.stream_id, allow_zero=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class PongReceived(Event):
    """A PING of ours was answered after ``rtt`` seconds (also in ``Connection.rtt``)."""

    rtt: float


@dataclass(frozen=True, slots=True, kw_only=True)
class GoAwayReceived(Event):
    """The peer will take no new streams. Streams above ``last_stream_id`` that this end opened
    were not processed and are reported as ``StreamReset(code=REFUSED)`` right after."""

    last_stream_id: int
    code: ErrorCode | int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageReported(Event):
    """Gateway (protocol version 2): the connector's count of one stream's tokens, at most
    once per stream and possibly after the stream closed. ``estimated`` means the backend gave
    no count and the connector estimated it (for example after the client left)."""

    stream_id: int
    input_tokens: int
    output_tokens: int
    estimated: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthReported(Event):
    """Gateway (protocol version 2): the connector's view of its upstream, one entry per
    granted deployment it reported on (entries for other names are dropped). Replaces what
    the previous report said about those deployments."""

    deployments: tuple[DeploymentHealth, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionTerminated(Event):
    """Always the last event: the connection is CLOSED. Flush ``data_to_send()`` and close
    the transport. Streams still open are dead (no per-stream events follow)."""

    code: ErrorCode | int
    reason: str
    remote: bool
