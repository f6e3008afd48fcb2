"""Prometheus metrics of the gateway, served at ``GET /metrics`` (``prometheus-client``).

    metrics = GatewayMetrics(); metrics.watch(tunnels, admission)
    metrics.request_done(tenant, deployment, endpoint, status, duration=..., ttfb=...)
    metrics.tokens_used(tenant, deployment, input_tokens, output_tokens)         # per usage report
    metrics.rate_limited(tenant, reason)                                         # per refusal
    answer = scrape(metrics, request, token=..., local_only=...)                 # the endpoint

Counters and histograms are plain numbers in dicts by label values, updated from the event
loop's one thread without a lock (a fraction of a microsecond each; prometheus-client's own
locked children cost several microseconds per request); prometheus-client turns them into its
exposition when Prometheus scrapes.
The gauges (tunnels, tunnels per deployment by upstream health, streams in flight, queue
depth, tunnel RTT) cost nothing per request: a
collector reads them from the live tunnels and queues when Prometheus scrapes.

Labels carry tenant and deployment names, the endpoint's path (one of a fixed set; anything
else is ``other``), the status code, a reason and a tunnel's session id - never a key, a token,
a header value, a prompt or a completion. A deployment is named only once the key was allowed
to use it, so arbitrary ``model`` strings cannot add series.
"""

from __future__ import annotations

import bisect
import hmac
import ipaddress
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString

from runtimes.gateway.routing import KNOWN_PATHS, MODEL_PATH_PREFIX

if TYPE_CHECKING:
    from runtimes.gateway.queue import Admission
    from runtimes.gateway.tunnels import TunnelManager

__all__ = ["METRICS_PATH", "GatewayMetrics", "MetricsAnswer", "endpoint_label", "scrape"]

METRICS_PATH = "/metrics"
#: The label of a value not known (no tenant before authentication, no deployment yet).
NONE = "-"
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
TTFB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_ENDPOINTS = frozenset(KNOWN_PATHS)


def endpoint_label(path: str) -> str:
    """A bounded label for a request path: a known endpoint, ``/v1/models/{id}``, ``/admin``
    (the admin API) or ``other``."""
    if path in _ENDPOINTS:
        return path
    if path.startswith("/admin/"):
        return "/admin"
    trimmed = path[:-1] if len(path) > 1 and path.endswith("/") else path
    if trimmed in _ENDPOINTS:
        return trimmed
    if path.startswith(MODEL_PATH_PREFIX):
        return MODEL_PATH_PREFIX + "{id}"
    return "other"


class _Counters:
    """A counter family kept as plain numbers by label values. The gateway updates it from its
    one event-loop thread only (and is scraped from it), so it needs no lock: an increment is
    a dict update, a fraction of prometheus-client's locked child."""

    __slots__ = ("doc", "labels", "name", "values")

    def __init__(self, name: str, doc: str, labels: tuple[str, ...]) -> None:
        self.name, self.doc, self.labels = name, doc, labels
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        values = self.values
        values[key] = values.get(key, 0.0) + amount

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for key, value in sorted(self.values.items()):
            family.add_metric(key, value)
        return family


