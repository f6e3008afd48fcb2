"""Which endpoint a request names, whose key it carries, and which tunnel serves it.

No I/O here: the HTTP front end (``runtimes.gateway.api``) asks these questions in order:

1. :func:`find_endpoint` - is ``(method, path)`` one of ours, and in which client format?
2. :func:`presented_api_key` - the key from ``Authorization: Bearer`` or ``x-api-key``
   (checked against the store *before* the body is read);
3. :meth:`TunnelRegistry.pick` - the least busy live tunnel serving the tenant's deployment
   whose upstream is healthy (:meth:`TunnelRegistry.all_unhealthy` tells why there is none).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, Protocol, TypeVar
from urllib.parse import unquote

from tokios_translate._common import ClientFormat


class EndpointKind(StrEnum):
    """What the gateway does with a request."""

    #: Forwarded down a tunnel; the connector translates it (chat, responses, messages, ...).
    FORWARD = "forward"
    #: Answered by the gateway from the store: the models the key may use.
    MODELS = "models"
    #: Liveness and readiness probes (no key needed).
    HEALTH = "health"
    READY = "ready"
    #: ``GET``/``HEAD /``: the base-URL probe of Claude Code and other clients (no key needed).
    ROOT = "root"
    #: ``GET /v1/models/{id}``: one model object, if the key may use it.
    MODEL = "model"
    #: Ollama's ``GET /api/tags``, ``POST /api/show``, ``GET /api/version``, answered by the
    #: gateway (the key's deployments; no tunnel needed).
    OLLAMA_TAGS = "ollama_tags"
    OLLAMA_SHOW = "ollama_show"
    OLLAMA_VERSION = "ollama_version"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One route: its kind, and the client format its errors (and answers) are shaped in."""

    kind: EndpointKind
    client: ClientFormat
    #: The path forwarded to the connector (``/v1/messages/count_tokens`` keeps its suffix).
    path: str


_ENDPOINTS: dict[tuple[str, str], Endpoint] = {
    ("POST", "/v1/chat/completions"): Endpoint(
        EndpointKind.FORWARD, ClientFormat.CHAT, "/v1/chat/completions"),
    ("POST", "/v1/responses"): Endpoint(
        EndpointKind.FORWARD, ClientFormat.RESPONSES, "/v1/responses"),
    ("POST", "/v1/messages"): Endpoint(
        EndpointKind.FORWARD, ClientFormat.MESSAGES, "/v1/messages"),
    ("POST", "/v1/messages/count_tokens"): Endpoint(
        EndpointKind.FORWARD, ClientFormat.MESSAGES, "/v1/messages/count_tokens"),
    ("POST", "/v1/embeddings"): Endpoint(
        EndpointKind.FORWARD, ClientFormat.CHAT, "/v1/embeddings"),
    ("GET", "/v1/models"): Endpoint(EndpointKind.MODELS, ClientFormat.CHAT, "/v1/models"),
    ("GET", "/healthz"): Endpoint(EndpointKind.HEALTH, ClientFormat.CHAT, "/healthz"),
    ("GET", "/readyz"): Endpoint(EndpointKind.READY, ClientFormat.CHAT, "/readyz"),
    ("GET", "/"): Endpoint(EndpointKind.ROOT, ClientFormat.CHAT, "/"),
    ("HEAD", "/"): Endpoint(EndpointKind.ROOT, ClientFormat.CHAT, "/"),
    ("POST", "/v1/completions"): Endpoint(
        EndpointKind.FORWARD, ClientFormat.COMPLETIONS, "/v1/completions"),
    ("POST", "/api/chat"): Endpoint(EndpointKind.FORWARD, ClientFormat.OLLAMA_CHAT, "/api/chat"),
    ("POST", "/api/generate"): Endpoint(
        EndpointKind.FORWARD, ClientFormat.OLLAMA_GENERATE, "/api/generate"),
    ("POST", "/api/embed"): Endpoint(
        EndpointKind.FORWARD, ClientFormat.OLLAMA_CHAT, "/api/embed"),
    ("GET", "/api/tags"): Endpoint(EndpointKind.OLLAMA_TAGS, ClientFormat.OLLAMA_CHAT, "/api/tags"),
    ("POST", "/api/show"): Endpoint(
        EndpointKind.OLLAMA_SHOW, ClientFormat.OLLAMA_CHAT, "/api/show"),
    ("GET", "/api/version"): Endpoint(
        EndpointKind.OLLAMA_VERSION, ClientFormat.OLLAMA_CHAT, "/api/version"),
}

#: ``GET /v1/models/{id}``: the prefix of one model's path.
MODEL_PATH_PREFIX = "/v1/models/"

#: Paths we serve, for telling 404 (no such path) from 405 (wrong method).
KNOWN_PATHS = frozenset(path for _, path in _ENDPOINTS)


def find_endpoint(method: str, path: str) -> Endpoint | None:
    """The endpoint for ``method`` and ``path`` (query string already removed), or None.

    A trailing slash is tolerated (``/v1/models/``), as several SDKs' base-URL joins add one.
    """
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    found = _ENDPOINTS.get((method.upper(), path))
    if found is None and path.startswith(MODEL_PATH_PREFIX) and method.upper() == "GET":
        return Endpoint(EndpointKind.MODEL, ClientFormat.CHAT, path)
    return found


