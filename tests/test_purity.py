"""The pure packages load no I/O, clock, thread or randomness module, even indirectly.

import-linter checks the import graph statically (see pyproject.toml); this test checks what is
actually loaded at run time, which also catches an I/O module pulled in by a dependency.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

FORBIDDEN = ("asyncio", "socket", "ssl", "selectors", "threading", "random", "secrets",
             "subprocess", "multiprocessing", "concurrent.futures", "logging", "runtimes")

PROBE = """
import importlib, pkgutil, sys
before = set(sys.modules)
package = importlib.import_module({package!r})
for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    importlib.import_module(info.name)
loaded = set(sys.modules) - before
print("\\n".join(sorted(loaded)))
"""


@pytest.mark.parametrize("package", ["tokios_proto", "tokios_translate"])
def test_pure_package_loads_no_io_module(package: str) -> None:
    out = subprocess.run(
        [sys.executable, "-I", "-c", PROBE.format(package=package)],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert package in out, "the probe did not import the package"
    offending = sorted(m for m in out if m.split(".")[0] in FORBIDDEN or m in FORBIDDEN)
    assert offending == [], f"{package} loads I/O modules: {offending}"