class _Histograms:
    """A histogram family as plain numbers (see :class:`_Counters`): per label values, the
    count in each bucket (not cumulative; the last one is +Inf) and the sum."""

    __slots__ = ("bounds", "doc", "labels", "name", "series")

    def __init__(self, name: str, doc: str, labels: tuple[str, ...],
                 bounds: tuple[float, ...]) -> None:
        self.name, self.doc, self.labels, self.bounds = name, doc, labels, bounds
        self.series: dict[tuple[str, ...], list[float]] = {}

    def observe(self, key: tuple[str, ...], value: float) -> None:
        counts = self.series.get(key)
        if counts is None:
            counts = self.series[key] = [0.0] * (len(self.bounds) + 2)
        counts[bisect.bisect_left(self.bounds, value)] += 1
        counts[-1] += value

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        edges = [floatToGoString(bound) for bound in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        for key, counts in sorted(self.series.items()):
            cumulative = list(itertools.accumulate(counts[:-1]))
            family.add_metric(key, list(zip(edges, cumulative, strict=True)),
                              sum_value=counts[-1])
        return family


class GatewayMetrics:
    """The gateway's metrics in their own registry (several gateways may share a process).
    Update them from the event loop's thread only (see :class:`_Counters`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self._requests = _Counters(
            "tokios_requests", "API requests answered, by tenant, deployment, endpoint and "
            "status code", ("tenant", "deployment", "endpoint", "status"))
        self._duration = _Histograms(
            "tokios_request_duration_seconds", "Time from a forwarded request's arrival to "
            "the end of its answer", ("tenant", "deployment"), DURATION_BUCKETS)
        self._ttfb = _Histograms(
            "tokios_time_to_first_byte_seconds", "Time from a forwarded request's arrival to "
            "the first byte of its answer", ("tenant", "deployment"), TTFB_BUCKETS)
        self._tokens = _Counters(
            "tokios_tokens", "Tokens reported by connectors, by direction (input or output)",
            ("tenant", "deployment", "direction"))
        self._limited = _Counters(
            "tokios_rate_limited", "Requests refused by a limit or the queue, by reason",
            ("tenant", "reason"))
        self._families = (self._requests, self._duration, self._ttfb, self._tokens,
                          self._limited)
        self.registry.register(self)

    def describe(self) -> Iterable[Metric]:
        return [family.family() for family in self._families]

    def collect(self) -> Iterable[Metric]:
        return [family.family() for family in self._families]

    def watch(self, tunnels: TunnelManager, admission: Admission) -> None:
        """Report the gauges of these tunnels and queues (read at scrape time)."""
        self.registry.register(_LiveCollector(tunnels, admission))

    def request_done(self, tenant: str, deployment: str, endpoint: str, status: int, *,
                     duration: float | None = None, ttfb: float | None = None) -> None:
        """Count one answered request; ``duration``/``ttfb`` for forwarded ones."""
        self._requests.inc((tenant, deployment, endpoint, _STATUS.get(status) or str(status)))
        if duration is not None:
            where = (tenant, deployment)
            self._duration.observe(where, duration)
            if ttfb is not None:
                self._ttfb.observe(where, ttfb)

    def tokens_used(self, tenant: str, deployment: str, input_tokens: int,
                    output_tokens: int) -> None:
        if input_tokens:
            self._tokens.inc((tenant, deployment, "input"), input_tokens)
        if output_tokens:
            self._tokens.inc((tenant, deployment, "output"), output_tokens)

    def rate_limited(self, tenant: str, reason: str) -> None:
        self._limited.inc((tenant, reason))


#: Status codes as label values, made once.
_STATUS = {code: str(code) for code in range(100, 600)}


class _LiveCollector:
    """Gauges read from the live tunnels and queues at scrape time."""

    def __init__(self, tunnels: TunnelManager, admission: Admission) -> None:
        self._tunnels = tunnels
        self._admission = admission

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        tunnels, streams, queued, rtt, serving = self._families()
        names: dict[str, str] = {}
        per_tenant: dict[str, int] = {}
        per_deployment: dict[tuple[str, str], int] = {}
        by_health: dict[tuple[str, str, str], int] = {}
        for tunnel in list(self._tunnels.tunnels):
            grant = tunnel.grant
            if grant is None:
                continue
            names[grant.tenant_id] = grant.tenant_name
            per_tenant[grant.tenant_name] = per_tenant.get(grant.tenant_name, 0) + 1
            for name in tunnel.deployments:
                health = "healthy" if tunnel.is_healthy(name) else "unhealthy"
                where3 = (grant.tenant_name, name, health)
                by_health[where3] = by_health.get(where3, 0) + 1
            for stream in tunnel.streams.values():
                where = (grant.tenant_name, stream.deployment)
                per_deployment[where] = per_deployment.get(where, 0) + 1
            if tunnel.conn.rtt is not None:
                rtt.add_metric([grant.tenant_name, tunnel.session_id], tunnel.conn.rtt)
        for tenant, count in sorted(per_tenant.items()):
            tunnels.add_metric([tenant], count)
        for (tenant, deployment), count in sorted(per_deployment.items()):
            streams.add_metric([tenant, deployment], count)
        for tenant_id, deployment, _in_flight, waiting in self._admission.depths():
            queued.add_metric([names.get(tenant_id, tenant_id), deployment], waiting)
        for (tenant, deployment, health), count in sorted(by_health.items()):
            serving.add_metric([tenant, deployment, health], count)
        return [tunnels, streams, queued, rtt, serving]

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily("tokios_tunnels", "Live connector tunnels, by tenant",
                              labels=["tenant"]),
            GaugeMetricFamily("tokios_streams_in_flight", "Requests on the tunnels now, by "
                              "deployment", labels=["tenant", "deployment"]),
            GaugeMetricFamily("tokios_queue_depth", "Requests waiting for a free connector, "
                              "by deployment", labels=["tenant", "deployment"]),
            GaugeMetricFamily("tokios_tunnel_rtt_seconds", "Round-trip time of each live "
                              "tunnel's last ping", labels=["tenant", "session"]),
            GaugeMetricFamily("tokios_deployment_tunnels", "Live tunnels serving each "
                              "deployment, by the health their connector reports for its "
                              "upstream", labels=["tenant", "deployment", "health"]),
        )


# ---- the endpoint ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricsAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def scrape(metrics: GatewayMetrics, headers: dict[str, str], peer: tuple[str, int] | None, *,
           token: str | None, local_only: bool) -> MetricsAnswer:
    """The answer to ``GET /metrics``: the exposition (OpenMetrics when asked for), 401 without
    the right ``Authorization: Bearer`` token when ``token`` is set, or, with no token and
    ``local_only``, 403 to a client that is not on loopback."""
    if token is not None:
        scheme, _, presented = headers.get("authorization", "").strip().partition(" ")
        good = scheme.lower() == "bearer" and hmac.compare_digest(
            presented.strip().encode("utf-8", "surrogateescape"),
            token.encode("utf-8", "surrogateescape"))
        if not good:
            return MetricsAnswer(401, [("content-type", "text/plain"),
                                       ("www-authenticate", 'Bearer realm="metrics"')],
                                 b"metrics need the bearer token given by --metrics-token\n")
    elif local_only and not _loopback(peer):
        return MetricsAnswer(403, [("content-type", "text/plain")],
                             b"metrics on this port are served to loopback clients only; set "
                             b"--metrics-token, or serve them on --metrics-listen\n")
    encoder, content_type = choose_encoder(headers.get("accept", ""))
    return MetricsAnswer(200, [("content-type", content_type)], encoder(metrics.registry))


def _loopback(peer: tuple[str, int] | None) -> bool:
    if peer is None:
        return False
    try:
        address = ipaddress.ip_address(peer[0].partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback

