"""The connector's --max-concurrent-streams reaches the gateway's streams per tunnel."""

from __future__ import annotations

import pytest

from runtimes.connector.cli import MAX_CONCURRENT_STREAMS, build_parser, settings_from_args
from runtimes.gateway.tunnels import MAX_STREAMS_PER_TUNNEL


def _args(streams: int) -> list[str]:
    return ["--gateway", "https://gw.example.com", "--token", "tkct-abc", "--upstream",
            "http://127.0.0.1:11434", "--model", "coder=m", "--backend", "ollama",
            "--max-concurrent-streams", str(streams)]


def test_max_concurrent_streams_up_to_the_gateway_limit() -> None:
    assert MAX_CONCURRENT_STREAMS == MAX_STREAMS_PER_TUNNEL
    settings = settings_from_args(build_parser().parse_args(_args(MAX_CONCURRENT_STREAMS)))
    assert settings.max_concurrent_streams == 16_384
    for bad in (0, MAX_CONCURRENT_STREAMS + 1):
        with pytest.raises(ValueError, match="--max-concurrent-streams"):
            settings_from_args(build_parser().parse_args(_args(bad)))
