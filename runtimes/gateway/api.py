"""The gateway's HTTP front end: one handler for the API, the probes and ``/v1/tunnel``.

    api = GatewayApi(store, auth_cache, tunnel_manager, max_body_bytes=...)
    server = HttpServer(api.handle, ssl_context=...)

Per request, in order: the endpoint (404/405); the probes and ``/metrics``; under ``/admin/``
the admin HTTP API (runtimes.gateway.admin_api, its own keys and rules); the key (401,
before the body is read, also when expired); for a model endpoint the key's and tenant's
per-minute limits (429, runtimes.gateway.limits); the body (413) and its JSON ``model`` (400);
the deployment visible to the key (404, the same whether it belongs to another tenant or does
not exist); the deployment's cap and fair queue (runtimes.gateway.queue: 429 when full, 503
after the wait); a tunnel serving it whose upstream is healthy (503: none serves it, or every
connector reports its model server unhealthy); then the request goes down the tunnel and the
answer comes back as it arrives. Every answer is counted in the metrics
(runtimes.gateway.metrics). Logs carry method, path, status, deployment, duration and byte
counts, never bodies or keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

import orjson

from runtimes.cluster.forward import (
    INTERNAL_HEADERS,
    ForwardedStream,
    ForwardFailed,
    RemoteRouting,
)
from runtimes.cluster.revocations import CHANGE, announce
from runtimes.cluster.state import ClusterState, RevocationNotice
from runtimes.gateway.admin_api import ADMIN_PREFIX, NODE_TUNNELS_PATH, AdminApi, AdminError
from runtimes.gateway.health import deployment_health, models_extra, readiness
from runtimes.gateway.limits import Limiter, LocalLimiter, limits_of, tokens_limits
from runtimes.gateway.metrics import METRICS_PATH, NONE, GatewayMetrics, endpoint_label, scrape
from runtimes.gateway.problems import error_answer
from runtimes.gateway.queue import (
    Admission,
    ClusterSlots,
    QueuePolicy,
    QueueRefused,
    policy_of,
)
from runtimes.gateway.routing import (
    KNOWN_PATHS,
    EndpointKind,
    answer_format,
    error_format_for,
    find_endpoint,
    model_id_of,
    presented_api_key,
)
from runtimes.gateway.tunnels import GatewayStream, StreamFailed, Tunnel, TunnelManager
from runtimes.gateway.usage import Account
from runtimes.netio import BodyTooLarge, ClientDisconnected, HttpRequest, HttpResponse
from runtimes.store import AuthCache, Store, StoreError, TenantDeployments
from runtimes.tunnel.headers import RETRYABLE_HEADER
from tokios_proto import LocalProtocolError, RequestHead, ResetCode
from tokios_translate import ClientFormat, ErrorKind
from tokios_translate.clients import ollama_client
from tokios_translate.models import list_body, model_body
from tokios_translate.stream.relay import StreamGuard

__all__ = ["MAX_STREAMS_PER_KEY", "TUNNEL_PATH", "GatewayApi", "UpstreamBroken"]

logger = logging.getLogger("tokios.gateway")

TUNNEL_PATH = "/v1/tunnel"
#: Requests one API key may have in flight at once; more get 429.
MAX_STREAMS_PER_KEY = 64
#: Request headers never forwarded to the connector (credentials, hop-by-hop, host).
DROPPED_HEADERS = frozenset({
    "authorization", "x-api-key", "cookie", "host", "connection", "keep-alive",
    "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer", "content-length",
    "proxy-authorization", ":authority", ":method", ":path", ":scheme",
    *INTERNAL_HEADERS,
})
#: The body of ``GET /`` (the base-URL probe).
ROOT_BODY = b"Tokios gateway is running\n"
#: Response headers from the connector that the HTTP layer sets itself, or that are for the
#: gateway only (``tokios-retryable``).
DROPPED_RESPONSE_HEADERS = frozenset({
    "connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer",
    *INTERNAL_HEADERS,
})
#: Connectors a request may be sent to: the first, then up to two others when a connector
#: fails before any byte of the answer (its tunnel lost, a refused stream, or its model
#: server refusing or failing first: the ``tokios-retryable`` answer).
MAX_ATTEMPTS = 3
_MAX_FORWARDED_HEADERS = 64
#: Credentials (by digest) and tenants remembered as "just looked up": at most this many.
_MAX_WARM = 10_000
_T = TypeVar("_T")
_A = TypeVar("_A")


class UpstreamBroken(Exception):  # noqa: N818
    """Raised from the handler after the response head when the stream broke, so the HTTP
    layer resets the h2 stream or closes the h1 connection (a broken, not truncated, answer)."""


class GatewayApi:
    """The request handler of the gateway (see module doc)."""

    def __init__(self, store: Store, auth: AuthCache, tunnels: TunnelManager, *,
                 max_body_bytes: int, max_streams_per_key: int = MAX_STREAMS_PER_KEY,
                 auth_ttl: float = 1.0, limiter: Limiter | None = None,
                 metrics: GatewayMetrics | None = None, metrics_token: str | None = None,
                 metrics_here: bool = True, remote: RemoteRouting | None = None,
                 notices_to: ClusterState | None = None,
                 cluster_slots: ClusterSlots | None = None) -> None:
        self.store = store
        #: The other nodes of this gateway (None: a gateway of one process).
        self.remote = remote
        #: Where a change made through this node's admin API is announced to the others.
        self._notices_to = notices_to
        self.auth = auth
        # A lookup the AuthCache answers from memory takes microseconds: run it inline. Only a
        # lookup that may reach the store (nothing asked for that credential or tenant within
        # half the cache's ttl) goes to a thread, so the event loop never waits on SQLite.
        self._warm_for = auth_ttl / 2
        self._warm: OrderedDict[object, float] = OrderedDict()
        # Request ids are for log correlation, not secrets: a PRNG seeded from the OS
        # (secrets.token_hex costs a getrandom() system call per request).
        self._ids = random.Random()  # noqa: S311 (ids are not secrets)
        self.tunnels = tunnels
        self.max_body_bytes = max_body_bytes
        self.max_streams_per_key = max_streams_per_key
        self._per_key: dict[str, int] = {}
        self.limiter: Limiter = limiter if limiter is not None else LocalLimiter()
        #: The per-deployment caps and queues; told when tunnels gain room. With
        #: ``cluster_slots`` (--redis) a deployment's cap holds across every node.
        self.admission = Admission(tunnels.free_streams, cluster=cluster_slots)
        tunnels.on_capacity = self.admission.capacity_changed
        self.metrics = metrics
        #: ``GET /metrics``: served on this port (else on --metrics-listen), behind this token.
        self.metrics_here = metrics_here and metrics is not None
        self._metrics_token = metrics_token
        #: ``/admin/v1/...``; a change made there is seen by this process at once.
        self.admin = AdminApi(store, auth, tunnels, on_change=self._admin_changed,
                              remote=remote)
        #: False once shutdown began: new API requests get 503.
        self.accepting = True
        #: API requests being answered now.
        self.in_flight = 0

    # ---- helpers -------------------------------------------------------------------------

    @staticmethod
    async def _error(response: HttpResponse, client: ClientFormat, kind: ErrorKind,
                     message: str, request_id: str, *, status: int | None = None,
                     retry_after: str | None = None,
                     extra: tuple[tuple[str, str], ...] = ()) -> int:
        """Answer ``kind`` in ``client``'s envelope. ``status`` wins over the codec's choice
        (Anthropic's codec sends overloaded as 529; the gateway's contract says 503)."""
        final, headers, body = error_answer(client, kind, message, request_id, status=status,
                                            retry_after=retry_after)
        await response.respond(final, [*headers, *extra], body)
        return final

    @staticmethod
    async def _json(response: HttpResponse, status: int, body: bytes, request_id: str) -> int:
        await response.respond(status, [("content-type", "application/json"),
                                        ("x-request-id", request_id)], body)
        return status

    async def _refuse(self, response: HttpResponse, client: ClientFormat, request_id: str,
                      info: dict[str, object], *, reason: str, message: str,
                      status: int = 429, retry_after: str = "1") -> int:
        """Answer a request refused by a limit or the queue (429, or 503 for a wait that
        timed out), counted under ``reason`` in tokios_rate_limited_total."""
        if self.metrics is not None:
            self.metrics.rate_limited(str(info["tenant"]), reason)
        kind = ErrorKind.RATE_LIMITED if status == 429 else ErrorKind.OVERLOADED
        return await self._error(response, client, kind, message, request_id, status=status,
                                 retry_after=retry_after)

    def apply_notice(self, notice: RevocationNotice) -> None:
        """A change made through the admin API here, or announced by another node: drop the
        cached credentials and tenant settings; a revoked connector token's tunnels close at
        once (runtimes/cluster/revocations.py)."""
        if notice.kind != CHANGE:
            logger.info("revocation: %s %s", notice.kind, notice.credential_id[:64])
        self.auth.clear()
        self._warm.clear()
        if notice.kind == "connector_token":
            self.tunnels.close_token(notice.credential_id)

    async def _admin_changed(self, notice: RevocationNotice) -> None:
        """Apply ``notice`` here, then announce it to the other nodes (before the admin API
        answers, so every node has it within one poll of the notices)."""
        self.apply_notice(notice)
        if self._notices_to is not None:
            await announce(self._notices_to, notice)

    async def _lookup(self, warm_key: object, lookup: Callable[[_A], _T], arg: _A) -> _T:
        """``lookup(arg)`` inline if ``warm_key`` was looked up within half the auth ttl (the
        cache holds it), else in a thread (it may read the store)."""
        now = time.monotonic()
        if self._warm.get(warm_key, 0.0) > now:
            return lookup(arg)
        result = await asyncio.to_thread(lookup, arg)
        if self._warm_for > 0:
            self._warm[warm_key] = now + self._warm_for
            self._warm.move_to_end(warm_key)
            while len(self._warm) > _MAX_WARM:
                self._warm.popitem(last=False)
        return result

    # ---- the handler ---------------------------------------------------------------------

    async def handle(self, request: HttpRequest, response: HttpResponse) -> None:
        if request.path == TUNNEL_PATH and request.method == "GET":
            await self._tunnel(request, response)
            return
        if request.path == METRICS_PATH and self.metrics_here:
            await self.serve_metrics(request, response)
            return
        request_id = f"req_{self._ids.getrandbits(96):024x}"
        started = time.monotonic()
        self.in_flight += 1
        info: dict[str, object] = {"status": 0, "deployment": NONE, "tenant": NONE, "sent": 0}
        try:
            await self._handle(request, response, request_id, info)
        except StoreError as exc:  # the database is down (PostgreSQL) or locked past its wait
            if response.started:
                raise
            logger.warning("store unavailable: %s", exc)  # store messages hold no secret
            info["status"] = await self._error(
                response, error_format_for(request.path, request.headers), ErrorKind.OVERLOADED,
                "the gateway cannot reach its key store; retry shortly", request_id,
                status=503, retry_after="1")
        finally:
            self.in_flight -= 1
            ended = time.monotonic()
            status = cast(int, info["status"] or response.status)
            logger.info("%s %s %s deployment=%s bytes_out=%s %.3fs %s", request.method,
                        request.path, status, info["deployment"], info["sent"],
                        ended - started, request_id, extra={"request_id": request_id})
            if self.metrics is not None:
                first_byte = info.get("first_byte")
                forwarded = isinstance(first_byte, float)
                self.metrics.request_done(
                    cast(str, info["tenant"]), cast(str, info["deployment"]),
                    endpoint_label(request.path), status,
                    duration=ended - started if forwarded else None,
                    ttfb=cast(float, first_byte) - started if forwarded else None)

    async def serve_metrics(self, request: HttpRequest, response: HttpResponse) -> None:
        """``GET /metrics`` (see runtimes.gateway.metrics.scrape); the handler of a
        ``--metrics-listen`` port serves it and the probes only."""
        if self.metrics is None or request.path != METRICS_PATH:
            if request.method == "GET" and request.path in ("/healthz", "/readyz"):
                await self.handle(request, response)
            else:
                await response.respond(404, [("content-type", "text/plain")],
                                       b"this port serves only /metrics\n")
            return
        if request.method not in ("GET", "HEAD"):
            await response.respond(405, [("content-type", "text/plain"), ("allow", "GET")],
                                   b"use GET\n")
            return
        answer = scrape(self.metrics, request.headers, request.peer,
                        token=self._metrics_token, local_only=self.metrics_here)
        await response.respond(answer.status, answer.headers, answer.body)

    async def handle_tunnel_only(self, request: HttpRequest, response: HttpResponse) -> None:
        """The handler of a ``--tunnel-listen`` port: ``/v1/tunnel`` and the probes only."""
        if request.path == TUNNEL_PATH and request.method == "GET":
            await self._tunnel(request, response)
        elif request.method == "GET" and request.path in ("/healthz", "/readyz"):
            await self.handle(request, response)
        else:
            await response.respond(404, [("content-type", "text/plain")],
                                   b"this port serves only /v1/tunnel\n")

    async def handle_forwarded(self, request: HttpRequest, response: HttpResponse) -> None:
        """The handler of the node listener: a request another node of this gateway forwarded
        (runtimes/cluster/forward.py), served from this node's own tunnels only, after its
        queue. Anything not signed with the cluster secret gets 401 before its body is read."""
        if request.path == NODE_TUNNELS_PATH and self.remote is not None:
            await self.admin.node_tunnels(request, response, self.remote.secret)
            return
        context = self.remote.verify(request.header_list) if self.remote is not None else None
        endpoint = find_endpoint(request.method, request.path)
        if context is None or endpoint is None or endpoint.kind is not EndpointKind.FORWARD:
            status = 401 if context is None else 404
            await response.respond(status, [("content-type", "application/json")],
                                   b'{"error":"not a forwarded request of this gateway"}')
            return
        account, request_id = context.account, context.request_id
        client, started = endpoint.client, time.monotonic()
        info: dict[str, object] = {"status": 0, "deployment": account.deployment,
                                   "tenant": account.tenant_name, "sent": 0}
        self.in_flight += 1
        try:
            body = await request.body(limit=self.max_body_bytes)
            ticket = await self._wait_with_client(response, self.admission.enter(
                account.tenant_id, account.deployment, account.key_id,
                await self._policy(account.tenant_name, account.deployment)))
            try:
                await self._forward(request, response, request_id=request_id, info=info,
                                    client=client, tenant_id=account.tenant_id,
                                    deployment=account.deployment, body=body,
                                    path=endpoint.path, account=account, local_only=True)
            finally:
                self.admission.leave(ticket)
        except BodyTooLarge:
            info["status"] = await self._error(
                response, client, ErrorKind.REQUEST_TOO_LARGE,
                f"request body exceeds {self.max_body_bytes} bytes", request_id)
        except QueueRefused as refused:
            # this node drains: the request never reached a tunnel here, so the entry node
            # may try another node
            info["status"] = await self._error(
                response, client, ErrorKind.RATE_LIMITED if refused.status == 429
                else ErrorKind.OVERLOADED, str(refused), request_id, status=refused.status,
                retry_after=refused.retry_after,
                extra=((RETRYABLE_HEADER, "1"),) if refused.reason == "shutting_down" else ())
        except ClientDisconnected:
            pass
        finally:
            self.in_flight -= 1
            logger.info("%s %s %s (forwarded) deployment=%s bytes_out=%s %.3fs %s",
                        request.method, request.path, info["status"] or response.status,
                        account.deployment, info["sent"], time.monotonic() - started,
                        request_id, extra={"request_id": request_id})

    async def _policy(self, tenant_name: str, deployment: str) -> QueuePolicy:
        found: TenantDeployments = await self._lookup(
            ("tenant", tenant_name), self.auth.tenant_deployments, tenant_name)
        return policy_of(found.by_name.get(deployment))

    async def _tunnel(self, request: HttpRequest, response: HttpResponse) -> None:
        if not self.accepting:
            await response.respond(503, [("content-type", "text/plain")],
                                   b"the gateway is shutting down\n")
            return
        try:
            ws = await request.accept_websocket(max_message_size=1024 * 1024)
        except Exception:
            await response.respond(426, [("content-type", "text/plain"),
                                         ("upgrade", "websocket")],
                                   b"the tunnel endpoint needs a WebSocket upgrade\n")
            return
        await self.tunnels.serve(ws)

    async def _handle(self, request: HttpRequest, response: HttpResponse, request_id: str,
                      info: dict[str, object]) -> None:
        if request.path.startswith(ADMIN_PREFIX):
            info["status"] = await self.admin.handle(request, response, request_id)
            return
        endpoint = find_endpoint(request.method, request.path)
        if endpoint is None:
            client = error_format_for(request.path, request.headers)
            path = request.path[:-1] if len(request.path) > 1 and request.path.endswith("/") \
                else request.path
            if path in KNOWN_PATHS:
                info["status"] = await self._error(response, client, ErrorKind.INVALID_REQUEST,
                                                   "method not allowed", request_id, status=405)
            else:
                info["status"] = await self._error(response, client, ErrorKind.NOT_FOUND,
                                                   "no such endpoint", request_id)
            return
        if endpoint.kind is EndpointKind.HEALTH:
            info["status"] = await self._json(response, 200, b'{"status":"ok"}', request_id)
            return
        if endpoint.kind is EndpointKind.READY:
            info["status"] = await self._ready(request, response, request_id)
            return
        if endpoint.kind is EndpointKind.ROOT:  # HEAD: the HTTP layer sends no body
            await response.respond(200, [("content-type", "text/plain; charset=utf-8"),
                                         ("x-request-id", request_id)], ROOT_BODY)
            info["status"] = 200
            return
        client = answer_format(request.method, request.path, request.headers)
        key = presented_api_key(request.headers)
        grant = None
        if key is not None:
            grant = await self._lookup(
                hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest(),
                self.auth.get_key_grant, key)
        if grant is None or (grant.valid_until is not None and grant.valid_until <= time.time()):
            info["status"] = await self._error(
                response, client, ErrorKind.AUTHENTICATION,
                "the API key is missing, invalid, expired or revoked", request_id)
            return
        info["tenant"] = grant.tenant_name
        if not self.accepting:
            info["status"] = await self._error(response, client, ErrorKind.OVERLOADED,
                                               "the gateway is shutting down", request_id,
                                               status=503, retry_after="1")
            return
        tenant_deployments: TenantDeployments = await self._lookup(
            ("tenant", grant.tenant_name), self.auth.tenant_deployments, grant.tenant_name)
        visible = grant.deployments if grant.deployments is not None \
            else tenant_deployments.names
        if endpoint.kind is EndpointKind.MODELS:
            names = sorted(visible)
            body = list_body(client, names, created=int(time.time()),
                             extra=self._models_extra(grant.tenant_id, names))
            info["status"] = await self._json(response, 200, body, request_id)
            return
        if endpoint.kind is not EndpointKind.FORWARD and endpoint.kind is not \
                EndpointKind.OLLAMA_SHOW:
            info["status"] = await self._listing(response, endpoint.kind, endpoint.path,
                                                 client=client, visible=visible,
                                                 request_id=request_id,
                                                 tenant_id=grant.tenant_id)
            return
        limits = limits_of(grant) if endpoint.kind is EndpointKind.FORWARD else ()
        if limits:
            refused = await self.limiter.admit(limits)
            if refused is not None:
                info["status"] = await self._refuse(
                    response, client, request_id, info, reason=refused.limit.reason,
                    message=f"rate limit reached: {refused.limit.describe()}",
                    retry_after=refused.retry_after_header)
                return
        try:
            body = await request.body(limit=self.max_body_bytes)
        except BodyTooLarge:
            info["status"] = await self._error(
                response, client, ErrorKind.REQUEST_TOO_LARGE,
                f"request body exceeds {self.max_body_bytes} bytes", request_id)
            return
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            info["status"] = await self._error(response, client, ErrorKind.INVALID_REQUEST,
                                               invalid_json_message(body, exc), request_id)
            return
        model = parsed.get("model") if isinstance(parsed, dict) else None
        if not isinstance(model, str) or not model:
            info["status"] = await self._error(response, client, ErrorKind.INVALID_REQUEST,
                                               "`model` is required", request_id)
            return
        if model not in visible:
            info["status"] = await self._error(
                response, client, ErrorKind.NOT_FOUND,
                f"the model `{model[:100]}` does not exist or you do not have access to it",
                request_id)
            return
        info["deployment"] = model
        if endpoint.kind is EndpointKind.OLLAMA_SHOW:
            body = ollama_client.show_body(created=int(time.time()))
            info["status"] = await self._json(response, 200, body, request_id)
            return
        key_id = grant.key_id
        if self._per_key.get(key_id, 0) >= self.max_streams_per_key:
            info["status"] = await self._refuse(
                response, client, request_id, info, reason="key_concurrency",
                message="too many concurrent requests for this key")
            return
        self._per_key[key_id] = self._per_key.get(key_id, 0) + 1
        try:
            try:
                ticket = await self._wait_with_client(response, self.admission.enter(
                    grant.tenant_id, model, key_id,
                    policy_of(tenant_deployments.by_name.get(model))))
            except QueueRefused as refused:
                info["status"] = await self._refuse(
                    response, client, request_id, info, reason=refused.reason,
                    message=str(refused), status=refused.status, retry_after=refused.retry_after)
                return
            except ClientDisconnected:
                return
            try:  # nothing awaited before _forward opens its stream: the slot is held for it
                await self._forward(request, response, request_id=request_id, info=info,
                                    client=client, tenant_id=grant.tenant_id,
                                    deployment=model, body=body,
                                    path=endpoint.path,
                                    account=Account(grant.tenant_id, grant.tenant_name,
                                                    key_id, model, tokens_limits(limits)))
            finally:
                self.admission.leave(ticket)
        finally:
            left = self._per_key.get(key_id, 1) - 1
            if left:
                self._per_key[key_id] = left
            else:
                self._per_key.pop(key_id, None)

    async def _ready(self, request: HttpRequest, response: HttpResponse,
                     request_id: str) -> int:
        """``/readyz``: 200 while accepting requests, else 503. Anonymous probes get counts
        only; an admin key adds each deployment of its scope by name (see health.readiness)."""
        status = 200 if self.accepting else 503
        tenants: dict[str, frozenset[str]] | None = None
        scope: str | None = None
        if "authorization" in request.headers or "x-api-key" in request.headers:
            try:
                grant = await self.admin.authenticate(request)
            except AdminError as error:
                body = orjson.dumps({"error": {"code": error.code, "message": str(error)}})
                return await self._json(response, error.status, body, request_id)
            assert grant is not None
            tenants, scope = {}, grant.tenant_id
            name = grant.tenant_name
            if name is not None:
                tenants[name] = (await self._lookup(("tenant", name),
                                                    self.auth.tenant_deployments, name)).names
        body = orjson.dumps(readiness(self.tunnels.tunnels, accepting=self.accepting,
                                      tenants=tenants, tenant_id=scope))
        return await self._json(response, status, body, request_id)

    def _models_extra(self, tenant_id: str, names: list[str]) -> dict[str, dict[str, object]]:
        """The ``tokios`` field of each model: served here, healthy, the upstream's models."""
        registry = self.tunnels.registry
        return models_extra({name: deployment_health(registry.serving(tenant_id, name), name)
                             for name in names})

    async def _listing(self, response: HttpResponse, kind: EndpointKind, path: str, *,
                       client: ClientFormat, visible: frozenset[str], request_id: str,
                       tenant_id: str) -> int:
        """Answer what the store alone answers: one model (``/v1/models/{id}``), Ollama's
        ``/api/tags`` and ``/api/version``."""
        created = int(time.time())
        if kind is EndpointKind.MODEL:
            name = model_id_of(path)
            if name not in visible:
                return await self._error(
                    response, client, ErrorKind.NOT_FOUND,
                    f"the model `{name[:100]}` does not exist or you do not have access to it",
                    request_id)
            body = model_body(client, name, created=created,
                              extra=self._models_extra(tenant_id, [name])[name])
            return await self._json(response, 200, body, request_id)
        if kind is EndpointKind.OLLAMA_TAGS:
            body = ollama_client.tags_body(sorted(visible), created=created)
            return await self._json(response, 200, body, request_id)
        return await self._json(response, 200, ollama_client.version_body(), request_id)

    # ---- forwarding ----------------------------------------------------------------------

    def _request_head(self, request: HttpRequest, path: str, deployment: str,
                      request_id: str) -> RequestHead:
        headers = tuple((name, value) for name, value in request.header_list
                        if name not in DROPPED_HEADERS and not name.startswith(":")
                        )[:_MAX_FORWARDED_HEADERS]
        return RequestHead(method=request.method, path=path, query=request.query[:4096],
                           headers=headers, deployment=deployment, request_id=request_id)

    async def _open(self, tenant_id: str, deployment: str, head: RequestHead, body: bytes,
                    tried: list[Tunnel], *, account: Account | None = None,
                    may_retry: bool = False,
                    ) -> tuple[GatewayStream, int, tuple[tuple[str, str], ...]]:
        tunnel = self.tunnels.registry.pick(tenant_id, deployment, exclude=tried)
        if tunnel is None:
            raise LookupError
        tried.append(tunnel)
        try:
            stream = tunnel.open_stream(head, account)
        except LocalProtocolError as exc:
            raise StreamFailed("tunnel cannot open a stream", retryable=True) from exc
        try:
            await stream.send_body(body)
            status, headers = await stream.wait_head()
        except BaseException:
            if stream.failure is None or not stream.failure.retryable:
                stream.reset(ResetCode.CANCELLED)
            raise
        if (may_retry and any(name == RETRYABLE_HEADER for name, _ in headers)
                and self.tunnels.registry.pick(tenant_id, deployment, exclude=tried)):
            # its model server failed before answering, and another connector can take it
            stream.reset(ResetCode.CANCELLED)
            raise StreamFailed("the connector's model server failed before answering",
                               retryable=True, code=ResetCode.UPSTREAM_FAILED)
        return stream, status, headers

    async def _forward(self, request: HttpRequest, response: HttpResponse, *, request_id: str,
                       info: dict[str, object], client: ClientFormat, tenant_id: str,
                       deployment: str, body: bytes, path: str,
                       account: Account | None = None, local_only: bool = False) -> None:
        """Send the request down a local tunnel (the least busy; on another, up to MAX_ATTEMPTS
        in all, while each fails before any byte of its answer), else, unless ``local_only``
        (a request another node forwarded here), to the peer node that serves the deployment."""
        head = self._request_head(request, path, deployment, request_id)
        tried: list[Tunnel] = []
        opened: tuple[GatewayStream | ForwardedStream, int,
                      tuple[tuple[str, str], ...]] | None = None
        failed: StreamFailed | None = None
        for attempt in range(MAX_ATTEMPTS):
            try:
                opened = await self._wait_with_client(response, self._open(
                    tenant_id, deployment, head, body, tried, account=account,
                    may_retry=attempt < MAX_ATTEMPTS - 1))
                break
            except LookupError:
                if attempt == 0 and not tried:
                    served = deployment in self.tunnels.registry.served(tenant_id)
                    if served and self._all_full(tenant_id, deployment):
                        info["status"] = await self._error(
                            response, client, ErrorKind.RATE_LIMITED,
                            f"every connector serving {deployment} is at its limit",
                            request_id, retry_after="1")
                        return
                if failed is not None:  # no other connector: the last one's failure
                    info["status"] = await self._failed(response, client, failed, request_id)
                    return
                break
            except StreamFailed as failure:
                if failure.retryable and attempt < MAX_ATTEMPTS - 1:
                    logger.info("retrying on another connector (%s)", failure)
                    failed = failure
                    continue
                info["status"] = await self._failed(response, client, failure, request_id)
                return
            except ClientDisconnected:
                return
        if opened is None and not tried and not local_only and self.remote is not None \
                and account is not None:
            try:
                remote = await self._wait_with_client(response, self.remote.open(
                    head, body, account=account))
            except ForwardFailed as failure:
                info["status"] = await self._failed(response, client, failure, request_id)
                return
            except ClientDisconnected:
                return
            if remote is not None:
                opened = remote, remote.status, remote.headers
        if opened is None:
            # local tunnels that all report their model server unhealthy (and no peer that
            # could take it) are said as such: "no connector" would send the operator astray
            message = f"the model server behind every connector serving {deployment} is " \
                "unhealthy" if self.tunnels.registry.all_unhealthy(tenant_id, deployment) \
                else f"no connector is serving deployment {deployment}"
            info["status"] = await self._error(
                response, client, ErrorKind.OVERLOADED, message, request_id, status=503,
                retry_after="1", extra=((RETRYABLE_HEADER, "1"),) if local_only else ())
            return
        stream, status, headers = opened
        info["status"] = status
        await self._relay(response, stream, client=client, status=status, headers=headers,
                          request_id=request_id, info=info)

    async def _failed(self, response: HttpResponse, client: ClientFormat, failure: StreamFailed,
                      request_id: str) -> int:
        """Answer a stream that failed before any byte of its body went out: a whole error
        in the client's format (502, or 503 when the gateway is shutting down)."""
        kind, message = failure_error(failure, shutting_down=not self.accepting)
        return await self._error(response, client, kind, message, request_id,
                                 status=503 if kind is ErrorKind.OVERLOADED else None,
                                 retry_after="1" if kind is ErrorKind.OVERLOADED else None)

    def _all_full(self, tenant_id: str, deployment: str) -> bool:
        return any(t.grant is not None and t.grant.tenant_id == tenant_id
                   and deployment in t.deployments and t.full and t.is_healthy(deployment)
                   for t in self.tunnels.tunnels)

    @staticmethod
    async def _wait_with_client(response: HttpResponse, coro: Awaitable[_T]) -> _T:
        """Await ``coro`` in this task; if the client disconnects first, cancel it and raise
        ClientDisconnected (a callback on the disconnect, not a watcher task)."""
        task = asyncio.current_task()
        assert task is not None
        gone = False

        def on_gone() -> None:
            nonlocal gone
            gone = True
            task.cancel()

        if response.disconnected.is_set():
            if asyncio.iscoroutine(coro):
                coro.close()
            raise ClientDisconnected("client went away")
        stop_watching = response.disconnected.on_set(on_gone)
        try:
            return await coro
        except asyncio.CancelledError:
            if gone and task.uncancel() == 0:
                raise ClientDisconnected("client went away") from None
            raise
        finally:
            stop_watching()

    async def _relay(self, response: HttpResponse, stream: GatewayStream | ForwardedStream, *,
                     client: ClientFormat, status: int, headers: tuple[tuple[str, str], ...],
                     request_id: str, info: dict[str, object]) -> None:
        """Pass the answer on as it arrives. The head goes out with the first bytes of the body
        (or at its end), so a stream that fails before any byte gets a whole error answer; one
        that fails later ends, if it is a stream of the client's format, with the format's
        in-stream error and a proper end of body (see stream/relay.py), else it is cut."""
        out_headers = [(n, v) for n, v in headers if n.lower() not in DROPPED_RESPONSE_HEADERS]
        out_headers.append(("x-request-id", request_id))
        content_type = next((v for n, v in headers if n.lower() == "content-type"), "")
        guard = StreamGuard.for_response(client, content_type) if status < 300 else None
        # the client leaving resets the stream at once, so the connector stops the model
        stop_watching = response.disconnected.on_set(
            lambda: None if stream.ended else stream.reset(ResetCode.CLIENT_GONE))
        sent = 0
        started = False
        try:
            try:
                while True:
                    item = await stream.next_data()
                    if item is None:
                        break
                    data, credit = item
                    try:
                        if guard is not None:
                            data = guard.feed(data)
                        if data:
                            if not started:
                                started = True
                                info["first_byte"] = time.monotonic()
                                await response.start(status, out_headers)
                            await response.send(data)
                    finally:
                        stream.acknowledge(credit)
                    sent += len(data)
                    info["sent"] = sent
                tail = guard.finish() if guard is not None else b""
            except StreamFailed as failure:
                if response.disconnected.is_set():
                    return
                if not started:
                    info["status"] = await self._failed(response, client, failure, request_id)
                    return
                what = failure.code.name if failure.code is not None else "tunnel lost"
                if guard is None:
                    logger.warning("answer broke after the response head (%s)", what)
                    raise UpstreamBroken("the connector stream broke") from None
                logger.warning("stream broke after the response head (%s): ended it with an "
                               "in-stream error", what)
                kind, message = failure_error(failure, shutting_down=not self.accepting)
                tail = guard.cut(message, kind)
            except ClientDisconnected:
                stream.reset(ResetCode.CLIENT_GONE)
                return
            try:
                if not started:
                    info["first_byte"] = time.monotonic()
                    await response.start(status, out_headers)
                if tail:
                    await response.send(tail)
                await response.end()
            except ClientDisconnected:
                return
        finally:
            stop_watching()


