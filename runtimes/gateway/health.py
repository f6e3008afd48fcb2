"""What the live tunnels say about the upstreams behind them, as the gateway shows it.

    deployment_health(registry.serving(tenant_id, name), name)   # -> DeploymentHealthView
    tunnel_view(tunnel)              # one entry of the admin API's tunnel list (a dict)
    readiness(tunnels, tenants=...)  # the body of GET /readyz

Connectors report each deployment's upstream healthy or not (protocol version 2; healthy until
told otherwise) and, when they know it, the upstream's own model list; each
:class:`~runtimes.gateway.tunnels.Tunnel` keeps the last report. Routing reads
:meth:`Tunnel.is_healthy` directly; these functions build the views: ``/v1/models`` (the
``tokios`` field of each model), ``/readyz``, the admin API's tunnel list and
``tokios-gateway tunnels``. Nothing here reads the store or blocks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runtimes.gateway.admin import time_text
from tokios_proto import ConnectionState

if TYPE_CHECKING:
    from runtimes.gateway.tunnels import Tunnel

__all__ = ["DeploymentHealthView", "deployment_health", "models_extra", "readiness",
           "tunnel_view"]

#: The most upstream model names shown for one deployment (a connector reports at most 1000).
MAX_UPSTREAM_MODELS = 1000


@dataclass(frozen=True, slots=True)
class DeploymentHealthView:
    """One deployment on this gateway: how many live tunnels serve it, how many of those
    report a healthy upstream, and the upstream model names they reported (None: none did)."""

    tunnels: int
    healthy: int
    upstream_models: tuple[str, ...] | None

    @property
    def ready(self) -> bool:
        """Something healthy serves it."""
        return self.healthy > 0

    def as_json(self) -> dict[str, Any]:
        return {"ready": self.ready, "tunnels": self.tunnels, "healthy_tunnels": self.healthy,
                "upstream_models": None if self.upstream_models is None
                else list(self.upstream_models)}


def deployment_health(serving: Iterable[Tunnel], deployment: str) -> DeploymentHealthView:
    """The view of ``deployment`` from the tunnels serving it. The model names are those of
    the healthy tunnels (of all of them when none is healthy), merged and sorted."""
    tunnels = healthy = 0
    healthy_models: set[str] | None = None
    other_models: set[str] | None = None
    for tunnel in serving:
        tunnels += 1
        report = tunnel.health.get(deployment)
        # a tunnel closing (GOAWAY either way) serves nothing new: not counted as healthy
        is_healthy = (report is None or report.healthy) and tunnel.free_streams is not None
        healthy += is_healthy
        if report is not None and report.models is not None:
            if is_healthy:
                healthy_models = (healthy_models or set()).union(report.models)
            else:
                other_models = (other_models or set()).union(report.models)
    models = healthy_models if healthy else other_models
    return DeploymentHealthView(
        tunnels, healthy, None if models is None else tuple(sorted(models)[:MAX_UPSTREAM_MODELS]))


def models_extra(views: Mapping[str, DeploymentHealthView]) -> dict[str, dict[str, Any]]:
    """The ``tokios`` field ``/v1/models`` adds to each model object: whether a connector
    serves it here, whether its upstream is healthy, and the upstream's own model names."""
    return {name: {"tokios": {"served": view.tunnels > 0, "healthy": view.ready,
                              "upstream_models": None if view.upstream_models is None
                              else list(view.upstream_models)}}
            for name, view in views.items()}


def tunnel_view(tunnel: Tunnel) -> dict[str, Any]:
    """One live tunnel as the admin API lists it (never its token or any content)."""
    grant = tunnel.grant
    assert grant is not None
    deployments = []
    for name in tunnel.deployments:
        report = tunnel.health.get(name)
        deployments.append({
            "name": name, "healthy": report is None or report.healthy,
            "reported": report is not None,
            "since": time_text(tunnel.health_since.get(name, tunnel.connected_at)),
            "upstream_models": None if report is None or report.models is None
            else list(report.models)})
    conn = tunnel.conn
    return {
        "session": tunnel.session_id, "tenant": grant.tenant_name,
        "connector_id": tunnel.connector_id, "software_version": tunnel.software_version,
        "protocol_version": conn.version, "connector_token_id": grant.token_id,
        "deployments": deployments,
        "healthy": all(d["healthy"] for d in deployments),
        "rtt_seconds": conn.rtt, "streams_in_flight": len(tunnel.streams),
        "max_streams": conn.max_concurrent_streams,
        "draining": conn.state is not ConnectionState.OPEN,
        "connected_since": time_text(tunnel.connected_at),
    }


def readiness(tunnels: Iterable[Tunnel], *, accepting: bool,
              tenants: Mapping[str, Iterable[str]] | None = None,
              tenant_id: str | None = None) -> dict[str, Any]:
    """The body of ``GET /readyz``.

    Without ``tenants`` (an anonymous probe): the status, the number of live tunnels and how
    many deployments they serve, healthy or not - counts only, never a name. With ``tenants``
    (an admin key: tenant name -> deployment names to show even when nothing serves them), also
    each deployment of those tenants by name (``tenants[name][deployment]``). ``tenant_id``
    limits everything to one tenant's tunnels (a tenant admin key)."""
    live = [t for t in tunnels if t.grant is not None
            and (tenant_id is None or t.grant.tenant_id == tenant_id)]
    serving: dict[tuple[str, str], list[Tunnel]] = {}
    for tunnel in live:
        assert tunnel.grant is not None
        for name in tunnel.deployments:
            serving.setdefault((tunnel.grant.tenant_name, name), []).append(tunnel)
    views = {where: deployment_health(found, where[1]) for where, found in serving.items()}
    healthy = sum(view.ready for view in views.values())
    body: dict[str, Any] = {
        "status": "ready" if accepting else "shutting down", "tunnels": len(live),
        "deployments": {"served": len(views), "healthy": healthy,
                        "unhealthy": len(views) - healthy}}
    if tenants is not None:
        shown: dict[str, dict[str, Any]] = {}
        for tenant, names in tenants.items():
            shown[tenant] = {name: DeploymentHealthView(0, 0, None).as_json() for name in names}
        for (tenant, name), view in sorted(views.items()):
            shown.setdefault(tenant, {})[name] = view.as_json()
        body["tenants"] = {tenant: dict(sorted(d.items())) for tenant, d in sorted(shown.items())}
    return body
