"""Frame payloads as typed values, and their JSON / binary codecs (docs/protocol.md §4).

Decoders raise :class:`LocalProtocolError` on malformed input; the receive path turns that into
a remote error (h11's trick), so a decoder can also be used to validate one's own output.
"""

from __future__ import annotations

import hmac
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ._codes import ErrorCode, RejectReason
from ._config import PROTOCOL_VERSIONS, Settings
from ._errors import LocalProtocolError

__all__ = [
    "DeploymentOffer", "GoAway", "Hello", "Reject", "RequestHead", "ResponseHead", "Secret",
    "Welcome",
]

Headers = tuple[tuple[str, str], ...]
_U32 = struct.Struct(">I")
_GOAWAY = struct.Struct(">II")
MAX_NAME = 256  # ids, versions and deployment names are short
MAX_NODE_ID = 64  # a gateway node's id (WELCOME ``node_id``)


class Secret:
    """A credential. ``repr``/``str`` never show it; call :meth:`reveal` to use it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise LocalProtocolError("a Secret wraps a str")
        self._value = value

    def reveal(self) -> str:
        """The secret itself: pass it to the credential check, never to a log."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled")


def short_str(obj: Mapping[str, Any], key: str, *, limit: int = MAX_NAME,
              empty: bool = True) -> str:
    """``obj[key]`` as a string of at most ``limit`` characters ("" when missing)."""
    value = obj.get(key, "")
    if not isinstance(value, str) or len(value) > limit or (not empty and not value):
        raise LocalProtocolError(f"field {key} must be a string of at most {limit} characters")
    return value


def json_object(payload: bytes | memoryview, what: str) -> dict[str, Any]:
    """A JSON payload that must be an object (``what`` names the frame in errors)."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise LocalProtocolError(f"{what} payload is not valid JSON") from None
    if not isinstance(obj, dict):
        raise LocalProtocolError(f"{what} payload must be a JSON object")
    return obj


def _headers(value: object) -> Headers:
    if not isinstance(value, list | tuple):
        raise LocalProtocolError("headers must be a list of [name, value] pairs")
    out = []
    for pair in value:
        if (not isinstance(pair, list | tuple) or len(pair) != 2
                or not isinstance(pair[0], str) or not isinstance(pair[1], str)):
            raise LocalProtocolError("each header must be a [name, value] pair of strings")
        out.append((pair[0], pair[1]))
    return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentOffer:
    """A deployment the connector can serve, and the upstream model behind it."""

    name: str
    upstream_model: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or len(self.name) > MAX_NAME:
            raise LocalProtocolError("deployment name must be 1..256 characters")
        if not isinstance(self.upstream_model, str) or len(self.upstream_model) > MAX_NAME:
            raise LocalProtocolError("upstream_model must be at most 256 characters")


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    """What the connector presents: credential, versions, identity and offers."""

    credential: Secret
    connector_id: str
    software_version: str
    deployments: tuple[DeploymentOffer, ...] = ()
    versions: tuple[int, ...] = PROTOCOL_VERSIONS

    def __post_init__(self) -> None:
        if not isinstance(self.credential, Secret):
            raise LocalProtocolError("credential must be a Secret")
        for name in ("connector_id", "software_version"):
            value = getattr(self, name)
            if not isinstance(value, str) or len(value) > MAX_NAME:
                raise LocalProtocolError(f"{name} must be a string of at most 256 characters")
        if not isinstance(self.deployments, tuple) or not all(
                isinstance(d, DeploymentOffer) for d in self.deployments):
            raise LocalProtocolError("deployments must be a tuple of DeploymentOffer")
        if len({d.name for d in self.deployments}) != len(self.deployments):
            raise LocalProtocolError("deployment names must be unique")
        if (not isinstance(self.versions, tuple) or not self.versions or len(self.versions) > 64
                or not all(type(v) is int and 0 < v < 2**31 for v in self.versions)):
            raise LocalProtocolError("versions must be 1..64 integers in 1..2**31-1")


def encode_hello(hello: Hello, proposal: Settings) -> bytes:
    """HELLO payload. This is the only place a credential is revealed onto the wire."""
    return orjson.dumps({
        "credential": hello.credential.reveal(),
        "versions": list(hello.versions),
        "connector_id": hello.connector_id,
        "software_version": hello.software_version,
        "deployments": [{"name": d.name, "upstream_model": d.upstream_model}
                        for d in hello.deployments],
        "settings": proposal.to_json(),
    })


def decode_hello(payload: bytes | memoryview) -> tuple[Hello, Settings]:
    """Parse HELLO into the :class:`Hello` and the connector's proposed :class:`Settings`."""
    obj = json_object(payload, "HELLO")
    versions = obj.get("versions")
    offers = obj.get("deployments", [])
    if not isinstance(versions, list) or not isinstance(offers, list):
        raise LocalProtocolError("HELLO versions and deployments must be lists")
    deployments = []
    for offer in offers:
        if not isinstance(offer, dict):
            raise LocalProtocolError("each HELLO deployment must be an object")
        deployments.append(DeploymentOffer(name=short_str(offer, "name"),
                                           upstream_model=short_str(offer, "upstream_model")))
    hello = Hello(credential=Secret(short_str(obj, "credential", limit=4096)),
                  connector_id=short_str(obj, "connector_id"),
                  software_version=short_str(obj, "software_version"),
                  deployments=tuple(deployments), versions=tuple(versions))
    return hello, Settings.from_json(obj.get("settings", {}))


