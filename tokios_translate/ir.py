"""The internal representation (IR) every codec decodes into and encodes from.

Client codecs (``tokios_translate.clients``) turn a client request into a :class:`Request`;
upstream codecs (``tokios_translate.backends``) turn a :class:`Request` into the backend's body and
the backend's answer into a :class:`Completion`, which the client codec encodes. Everything is
frozen plain data, so a translation is a pure function of its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from ._common import StopReason, ToolOrigin, Usage


@dataclass(frozen=True, slots=True, kw_only=True)
class Text:
    """A piece of text."""

    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Image:
    """An inline image: its media type and raw base64 data (no ``data:`` prefix)."""

    media_type: str
    data_b64: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall:
    """A call the assistant made; ``arguments_json`` is the arguments as a JSON text."""

    id: str
    name: str
    arguments_json: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResult:
    """The result of a tool call, sent back by the client. ``name`` is looked up when known."""

    call_id: str
    name: str | None
    content: tuple[Text | Image, ...]
    is_error: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Reasoning:
    """Reasoning ("thinking") text; ``signature`` is the opaque token a client echoes back."""

    text: str
    signature: str | None = None


Part = Text | Image | ToolCall | ToolResult | Reasoning


class Role(StrEnum):
    """Conversation roles. System text lives in :attr:`Request.system`; tool results are parts of
    user turns (as Anthropic has them), so two roles are enough."""

    USER = "user"
    ASSISTANT = "assistant"


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One conversation turn."""

    role: Role
    parts: tuple[Part, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Tool:
    """A function tool the model may call; ``parameters`` is a JSON Schema object."""

    name: str
    description: str | None = None
    parameters: dict[str, object] = field(default_factory=dict)


class ToolChoiceKind(StrEnum):
    """How the model must use the tools."""

    AUTO = "auto"
    NONE = "none"
    REQUIRED = "required"
    NAMED = "named"


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolChoice:
    """``kind`` plus the tool's name when ``kind`` is NAMED."""

    kind: ToolChoiceKind = ToolChoiceKind.AUTO
    name: str | None = None


class FormatKind(StrEnum):
    """The structured-output mode asked for."""

    TEXT = "text"
    JSON_OBJECT = "json_object"
    JSON_SCHEMA = "json_schema"


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseFormat:
    """Structured output: any JSON, or JSON matching ``schema``."""

    kind: FormatKind
    schema: dict[str, object] | None = None
    name: str | None = None
    strict: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReasoningConfig:
    """Reasoning asked for. ``enabled`` None means "not said" (the backend's default applies)."""

    enabled: bool | None = None
    #: ``low``/``medium``/``high`` (or another level the client named).
    effort: str | None = None
    #: Anthropic ``budget_tokens``; no local backend has an equivalent (documented drop).
    budget_tokens: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Params:
    """Sampling parameters. None means absent: never sent upstream."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    frequency_penalty: float | None = None
    presence_penalty: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """A generation request, whatever format it arrived in."""

    model: str
    system: str | None = None
    messages: tuple[Message, ...] = ()
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = ToolChoice()
    params: Params = Params()
    response_format: ResponseFormat | None = None
    reasoning: ReasoningConfig = ReasoningConfig()
    stream: bool = False
    include_usage: bool = False
    parallel_tool_calls: bool = True
    user: str | None = None
    #: Model-visible tool name -> how the client offered it (Responses namespace and custom
    #: tools); copied into :attr:`StreamContext.tool_origins` to shape the answer.
    tool_origins: dict[str, ToolOrigin] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    """A whole (non-streamed) answer from a backend."""

    parts: tuple[Text | ToolCall | Reasoning, ...]
    stop_reason: StopReason
    usage: Usage
    #: The stop sequence that matched, when the backend says which.
    stop_sequence: str | None = None

