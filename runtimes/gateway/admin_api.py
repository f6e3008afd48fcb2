"""The admin HTTP API: ``/admin/v1/...``, the admin commands over HTTPS, for admin keys.

    admin = AdminApi(store, auth_cache, tunnel_manager, on_change=...)
    status = await admin.handle(request, response, request_id)   # from GatewayApi, any /admin/
    grant = await admin.authenticate(request)                     # /readyz's detailed view

Per request, in order: the route (404 ``not_found``, 405 ``method_not_allowed``); the admin
key from ``Authorization: Bearer tkadm-...`` (401 ``unauthenticated``: none, unknown, revoked,
or an API key or connector token, which are never admin keys), before anything else is read;
the scope: an operator key may do everything, a tenant admin key only its tenant's objects -
another tenant's tenant, deployment, key or token is ``404 not_found`` with the message a
missing one gets, and an operator-only action on its own tenant is ``403 forbidden``; the query
and the body (413 ``too_large`` over 256 KiB, 400 ``invalid`` for bad JSON, an unknown field
or a value of the wrong type); then the admin command itself (runtimes.gateway.admin, in a
worker thread), whose JSON is the CLI's ``--json`` output. Store errors map to 404
``not_found``, 409 ``already_exists``, 400 ``invalid``, 422 ``limit_exceeded`` and 503
``store_error``. Every answer is JSON (errors ``{"error": {"code", "message"}}``), with
``cache-control: no-store`` (creations carry a secret, shown once).

Routes (see docs/operations.md, "The admin HTTP API"): ``whoami``; ``tenants`` (list, create),
``tenants/{tenant}`` (get, change limits), ``tenants/{tenant}/deployments[/{name}]``,
``tenants/{tenant}/keys``, ``tenants/{tenant}/connector-tokens``, ``keys/{id}`` (get, change,
``/rotate``, ``/revoke``), ``connector-tokens/{id}`` (get, ``/revoke``), ``usage`` and
``tunnels`` (the live tunnels of this gateway process). Admin keys themselves are managed
only with the CLI on the gateway host (``tokios-gateway admin-key``).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote

import orjson

from runtimes.cluster.revocations import CHANGE, notice_for
from runtimes.cluster.state import RevocationNotice
from runtimes.gateway import admin
from runtimes.gateway.health import tunnel_view
from runtimes.gateway.routing import presented_api_key
from runtimes.gateway.tunnels import StreamFailed
from runtimes.netio import BodyTooLarge, HttpRequest, HttpResponse
from runtimes.store import (
    AdminGrant,
    AlreadyExists,
    AuthCache,
    InvalidName,
    LimitExceeded,
    NotFound,
    Store,
    StoreError,
)
from runtimes.store.base import (
    API_KEY_PREFIX,
    CONNECTOR_TOKEN_ID_PREFIX,
    CONNECTOR_TOKEN_PREFIX,
    KEY_ID_PREFIX,
    MAX_DEPLOYMENTS_PER_CREDENTIAL,
    MAX_RATE,
    record_id_shown,
    validate_count,
    validate_tenant_name,
)

if TYPE_CHECKING:
    from runtimes.cluster.forward import RemoteRouting
    from runtimes.cluster.state import NodeRecord
    from runtimes.gateway.tunnels import Tunnel, TunnelManager

__all__ = ["ADMIN_PREFIX", "NODE_TUNNELS_PATH", "AdminApi"]

logger = logging.getLogger("tokios.gateway")

#: Every path under this is the admin API's (its 404s included).
ADMIN_PREFIX = "/admin/"
_VERSION_PREFIX = "/admin/v1/"
MAX_BODY_BYTES = 256 * 1024
MAX_PATH_LENGTH = 1024
MAX_QUERY_LENGTH = 2048
_MAX_STRING = 1024
#: On the node listener: one node asks another for its live tunnels (the cluster secret).
NODE_TUNNELS_PATH = "/v1/node/tunnels"
#: How long a node waits for each peer's tunnel list, and the most it reads of one.
PEER_TIMEOUT = 3.0
MAX_PEER_ANSWER = 32 * 1024 * 1024


class AdminError(Exception):
    """An answer other than success: HTTP status, error code, message."""

    def __init__(self, status: int, code: str, message: str,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers


_STORE_ERRORS: dict[type[StoreError], tuple[int, str]] = {
    NotFound: (404, "not_found"), AlreadyExists: (409, "already_exists"),
    InvalidName: (400, "invalid"), LimitExceeded: (422, "limit_exceeded")}


# ---- values from the body and the query -----------------------------------------------------

Convert = Callable[[str, Any], Any]


def _invalid(what: str, expected: str) -> AdminError:
    return AdminError(400, "invalid", f"`{what}` must be {expected}")


def _string(what: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > _MAX_STRING:
        raise _invalid(what, f"a string of at most {_MAX_STRING} characters")
    return value


def _optional_string(what: str, value: Any) -> str | None:
    return None if value is None else _string(what, value)


def _names(what: str, value: Any) -> list[str] | None:
    """A list of deployment names, or null (all of the tenant's)."""
    if value is None:
        return None
    if not isinstance(value, list) or not 0 < len(value) <= MAX_DEPLOYMENTS_PER_CREDENTIAL:
        raise _invalid(what, f"a list of 1 to {MAX_DEPLOYMENTS_PER_CREDENTIAL} names")
    return [_string(what, name) for name in value]


def _required_names(what: str, value: Any) -> list[str]:
    names = _names(what, value)
    if names is None:
        raise _invalid(what, "a list of deployment names")
    return names


def _count(what: str, value: Any) -> int | None:
    """A whole number or null (the store checks the range)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise _invalid(what, "a whole number or null")
    return value


def _parsed(parse: Callable[[str], Any], what: str, text: str) -> Any:
    try:
        return parse(text)
    except argparse.ArgumentTypeError as exc:
        raise AdminError(400, "invalid", f"`{what}`: {exc}") from None


def _duration(what: str, value: Any) -> float | None:
    """Seconds: a number, or a string such as ``90s``, ``1h30m``, ``30d``; or null."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and len(value) <= 40:
        return float(_parsed(admin.parse_duration, what, value))
    raise _invalid(what, "a number of seconds or a duration such as \"90s\" or \"30d\"")


def _seconds(what: str, value: Any) -> float:
    """A duration that cannot be null."""
    seconds = _duration(what, value)
    if seconds is None:
        raise _invalid(what, "a number of seconds or a duration such as \"1h\"")
    return seconds


def _time(what: str, value: Any) -> float | None:
    """An ISO 8601 date or time (UTC unless it has an offset), or null."""
    if value is None:
        return None
    if isinstance(value, str) and len(value) <= 40:
        return float(_parsed(admin.parse_time, what, value))
    raise _invalid(what, "a date or time such as \"2026-12-31\" or \"2026-12-31T18:00:00Z\"")


def _since(what: str, value: Any) -> float:
    return float(_parsed(admin.parse_since, what, _string(what, value)))


def _grouping(what: str, value: Any) -> str:
    if value not in ("key", "deployment", "day"):
        raise _invalid(what, "key, deployment or day")
    return str(value)


# ---- routes --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    """One admin request, as a handler sees it (``params`` from the path, ``args`` from the
    body and query, already converted)."""

    store: Store
    grant: AdminGrant
    params: Mapping[str, str]
    args: dict[str, Any]
    #: The live tunnels, for a route that runs on the event loop.
    tunnels: Sequence[Tunnel] = ()

    def namespace(self, defaults: Mapping[str, Any] | None = None,
                  **more: Any) -> argparse.Namespace:
        """Arguments for an admin command: ``defaults``, then the path's, the body's and
        ``more``. A body field left out stays out (the command keeps that setting)."""
        return argparse.Namespace(**{**(defaults or {}), **self.params, **self.args, **more})


Handler = Callable[[Call], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    #: Path segments after /admin/v1/: literals and ``{tenant}``, ``{key_id}``,
    #: ``{token_id}``, ``{name*}`` (a deployment: the rest of the path, as it may hold ``/``).
    pattern: tuple[str, ...]
    handler: Handler
    #: Body fields: name -> (argument name, converter).
    fields: Mapping[str, tuple[str, Convert]] = field(default_factory=dict)
    #: Body fields that must be given.
    required: tuple[str, ...] = ()
    query: Mapping[str, tuple[str, Convert]] = field(default_factory=dict)
    operator_only: bool = False
    status: int = 200
    #: Runs on the event loop (reads the live tunnels) instead of a worker thread.
    live: bool = False


def _own_tenant(call: Call, given: str | None) -> str | None:
    """The tenant a listing is about: ``given`` (checked against the scope), else the tenant
    admin's own (None for an operator: every tenant)."""
    if given is not None:
        _check_tenant(call.grant, given)
        return given
    return call.grant.tenant_name


