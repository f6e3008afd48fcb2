"""Logging for the Tokios programs: one place, so no secret or content reaches a log line.

``configure_logging(level)`` is what ``tokios-gateway serve`` and ``tokios-connector`` (both
runtimes) call once at start, before anything logs. It installs one stderr handler on the root
logger and:

- sets Tokios's own loggers (``tokios.*``) to ``level`` (``debug``, ``info``, ``warning``,
  ``error``); every other logger - the root, and by name ``hpack``, ``h2``, ``h11``,
  ``wsproto``, ``asyncio``, ``httpx``, ``httpcore``, ``urllib3``, ``uvloop`` - is pinned at
  WARNING whatever ``level`` says (hpack at DEBUG writes every decoded header, keys included);
- puts :class:`RedactingFilter` on the handler, the only way to the output: it refuses records
  of non-Tokios loggers below WARNING (even if a library lowers its own level later), and
  rewrites every record it passes through :func:`redact` (API keys, connector tokens,
  ``Bearer`` credentials and the values of credential headers become ``[REDACTED]``), escapes
  control characters (one record, one line) and cuts messages at :data:`MAX_MESSAGE_CHARS`;
- writes text lines (:data:`FORMAT`) or, with ``fmt="json"`` (``--log-format json``), one JSON
  object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, and
  ``request_id`` when the record carries one (``logger.info(..., extra={"request_id": rid})``:
  the gateway's id of the request, which it passes to the connector; both log it);
- formats exceptions by type and frames only (an exception's message may quote a body or a
  header: ``invalid literal for int(): '...'``), and sends ``warnings`` and uncaught thread
  exceptions through the same handler.

Tokios code itself logs no header value, query string, prompt or completion at any level; the
filter is the second line of defence. ``docs/operations.md`` ("Logs") says what each level shows.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
import threading
import traceback
from types import TracebackType
from typing import TextIO

__all__ = [
    "LEVELS",
    "LOG_FORMATS",
    "MAX_MESSAGE_CHARS",
    "THIRD_PARTY_LOGGERS",
    "JsonFormatter",
    "RedactingFilter",
    "RedactingFormatter",
    "configure_logging",
    "redact",
]

#: The values of ``--log-level``.
LEVELS = ("debug", "info", "warning", "error")
#: The values of ``--log-format``.
LOG_FORMATS = ("text", "json")
#: Loggers pinned at WARNING by name (any other non-Tokios logger inherits the root's WARNING).
THIRD_PARTY_LOGGERS = ("hpack", "h2", "h11", "wsproto", "asyncio", "httpx", "httpcore",
                       "urllib3", "uvloop", "py.warnings")
#: The longest message a record may carry (longer ones are cut, with a marker).
MAX_MESSAGE_CHARS = 4096
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "[REDACTED]"

_OWN = "tokios"
_CREDENTIAL_HEADERS = (r"authorization|proxy-authorization|x-api-key|api-key|cookie|set-cookie"
                       r"|x-goog-api-key")
_VALUE = r"[^\s'\",;)\]}]+(?:;\s*[^\s'\",;)\]}]+)*"
_PATTERNS = (
    # A credential header's value: "x-api-key: v", "x-api-key=v", ('x-api-key', 'v'),
    # (b'authorization', b'Bearer v'), {"x-api-key": "v"}.
    (re.compile(rf"(?i)\b({_CREDENTIAL_HEADERS})"
                rf"(['\"]?\s*[:=]\s*(?:(?-i:b)?['\"])?|['\"],\s*(?-i:b)?['\"])"
                rf"(?:(?:bearer|basic)\s+)?{_VALUE}"),
     rf"\1\2{REDACTED}"),
    # Any other bearer or basic credential.
    (re.compile(r"(?i)\b(bearer|basic)(\s+)(?!\[REDACTED\])[^\s'\",)\]}]+"), rf"\1\2{REDACTED}"),
    # Tokios credentials: sk-tokios-<public id>_<secret>, tkct-<public id>_<secret>.
    (re.compile(r"sk-tokios-[A-Za-z0-9_\-]*"), f"sk-tokios-{REDACTED}"),
    (re.compile(r"tkct-[A-Za-z0-9_\-]*"), f"tkct-{REDACTED}"),
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]|\n")


def redact(text: str) -> str:
    """``text`` with every credential replaced by ``[REDACTED]`` (see the module doc)."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _escape(text: str) -> str:
    return _CONTROL.sub(lambda m: "\\n" if m.group() == "\n" else f"\\x{ord(m.group()):02x}",
                        text)


def _is_own(name: str) -> bool:
    return name == _OWN or name.startswith(_OWN + ".")


class RedactingFilter(logging.Filter):
    """A handler filter: drops non-Tokios records below WARNING; redacts, escapes and bounds the
    message of every other record (``record.msg`` becomes the final text, ``args`` empty)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _is_own(record.name) and record.levelno < logging.WARNING:
            return False
        try:
            message = record.getMessage()
        except Exception as exc:  # a bad format string: say so, without its arguments
            message = f"<unformattable log record: {type(exc).__name__}>"
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS] + " ...[truncated]"
        record.msg = _escape(redact(message))
        record.args = None
        return True


class RedactingFormatter(logging.Formatter):
    """:data:`FORMAT`, exceptions as types and frames without their messages, all redacted."""

    def formatException(self, ei: tuple[type[BaseException], BaseException,  # noqa: N802
                                         TracebackType | None] | tuple[None, None, None]) -> str:
        _, exc, _ = ei
        if exc is None:
            return ""
        lines: list[str] = []
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen and len(seen) < 8:
            seen.add(id(current))
            frames = traceback.extract_tb(current.__traceback__, limit=32)
            lines[:0] = ["Traceback (most recent call last):\n", *frames.format(),
                         f"{type(current).__module__}.{type(current).__qualname__} "
                         "(message not logged)\n"]
            current = current.__cause__ or current.__context__
        return redact("".join(lines)).rstrip("\n")

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return redact(stack_info)


class JsonFormatter(RedactingFormatter):
    """One JSON object per record (see the module doc); the message is already redacted and
    escaped by :class:`RedactingFilter`, exceptions are formatted as the text formatter does."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if isinstance(request_id, str):
            entry["request_id"] = redact(request_id[:64])
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def _thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("tokios").error("uncaught exception in thread %s", name,
                                      exc_info=args.exc_value)


def configure_logging(level: str, stream: TextIO | None = None, *,
                      fmt: str = "text") -> logging.Handler:
    """Set up logging for a Tokios program (see the module doc); call once, before serving.

    ``level`` is one of :data:`LEVELS`, ``fmt`` one of :data:`LOG_FORMATS`; ``stream``
    defaults to stderr. Returns the handler.
    """
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}")
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else RedactingFormatter(FORMAT))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in THIRD_PARTY_LOGGERS:
        third = logging.getLogger(name)
        third.setLevel(logging.WARNING)
        for old in list(third.handlers):  # a library's own handler would bypass the filter
            third.removeHandler(old)
        third.propagate = True
    logging.getLogger(_OWN).setLevel(level.upper())
    logging.captureWarnings(True)
    threading.excepthook = _thread_exception
    return handler
