"""Prometheus metrics of the connector (``tokios-connector --metrics-listen HOST:PORT``).

    metrics = ConnectorMetrics()
    metrics.serve("127.0.0.1", 9464)   # a daemon thread (prometheus-client's server); close()
    metrics.stream_started(); ...; metrics.stream_done(deployment, work, now)   # per stream
    metrics.tunnel_connected(True/False); metrics.upstream_health(health)

Both shells use it the same way (``runtimes.connector.session`` calls it). The series:

- ``tokios_connector_upstream_request_duration_seconds{deployment}``: request written to the
  model server -> the stream's end (histogram);
- ``tokios_connector_upstream_time_to_first_byte_seconds{deployment}``: request written -> the
  model server's response head (histogram);
- ``tokios_connector_upstream_errors_total{deployment,kind}``: failed upstream calls, ``kind``
  one of connect, write, closed, protocol, local, timeout, status, too_large;
- ``tokios_connector_streams_in_flight``, ``tokios_connector_tunnel_connected`` (0/1) and
  ``tokios_connector_upstream_healthy{deployment}`` (1, 0; absent before the first check).

Labels carry deployment names (the connector's own ``--model`` names) and fixed kinds only:
never a prompt, a completion, a header, a key or a token. The registry is the connector's own
(not prometheus-client's global one), so two connectors in one process do not mix.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from runtimes.connector.health import UpstreamHealth
    from runtimes.connector.serving import StreamWork

__all__ = ["ConnectorMetrics", "parse_listen"]

logger = logging.getLogger("tokios.connector")

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
TTFB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``PORT`` (loopback) -> ``(host, port)``; raises
    ValueError."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--metrics-listen expects HOST:PORT or PORT, got {value!r}")
    return host, int(port)


class ConnectorMetrics:
    """The connector's series (see the module doc); thread-safe (prometheus-client's)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._server: WSGIServer | None = None
        #: Tunnels up now (a connector holds several; the gauge says whether any is).
        self._tunnels = 0
        reg = self.registry
        self.duration = Histogram(
            "tokios_connector_upstream_request_duration_seconds",
            "Seconds from the request written to the model server to the end of the answer",
            ["deployment"], buckets=DURATION_BUCKETS, registry=reg)
        self.ttfb = Histogram(
            "tokios_connector_upstream_time_to_first_byte_seconds",
            "Seconds from the request written to the model server to its response head",
            ["deployment"], buckets=TTFB_BUCKETS, registry=reg)
        self.errors = Counter(
            "tokios_connector_upstream_errors", "Failed calls to the model server, by kind",
            ["deployment", "kind"], registry=reg)
        self.in_flight = Gauge("tokios_connector_streams_in_flight",
                               "Streams the connector is serving", registry=reg)
        self.connected = Gauge("tokios_connector_tunnel_connected",
                               "1 while the tunnel to the gateway is up", registry=reg)
        self.healthy = Gauge("tokios_connector_upstream_healthy",
                             "1 when the last health check of the model server succeeded",
                             ["deployment"], registry=reg)

    def serve(self, host: str, port: int) -> tuple[str, int]:
        """Serve ``/metrics`` on ``host:port`` in a daemon thread until :meth:`close`; the
        address bound (port 0 asks for a free one). Raises OSError if it cannot listen."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        bound_host, bound_port = server.server_address[:2]
        logger.info("metrics: http://%s:%d/metrics", bound_host, bound_port)
        return str(bound_host), int(bound_port)

    def close(self) -> None:
        """Stop serving (if :meth:`serve` was called) and free the port."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def stream_started(self) -> None:
        self.in_flight.inc()

    def stream_done(self, deployment: str, work: StreamWork | None, now: float) -> None:
        """One stream ended (answered, failed or reset); ``work`` None if it never started."""
        self.in_flight.dec()
        if work is None:
            return
        if work.failure is not None:
            self.errors.labels(deployment, work.failure).inc()
        if (started := work.upstream_started) is not None:
            self.duration.labels(deployment).observe(now - started)
            if work.first_byte is not None:
                self.ttfb.labels(deployment).observe(work.first_byte - started)

    def tunnel_connected(self, up: bool) -> None:
        """A tunnel came up or went (once each): the gauge is 1 while any is up."""
        self._tunnels = max(0, self._tunnels + (1 if up else -1))
        self.connected.set(1 if self._tunnels else 0)

    def upstream_health(self, health: UpstreamHealth) -> None:
        for entry in health.report() or ():
            self.healthy.labels(entry.name).set(1 if entry.healthy else 0)
