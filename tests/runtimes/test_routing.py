"""Endpoint lookup, key extraction and least-busy tunnel choice."""

from __future__ import annotations

from dataclasses import dataclass

from runtimes.gateway.routing import (
    EndpointKind,
    TunnelRegistry,
    answer_format,
    error_format_for,
    find_endpoint,
    presented_api_key,
)
from tokios_translate._common import ClientFormat


@dataclass(eq=False)
class FakeTunnel:
    active_streams: int = 0
    accepting_streams: bool = True
    unhealthy: frozenset[str] = frozenset()

    def is_healthy(self, deployment: str) -> bool:
        return deployment not in self.unhealthy


def test_endpoints_map_to_their_client_format() -> None:
    assert find_endpoint("POST", "/v1/messages").client is ClientFormat.MESSAGES
    assert find_endpoint("post", "/v1/chat/completions/").client is ClientFormat.CHAT
    assert find_endpoint("POST", "/v1/responses").client is ClientFormat.RESPONSES
    assert find_endpoint("GET", "/v1/models").kind is EndpointKind.MODELS
    count = find_endpoint("POST", "/v1/messages/count_tokens")
    assert count.kind is EndpointKind.FORWARD and count.path == "/v1/messages/count_tokens"
    assert find_endpoint("GET", "/v1/chat/completions") is None
    assert find_endpoint("POST", "/v1/nope") is None


def test_error_format_follows_the_path_or_anthropic_header() -> None:
    assert error_format_for("/v1/messages/x", {}) is ClientFormat.MESSAGES
    assert error_format_for("/v2/x", {"anthropic-version": "2023-06-01"}) is ClientFormat.MESSAGES
    assert error_format_for("/v1/responses/abc", {}) is ClientFormat.RESPONSES
    assert error_format_for("/v1/other", {}) is ClientFormat.CHAT


def test_answer_format_is_the_endpoints_with_anthropic_model_listings() -> None:
    anthropic = {"anthropic-version": "2023-06-01"}
    assert answer_format("POST", "/api/generate", {}) is ClientFormat.OLLAMA_GENERATE
    assert answer_format("POST", "/v1/completions", {}) is ClientFormat.COMPLETIONS
    assert answer_format("GET", "/v1/models", {}) is ClientFormat.CHAT
    assert answer_format("GET", "/v1/models", anthropic) is ClientFormat.MESSAGES
    assert answer_format("GET", "/v1/models/coder", anthropic) is ClientFormat.MESSAGES
    assert answer_format("POST", "/v1/chat/completions", anthropic) is ClientFormat.CHAT
    # not an endpoint (or a head that did not parse: no method): by the path and header
    assert answer_format("", "/api/chat", {}) is ClientFormat.OLLAMA_CHAT
    assert answer_format("GET", "/v1/messages", {}) is ClientFormat.MESSAGES
    assert answer_format("", "", anthropic) is ClientFormat.MESSAGES
    assert answer_format("", "", {}) is ClientFormat.CHAT


def test_api_key_from_bearer_or_x_api_key() -> None:
    assert presented_api_key({"authorization": "Bearer sk-tokios-a"}) == "sk-tokios-a"
    assert presented_api_key({"authorization": "bearer  sk-tokios-b "}) == "sk-tokios-b"
    assert presented_api_key({"x-api-key": "sk-tokios-c"}) == "sk-tokios-c"
    assert presented_api_key({"authorization": "Basic abc"}) is None
    assert presented_api_key({"authorization": "Bearer "}) is None
    assert presented_api_key({"x-api-key": "k" * 257}) is None
    assert presented_api_key({}) is None


def test_registry_picks_least_busy_and_rotates_ties() -> None:
    registry: TunnelRegistry[FakeTunnel] = TunnelRegistry()
    a, b, c = FakeTunnel(), FakeTunnel(), FakeTunnel(active_streams=5)
    registry.add(a, "t1", ["d1"])
    registry.add(b, "t1", ["d1", "d2"])
    registry.add(c, "t2", ["d1"])
    assert {id(registry.pick("t1", "d1")) for _ in range(4)} == {id(a), id(b)}
    a.active_streams = 3
    assert registry.pick("t1", "d1") is b
    assert registry.pick("t1", "d1", exclude=[b]) is a
    assert registry.pick("t2", "d1") is c  # tenants never share tunnels
    assert registry.pick("t1", "d3") is None
    b.accepting_streams = False  # draining after goaway
    assert registry.pick("t1", "d2") is None
    assert registry.served("t1") == {"d1", "d2"}
    registry.remove(b)
    assert registry.served("t1") == {"d1"}
    registry.remove(a)
    assert registry.pick("t1", "d1") is None and len(registry) == 1


def test_registry_skips_a_tunnel_for_a_deployment_it_reports_unhealthy() -> None:
    registry: TunnelRegistry[FakeTunnel] = TunnelRegistry()
    a, b = FakeTunnel(unhealthy=frozenset({"d1"})), FakeTunnel(active_streams=9)
    registry.add(a, "t1", ["d1", "d2"])
    registry.add(b, "t1", ["d1"])
    assert {id(registry.pick("t1", "d1")) for _ in range(4)} == {id(b)}  # busier, but healthy
    assert registry.pick("t1", "d2") is a  # unhealthy for d1 only
    assert not registry.all_unhealthy("t1", "d1")
    b.unhealthy = frozenset({"d1"})
    assert registry.pick("t1", "d1") is None and registry.all_unhealthy("t1", "d1")
    assert not registry.all_unhealthy("t1", "d3")  # nothing serves it: not "unhealthy"
    assert not registry.all_unhealthy("t2", "d1")  # another tenant's
    assert registry.serving("t1", "d1") == [a, b]  # still listed, for /readyz and metrics
