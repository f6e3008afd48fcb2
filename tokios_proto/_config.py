"""Configuration (local limits and preferences) and the negotiated :class:`Settings`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ._errors import LocalProtocolError

__all__ = ["PROTOCOL_VERSIONS", "REPORTS_VERSION", "Config", "Settings"]

#: Protocol versions this implementation speaks (HELLO ``versions`` / WELCOME ``version``).
#: Version 2 adds the REPORT frame (usage and health reports); otherwise it is version 1.
PROTOCOL_VERSIONS: tuple[int, ...] = (1, 2)
#: The first protocol version with REPORT frames.
REPORTS_VERSION = 2

KIB = 1024
MIB = 1024 * KIB
#: Largest window (and window increment), as in HTTP/2: 2**31 - 1.
MAX_WINDOW = 2**31 - 1
#: Largest stream id: stream ids are odd and at most 2**31 - 1 (docs/protocol.md §6.1).
MAX_STREAM_ID = 2**31 - 1
#: Bounds every negotiated value must respect (docs/protocol.md §6).
MIN_FRAME_SIZE, MAX_FRAME_SIZE = 1 * KIB, 16 * MIB
MIN_WINDOW = 1 * KIB
MIN_HEADER_BLOCK, MAX_HEADER_BLOCK = 1 * KIB, 1 * MIB
MAX_STREAMS = 2**31 - 1


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise LocalProtocolError(f"invalid setting: {what}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Values both ends use after the handshake; the gateway sends them in WELCOME.

    Each is the minimum of the connector's proposal (in HELLO) and the gateway's own
    :class:`Config`. They apply in both directions: each end grants the other
    ``initial_stream_window`` per stream and ``initial_connection_window`` in all, and
    never sends a DATA payload above ``max_frame_size``.
    """

    heartbeat_interval: float = 15.0
    idle_timeout: float = 45.0
    max_concurrent_streams: int = 256
    initial_stream_window: int = 4 * MIB
    initial_connection_window: int = 16 * MIB
    max_frame_size: int = 64 * KIB
    max_header_block_size: int = 32 * KIB

    def __post_init__(self) -> None:
        _check(math.isfinite(self.heartbeat_interval) and self.heartbeat_interval > 0,
               "heartbeat_interval must be > 0")
        _check(math.isfinite(self.idle_timeout) and self.idle_timeout > self.heartbeat_interval,
               "idle_timeout must exceed heartbeat_interval")
        _check(1 <= self.max_concurrent_streams <= MAX_STREAMS, "max_concurrent_streams range")
        _check(MIN_WINDOW <= self.initial_stream_window <= MAX_WINDOW, "initial_stream_window")
        _check(MIN_WINDOW <= self.initial_connection_window <= MAX_WINDOW,
               "initial_connection_window")
        _check(MIN_FRAME_SIZE <= self.max_frame_size <= MAX_FRAME_SIZE, "max_frame_size range")
        _check(MIN_HEADER_BLOCK <= self.max_header_block_size <= MAX_HEADER_BLOCK,
               "max_header_block_size range")

    def to_json(self) -> dict[str, Any]:
        """The wire form: a JSON object with exactly these field names."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: object) -> Settings:
        """Parse the wire form; unknown keys are ignored, missing ones take the default.

        Raises :class:`LocalProtocolError` on a wrong type or out-of-range value (the
        receive path re-raises it as a remote error).
        """
        if not isinstance(obj, dict):
            raise LocalProtocolError("settings must be a JSON object")
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            if field.name not in obj:
                continue
            value = obj[field.name]
            if field.type == "float":
                ok = isinstance(value, int | float) and not isinstance(value, bool)
                value = float(value) if ok else value
            else:
                ok = isinstance(value, int) and not isinstance(value, bool)
            if not ok:
                raise LocalProtocolError(f"settings field {field.name} has the wrong type")
            values[field.name] = value
        return cls(**values)

    def negotiate(self, proposal: Settings) -> Settings:
        """The element-wise minimum of ``self`` (gateway caps) and the connector's proposal."""
        idle = min(self.idle_timeout, proposal.idle_timeout)
        heartbeat = min(self.heartbeat_interval, proposal.heartbeat_interval, idle / 2)
        return Settings(
            heartbeat_interval=heartbeat,
            idle_timeout=idle,
            max_concurrent_streams=min(self.max_concurrent_streams,
                                       proposal.max_concurrent_streams),
            initial_stream_window=min(self.initial_stream_window, proposal.initial_stream_window),
            initial_connection_window=min(self.initial_connection_window,
                                          proposal.initial_connection_window),
            max_frame_size=min(self.max_frame_size, proposal.max_frame_size),
            max_header_block_size=min(self.max_header_block_size,
                                      proposal.max_header_block_size),
        )

    def within(self, proposal: Settings) -> bool:
        """True if no value exceeds the connector's proposal (checked on WELCOME)."""
        mine, theirs = dataclasses.astuple(self), dataclasses.astuple(proposal)
        return all(a <= b for a, b in zip(mine, theirs, strict=True))


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Local preferences and hard limits of one end. Every peer-controlled size has a cap.

    ``settings`` is what this end proposes (connector) or allows at most (gateway).
    """

    #: Proposed / maximum settings; defaults: windows of 4 MiB per stream and 16 MiB per
    #: connection (yamux's 256 KiB is the top throughput complaint, cloudflared uses 6/30 MiB),
    #: 64 KiB frames (the fair scheduler's quantum), 15 s heartbeat, 45 s idle timeout.
    settings: Settings = dataclasses.field(default_factory=Settings)
    #: Versions this end speaks; the highest common one wins.
    versions: tuple[int, ...] = PROTOCOL_VERSIONS
    #: Seconds from start until WELCOME/REJECT (connector) or accept/reject (gateway).
    handshake_timeout: float = 10.0
    #: Largest HELLO / WELCOME / REJECT payload accepted (64 KiB, ample for a few hundred
    #: deployments; the frame is held whole before it is parsed).
    max_handshake_size: int = 64 * KIB
    #: Control frames queued in reply to the peer (PONG, RESET) and not yet taken by the shell;
    #: beyond this the peer is flooding us (HTTP/2's ping/reset floods): EXCESSIVE_LOAD.
    max_pending_control_frames: int = 1024
    #: Events waiting for ``next_event``; a peer sending tiny frames cannot pile up more.
    max_pending_events: int = 100_000
    #: Outstanding PINGs remembered for RTT; older ones are forgotten.
    max_outstanding_pings: int = 16
    #: Largest GOAWAY reason in bytes (longer ones are truncated on send, refused on receive).
    max_goaway_reason: int = 1 * KIB
    #: ``messages_to_send`` packs whole frames into messages of at most this size (a single
    #: frame larger than it still goes alone). Peers should accept WebSocket messages up to
    #: ``max(max_message_size, max_frame_size + 12, max_handshake_size + 12)``.
    max_message_size: int = 256 * KIB
    #: Bytes of REPORT payloads whose events wait for ``next_event``: a connector flooding
    #: reports at a shell that does not keep up gets EXCESSIVE_LOAD, as a PING flood does.
    #: 1 MiB holds thousands of usage reports (~100 bytes each), more than one 256 KiB
    #: message carries, and at least one report of the largest ``max_header_block_size``.
    max_pending_report_bytes: int = 1 * MIB
    #: Streams whose usage report is still awaited (protocol version 2) after they closed.
    #: A draining connection waits for these reports before it closes; beyond this many the
    #: oldest is forgotten, so a peer that never reports costs bounded memory.
    max_unreported_streams: int = 1024

    def __post_init__(self) -> None:
        _check(isinstance(self.settings, Settings), "settings must be a Settings")
        _check(len(self.versions) > 0 and all(isinstance(v, int) and 0 < v < 2**31
                                              for v in self.versions), "versions")
        _check(math.isfinite(self.handshake_timeout) and self.handshake_timeout > 0,
               "handshake_timeout must be > 0")
        _check(1 * KIB <= self.max_handshake_size <= 1 * MIB, "max_handshake_size range")
        _check(self.max_pending_control_frames >= 1, "max_pending_control_frames >= 1")
        _check(self.max_pending_events >= 16, "max_pending_events >= 16")
        _check(self.max_outstanding_pings >= 1, "max_outstanding_pings >= 1")
        _check(0 <= self.max_goaway_reason <= 64 * KIB, "max_goaway_reason range")
        _check(self.max_message_size >= 64, "max_message_size >= 64")
        _check(self.max_pending_report_bytes >= self.settings.max_header_block_size,
               "max_pending_report_bytes >= settings.max_header_block_size")
        _check(self.max_unreported_streams >= 1, "max_unreported_streams >= 1")