@dataclass(frozen=True, slots=True, kw_only=True)
class Welcome:
    """The gateway's acceptance: chosen version, session id, granted deployments, settings,
    and the id of the gateway node that accepted (``""``: a gateway of one process)."""

    version: int
    session_id: str
    deployments: tuple[str, ...]
    settings: Settings
    node_id: str = ""

    def __post_init__(self) -> None:
        if type(self.version) is not int or not 0 < self.version < 2**31:
            raise LocalProtocolError("version must be in 1..2**31-1")
        if not isinstance(self.session_id, str) or not 0 < len(self.session_id) <= MAX_NAME:
            raise LocalProtocolError("session_id must be 1..256 characters")
        if not isinstance(self.deployments, tuple) or not all(
                isinstance(d, str) for d in self.deployments):
            raise LocalProtocolError("deployments must be a tuple of names")
        if not isinstance(self.node_id, str) or len(self.node_id) > MAX_NODE_ID:
            raise LocalProtocolError(f"node_id must be at most {MAX_NODE_ID} characters")


def encode_welcome(welcome: Welcome) -> bytes:
    """WELCOME payload; ``node_id`` only when there is one (a lone gateway's is unchanged)."""
    obj = {"version": welcome.version, "session_id": welcome.session_id,
           "deployments": list(welcome.deployments), "settings": welcome.settings.to_json()}
    if welcome.node_id:
        obj["node_id"] = welcome.node_id
    return orjson.dumps(obj)


def decode_welcome(payload: bytes | memoryview) -> Welcome:
    obj = json_object(payload, "WELCOME")
    deployments = obj.get("deployments", [])
    if not isinstance(deployments, list):
        raise LocalProtocolError("WELCOME deployments must be a list")
    return Welcome(version=obj.get("version"), session_id=short_str(obj, "session_id"),  # type: ignore[arg-type]
                   deployments=tuple(deployments),
                   settings=Settings.from_json(obj.get("settings", {})),
                   node_id=short_str(obj, "node_id", limit=MAX_NODE_ID))


@dataclass(frozen=True, slots=True, kw_only=True)
class Reject:
    """The gateway's refusal of a HELLO."""

    reason: RejectReason
    retryable: bool
    message: str = ""
    retry_after: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.reason, RejectReason) or not isinstance(self.retryable, bool):
            raise LocalProtocolError("reason must be a RejectReason and retryable a bool")
        if not isinstance(self.message, str) or len(self.message) > 1024:
            raise LocalProtocolError("message must be at most 1024 characters")
        if self.retry_after is not None and not (
                isinstance(self.retry_after, float) and math.isfinite(self.retry_after)
                and self.retry_after >= 0):
            raise LocalProtocolError("retry_after must be None or a finite float >= 0")


def encode_reject(reject: Reject) -> bytes:
    return orjson.dumps({"reason": reject.reason.value, "retryable": reject.retryable,
                         "message": reject.message, "retry_after": reject.retry_after})