def _check_tenant(grant: AdminGrant, tenant: str) -> None:
    """NotFound, as for a tenant that does not exist, unless ``grant`` may see ``tenant``."""
    if not grant.operator:
        validate_tenant_name(tenant)
        if tenant != grant.tenant_name:
            raise NotFound(f"no tenant named {tenant!r}")


def _check_key(call: Call) -> None:
    info = call.store.get_key(call.params["key_id"])
    if not call.grant.operator and info.tenant_id != call.grant.tenant_id:
        raise NotFound(f"no API key with id {record_id_shown(info.id, KEY_ID_PREFIX)}")


def _check_token(call: Call) -> None:
    info = call.store.get_connector_token(call.params["token_id"])
    if not call.grant.operator and info.tenant_id != call.grant.tenant_id:
        raise NotFound("no connector token with id "
                       f"{record_id_shown(info.id, CONNECTOR_TOKEN_ID_PREFIX)}")


def _whoami(call: Call) -> dict[str, Any]:
    grant = call.grant
    return {"id": grant.admin_key_id, "scope": "operator" if grant.operator else "tenant",
            "tenant": grant.tenant_name}


def _tenants(call: Call) -> dict[str, Any]:
    if call.grant.operator:
        return admin.tenant_list(call.store, call.namespace()).data
    assert call.grant.tenant_name is not None
    return {"tenants": [admin.tenant_json(call.store.get_tenant(call.grant.tenant_name))]}


