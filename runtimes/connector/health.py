"""The model server's health as the connector sees it, without I/O, for both shells.

The connector checks its upstream every ``interval`` seconds with the backend's cheap model-list
call (Ollama ``GET /api/tags``, OpenAI-compatible servers ``GET /v1/models``: see
``tokios_translate.models.model_list_path``), one check at a time, each bounded by
:data:`CHECK_TIMEOUT`. A shell's loop::

    health = UpstreamHealth(backend, deployments, interval=10.0)
    while running:
        wait(health.due_in(now))                      # 0 for the first check
        health.started(now)
        ...GET health.path (answer at most MAX_LIST_BODY bytes, within CHECK_TIMEOUT)...
        changed = health.answered(status, body, now)  # or health.failed(now)
        if changed:
            session.send_health()                     # a REPORT with health.report()

The upstream is healthy when the list answers 2xx; the answer's model names (at most
``MAX_MODELS``) go with the report when the backend gave a readable list. Every deployment of
the connector shares the one upstream, so all are reported alike. A session sends
:meth:`UpstreamHealth.report` after WELCOME (once a check has answered) and on every change.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokios_proto import DeploymentHealth
from tokios_translate import BackendKind
from tokios_translate.models import model_list_path, upstream_model_names

__all__ = ["CHECK_TIMEOUT", "HEALTH_INTERVAL", "MAX_LIST_BODY", "MAX_MODELS", "UpstreamHealth"]

#: Seconds between two checks (``tokios-connector --health-interval``; 0 turns them off).
HEALTH_INTERVAL = 10.0
#: Seconds one check may take (connect, then each read) before it counts as a failure.
CHECK_TIMEOUT = 5.0
#: The largest model-list answer read.
MAX_LIST_BODY = 1024 * 1024
#: The most model names reported (the protocol's bound).
MAX_MODELS = 1000


class UpstreamHealth:
    """The last check's verdict and model list (see the module doc)."""

    __slots__ = ("_deployments", "_due", "_in_flight", "backend", "healthy", "interval",
                 "models", "path", "timeout")

    def __init__(self, backend: BackendKind, deployments: Iterable[str], *,
                 interval: float = HEALTH_INTERVAL, timeout: float = CHECK_TIMEOUT) -> None:
        if interval <= 0:
            raise ValueError("the health interval must be positive")
        self.backend = backend
        self.path = model_list_path(backend)
        self.interval = interval
        self.timeout = min(timeout, interval)
        self._deployments = tuple(deployments)
        #: None until the first check ended.
        self.healthy: bool | None = None
        #: The upstream's model names from the last good answer, or None when unknown.
        self.models: tuple[str, ...] | None = None
        self._due: float | None = None  # None: check at once
        self._in_flight = False

    def due_in(self, now: float) -> float:
        """Seconds until the next check (0: now)."""
        return 0.0 if self._due is None else max(0.0, self._due - now)

    def started(self, now: float) -> None:
        """A check begins (one at a time)."""
        if self._in_flight:
            raise RuntimeError("a health check is already in flight")
        self._in_flight = True
        self._due = now + self.interval

    def answered(self, status: int, body: bytes, now: float) -> bool:
        """The check's answer; True when the report changed (send it)."""
        if not 200 <= status < 300:
            return self.failed(now)
        models = upstream_model_names(self.backend, body, limit=MAX_MODELS)
        return self._ended(True, models if models is not None else self.models)

    def failed(self, now: float) -> bool:
        """The check failed (refused, timed out, broken); True when the report changed."""
        return self._ended(False, self.models)

    def _ended(self, healthy: bool, models: tuple[str, ...] | None) -> bool:
        self._in_flight = False
        changed = healthy != self.healthy or models != self.models
        self.healthy, self.models = healthy, models
        return changed

    def report(self) -> tuple[DeploymentHealth, ...] | None:
        """What to report for each deployment, or None before the first check ended."""
        if self.healthy is None:
            return None
        return tuple(DeploymentHealth(name=name, healthy=self.healthy, models=self.models)
                     for name in self._deployments)
