"""runtimes/logs.py: third-party loggers pinned at WARNING, one redacting filter on the handler.

The end-to-end proof (real processes, HTTP/1.1 and HTTP/2, both connector runtimes) is
tests/e2e/test_e2e_log_redaction.py; these pin each layer on its own.
"""

from __future__ import annotations

import io
import logging
import threading
import warnings
from collections.abc import Iterator

import pytest

from runtimes.logs import (
    MAX_MESSAGE_CHARS,
    THIRD_PARTY_LOGGERS,
    configure_logging,
    redact,
)

SECRET = "canary0secret9value"


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """configure_logging("debug") into a StringIO; the logging state is restored after."""
    root = logging.getLogger()
    names = [*THIRD_PARTY_LOGGERS, "tokios", "somelib"]
    saved = (list(root.handlers), root.level,
             {name: logging.getLogger(name).level for name in names}, threading.excepthook)
    stream = io.StringIO()
    configure_logging("debug", stream)
    try:
        yield stream
    finally:
        handlers, level, levels, hook = saved
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, value in levels.items():
            logging.getLogger(name).setLevel(value)
        threading.excepthook = hook
        logging.captureWarnings(False)


@pytest.mark.parametrize("text", [
    f"Decoded (b'authorization', b'Bearer {SECRET}'), consumed 1",
    f"Decoded (b'x-api-key', b'{SECRET}'), consumed 1",
    f"Adding b'x-api-key'=b'{SECRET}' to the header table",
    f"authorization: Basic {SECRET}",
    f"Authorization={SECRET}",
    f'{{"x-api-key": "{SECRET}"}}',
    f"[('cookie', 'session={SECRET}; other={SECRET}')]",
    f"token is sk-tokios-abcdefghijkl_{SECRET}.",
    f"token is tkct-abcdefghijkl_{SECRET}",
    f"sent Bearer {SECRET} to it",
    f"proxy-authorization: bearer {SECRET}",
])
def test_redact_removes_credentials(text: str) -> None:
    redacted = redact(text)
    assert SECRET not in redacted
    assert "[REDACTED]" in redacted


def test_redact_keeps_ordinary_lines() -> None:
    line = "POST /v1/chat/completions 200 deployment=coder bytes_out=376 0.007s req_0feab3"
    assert redact(line) == line


def test_tokios_loggers_follow_the_level_third_party_ones_stay_at_warning(
        output: io.StringIO) -> None:
    logging.getLogger("tokios.gateway").debug("own debug line")
    logging.getLogger("hpack.hpack").debug("Decoded (b'x-canary', b'%s')", SECRET)
    logging.getLogger("h2.connection").info("%s", SECRET)
    logging.getLogger("asyncio").info("%s", SECRET)
    logging.getLogger("unknown.library").info("%s", SECRET)
    text = output.getvalue()
    assert "DEBUG tokios.gateway: own debug line" in text
    assert SECRET not in text
    for name in THIRD_PARTY_LOGGERS:
        assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING, name
    assert logging.getLogger().level == logging.WARNING


def test_the_filter_refuses_a_library_that_lowers_its_own_level(output: io.StringIO) -> None:
    logging.getLogger("hpack").setLevel(logging.DEBUG)
    logging.getLogger("somelib").setLevel(logging.DEBUG)
    logging.getLogger("hpack.hpack").debug("Decoded (b'x-canary', b'%s')", SECRET)
    logging.getLogger("somelib").info("%s", SECRET)
    assert SECRET not in output.getvalue()
    logging.getLogger("somelib").warning("visible warning")
    assert "WARNING somelib: visible warning" in output.getvalue()


def test_passed_records_are_redacted_escaped_and_bounded(output: io.StringIO) -> None:
    logging.getLogger("h2").warning("bad header (b'authorization', b'Bearer %s')", SECRET)
    logging.getLogger("tokios.gateway").info("path %s", "/v1/x\nFORGED INFO line")
    logging.getLogger("tokios.gateway").info("long %s", "y" * (2 * MAX_MESSAGE_CHARS))
    lines = output.getvalue().splitlines()
    assert SECRET not in output.getvalue()
    assert "[REDACTED]" in lines[0]
    assert lines[1].endswith("path /v1/x\\nFORGED INFO line")
    assert len(lines) == 3
    assert lines[2].endswith("...[truncated]") and len(lines[2]) < MAX_MESSAGE_CHARS + 200


def test_exceptions_are_logged_by_type_and_frames_without_their_message(
        output: io.StringIO) -> None:
    try:
        try:
            int(f"body {SECRET}")
        except ValueError as inner:
            raise KeyError(SECRET) from inner
    except KeyError:
        logging.getLogger("tokios.connector").exception("stream failed")
    text = output.getvalue()
    assert SECRET not in text
    assert "builtins.ValueError (message not logged)" in text
    assert "builtins.KeyError (message not logged)" in text
    assert "test_exceptions_are_logged_by_type_and_frames" in text  # the frames are there


def test_warnings_and_thread_exceptions_go_through_the_same_handler(
        output: io.StringIO) -> None:
    warnings.warn(f"authorization: Bearer {SECRET}", UserWarning, stacklevel=1)

    def boom() -> None:
        raise RuntimeError(SECRET)

    thread = threading.Thread(target=boom, name="worker-1")
    thread.start()
    thread.join(5)
    text = output.getvalue()
    assert SECRET not in text
    assert "WARNING py.warnings:" in text
    assert "uncaught exception in thread worker-1" in text
    assert "builtins.RuntimeError (message not logged)" in text


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="log level"):
        configure_logging("trace", io.StringIO())
