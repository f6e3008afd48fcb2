"""The threaded connector runs without an event loop: importing it (and the CLI path that
selects it) loads no asyncio, uvloop or asyncio shell module. import-linter checks the static
graph (pyproject.toml); this checks what is actually loaded, dependencies included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("asyncio", "uvloop", "runtimes.netio", "runtimes.gateway", "runtimes.connector.app",
             "runtimes.tunnel.pump")

PROBE = """
import importlib, sys
before = set(sys.modules)
for name in {modules!r}:
    importlib.import_module(name)
print("\\n".join(sorted(set(sys.modules) - before)))
"""


@pytest.mark.parametrize("modules", [
    ("runtimes.connector.threaded",),
    ("runtimes.blocking", "runtimes.blocking.upstream", "runtimes.blocking.websocket"),
    ("runtimes.connector.cli",),  # `--runtime threaded` loads the asyncio shell only on use
])
def test_threaded_connector_loads_no_event_loop(modules: tuple[str, ...]) -> None:
    out = subprocess.run([sys.executable, "-c", PROBE.format(modules=modules)], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    assert modules[0] in out, "the probe did not import the module"
    offending = sorted(m for m in out
                       if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))
    assert offending == [], f"the threaded connector loads {offending}"
