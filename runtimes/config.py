"""Config files for ``tokios-gateway`` and ``tokios-connector``: TOML, one key per option.

A config file names command-line options without their dashes (``grace-period = 30`` or
``grace_period = 30``); every long option of the command may appear, nothing else may.
Precedence, highest first: the option on the command line, its environment variable, the
config file, the built-in default. A CLI calls, before ``parse_args``::

    argv, path = take_config_argument(argv, env_var="TOKIOS_CONNECTOR_CONFIG")
    if path is not None:
        table = read_config(path)                                  # raises ConfigError
        apply_config(table, path, [parser], environment=ENVIRONMENT)
    args = parser.parse_args(argv)

``ENVIRONMENT`` maps an option's ``dest`` to the environment variable that may set it; an
option whose variable is set keeps the variable's value. Values are checked as the command line
checks them: the option's type and choices, ``true``/``false`` for switches, an array of strings
(or one string) for a repeatable option. An unknown key, a wrong type or an unreadable file is a
:class:`ConfigError` naming the file and the key; the CLIs print it and exit 2.
"""

from __future__ import annotations

import argparse
import difflib
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["MAX_CONFIG_BYTES", "ConfigError", "apply_config", "read_config",
           "take_config_argument"]

#: The largest config file read (a config file is a few hundred bytes).
MAX_CONFIG_BYTES = 1024 * 1024


class ConfigError(ValueError):
    """The config file cannot be used; the message says which file, which key and why."""


def take_config_argument(argv: Sequence[str], *, env_var: str) -> tuple[list[str], Path | None]:
    """``argv`` without ``--config FILE`` / ``--config=FILE`` (anywhere in it), and the file
    named there or by ``env_var`` (None: no config file)."""
    rest: list[str] = []
    found: str | None = None
    items = list(argv)
    i = 0
    while i < len(items):
        item = items[i]
        if item == "--":
            rest.extend(items[i:])
            break
        if item == "--config":
            if i + 1 >= len(items):
                raise ConfigError("--config needs a FILE")
            found = items[i + 1]
            i += 2
            continue
        if item.startswith("--config="):
            found = item.partition("=")[2]
        else:
            rest.append(item)
        i += 1
    if found is None:
        found = os.environ.get(env_var) or None
    return rest, Path(found) if found else None


def apply_config(table: Mapping[str, Any], path: Path,
                 parsers: Sequence[argparse.ArgumentParser], *,
                 environment: Mapping[str, str]) -> dict[str, Any]:
    """Make the values of ``table`` (read from ``path`` by :func:`read_config`) the defaults of
    the matching options of ``parsers`` (an option may appear in several). Returns the values
    it set, by ``dest``. See the module doc for the rules."""
    options: dict[str, list[argparse.Action]] = {}
    for parser in parsers:
        for action in parser._actions:
            for option in action.option_strings:
                if option.startswith("--") and option not in ("--help", "--config"):
                    options.setdefault(option[2:], []).append(action)
    applied: dict[str, Any] = {}
    for raw_key, value in table.items():
        key = raw_key.replace("_", "-")
        actions = options.get(key)
        if actions is None:
            close = difflib.get_close_matches(key, list(options), n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            raise ConfigError(f"{path}: unknown option `{raw_key}`{hint}")
        for action in actions:
            converted = _convert(path, raw_key, action, value)
            env = environment.get(action.dest)
            if env is not None and os.environ.get(env):
                continue  # the environment variable wins over the file
            action.default = converted
            action.required = False
            applied[action.dest] = converted
    return applied


def read_config(path: Path) -> dict[str, Any]:
    """The top-level keys of the TOML file ``path``; ConfigError if it cannot be used."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: a config file may hold at most {MAX_CONFIG_BYTES} bytes")
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for key, value in table.items():
        if isinstance(value, dict):
            raise ConfigError(f"{path}: `{key}` is a table; options are top-level keys")
    return table


def _convert(path: Path, key: str, action: argparse.Action, value: Any) -> Any:
    where = f"{path}: option `{key}`"
    if action.nargs == 0:  # a switch: store_true / store_false
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false")
        return value if isinstance(action, argparse._StoreTrueAction) else not value
    if isinstance(action, argparse._AppendAction):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str | int | float)
                                                  and not isinstance(i, bool) for i in items):
            raise ConfigError(f"{where} must be a string or an array of strings")
        return [_one(where, action, item) for item in items]
    if isinstance(value, bool | list | dict):
        raise ConfigError(f"{where} must be a single value")
    return _one(where, action, value)


def _one(where: str, action: argparse.Action, value: str | int | float) -> Any:
    converter = action.type if callable(action.type) else str
    try:
        converted = converter(str(value))
    except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
        raise ConfigError(f"{where}: invalid value {str(value)[:100]!r} ({exc})") from None
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(str(c) for c in action.choices)
        raise ConfigError(f"{where} must be one of {choices}")
    return converted
