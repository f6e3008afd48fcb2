"""Routing of the extra client APIs: probes, one model by id, Ollama's API, legacy completions
(gateway side), and the connector's routes and stream heads for them."""

from __future__ import annotations

from runtimes.connector.handling import (
    NDJSON_STREAM_HEADERS,
    STREAM_HEADERS,
    Route,
    plan_request,
    route_for,
    stream_headers,
)
from runtimes.gateway.routing import EndpointKind, error_format_for, find_endpoint, model_id_of
from tokios_translate import BackendKind
from tokios_translate._common import ClientFormat


def test_probes_and_one_model() -> None:
    for method in ("GET", "HEAD"):
        found = find_endpoint(method, "/")
        assert found is not None and found.kind is EndpointKind.ROOT
    assert find_endpoint("POST", "/") is None
    one = find_endpoint("GET", "/v1/models/org/coder%3A8b/")
    assert one is not None and one.kind is EndpointKind.MODEL
    assert model_id_of(one.path) == "org/coder:8b"
    assert find_endpoint("DELETE", "/v1/models/coder") is None
    models = find_endpoint("GET", "/v1/models")
    assert models is not None and models.kind is EndpointKind.MODELS


def test_ollama_and_completions_endpoints() -> None:
    expected = {
        ("POST", "/api/chat"): (EndpointKind.FORWARD, ClientFormat.OLLAMA_CHAT),
        ("POST", "/api/generate"): (EndpointKind.FORWARD, ClientFormat.OLLAMA_GENERATE),
        ("POST", "/api/embed"): (EndpointKind.FORWARD, ClientFormat.OLLAMA_CHAT),
        ("GET", "/api/tags"): (EndpointKind.OLLAMA_TAGS, ClientFormat.OLLAMA_CHAT),
        ("POST", "/api/show"): (EndpointKind.OLLAMA_SHOW, ClientFormat.OLLAMA_CHAT),
        ("GET", "/api/version"): (EndpointKind.OLLAMA_VERSION, ClientFormat.OLLAMA_CHAT),
        ("POST", "/v1/completions"): (EndpointKind.FORWARD, ClientFormat.COMPLETIONS),
    }
    for (method, path), (kind, client) in expected.items():
        found = find_endpoint(method, path)
        assert found is not None and (found.kind, found.client) == (kind, client), path
    assert error_format_for("/api/pull", {}) is ClientFormat.OLLAMA_CHAT


def test_connector_routes_and_stream_heads() -> None:
    assert route_for("/api/chat") == (Route.GENERATE, ClientFormat.OLLAMA_CHAT)
    assert route_for("/api/generate") == (Route.GENERATE, ClientFormat.OLLAMA_GENERATE)
    assert route_for("/api/embed") == (Route.EMBEDDINGS, ClientFormat.OLLAMA_CHAT)
    assert route_for("/v1/completions") == (Route.GENERATE, ClientFormat.COMPLETIONS)
    chat = plan_request("/api/chat", b'{"model":"d","messages":[{"role":"user","content":"x"}]}',
                        backend=BackendKind.LLAMACPP, deployment="d", upstream_model="m",
                        response_id="r", created=0)
    assert chat.stream and stream_headers(chat) == NDJSON_STREAM_HEADERS
    completion = plan_request("/v1/completions", b'{"model":"d","prompt":"x","stream":true}',
                              backend=BackendKind.OLLAMA, deployment="d", upstream_model="m",
                              response_id="r", created=0)
    assert completion.call is not None and completion.call.path == "/api/generate"
    assert stream_headers(completion) == STREAM_HEADERS
    refused = plan_request("/api/generate", b'{"model":"d","prompt":"x","suffix":"y"}',
                           backend=BackendKind.VLLM, deployment="d", upstream_model="m",
                           response_id="r", created=0)
    assert refused.immediate is not None and refused.immediate.status == 400
    assert refused.immediate.body.startswith(b'{"error":')
