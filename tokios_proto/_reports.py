"""REPORT payloads (protocol version 2, docs/protocol.md §9.3): what a connector tells the
gateway about the work it did and the upstream it serves.

Two kinds, each a JSON object with a ``kind`` field:

* ``usage``: the tokens one stream consumed and generated, sent once after the stream ended;
* ``health``: whether each granted deployment's upstream is healthy, and the model list it
  serves, sent after WELCOME and whenever it changes.

Unknown kinds decode to None (ignored, for forward compatibility) and unknown fields are
ignored. A malformed known kind raises :class:`LocalProtocolError`, which the receive path turns
into a connection error (REPORT travels on stream 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ._config import MAX_STREAM_ID
from ._errors import LocalProtocolError
from ._payloads import MAX_NAME, json_object, short_str

__all__ = ["DeploymentHealth", "HealthReport", "UsageReport"]

#: Token counts are JSON integers a double can hold exactly (any JSON peer can parse them).
MAX_TOKENS = 2**53 - 1
#: The longest model list a health report may carry for one deployment.
MAX_MODELS = 1000


def _count(value: object, name: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_TOKENS:
        raise LocalProtocolError(f"{name} must be an integer in 0..2**53-1")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageReport:
    """The tokens of one stream: ``estimated`` when the backend reported none and the connector
    counted them itself (for example a stream cut short because the client left)."""

    stream_id: int
    input_tokens: int
    output_tokens: int
    estimated: bool = False

    def __post_init__(self) -> None:
        if (type(self.stream_id) is not int or self.stream_id & 1 == 0
                or not 0 < self.stream_id <= MAX_STREAM_ID):
            raise LocalProtocolError("a usage report's stream_id must be odd, 1..2**31-1")
        _count(self.input_tokens, "input_tokens")
        _count(self.output_tokens, "output_tokens")
        if not isinstance(self.estimated, bool):
            raise LocalProtocolError("estimated must be a bool")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentHealth:
    """One deployment's upstream as the connector sees it. ``models`` is the upstream's own
    model list, or None when the connector does not know it."""

    name: str
    healthy: bool
    models: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not 0 < len(self.name) <= MAX_NAME:
            raise LocalProtocolError("deployment name must be 1..256 characters")
        if not isinstance(self.healthy, bool):
            raise LocalProtocolError("healthy must be a bool")
        if self.models is not None and (
                not isinstance(self.models, tuple) or len(self.models) > MAX_MODELS
                or not all(isinstance(m, str) and len(m) <= MAX_NAME for m in self.models)):
            raise LocalProtocolError("models must be None or a tuple of at most 1000 names "
                                     "of at most 256 characters")


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthReport:
    """The health of the connector's deployments (names unique)."""

    deployments: tuple[DeploymentHealth, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.deployments, tuple) or not all(
                isinstance(d, DeploymentHealth) for d in self.deployments):
            raise LocalProtocolError("deployments must be a tuple of DeploymentHealth")
        if len({d.name for d in self.deployments}) != len(self.deployments):
            raise LocalProtocolError("deployment names must be unique in a health report")


Report = UsageReport | HealthReport


def encode_report(report: Report) -> bytes:
    """The REPORT payload of a usage or health report."""
    if isinstance(report, UsageReport):
        return orjson.dumps({"kind": "usage", "stream_id": report.stream_id,
                             "input_tokens": report.input_tokens,
                             "output_tokens": report.output_tokens,
                             "estimated": report.estimated})
    deployments: list[dict[str, Any]] = []
    for each in report.deployments:
        item: dict[str, Any] = {"name": each.name, "healthy": each.healthy}
        if each.models is not None:
            item["models"] = list(each.models)
        deployments.append(item)
    return orjson.dumps({"kind": "health", "deployments": deployments})


def decode_report(payload: bytes | memoryview) -> Report | None:
    """Parse a REPORT payload; None for a kind this version does not know."""
    obj = json_object(payload, "REPORT")
    kind = obj.get("kind")
    if kind == "usage":
        return UsageReport(stream_id=obj.get("stream_id"),  # type: ignore[arg-type]
                           input_tokens=obj.get("input_tokens"),  # type: ignore[arg-type]
                           output_tokens=obj.get("output_tokens"),  # type: ignore[arg-type]
                           estimated=obj.get("estimated", False))
    if kind == "health":
        items = obj.get("deployments")
        if not isinstance(items, list):
            raise LocalProtocolError("a health report's deployments must be a list")
        deployments = []
        for item in items:
            if not isinstance(item, dict):
                raise LocalProtocolError("each deployment of a health report must be an object")
            models = item.get("models")
            if isinstance(models, list):
                models = tuple(models)
            deployments.append(DeploymentHealth(name=short_str(item, "name", empty=False),
                                                healthy=item.get("healthy"),  # type: ignore[arg-type]
                                                models=models))
        return HealthReport(deployments=tuple(deployments))
    return None