def _tenant_add(call: Call) -> dict[str, Any]:
    limits = {name: call.args.pop(name) for name in ("rpm", "tpm") if name in call.args}
    for name, value in limits.items():  # checked before the tenant exists
        validate_count(value, name, 1, MAX_RATE)
    data = admin.tenant_add(call.store, call.namespace()).data
    if limits:
        data = admin.tenant_set(call.store, call.namespace(**limits)).data
    return data


def _tenant(call: Call) -> dict[str, Any]:
    return admin.tenant_json(call.store.get_tenant(call.params["tenant"]))


def _tenant_set(call: Call) -> dict[str, Any]:
    return admin.tenant_set(call.store, call.namespace(name=call.params["tenant"])).data


def _deployment(call: Call) -> dict[str, Any]:
    tenant, name = call.params["tenant"], call.params["name"]
    for deployment in call.store.list_deployments(tenant):
        if deployment.name == name:
            return admin.deployment_json(deployment, tenant)
    raise NotFound(f"tenant {tenant!r} has no deployment named {name!r}")


def _key_set(call: Call) -> dict[str, Any]:
    _check_key(call)
    if "deployments" in call.args and call.args["deployments"] is None:
        del call.args["deployments"]
        call.args["all_deployments"] = True
    return admin.key_set(call.store, call.namespace()).data


