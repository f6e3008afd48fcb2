"""Child processes of the quick start, and the admin CLI calls that provision the gateway.

:class:`Child` is one process with its output in a log file. :class:`Services` starts children
and stops them in reverse order (connector, gateway, engine). :func:`admin` runs one
``tokios-gateway ... --json`` command. The children get their own session, so a Ctrl-C in the
terminal reaches only the quick start, which then stops them in order.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

LISTENING = re.compile(r"listening on (https?)://(\S+?):(\d+)")


class StepError(Exception):
    """A step of the quick start failed; the message says what to do."""


@dataclass
class Child:
    """One child process; its stdout and stderr go (appended) to ``log_path``."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None
    log_offset: int = 0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.log_offset = log.tell()
            self.popen = subprocess.Popen(  # noqa: S603 (our own argv)
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def output(self) -> str:
        """What the process wrote since it started."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(self.log_offset)
            return log.read().decode(errors="replace")

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)


@dataclass
class Services:
    """The children started so far; :meth:`stop_all` stops them newest first."""

    children: list[Child] = field(default_factory=list)

    def start(self, child: Child) -> Child:
        child.start()
        self.children.append(child)
        return child

    def first_dead(self) -> Child | None:
        return next((c for c in self.children if not c.alive()), None)

    def stop_all(self) -> None:
        for child in reversed(self.children):
            child.stop()


def wait_for_line(child: Child, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
    """Wait until ``child``'s output matches ``pattern``; raise :class:`StepError` if it exits
    or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = pattern.search(child.output())
        if match:
            return match
        if not child.alive():
            raise StepError(f"{child.name} exited with code {child.returncode}:\n{child.tail()}")
        time.sleep(0.05)
    raise StepError(f"{child.name} did not start within {timeout:.0f}s:\n{child.tail()}")


def admin(data: Path, *args: str, ok_codes: tuple[int, ...] = (0,)) -> tuple[int, dict[str, Any]]:
    """Run ``tokios-gateway ARGS --json --data DATA``; return its exit code and JSON object.
    Raises :class:`StepError` on an exit code outside ``ok_codes``."""
    result = subprocess.run(  # noqa: S603 (our own argv)
        [sys.executable, "-m", "runtimes.gateway.cli", *args, "--json", "--data", str(data)],
        capture_output=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )
    try:
        parsed = orjson.loads(result.stdout) if result.stdout.strip() else {}
    except orjson.JSONDecodeError:
        parsed = {}
    if result.returncode not in ok_codes:
        message = result.stderr.decode(errors="replace").strip()
        raise StepError(f"tokios-gateway {args[0]} {args[1]} failed "
                        f"(exit {result.returncode}): {message}")
    return result.returncode, parsed if isinstance(parsed, dict) else {}