def model_id_of(path: str) -> str:
    """The model id of a ``/v1/models/{id}`` path (percent-decoded; ids may hold ``/``)."""
    return unquote(path[len(MODEL_PATH_PREFIX):].rstrip("/"))


def error_format_for(path: str, headers: Mapping[str, str]) -> ClientFormat:
    """The format an error for ``path`` should use when the endpoint itself is unknown.

    Anthropic clients send ``anthropic-version``; everything else gets OpenAI's envelope.
    """
    if path.startswith("/v1/messages") or "anthropic-version" in headers:
        return ClientFormat.MESSAGES
    if path.startswith("/v1/responses"):
        return ClientFormat.RESPONSES
    if path.startswith("/api/"):
        return ClientFormat.OLLAMA_CHAT
    return ClientFormat.CHAT


def answer_format(method: str, path: str, headers: Mapping[str, str]) -> ClientFormat:
    """The format of any answer (errors included) to ``method path``: the endpoint's, except
    that the model listings answer Anthropic clients (``anthropic-version``) in Anthropic's
    shape; for a path that is not an endpoint, :func:`error_format_for`."""
    endpoint = find_endpoint(method, path)
    if endpoint is None:
        return error_format_for(path, headers)
    if endpoint.kind in (EndpointKind.MODELS, EndpointKind.MODEL) and \
            "anthropic-version" in headers:
        return ClientFormat.MESSAGES
    return endpoint.client


#: Longest API key accepted; anything longer is rejected without touching the store.
MAX_KEY_LENGTH = 256


def presented_api_key(headers: Mapping[str, str]) -> str | None:
    """The API key a client presented, or None.

    Accepts ``Authorization: Bearer <key>`` (OpenAI SDKs, Claude Code's
    ``ANTHROPIC_AUTH_TOKEN``) and ``x-api-key: <key>`` (Anthropic SDKs). ``headers`` has
    lower-case names. Oversized values are treated as absent.
    """
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            key = token.strip()
            return key if len(key) <= MAX_KEY_LENGTH else None
    api_key = headers.get("x-api-key")
    if api_key and api_key.strip():
        key = api_key.strip()
        return key if len(key) <= MAX_KEY_LENGTH else None
    return None


class RoutableTunnel(Protocol):
    """What the registry needs to know about a live tunnel."""

    @property
    def active_streams(self) -> int: ...

    @property
    def accepting_streams(self) -> bool: ...

    def is_healthy(self, deployment: str) -> bool:
        """False while the connector reports this deployment's upstream unhealthy."""
        ...


T = TypeVar("T", bound=RoutableTunnel)


class TunnelRegistry(Generic[T]):
    """Live tunnels by ``(tenant_id, deployment)``; picks the least busy healthy one.

    Call :meth:`add` when a connector's handshake is accepted and :meth:`remove` when its
    tunnel closes. Ties between equally busy tunnels rotate, so load spreads evenly. A tunnel
    whose connector reports the deployment's upstream unhealthy is skipped for it.
    """

    def __init__(self) -> None:
        self._by_deployment: dict[tuple[str, str], list[T]] = {}
        self._deployments_of: dict[int, list[tuple[str, str]]] = {}
        self._rotation = itertools.count()

    def add(self, tunnel: T, tenant_id: str, deployments: Iterable[str]) -> None:
        keys = [(tenant_id, name) for name in deployments]
        self._deployments_of[id(tunnel)] = keys
        for key in keys:
            self._by_deployment.setdefault(key, []).append(tunnel)

    def remove(self, tunnel: T) -> None:
        for key in self._deployments_of.pop(id(tunnel), []):
            tunnels = self._by_deployment.get(key, [])
            if tunnel in tunnels:
                tunnels.remove(tunnel)
            if not tunnels:
                self._by_deployment.pop(key, None)

    def pick(self, tenant_id: str, deployment: str, exclude: Iterable[T] = ()) -> T | None:
        """The least busy tunnel accepting streams for this deployment with a healthy
        upstream, or None."""
        excluded = {id(t) for t in exclude}
        candidates = [
            t for t in self._by_deployment.get((tenant_id, deployment), [])
            if t.accepting_streams and id(t) not in excluded and t.is_healthy(deployment)
        ]
        if not candidates:
            return None
        least = min(t.active_streams for t in candidates)
        tied = [t for t in candidates if t.active_streams == least]
        return tied[next(self._rotation) % len(tied)]

    def serving(self, tenant_id: str, deployment: str) -> list[T]:
        """The live tunnels serving this deployment (accepting streams or not)."""
        return self._by_deployment.get((tenant_id, deployment), [])

    def all_unhealthy(self, tenant_id: str, deployment: str) -> bool:
        """True when live tunnels serve this deployment but none has a healthy upstream."""
        tunnels = self._by_deployment.get((tenant_id, deployment), [])
        return bool(tunnels) and not any(t.is_healthy(deployment) for t in tunnels)

    def served(self, tenant_id: str) -> set[str]:
        """Deployments of this tenant that at least one live tunnel serves."""
        return {name for (tenant, name), tunnels in self._by_deployment.items()
                if tenant == tenant_id and tunnels}

    def __len__(self) -> int:
        return len(self._deployments_of)