def _expiry_fields(call: Call) -> None:
    """``expires_at`` null means never (``--no-expiry``); it and ``expires_in`` exclude each
    other."""
    if "expires_at" in call.args and "expires_in" in call.args:
        raise AdminError(400, "invalid", "give `expires_at` or `expires_in`, not both")
    if "expires_at" in call.args and call.args["expires_at"] is None:
        del call.args["expires_at"]
        call.args["no_expiry"] = True


def _with_expiry(handler: Handler) -> Handler:
    def run(call: Call) -> dict[str, Any]:
        _expiry_fields(call)
        return handler(call)
    return run


def _checked(check: Callable[[Call], None], handler: Handler) -> Handler:
    def run(call: Call) -> dict[str, Any]:
        check(call)
        return handler(call)
    return run


def _command(command: admin.AdminHandler, **defaults: Any) -> Handler:
    """A handler running an admin command with the call's arguments (``defaults`` for those
    not given)."""
    return lambda call: command(call.store, call.namespace(defaults)).data


def _usage(call: Call) -> dict[str, Any]:
    call.args["tenant"] = _own_tenant(call, call.args.get("tenant"))
    args = {"key": None, "since": None, "by": "key", **call.args}
    return admin.usage(call.store, argparse.Namespace(**args)).data


def _tunnels(call: Call) -> dict[str, Any]:
    """The live tunnels of this gateway process (a tenant admin: its tenant's only); the
    other nodes' are added by :meth:`AdminApi._cluster_tunnels`."""
    tenant = _own_tenant(call, call.args.get("tenant"))
    return {"tenant": tenant, "tunnels": local_tunnels(call.tunnels, tenant)}


#: The routes that revoke a credential, and the kind of notice each announces.
_REVOKING: dict[tuple[str, ...], tuple[str, str]] = {
    ("keys", "{key_id}", "revoke"): ("key", "key_id"),
    ("connector-tokens", "{token_id}", "revoke"): ("connector_token", "token_id"),
}


def _notice(route: Route, params: Mapping[str, str]) -> RevocationNotice:
    """What the other nodes are told after ``route`` changed something: a revocation, or
    only that they should forget what they cached."""
    revoking = _REVOKING.get(route.pattern)
    if revoking is None:
        return notice_for(CHANGE)
    kind, param = revoking
    return notice_for(kind, params[param])


def local_tunnels(tunnels: Sequence[Tunnel], tenant: str | None) -> list[dict[str, Any]]:
    """The views of ``tunnels`` (those of ``tenant`` only, unless None)."""
    return [tunnel_view(t) for t in tunnels
            if t.grant is not None and (tenant is None or t.grant.tenant_name == tenant)]


_LIMITS = {"rpm": ("rpm", _count), "tpm": ("tpm", _count)}
_QUEUE = {"max_in_flight": ("max_in_flight", _count), "queue": ("queue", _count),
          "queue_timeout": ("queue_timeout", _duration)}
_EXPIRY = {"expires_at": ("expires_at", _time), "expires_in": ("expires_in", _duration)}
_LABEL = {"name": ("label", _optional_string)}