def decode_reject(payload: bytes | memoryview) -> Reject:
    obj = json_object(payload, "REJECT")
    try:
        reason = RejectReason(str(obj.get("reason")))
    except ValueError:
        reason = RejectReason.UNKNOWN
    retryable, retry_after = obj.get("retryable", True), obj.get("retry_after")
    if isinstance(retry_after, int) and not isinstance(retry_after, bool):
        retry_after = float(retry_after)
    return Reject(reason=reason, retryable=retryable, message=short_str(obj, "message", limit=1024),
                  retry_after=retry_after)


def _check_headers(value: object) -> None:
    _headers(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestHead:
    """The request head the gateway sends in OPEN (headers already filtered by the shell)."""

    method: str
    path: str
    query: str = ""
    headers: Headers = ()
    deployment: str = ""
    request_id: str = ""

    def __post_init__(self) -> None:
        for name in ("method", "path", "query", "deployment", "request_id"):
            if not isinstance(getattr(self, name), str):
                raise LocalProtocolError(f"{name} must be a str")
        if not self.method:
            raise LocalProtocolError("method must not be empty")
        if not isinstance(self.headers, tuple):
            raise LocalProtocolError("headers must be a tuple of (name, value) pairs")
        _check_headers(self.headers)


def encode_request_head(head: RequestHead) -> bytes:
    return orjson.dumps({"method": head.method, "path": head.path, "query": head.query,
                         "headers": head.headers, "deployment": head.deployment,
                         "request_id": head.request_id})


def decode_request_head(payload: bytes | memoryview) -> RequestHead:
    obj = json_object(payload, "OPEN")
    big = 1 << 20
    return RequestHead(method=short_str(obj, "method", empty=False),
                       path=short_str(obj, "path", limit=big),
                       query=short_str(obj, "query", limit=big),
                       headers=_headers(obj.get("headers", [])),
                       deployment=short_str(obj, "deployment"),
                       request_id=short_str(obj, "request_id"))


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseHead:
    """The response head the connector sends in RESPONSE."""

    status: int
    headers: Headers = ()

    def __post_init__(self) -> None:
        if type(self.status) is not int or not 100 <= self.status <= 999:
            raise LocalProtocolError("status must be an int in 100..999")
        if not isinstance(self.headers, tuple):
            raise LocalProtocolError("headers must be a tuple of (name, value) pairs")
        _check_headers(self.headers)


def encode_response_head(head: ResponseHead) -> bytes:
    return orjson.dumps({"status": head.status, "headers": head.headers})


def decode_response_head(payload: bytes | memoryview) -> ResponseHead:
    obj = json_object(payload, "RESPONSE")
    return ResponseHead(status=obj.get("status"), headers=_headers(obj.get("headers", [])))  # type: ignore[arg-type]


def encode_settings_update(max_concurrent_streams: int) -> bytes:
    return orjson.dumps({"max_concurrent_streams": max_concurrent_streams})


def decode_settings_update(payload: bytes | memoryview) -> int:
    """SETTINGS payload: the new ``max_concurrent_streams`` (other keys are ignored)."""
    value = json_object(payload, "SETTINGS").get("max_concurrent_streams")
    if type(value) is not int or not 1 <= value < 2**31:
        raise LocalProtocolError("SETTINGS max_concurrent_streams must be in 1..2**31-1")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class GoAway:
    """GOAWAY payload: ``last_stream_id u32 | code u32 | reason utf-8``."""

    last_stream_id: int
    code: ErrorCode | int
    reason: str = ""


def encode_u32(value: int) -> bytes:
    return _U32.pack(value)


def decode_u32(payload: bytes | memoryview, what: str) -> int:
    if len(payload) != 4:
        raise LocalProtocolError(f"{what} payload must be 4 bytes")
    value: int = _U32.unpack(payload)[0]
    return value


def encode_goaway(goaway: GoAway) -> bytes:
    return _GOAWAY.pack(goaway.last_stream_id, int(goaway.code)) + goaway.reason.encode()


def decode_goaway(payload: bytes | memoryview, max_reason: int) -> GoAway:
    if len(payload) < 8 or len(payload) - 8 > max_reason:
        raise LocalProtocolError("GOAWAY payload must be 8 bytes plus a bounded reason")
    last, code = _GOAWAY.unpack_from(payload)
    try:
        reason = bytes(payload[8:]).decode()
        known: ErrorCode | int = ErrorCode(code)
    except UnicodeDecodeError:
        raise LocalProtocolError("GOAWAY reason must be utf-8") from None
    except ValueError:
        known = code
    return GoAway(last_stream_id=last, code=known, reason=reason)
