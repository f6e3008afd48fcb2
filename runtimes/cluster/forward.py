"""Requests carried from the node a client reached to the node whose tunnel serves them.

The entry node (no local tunnel for the deployment) asks :class:`RemoteRouting`::

    remote = RemoteRouting(directory, Forwarder(secret, ssl_context=...))
    stream = await remote.open(tenant_id, head, body, account=account)  # None: no node has it
    stream.status, stream.headers          # the peer's answer head
    while (item := await stream.next_data()) is not None:   # StreamFailed if the peer dies
        data, _ = item                     # as GatewayStream.next_data gives it
    stream.reset()                         # the client left: the peer sees it and stops

A node that cannot take the request (connection refused or cut before the request was whole,
or it answers ``tokios-retryable: 1`` because its tunnel went meanwhile or it drains) is left
out and the next one tried, at most :data:`MAX_NODE_ATTEMPTS` in all. Once a peer has the whole
request it is never sent elsewhere: a model must not get a request twice.

The peer's forwarding listener verifies a request with :func:`forwarded_request`: the cluster
secret (``authorization: Bearer ...``, compared in constant time) and what the entry node already
decided (tenant, key, deployment, request id, the key's token limits). The peer serves it from
its LOCAL tunnels only, so a request crosses at most one hop.

The channel is HTTP/1.1, kept alive, over TLS between nodes (plain on loopback between the
worker processes of one machine), one pool of connections per peer.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import ssl
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import orjson

from runtimes.cluster.directory import NodeDirectory
from runtimes.cluster.state import NodeRecord
from runtimes.gateway.limits import Limit, LimitKind
from runtimes.gateway.tunnels import StreamFailed
from runtimes.gateway.usage import Account
from runtimes.netio import UpstreamError, UpstreamPool
from runtimes.tunnel.headers import CONNECTOR_ONLY_HEADERS, RETRYABLE_HEADER
from runtimes.upstream_http import Failure, Received, ResponseHead
from tokios_proto import RequestHead, ResetCode

__all__ = [
    "INTERNAL_HEADERS",
    "MAX_NODE_ATTEMPTS",
    "ForwardFailed",
    "ForwardedRequest",
    "ForwardedStream",
    "Forwarder",
    "RemoteRouting",
    "forwarded_request",
]

#: Headers between nodes: the gateway drops them from what clients send and from answers.
ACCOUNT_HEADER = "tokios-account"
#: Response headers between gateway nodes or from a connector, never passed to a client.
INTERNAL_HEADERS = frozenset({ACCOUNT_HEADER, *CONNECTOR_ONLY_HEADERS})
#: Nodes tried for one request.
MAX_NODE_ATTEMPTS = 3
#: Pools kept open to peers at once (the least recently used one closes beyond).
MAX_PEER_POOLS = 256
#: The largest account header accepted (a few ids and limits).
_MAX_ACCOUNT = 4096
_NODE_LOST = "the gateway node serving this deployment failed before the answer ended"


class ForwardFailed(StreamFailed):
    """The peer did not answer. ``retryable``: the request provably did not start there."""

    def __init__(self, message: str, *, retryable: bool, unreachable: bool = False) -> None:
        super().__init__(message, retryable=retryable)
        #: The node could not be connected to (it may be dead).
        self.unreachable = unreachable


@dataclass(frozen=True, slots=True)
class ForwardedRequest:
    """What the entry node decided, as the peer reads it from a verified request."""

    request_id: str
    account: Account


def _account_header(account: Account, request_id: str) -> str:
    return orjson.dumps({
        "tenant_id": account.tenant_id, "tenant": account.tenant_name,
        "key_id": account.key_id, "deployment": account.deployment, "request_id": request_id,
        "tpm": [[limit.scope, limit.holder, limit.per_minute] for limit in account.token_limits],
    }).decode()


def forwarded_request(headers: Iterable[tuple[str, str]],
                      secret: bytes) -> ForwardedRequest | None:
    """The forwarded request's context when ``headers`` carry the cluster ``secret`` and a
    well-formed account, else None (answer 401: it is not from a node of this gateway)."""
    presented = account_raw = ""
    for name, value in headers:
        if name == "authorization" and not presented:
            presented = value
        elif name == ACCOUNT_HEADER and not account_raw:
            account_raw = value
    if not presented.startswith("Bearer ") or not hmac.compare_digest(
            presented[7:].encode("utf-8", "surrogateescape"), secret):
        return None
    if not account_raw or len(account_raw) > _MAX_ACCOUNT:
        return None
    try:
        raw = orjson.loads(account_raw)
        limits = tuple(Limit(str(scope), str(holder), LimitKind.TOKENS, int(per_minute))
                       for scope, holder, per_minute in raw["tpm"])
        account = Account(tenant_id=str(raw["tenant_id"]), tenant_name=str(raw["tenant"]),
                          key_id=str(raw["key_id"]), deployment=str(raw["deployment"]),
                          token_limits=limits)
        return ForwardedRequest(request_id=str(raw["request_id"])[:64], account=account)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


class ForwardedStream:
    """The peer's answer, read as a :class:`~runtimes.gateway.tunnels.GatewayStream` is."""

    def __init__(self, context: AbstractAsyncContextManager[Any], exchange: Any,
                 head: ResponseHead) -> None:
        self._context = context
        self._exchange = exchange
        self.status = head.status
        self.headers: tuple[tuple[str, str], ...] = tuple(
            (n, v) for n, v in head.headers if n not in INTERNAL_HEADERS and n != "x-request-id")
        self.ended = False

    async def next_data(self) -> tuple[bytes, int] | None:
        """The next piece of the body (no flow-control credit to return), None at its end;
        raises ForwardFailed when the peer's connection broke."""
        if self.ended:
            return None
        try:
            event = await self._exchange.receive(None)
        except UpstreamError:
            self.ended = True
            await self._context.__aexit__(None, None, None)
            raise ForwardFailed(_NODE_LOST, retryable=False) from None
        if event is Received.END:
            self.ended = True
            await self._context.__aexit__(None, None, None)
            return None
        assert isinstance(event, bytes | bytearray | memoryview)
        return bytes(event), 0

    def acknowledge(self, n: int) -> None:
        """Nothing to return: TCP is the flow control between nodes."""

    def reset(self, code: ResetCode = ResetCode.CLIENT_GONE,
              failure: StreamFailed | None = None) -> None:
        """Abandon the answer (the client left): the connection is aborted, so the peer sees
        its client go and stops the model."""
        if not self.ended:
            self.ended = True
            self._exchange.abort()
            asyncio.get_running_loop().create_task(self._context.__aexit__(None, None, None))