ROUTES: tuple[Route, ...] = (
    Route("GET", ("whoami",), _whoami),
    Route("GET", ("tenants",), _tenants),
    Route("POST", ("tenants",), _tenant_add, {"name": ("name", _string), **_LIMITS},
          ("name",), operator_only=True, status=201),
    Route("GET", ("tenants", "{tenant}"), _tenant),
    Route("PATCH", ("tenants", "{tenant}"), _tenant_set, _LIMITS, operator_only=True),
    Route("GET", ("tenants", "{tenant}", "deployments"), _command(admin.deployment_list)),
    Route("POST", ("tenants", "{tenant}", "deployments"), _command(admin.deployment_add),
          {"name": ("name", _string), **_QUEUE}, ("name",), status=201),
    Route("GET", ("tenants", "{tenant}", "deployments", "{name*}"), _deployment),
    Route("PATCH", ("tenants", "{tenant}", "deployments", "{name*}"),
          _command(admin.deployment_set), _QUEUE),
    Route("GET", ("tenants", "{tenant}", "keys"), _command(admin.key_list)),
    Route("POST", ("tenants", "{tenant}", "keys"),
          _with_expiry(_command(admin.key_add, deployments=None, label=None)),
          {"deployments": ("deployments", _names), **_LABEL, **_LIMITS, **_EXPIRY},
          status=201),
    Route("GET", ("tenants", "{tenant}", "connector-tokens"), _command(admin.token_list)),
    Route("POST", ("tenants", "{tenant}", "connector-tokens"),
          _command(admin.token_add, label=None),
          {"deployments": ("deployments", _required_names), **_LABEL}, ("deployments",),
          status=201),
    Route("GET", ("keys", "{key_id}"), _checked(_check_key, lambda call: admin.credential_json(
        call.store.get_key(call.params["key_id"])))),
    Route("PATCH", ("keys", "{key_id}"), _with_expiry(_key_set),
          {"deployments": ("deployments", _names), **_LIMITS, **_EXPIRY}),
    Route("POST", ("keys", "{key_id}", "rotate"),
          _checked(_check_key, _command(admin.key_rotate, overlap=3600.0)),
          {"overlap": ("overlap", _seconds)}),
    Route("POST", ("keys", "{key_id}", "revoke"),
          _checked(_check_key, _command(admin.key_revoke))),
    Route("GET", ("connector-tokens", "{token_id}"),
          _checked(_check_token, lambda call: admin.credential_json(
              call.store.get_connector_token(call.params["token_id"])))),
    Route("POST", ("connector-tokens", "{token_id}", "revoke"),
          _checked(_check_token, _command(admin.token_revoke))),
    Route("GET", ("usage",), _usage, query={
        "tenant": ("tenant", _string), "key": ("key", _string), "since": ("since", _since),
        "by": ("by", _grouping)}),
    Route("GET", ("tunnels",), _tunnels, query={"tenant": ("tenant", _string)}, live=True),
)


