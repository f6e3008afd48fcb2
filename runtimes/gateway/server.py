"""``tokios-gateway serve``: run the gateway until SIGTERM/SIGINT.

``run(options) -> int`` (called by ``runtimes.gateway.cli``) installs the event loop, opens the
store, serves HTTPS (or plain HTTP with ``--insecure-http``) on ``--listen`` with the tunnel
endpoint at ``/v1/tunnel`` (and on ``--tunnel-listen`` if given), prints one line to stderr::

    tokios-gateway listening on https://127.0.0.1:8443 (tunnel: wss://127.0.0.1:8443/v1/tunnel)

and on a signal shuts down gracefully: GOAWAY(NO_ERROR) to every connector, new requests get
503, requests in flight may finish within ``--grace-period``; a stream still open then ends
with the format's in-stream error (``overloaded_error`` and the like); then it exits 0.
:class:`Gateway` is the same thing as an object, for in-process tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import sys

from runtimes.cluster.node import Cluster, cluster_for
from runtimes.gateway.api import GatewayApi
from runtimes.gateway.limits import Limiter, LocalLimiter
from runtimes.gateway.metrics import GatewayMetrics
from runtimes.gateway.options import ListenAddress, ServeOptions
from runtimes.gateway.problems import problem_answer
from runtimes.gateway.redis_inflight import RedisInFlight
from runtimes.gateway.redis_limits import RedisLimiter
from runtimes.gateway.tunnels import TunnelManager
from runtimes.gateway.usage import Accounting, UsageRecorder
from runtimes.gateway.workers import reuse_port_socket, worker_context
from runtimes.logs import configure_logging
from runtimes.netio import HttpServer, ServerConfig, install_loop, server_context
from runtimes.store import AuthCache, SqlStore, StoreError, open_store, redact_url

__all__ = ["Gateway", "run"]

logger = logging.getLogger("tokios.gateway")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class Gateway:
    """A running gateway: ``await start()``, then ``.port`` / ``.tunnel_port``; ``await
    stop(grace)``."""

    def __init__(self, options: ServeOptions, *, auth_ttl: float = 1.0) -> None:
        self.options = options
        #: Set when this process is one of ``serve --workers N`` (runtimes/gateway/workers.py).
        self.worker = worker_context()
        self.store: SqlStore = open_store(options.store_location, create=True)
        done = self.store.migration
        logger.info("store: %s (schema version %d%s)", self.store.location, done.to_version,
                    f", migrated from {done.from_version}" if done.migrated else "")
        self.auth = AuthCache(self.store, ttl=auth_ttl)
        self.tunnels = TunnelManager(self.auth, self.store,
                                     silence_timeout=options.stream_silence_timeout)
        #: With --redis the per-minute limits are shared by every node (else counted here).
        self.redis_limiter = None if options.redis_url is None \
            else RedisLimiter(options.redis_url)
        limiter: Limiter = self.redis_limiter or LocalLimiter()
        #: With --redis a deployment's --max-in-flight holds across every node (else per node).
        self.redis_in_flight = None if options.redis_url is None \
            else RedisInFlight(options.redis_url)
        self.metrics = GatewayMetrics()
        self.cluster: Cluster | None = cluster_for(options, self.worker, self.tunnels)
        self.api = GatewayApi(self.store, self.auth, self.tunnels,
                              max_body_bytes=options.max_body_bytes, auth_ttl=auth_ttl,
                              limiter=limiter, metrics=self.metrics,
                              metrics_token=options.metrics_token,
                              metrics_here=options.metrics_listen is None
                              and self.worker is None,
                              remote=self.cluster.remote if self.cluster else None,
                              notices_to=self.cluster.state if self.cluster else None,
                              cluster_slots=self.redis_in_flight)
        self.metrics.watch(self.tunnels, self.api.admission)
        self.usage = UsageRecorder(self.store, flush_interval=options.usage_flush_interval)
        self.accounting = Accounting(self.usage, self.metrics, limiter)
        self.tunnels.on_usage = self.accounting.usage_reported
        ssl_context = None
        if not options.insecure_http:
            assert options.tls_cert is not None
            ssl_context = server_context(options.tls_cert, options.tls_key)
        self.secure = ssl_context is not None
        config = ServerConfig(shutdown_grace=options.grace_period,
                              header_timeout=options.header_timeout,
                              body_timeout=options.body_timeout,
                              max_header_bytes=options.max_header_bytes,
                              h2_max_header_block=4 * options.max_header_bytes)
        self.server = HttpServer(self.api.handle, ssl_context=ssl_context, config=config,
                                 error_responder=problem_answer)
        self.tunnel_server: HttpServer | None = None
        if options.tunnel_listen is not None:
            self.tunnel_server = HttpServer(self.api.handle_tunnel_only, ssl_context=ssl_context,
                                            config=config, error_responder=problem_answer)
        self.node_server: HttpServer | None = None
        if self.cluster is not None:
            self.node_server = HttpServer(self.api.handle_forwarded,
                                          ssl_context=None if self.cluster.plain
                                          else ssl_context, config=config)
        self.metrics_server: HttpServer | None = None
        if options.metrics_listen is not None:
            self.metrics_server = HttpServer(self.api.serve_metrics, ssl_context=ssl_context,
                                             config=config, error_responder=problem_answer)

    async def start(self) -> None:
        if self.redis_limiter is not None and self.redis_in_flight is not None \
                and self.options.redis_url is not None:
            where = redact_url(self.options.redis_url)
            if all(await asyncio.gather(self.redis_limiter.ping(),
                                        self.redis_in_flight.ping())):
                logger.info("limits and in-flight caps: shared in %s", where)
            else:
                logger.warning("limits and in-flight caps: %s does not answer; counting in "
                               "this process until it does", where)
        self.tunnels.start()
        self.usage.start()
        for server, address, name in (
                (self.server, self.options.listen, "listen"),
                (self.tunnel_server, self.options.tunnel_listen, "tunnel_listen"),
                (self.metrics_server, self.options.metrics_listen, "metrics_listen")):
            if server is None:
                continue
            assert address is not None
            if self.worker is None:
                await server.start(address.host, address.port)
            elif name == "metrics_listen":  # each worker's own metrics: port + index
                await server.start(address.host, address.port + self.worker.index)
            else:  # the ports every worker shares
                shared = ListenAddress(host=address.host, port=self.worker.ports[name])
                await server.start(sock=reuse_port_socket(shared))
        if self.cluster is not None:
            assert self.node_server is not None
            await self.cluster.start(self.node_server, on_notice=self.api.apply_notice)

    @property
    def metrics_port(self) -> int:
        return self.metrics_server.port if self.metrics_server is not None else self.port

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def tunnel_port(self) -> int:
        return self.tunnel_server.port if self.tunnel_server is not None else self.port

    def _address(self, address: ListenAddress, port: int, scheme: str) -> str:
        return f"{scheme}://{_url_host(address.host)}:{port}"

    def banner(self) -> str:
        scheme, ws_scheme = ("https", "wss") if self.secure else ("http", "ws")
        tunnel_address = self.options.tunnel_listen or self.options.listen
        api = self._address(self.options.listen, self.port, scheme)
        tunnel = self._address(tunnel_address, self.tunnel_port, ws_scheme)
        metrics = self._address(self.options.metrics_listen or self.options.listen,
                                self.metrics_port, scheme)
        return (f"tokios-gateway listening on {api} (tunnel: {tunnel}/v1/tunnel, "
                f"metrics: {metrics}/metrics)")

    async def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown (see module doc)."""
        grace = self.options.grace_period if grace is None else grace
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        self.api.accepting = False
        if self.cluster is not None:
            await self.cluster.directory.begin_drain()
        self.api.admission.close("the gateway is shutting down")
        self.tunnels.begin_drain()
        while (self.api.in_flight or self.tunnels.in_flight) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self.tunnels.in_flight:
            # past the grace period: each stream still open ends with the format's error
            # (written by its handler) rather than a cut connection
            self.tunnels.abort_streams()
            until = loop.time() + 1.0
            while self.api.in_flight and loop.time() < until:
                await asyncio.sleep(0.02)
        left = max(0.1, min(1.0, deadline - loop.time()))
        await self.tunnels.close()
        servers = [s for s in (self.server, self.tunnel_server, self.metrics_server,
                               self.node_server) if s]
        await asyncio.gather(*(server.shutdown(left) for server in servers))
        if self.cluster is not None:
            await self.cluster.aclose()
        await self.usage.close()
        if self.redis_limiter is not None:
            await self.redis_limiter.aclose()
        if self.redis_in_flight is not None:
            await self.redis_in_flight.aclose()
        self.store.close()


async def _serve(options: ServeOptions) -> int:
    try:
        gateway = Gateway(options)
    except (StoreError, ssl.SSLError, OSError) as exc:
        what = "the TLS certificate or key" if isinstance(exc, ssl.SSLError) else "startup"
        sys.stderr.write(f"tokios-gateway: {what} failed: {exc}\n")
        return 1
    try:
        await gateway.start()
    except OSError as exc:
        sys.stderr.write(f"tokios-gateway: cannot listen: {exc.strerror or exc}\n")
        gateway.store.close()
        return 1
    if gateway.worker is None:
        sys.stderr.write(gateway.banner() + "\n")
        sys.stderr.flush()
    else:
        logger.info("worker %d of %d serving", gateway.worker.index, gateway.worker.count)
        gateway.worker.signal_ready()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("shutting down: draining for up to %.1fs", options.grace_period)
    await gateway.stop()
    logger.info("stopped")
    return 0


def run(options: ServeOptions) -> int:
    """Serve until SIGTERM/SIGINT; return the exit code (0 after a graceful shutdown)."""
    configure_logging(options.log_level, fmt=options.log_format)
    install_loop(options.loop)
    return asyncio.run(_serve(options))