class Forwarder:
    """Pools of kept-alive connections to peer nodes (see the module doc)."""

    def __init__(self, secret: bytes, *, ssl_context: ssl.SSLContext | None = None,
                 max_connections_per_peer: int = 1024) -> None:
        self._authorization = "Bearer " + secret.decode("utf-8", "surrogateescape")
        self._ssl = ssl_context
        self._per_peer = max_connections_per_peer
        self._pools: collections.OrderedDict[str, UpstreamPool] = collections.OrderedDict()

    def _pool(self, url: str) -> UpstreamPool:
        pool = self._pools.get(url)
        if pool is None:
            pool = UpstreamPool(url, max_connections=self._per_peer, connect_timeout=3.0,
                                ssl_context=self._ssl if url.startswith("https") else None)
            self._pools[url] = pool
            while len(self._pools) > MAX_PEER_POOLS:
                _, old = self._pools.popitem(last=False)
                asyncio.get_running_loop().create_task(old.aclose())
        self._pools.move_to_end(url)
        return pool

    async def open(self, node: NodeRecord, head: RequestHead, body: bytes, *,
                   account: Account) -> ForwardedStream:
        """Send the request to ``node``; return once its answer head arrived."""
        headers = [*head.headers, ("authorization", self._authorization),
                   (ACCOUNT_HEADER, _account_header(account, head.request_id))]
        target = head.path + (f"?{head.query}" if head.query else "")
        context = self._pool(node.forward_url).exchange(head.method, target, headers, body)
        try:
            exchange = await context.__aenter__()
        except UpstreamError as exc:  # connected or not, the request was not whole there
            raise _unreachable(node, exc) from None
        try:
            event = await exchange.receive(None)
        except UpstreamError as exc:
            await context.__aexit__(None, None, None)
            if exc.failure in _NOT_SENT:  # the pool's resend (the kept-alive connection was
                raise _unreachable(node, exc) from None  # closed) found the node gone
            raise ForwardFailed(_NODE_LOST, retryable=False) from None
        assert isinstance(event, ResponseHead)
        if any(n == RETRYABLE_HEADER and v == "1" for n, v in event.headers):
            exchange.abort()
            await context.__aexit__(None, None, None)
            raise ForwardFailed(f"node {node.node_id} has no tunnel for it", retryable=True)
        return ForwardedStream(context, exchange, event)

    async def query(self, node: NodeRecord, target: str, *, limit: int,
                    timeout: float) -> tuple[int, bytes]:
        """``GET target`` on ``node``, signed with the cluster secret: a question between nodes
        (the admin API's tunnel list), not a client's request. Its status and body (at most
        ``limit`` bytes); ForwardFailed when the node cannot be asked within ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                head, body = await self._pool(node.forward_url).fetch(
                    "GET", target, [("authorization", self._authorization)], limit=limit,
                    timeout=timeout)
        except (UpstreamError, TimeoutError) as exc:
            raise ForwardFailed(f"node {node.node_id} did not answer: {exc or 'timed out'}",
                                retryable=True) from None
        return head.status, body

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()
        self._pools.clear()


#: Failures that show a request was never whole at the peer.
_NOT_SENT = (Failure.CONNECT, Failure.WRITE, Failure.LOCAL)


def _unreachable(node: NodeRecord, exc: UpstreamError) -> ForwardFailed:
    return ForwardFailed(f"node {node.node_id} unreachable: {exc}",
                         retryable=exc.failure in _NOT_SENT,
                         unreachable=exc.failure is Failure.CONNECT)


class RemoteRouting:
    """Which peer takes a request this node cannot serve, and the forwarding to it."""

    def __init__(self, directory: NodeDirectory, forwarder: Forwarder, secret: bytes) -> None:
        self.directory = directory
        self.forwarder = forwarder
        self.secret = secret

    def serves(self, tenant_id: str, deployment: str) -> bool:
        return self.directory.pick(tenant_id, deployment) is not None

    async def open(self, head: RequestHead, body: bytes, *,
                   account: Account) -> ForwardedStream | None:
        """The answer of the first peer that takes the request, None when no peer serves the
        deployment; ForwardFailed when the peers tried all failed (see module doc)."""
        tried: list[str] = []
        failure: ForwardFailed | None = None
        refreshed = False
        while len(tried) < MAX_NODE_ATTEMPTS:
            node = self.directory.pick(account.tenant_id, account.deployment, exclude=tried)
            if node is None and not refreshed:  # none, or none left: perhaps a tunnel just
                refreshed = True                # came up elsewhere (one moved off a node
                await self.directory.refresh()  # that drains)
                node = self.directory.pick(account.tenant_id, account.deployment,
                                           exclude=tried)
            if node is None:
                break
            tried.append(node.node_id)
            try:
                return await self.forwarder.open(node, head, body, account=account)
            except ForwardFailed as exc:
                if not exc.retryable:
                    raise
                if exc.unreachable:
                    self.directory.suspect(node.node_id)
                failure = exc
        if failure is not None:
            raise ForwardFailed(f"no gateway node serving {account.deployment} can take the "
                                "request now", retryable=True)
        return None

    def verify(self, headers: Iterable[tuple[str, str]]) -> ForwardedRequest | None:
        return forwarded_request(headers, self.secret)

    async def aclose(self) -> None:
        await self.forwarder.aclose()
        await self.directory.aclose()