def invalid_json_message(body: bytes, exc: orjson.JSONDecodeError) -> str:
    """Why ``body`` is not JSON, by position only (the parser's message is not quoted)."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"the body is not valid UTF-8 (byte {bad.start})"
    if not body.strip():
        return "the body is empty; a JSON object is required"
    return f"the body is not valid JSON (line {exc.lineno}, column {exc.colno})"


def failure_error(failure: StreamFailed, *, shutting_down: bool) -> tuple[ErrorKind, str]:
    """The error a client gets for ``failure`` (content-free): an overloaded gateway when it
    is shutting down, an upstream error when the connector went away or reset the stream."""
    if failure.shutting_down or shutting_down:
        return ErrorKind.OVERLOADED, "the gateway is shutting down; retry the request"
    if isinstance(failure, ForwardFailed):  # retryable: nothing started anywhere
        return (ErrorKind.OVERLOADED if failure.retryable else ErrorKind.UPSTREAM), str(failure)
    if failure.code is None:
        return (ErrorKind.UPSTREAM,
                "the connector serving this deployment disconnected before the answer ended")
    if failure.silent_for is not None:
        return ErrorKind.TIMEOUT, (f"the connector serving this deployment sent nothing for "
                                   f"{failure.silent_for:g} s")
    if failure.code is ResetCode.TIMED_OUT:
        return ErrorKind.TIMEOUT, "the connector timed out the answer"
    if failure.code is ResetCode.REFUSED:
        return ErrorKind.OVERLOADED, "the connector refused the request"
    if failure.code is ResetCode.UPSTREAM_FAILED:
        return ErrorKind.UPSTREAM, "the model server behind the connector failed"
    return ErrorKind.UPSTREAM, f"the connector ended the answer ({failure.code.name})"
