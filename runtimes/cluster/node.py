"""One gateway process as a node of a bigger gateway: the pieces, put together.

    cluster = cluster_for(options, worker_context(), tunnel_manager)  # None: a lone gateway
    api = GatewayApi(..., remote=cluster.remote)
    node_server = HttpServer(api.handle_forwarded, ssl_context=None if cluster.plain else ...)
    await cluster.start(node_server)      # listen for forwarded requests, publish, refresh
    ...
    await cluster.directory.begin_drain() # on shutdown: peers stop sending here
    await cluster.aclose()                # withdraw this node

A process is a node when it runs as one of ``serve --workers N`` (its node listener is on
loopback, plain, and the cluster state is the local file unless ``--redis`` is given), or when
it is given ``--node-listen`` (TLS as the API is, unless ``--insecure-http``; Redis shares the
state between machines). What it publishes comes from its tunnels: per tenant, the deployments
they serve and the stream slots free on them.
"""

from __future__ import annotations

import contextlib
import secrets
import ssl
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path

from runtimes.cluster.directory import NodeDirectory
from runtimes.cluster.forward import Forwarder, RemoteRouting
from runtimes.cluster.revocations import NoticeFollower
from runtimes.cluster.state import (
    ClusterState,
    LocalClusterState,
    RedisClusterState,
    RevocationNotice,
)
from runtimes.gateway.options import ListenAddress, ServeOptions
from runtimes.gateway.tunnels import TunnelManager
from runtimes.gateway.workers import WorkerContext
from runtimes.netio import HttpServer, client_context

__all__ = ["Cluster", "cluster_for", "served_by"]


def served_by(tunnels: TunnelManager) -> Mapping[str, Mapping[str, int]]:
    """What ``tunnels`` serve now: tenant id -> deployment -> free stream slots (tunnels that
    take no new stream, and deployments a tunnel reports its model server unhealthy for, are
    left out: peers do not send this node what it would refuse)."""
    serves: dict[str, dict[str, int]] = {}
    for tunnel in tunnels.tunnels:
        grant = tunnel.grant
        free = tunnel.free_streams
        if grant is None or free is None or not tunnel.accepting_streams:
            continue
        mine = serves.setdefault(grant.tenant_id, {})
        for name in tunnel.deployments:
            if tunnel.is_healthy(name):
                mine[name] = mine.get(name, 0) + free
    return serves


class Cluster:
    """This node's state, directory, forwarder and node listener (see the module doc)."""

    def __init__(self, *, state: ClusterState, secret: bytes, listen: ListenAddress,
                 plain: bool, url: str | None, tunnels: TunnelManager,
                 peer_ssl: ssl.SSLContext | None) -> None:
        self.node_id = secrets.token_hex(8)
        #: Shared with the other nodes: records, and the revocation notices.
        self.state = state
        self.notices: NoticeFollower | None = None
        self.listen = listen
        #: True: the node listener speaks plain HTTP (workers on loopback).
        self.plain = plain
        self._url = url
        self.directory = NodeDirectory(state, node_id=self.node_id, forward_url="",
                                       serves=lambda: served_by(tunnels))
        self.remote = RemoteRouting(self.directory, Forwarder(secret, ssl_context=peer_ssl),
                                    secret)
        tunnels.on_served_changed = self.directory.changed
        tunnels.node_id = self.node_id

    async def start(self, node_server: HttpServer,
                    on_notice: Callable[[RevocationNotice], None] | None = None) -> None:
        """Listen for forwarded requests, then publish this node and follow the others (and,
        with ``on_notice``, the revocation notices: runtimes/cluster/revocations.py)."""
        if on_notice is not None:
            self.notices = NoticeFollower(self.state, on_notice)
            with contextlib.suppress(Exception):  # unreachable now: the follower warns later
                await self.notices.poll()  # from now on
            self.notices.start()
        await node_server.start(self.listen.host, self.listen.port)
        port = node_server.port
        if self._url is not None:
            url = self._url
        else:
            host = f"[{self.listen.host}]" if ":" in self.listen.host else self.listen.host
            url = f"{'http' if self.plain else 'https'}://{host}:{port}"
        self.directory.forward_url = url
        await self.directory.beat()
        self.directory.start()

    async def aclose(self) -> None:
        if self.notices is not None:
            await self.notices.aclose()
        await self.remote.aclose()


def cluster_for(options: ServeOptions, worker: WorkerContext | None,
                tunnels: TunnelManager) -> Cluster | None:
    """The node pieces for ``options`` (None when this process is a gateway of its own)."""
    if worker is None and options.node_listen is None:
        return None
    folder: Path | None
    if worker is not None:
        secret = worker.cluster_secret.encode()
        folder = Path(worker.cluster_dir)
    else:
        assert options.cluster_secret is not None  # the CLI asks for it with --node-listen
        secret = options.cluster_secret
        folder = options.data_dir  # the CLI asks for --redis when there is no data dir
    if options.redis_url is not None:
        state: ClusterState = RedisClusterState(options.redis_url)
    else:
        assert folder is not None
        state = LocalClusterState(folder / LocalClusterState.FILENAME)
    offset = worker.index if worker is not None else 0
    if options.node_listen is not None:
        listen = ListenAddress(host=options.node_listen.host,
                               port=options.node_listen.port + offset
                               if options.node_listen.port else 0)
        plain = options.insecure_http
    else:  # a worker without --node-listen: loopback, plain, any port
        listen, plain = ListenAddress(host="127.0.0.1", port=0), True
    url = options.node_url
    if url is not None and offset:  # worker i: the advertised port + i, as it listens
        parts = urllib.parse.urlsplit(url)
        port = (parts.port or (443 if parts.scheme == "https" else 80)) + offset
        host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
        url = urllib.parse.urlunsplit((parts.scheme, f"{host}:{port}", parts.path, "", ""))
    peer_ssl = None if options.insecure_http else client_context(ca_file=options.node_ca)
    return Cluster(state=state, secret=secret, listen=listen, plain=plain, url=url,
                   tunnels=tunnels, peer_ssl=peer_ssl)
