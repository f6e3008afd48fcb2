"""Wire codes: frame types, flags, error, reset and reject codes (all ``IntEnum``)."""

from __future__ import annotations

import enum

__all__ = ["ErrorCode", "FrameFlag", "FrameType", "RejectReason", "ResetCode"]


class FrameType(enum.IntEnum):
    """The ``type`` byte of the frame header (docs/protocol.md §3)."""

    #: connector -> gateway, stream 0, JSON: credential, versions, identity, offers, settings.
    HELLO = 0x01
    #: gateway -> connector, stream 0, JSON: version, session id, granted deployments, settings.
    WELCOME = 0x02
    #: gateway -> connector, stream 0, JSON: machine-readable reason, retryable, message.
    REJECT = 0x03
    #: connector -> gateway, stream 0, JSON: a new ``max_concurrent_streams``.
    SETTINGS = 0x04
    #: gateway -> connector, odd stream id, JSON request head: opens the stream.
    OPEN = 0x05
    #: connector -> gateway, JSON response head (status, headers).
    RESPONSE = 0x06
    #: either way, raw body bytes; flag END_STREAM ends the sender's half.
    DATA = 0x07
    #: either way, u32 :class:`ResetCode`: aborts one stream.
    RESET = 0x08
    #: either way, u32 increment; stream 0 = the connection window.
    WINDOW_UPDATE = 0x09
    #: either way, stream 0, 8 opaque bytes to echo.
    PING = 0x0A
    #: answer to PING, stream 0, the same 8 bytes.
    PONG = 0x0B
    #: either way, stream 0: u32 last stream id, u32 :class:`ErrorCode`, utf-8 reason.
    GOAWAY = 0x0C
    #: connector -> gateway, stream 0, JSON (protocol version 2): a stream's token usage or
    #: the health of the connector's upstream.
    REPORT = 0x0D


class FrameFlag(enum.IntFlag):
    """Bits of the 16-bit ``flags`` field."""

    #: DATA only: this frame is the sender's last on the stream.
    END_STREAM = 0x0001
    #: Any type: a receiver that does not know the frame type skips the frame instead of
    #: failing the connection. No frame type defined in versions 1 and 2 sets it.
    IGNORABLE = 0x8000


class ErrorCode(enum.IntEnum):
    """Connection-level codes, carried by GOAWAY and :class:`ConnectionTerminated`."""

    #: Graceful shutdown (drain).
    NO_ERROR = 0x0
    #: The peer broke a rule of this specification.
    PROTOCOL_ERROR = 0x1
    #: The sender hit an internal failure.
    INTERNAL_ERROR = 0x2
    #: The peer overran the connection window or overflowed a window.
    FLOW_CONTROL_ERROR = 0x3
    #: Handshake deadline passed, or the peer was silent longer than ``idle_timeout``.
    TIMEOUT = 0x4
    #: A frame was larger than allowed for its type.
    FRAME_SIZE_ERROR = 0x5
    #: The peer made us queue too many control frames, reports or events (ping flood and the
    #: like).
    EXCESSIVE_LOAD = 0x6
    #: The handshake ended with a REJECT.
    REJECTED = 0x7


class ResetCode(enum.IntEnum):
    """Stream-level codes, carried by RESET and :class:`StreamReset`."""

    #: The client went away or the request was cancelled; stop work on it.
    CANCELLED = 0x1
    #: Same value as CANCELLED, the name a gateway uses when its HTTP client disconnects.
    CLIENT_GONE = 0x1
    #: The connector's upstream model server failed.
    UPSTREAM_FAILED = 0x2
    #: Some deadline on the stream passed.
    TIMED_OUT = 0x3
    #: The stream was not processed at all (over the concurrency limit, after GOAWAY);
    #: safe to retry elsewhere.
    REFUSED = 0x4
    #: A frame on this stream broke the protocol.
    PROTOCOL_ERROR = 0x5
    #: The peer overran the stream window, or overflowed it with WINDOW_UPDATE.
    FLOW_CONTROL_ERROR = 0x6
    #: Internal failure of the sender.
    INTERNAL_ERROR = 0x7
    #: A frame arrived for a half the sender had already ended.
    STREAM_CLOSED = 0x8
    #: The request or response head exceeded ``max_header_block_size``.
    HEADER_TOO_LARGE = 0x9


class RejectReason(enum.StrEnum):
    """Why the gateway rejected a HELLO; the wire carries the lower-case value."""

    BAD_CREDENTIAL = "bad_credential"
    REVOKED = "revoked"
    UNSUPPORTED_VERSION = "unsupported_version"
    DEPLOYMENT_NOT_ALLOWED = "deployment_not_allowed"
    OVERLOADED = "overloaded"
    INTERNAL = "internal"
    #: Any reason this implementation does not know (forward compatibility).
    UNKNOWN = "unknown"


#: Whether retrying (after a back-off) can help, per reason; the REJECT frame says so too.
DEFAULT_RETRYABLE: dict[RejectReason, bool] = {
    RejectReason.BAD_CREDENTIAL: False,
    RejectReason.REVOKED: False,
    RejectReason.UNSUPPORTED_VERSION: False,
    RejectReason.DEPLOYMENT_NOT_ALLOWED: False,
    RejectReason.OVERLOADED: True,
    RejectReason.INTERNAL: True,
    RejectReason.UNKNOWN: True,
}
