"""Tokios tunnel protocol: a pure, I/O-free (sans-IO) state machine.

See docs/protocol.md for the wire format. The entry points are :class:`GatewayConnection`
and :class:`ConnectorConnection`; both take bytes with ``receive_data``, give events with
``next_event`` and output with ``data_to_send`` / ``messages_to_send``.
"""

from ._codes import ErrorCode, FrameFlag, FrameType, RejectReason, ResetCode
from ._config import PROTOCOL_VERSIONS, REPORTS_VERSION, Config, Settings
from ._connection import Connection
from ._connector import ConnectorConnection
from ._errors import FlowControlError, LocalProtocolError, ProtocolError, RemoteProtocolError
from ._events import (
    Accepted,
    ConnectionTerminated,
    DataReceived,
    Event,
    GoAwayReceived,
    HealthReported,
    HelloReceived,
    PongReceived,
    Rejected,
    ResponseReceived,
    SettingsChanged,
    StreamEnded,
    StreamOpened,
    StreamReset,
    UsageReported,
    WindowUpdated,
)
from ._frames import FRAME_VERSION, HEADER_SIZE, Frame, FrameReader, decode_frames, encode_frame
from ._gateway import GatewayConnection
from ._payloads import (
    DeploymentOffer,
    GoAway,
    Hello,
    Reject,
    RequestHead,
    ResponseHead,
    Secret,
    Welcome,
)
from ._reports import DeploymentHealth, HealthReport, UsageReport
from ._state import ConnectionState, StreamState

__all__ = [
    "FRAME_VERSION",
    "HEADER_SIZE",
    "PROTOCOL_VERSIONS",
    "REPORTS_VERSION",
    "Accepted",
    "Config",
    "Connection",
    "ConnectionState",
    "ConnectionTerminated",
    "ConnectorConnection",
    "DataReceived",
    "DeploymentHealth",
    "DeploymentOffer",
    "ErrorCode",
    "Event",
    "FlowControlError",
    "Frame",
    "FrameFlag",
    "FrameReader",
    "FrameType",
    "GatewayConnection",
    "GoAway",
    "GoAwayReceived",
    "HealthReport",
    "HealthReported",
    "Hello",
    "HelloReceived",
    "LocalProtocolError",
    "PongReceived",
    "ProtocolError",
    "Reject",
    "RejectReason",
    "Rejected",
    "RemoteProtocolError",
    "RequestHead",
    "ResetCode",
    "ResponseHead",
    "ResponseReceived",
    "Secret",
    "Settings",
    "SettingsChanged",
    "StreamEnded",
    "StreamOpened",
    "StreamReset",
    "StreamState",
    "UsageReport",
    "UsageReported",
    "Welcome",
    "WindowUpdated",
    "decode_frames",
    "encode_frame",
]
