"""``--keepalive-interval`` and the clocks of an upstream call (``--connect-timeout``,
``--first-byte-timeout``, ``--idle-timeout``, ``--request-timeout``, ``--head-hold``):
defaults, environment variables, flags, bounds and help."""

from __future__ import annotations

import pytest

from runtimes.connector import handling
from runtimes.connector.cli import build_parser, settings_from_args
from runtimes.connector.settings import timing_for

BASE = ["--gateway", "https://gw.example", "--token", "tkct-x", "--upstream",
        "http://127.0.0.1:11434", "--backend", "ollama", "--model", "coder=qwen3:8b"]


def test_default_interval_is_fifteen_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKIOS_KEEPALIVE_INTERVAL", raising=False)
    settings = settings_from_args(build_parser().parse_args(BASE))
    assert settings.keepalive_interval == handling.KEEPALIVE_INTERVAL == 15.0


def test_option_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    args = build_parser().parse_args([*BASE, "--keepalive-interval", "0.2"])
    assert settings_from_args(args).keepalive_interval == 0.2
    monkeypatch.setenv("TOKIOS_KEEPALIVE_INTERVAL", "7.5")
    assert settings_from_args(build_parser().parse_args(BASE)).keepalive_interval == 7.5


@pytest.mark.parametrize("value", ["0", "0.01", "91", "-1"])
def test_interval_out_of_range_is_a_usage_error(value: str) -> None:
    args = build_parser().parse_args([*BASE, "--keepalive-interval", value])
    with pytest.raises(ValueError, match="--keepalive-interval"):
        settings_from_args(args)


def test_help_documents_the_option_and_its_variable() -> None:
    text = build_parser().format_help()
    assert "--keepalive-interval SECONDS" in text and "TOKIOS_KEEPALIVE_INTERVAL" in text
    assert "first token" in text


TIMEOUTS = {"--connect-timeout": ("TOKIOS_CONNECT_TIMEOUT", "connect_timeout", 5.0),
            "--first-byte-timeout": ("TOKIOS_FIRST_BYTE_TIMEOUT", "first_byte_timeout", 600.0),
            "--idle-timeout": ("TOKIOS_IDLE_TIMEOUT", "idle_timeout", 120.0),
            "--request-timeout": ("TOKIOS_REQUEST_TIMEOUT", "request_timeout", 3600.0),
            "--head-hold": ("TOKIOS_HEAD_HOLD", "head_hold", 1.0)}


@pytest.mark.parametrize("flag", list(TIMEOUTS))
def test_every_upstream_clock_has_a_default_a_variable_a_flag_and_bounds(
        flag: str, monkeypatch: pytest.MonkeyPatch) -> None:
    variable, field, default = TIMEOUTS[flag]
    monkeypatch.delenv(variable, raising=False)
    assert getattr(settings_from_args(build_parser().parse_args(BASE)), field) == default
    monkeypatch.setenv(variable, "7.5")
    assert getattr(settings_from_args(build_parser().parse_args(BASE)), field) == 7.5
    args = build_parser().parse_args([*BASE, flag, "2.5"])  # the flag wins
    assert getattr(settings_from_args(args), field) == 2.5
    with pytest.raises(ValueError, match=flag):
        settings_from_args(build_parser().parse_args([*BASE, flag, "-1"]))
    text = build_parser().format_help()
    assert f"{flag} SECONDS" in text and variable in text


def test_the_settings_reach_each_streams_clocks() -> None:
    args = build_parser().parse_args([*BASE, "--first-byte-timeout", "30", "--idle-timeout",
                                      "20", "--request-timeout", "90", "--head-hold", "0.5",
                                      "--keepalive-interval", "3"])
    timing = timing_for(settings_from_args(args))
    assert (timing.first_byte_timeout, timing.idle_timeout, timing.request_timeout,
            timing.head_hold, timing.keepalive_interval) == (30, 20, 90, 0.5, 3)
