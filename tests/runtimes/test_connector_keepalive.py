"""``--keepalive-interval`` and the shared decisions of early bytes (runtimes/connector)."""

from __future__ import annotations

import pytest

from runtimes.connector import handling
from runtimes.connector.cli import build_parser, settings_from_args
from tokios_translate import ErrorKind

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


def test_early_failure_messages_are_content_free_api_errors() -> None:
    assert handling.early_failure("upstream read timed out") == (
        "the model server did not answer in time", ErrorKind.UPSTREAM)
    assert handling.early_failure("upstream connect failed: ConnectionRefusedError") == (
        "the model server could not be reached", ErrorKind.UPSTREAM)
