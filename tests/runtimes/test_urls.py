"""WebSocket URL parsing shared by the asyncio and blocking clients."""

from __future__ import annotations

import pytest

from runtimes.urls import WebSocketTarget, parse_websocket_url


def test_default_ports_stay_out_of_the_host_header() -> None:
    assert parse_websocket_url("wss://gw.example.com/v1/tunnel") == WebSocketTarget(
        True, "gw.example.com", 443, "/v1/tunnel", "gw.example.com")
    assert parse_websocket_url("ws://127.0.0.1") == WebSocketTarget(
        False, "127.0.0.1", 80, "/", "127.0.0.1")


def test_other_ports_query_and_ipv6_literals() -> None:
    dial = parse_websocket_url("wss://[::1]:8443/v1/tunnel?x=1")
    assert (dial.host, dial.port, dial.target, dial.host_header) == (
        "::1", 8443, "/v1/tunnel?x=1", "[::1]:8443")


@pytest.mark.parametrize("url", ["https://gw/v1/tunnel", "ws:///nohost", "gw:443"])
def test_anything_but_ws_or_wss_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="ws://"):
        parse_websocket_url(url)
