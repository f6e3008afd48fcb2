"""The stream events every upstream decoder produces and every client encoder consumes.

One vocabulary for all twelve client × backend paths: an upstream decoder turns upstream bytes
into these events (in order), and a client encoder turns each event into client bytes. The
decoders guarantee the ordering rules the encoders rely on:

- tool calls are sequential: ``ToolCallStarted(i)``, any ``ToolCallArgumentsDelta(i)``, then
  ``ToolCallEnded(i)`` before anything else starts; indices count 0, 1, 2 in emission order;
- every call gets at least one arguments delta (``"{}"`` when the upstream sent none);
- exactly one terminal event (``Finished`` or ``UpstreamError``) ends the stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokios_translate._common import ErrorKind, StopReason, Usage


@dataclass(frozen=True, slots=True, kw_only=True)
class TextDelta:
    """A piece of answer text (never empty)."""

    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReasoningDelta:
    """A piece of reasoning / thinking text (never empty)."""

    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallStarted:
    """A tool call begins; its name and id are known (the id may have been generated)."""

    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallArgumentsDelta:
    """A fragment of the JSON-encoded arguments of the current tool call (never empty)."""

    index: int
    fragment: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallEnded:
    """The current tool call is complete; no more fragments will follow for it."""

    index: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Finished:
    """Generation ended normally. Terminal."""

    stop: StopReason
    usage: Usage | None = None
    #: The stop string that matched, when known (``stop`` is then ``STOP_SEQUENCE``).
    stop_sequence: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamError:
    """The stream failed (upstream error line, malformed data, early EOF). Terminal.

    ``message`` is safe to show the client: it never contains prompt or completion text.
    """

    message: str
    kind: ErrorKind = ErrorKind.UPSTREAM


StreamEvent = (
    TextDelta
    | ReasoningDelta
    | ToolCallStarted
    | ToolCallArgumentsDelta
    | ToolCallEnded
    | Finished
    | UpstreamError
)

TERMINAL_EVENTS = (Finished, UpstreamError)