def _match(pattern: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
    """The path parameters if ``segments`` fit ``pattern``; ``{name*}`` takes the rest."""
    params: dict[str, str] = {}
    for index, part in enumerate(pattern):
        if index >= len(segments):
            return None
        if part == "{name*}":
            params["name"] = "/".join(segments[index:])
            return params
        if part.startswith("{"):
            params[part[1:-1]] = segments[index]
        elif part != segments[index]:
            return None
    return params if len(segments) == len(pattern) else None


def find_route(method: str, path: str) -> tuple[Route, dict[str, str]] | list[str]:
    """The route and its path parameters, or the methods the path allows (empty: no such
    path). Segments are percent-decoded; one trailing slash is ignored."""
    path = path[:-1] if path.endswith("/") else path
    segments = [unquote(part) for part in path[len(_VERSION_PREFIX):].split("/")] \
        if path.startswith(_VERSION_PREFIX) else []
    allowed: list[str] = []
    for route in ROUTES if segments and all(segments) else ():
        params = _match(route.pattern, segments)
        if params is None:
            continue
        if route.method == method:
            return route, params
        allowed.append(route.method)
    return allowed


# ---- the API -------------------------------------------------------------------------------


class AdminApi:
    """See the module doc. ``on_change(notice)`` is awaited after every successful change,
    before the answer: the gateway forgets the credentials and settings it cached and tells
    the other nodes (runtimes/cluster/revocations.py); processes that miss the notice see the
    change within their cache's second."""

    def __init__(self, store: Store, auth: AuthCache, tunnels: TunnelManager, *,
                 on_change: Callable[[RevocationNotice], Awaitable[None]] | None = None,
                 remote: RemoteRouting | None = None) -> None:
        self.store = store
        self.auth = auth
        self.tunnels = tunnels
        self._on_change = on_change
        #: The other nodes of this gateway (None: a gateway of one process).
        self.remote = remote

    async def authenticate(self, request: HttpRequest) -> AdminGrant | None:
        """The grant of the admin key the request presents; AdminError 401 when it presents
        none or one that is not a valid admin key."""
        presented = presented_api_key(request.headers)
        grant = None if presented is None else \
            await asyncio.to_thread(self.auth.get_admin_grant, presented)
        if grant is None:
            message = "this needs a valid admin key (Authorization: Bearer tkadm-...)"
            if presented is not None and presented.startswith((API_KEY_PREFIX,
                                                               CONNECTOR_TOKEN_PREFIX)):
                message = "API keys and connector tokens are not admin keys: " + message
            elif presented is not None:
                message = "the admin key is invalid or revoked: " + message
            raise AdminError(401, "unauthenticated", message,
                             (("www-authenticate", 'Bearer realm="tokios-admin"'),))
        return grant

    async def handle(self, request: HttpRequest, response: HttpResponse,
                     request_id: str) -> int:
        """Answer one request under ADMIN_PREFIX; return the status sent."""
        try:
            status, data = await self._answer(request)
            headers: tuple[tuple[str, str], ...] = ()
        except AdminError as error:
            status, headers = error.status, error.headers
            data = {"error": {"code": error.code, "message": str(error)}}
        except StoreError as exc:
            status, code = _STORE_ERRORS.get(type(exc), (503, "store_error"))
            if status == 503:
                logger.warning("admin API: store error: %s", type(exc).__name__)
                headers = (("retry-after", "1"),)
            else:
                headers = ()
            data = {"error": {"code": code, "message": str(exc)}}
        await response.respond(status, [("content-type", "application/json"),
                                        ("cache-control", "no-store"),
                                        ("x-request-id", request_id), *headers],
                               orjson.dumps(data))
        return status

    async def _answer(self, request: HttpRequest) -> tuple[int, dict[str, Any]]:
        if len(request.path) > MAX_PATH_LENGTH or len(request.query) > MAX_QUERY_LENGTH:
            raise AdminError(414, "too_large", "the path or query is too long")
        found = find_route(request.method, request.path)
        if isinstance(found, list):
            if not found:
                raise AdminError(404, "not_found", "no such admin endpoint")
            raise AdminError(405, "method_not_allowed",
                             f"use {' or '.join(found)} on this path",
                             (("allow", ", ".join(found)),))
        route, params = found
        grant = await self.authenticate(request)
        assert grant is not None
        if "tenant" in params:
            _check_tenant(grant, params["tenant"])
        if route.operator_only and not grant.operator:
            raise AdminError(403, "forbidden", "this needs an operator admin key")
        try:
            query = dict(parse_qsl(request.query, keep_blank_values=True, max_num_fields=10))
        except ValueError:
            raise AdminError(400, "invalid", "too many query parameters") from None
        args = _converted(route.query, query, "query parameter")
        if route.fields:
            body = await _body(request)
            for name in route.required:
                if name not in body:
                    raise AdminError(400, "invalid", f"`{name}` is required")
            args.update(_converted(route.fields, body, "field"))
        if route.live:
            local = route.handler(
                Call(self.store, grant, params, args, tuple(self.tunnels.tunnels)))
            return route.status, await self._cluster_tunnels(local)
        data = await asyncio.to_thread(route.handler, Call(self.store, grant, params, args))
        if request.method != "GET" and self._on_change is not None:
            await self._on_change(_notice(route, params))
        return route.status, data

    # ---- the tunnel list of every node -------------------------------------------------------

    async def _cluster_tunnels(self, local: dict[str, Any]) -> dict[str, Any]:
        """This node's tunnels and every live peer's (asked at once over the node channel,
        each within PEER_TIMEOUT), each tagged with its ``node``; ``nodes`` says which
        answered."""
        remote = self.remote
        me = None if remote is None else remote.directory.node_id
        listed = [{"node": me, **view} for view in local["tunnels"]]
        nodes: list[dict[str, Any]] = [{"node": me, "answered": True, "error": None}]
        if remote is not None:
            peers = [p for p in remote.directory.peers if p.forward_url]
            answers = await asyncio.gather(*(self._peer_tunnels(remote, peer, local["tenant"])
                                             for peer in peers))
            for peer, (views, error) in zip(peers, answers, strict=True):
                listed.extend({"node": peer.node_id, **view} for view in views)
                nodes.append({"node": peer.node_id, "answered": error is None, "error": error})
        listed.sort(key=lambda view: (view["tenant"], view["connected_since"], view["session"]))
        return {"tunnels": listed, "nodes": nodes}

    @staticmethod
    async def _peer_tunnels(remote: RemoteRouting, peer: NodeRecord, tenant: str | None,
                            ) -> tuple[list[dict[str, Any]], str | None]:
        """``peer``'s tunnel views, or none and why."""
        target = NODE_TUNNELS_PATH + (f"?tenant={quote(tenant, safe='')}" if tenant else "")
        try:
            status, body = await remote.forwarder.query(peer, target, limit=MAX_PEER_ANSWER,
                                                        timeout=PEER_TIMEOUT)
            answer = orjson.loads(body) if status == 200 else None
        except StreamFailed as failure:  # ForwardFailed: the node could not be asked
            logger.warning("admin API: node %s did not give its tunnels", peer.node_id)
            return [], str(failure)[:200]
        except orjson.JSONDecodeError:
            return [], "the answer is not JSON"
        views = answer.get("tunnels") if isinstance(answer, dict) else None
        if not isinstance(views, list):
            return [], f"HTTP {status}"
        return [v for v in views if isinstance(v, dict)], None

    async def node_tunnels(self, request: HttpRequest, response: HttpResponse,
                           secret: bytes) -> None:
        """``GET /v1/node/tunnels`` on the node listener: this node's live tunnels, to another
        node of this gateway only (the cluster secret, compared in constant time)."""
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                presented.encode("utf-8", "surrogateescape"), secret):
            await response.respond(401, [("content-type", "application/json")],
                                   b'{"error":"not a node of this gateway"}')
            return
        try:
            tenant = dict(parse_qsl(request.query[:MAX_QUERY_LENGTH],
                                    max_num_fields=2)).get("tenant")
        except ValueError:
            await response.respond(400, [("content-type", "application/json")],
                                   b'{"error":"too many query parameters"}')
            return
        views = local_tunnels(tuple(self.tunnels.tunnels), tenant)
        await response.respond(200, [("content-type", "application/json"),
                                     ("cache-control", "no-store")],
                               orjson.dumps({"tunnels": views}))


async def _body(request: HttpRequest) -> dict[str, Any]:
    try:
        raw = await request.body(limit=MAX_BODY_BYTES)
    except BodyTooLarge:
        raise AdminError(413, "too_large", f"the body exceeds {MAX_BODY_BYTES} bytes") from None
    if not raw.strip():
        return {}
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise AdminError(400, "invalid", "the body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise AdminError(400, "invalid", "the body must be a JSON object")
    return parsed


def _converted(spec: Mapping[str, tuple[str, Convert]], given: Mapping[str, Any],
               what: str) -> dict[str, Any]:
    """``given`` checked against ``spec``: an unknown name is an error naming the known ones."""
    unknown = sorted(set(given) - set(spec))
    if unknown:
        known = ", ".join(sorted(spec)) or "none"
        raise AdminError(400, "invalid", f"unknown {what} `{unknown[0][:60]}` (known: {known})")
    return {spec[name][0]: spec[name][1](name, value) for name, value in given.items()}
