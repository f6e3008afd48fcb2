"""Run every fuzz harness for about ``--seconds`` in all; exit non-zero on a finding.

Convention: every ``fuzz/<name>.py`` whose name does not start with ``_`` and which defines
``TestOneInput(data: bytes) -> None`` is a harness; its seed corpus is ``fuzz/corpus/<name>/``
(optional), and an optional libFuzzer dictionary is ``fuzz/dictionaries/<name>.dict`` or
``fuzz/dictionaries/<prefix>.dict`` (``prefix`` = the name up to its first ``_``). A harness
signals a finding by raising.

With atheris importable, each harness runs in its own process under libFuzzer
(``-max_total_time``), with coverage instrumentation of ``tokios_*``; new inputs go to a
temporary directory so the committed seed corpus is never modified. Otherwise a Hypothesis
fallback replays the seeds, then feeds mutated seeds and random bytes until the time is up.

    fuzz/run --seconds 100 --strict    # what CI runs
    fuzz/run --seconds 3600 --only stream_sse_messages
    fuzz/run --hypothesis --seconds 30 # force the fallback

``--strict`` sets ``TOKIOS_FUZZ_STRICT=1`` for the harnesses: the stream translators then
re-raise an internal error instead of turning it into a well-formed in-stream error, so a bug
is a finding rather than a valid-looking answer (see ``_stream_harness.py``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
ROOT = FUZZ_DIR.parent
CORPUS = FUZZ_DIR / "corpus"
#: Seconds a harness process needs to start (imports) on top of its fuzzing time.
STARTUP = 3.5
#: Where libFuzzer writes crashing inputs (override with FUZZ_ARTIFACTS).
ARTIFACTS = Path(tempfile.gettempdir()) / "tokios-fuzz-artifacts"


def discover() -> list[str]:
    names = []
    for path in sorted(FUZZ_DIR.glob("*.py")):
        if path.name.startswith("_"):
            continue
        source = path.read_text(encoding="utf-8")
        if "TestOneInput" in source:
            names.append(path.stem)
    return names


def seeds(name: str) -> list[bytes]:
    directory = CORPUS / name
    if not directory.is_dir():
        return []
    return [p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()]


def dictionary_for(name: str) -> Path | None:
    """``fuzz/dictionaries/<name>.dict``, else the one for the name's first ``_`` segment."""
    for stem in (name, name.split("_", 1)[0]):
        path = FUZZ_DIR / "dictionaries" / f"{stem}.dict"
        if path.is_file():
            return path
    return None


def _setup_path() -> None:
    for entry in (str(ROOT), str(FUZZ_DIR)):
        if entry not in sys.path:
            sys.path.insert(0, entry)


def load(name: str) -> Callable[[bytes], None]:
    _setup_path()
    module = importlib.import_module(name)
    harness: Callable[[bytes], None] = module.TestOneInput
    return harness


# -- atheris --------------------------------------------------------------------------------------


def atheris_child(name: str, seconds: float) -> None:
    """In a child process: fuzz one harness with libFuzzer until the time is up."""
    import atheris

    _setup_path()
    with atheris.instrument_imports(include=["tokios_translate", "tokios_proto"]):
        harness = load(name)
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as work:
        artifacts = Path(os.environ.get("FUZZ_ARTIFACTS", ARTIFACTS)) / name
        artifacts.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.argv[0],
            f"-max_total_time={max(1, int(seconds))}",
            f"-artifact_prefix={artifacts}/",
            "-timeout=20",
            "-rss_limit_mb=2048",
            "-max_len=4096",
            "-print_final_stats=0",
            work,
        ]
        dictionary = dictionary_for(name)
        if dictionary is not None:
            argv.insert(1, f"-dict={dictionary}")
        seed_dir = CORPUS / name
        if seed_dir.is_dir():
            argv.append(str(seed_dir))
        atheris.Setup(argv, harness)
        atheris.Fuzz()


def run_atheris(names: list[str], seconds: float) -> int:
    per = max(1.0, seconds / len(names) - STARTUP)
    failures = []
    for name in names:
        print(f"== fuzz {name} (atheris, {per:.0f}s)", flush=True)
        result = subprocess.run(
            [sys.executable, __file__, "--child", name, "--seconds", str(per)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            check=False,
        )
        lines = result.stdout.splitlines()
        if result.returncode != 0:
            failures.append(name)
            marker = [i for i, line in enumerate(lines) if "Uncaught Python exception" in line]
            print("\n".join(lines[marker[0] :] if marker else lines[-80:]))
            print(
                f"!! finding in {name} (exit {result.returncode}); "
                f"the input is under {ARTIFACTS}/{name}/",
                flush=True,
            )
        else:
            print("\n".join(line for line in lines if line.startswith("Done ")), flush=True)
    return 1 if failures else 0


# -- Hypothesis fallback ---------------------------------------------------------------------------


def run_hypothesis(names: list[str], seconds: float) -> int:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    per = max(1.0, seconds / len(names))
    failures = []
    for name in names:
        print(f"== fuzz {name} (hypothesis fallback, {per:.0f}s)", flush=True)
        harness = load(name)
        corpus = seeds(name) or [b""]
        deadline = time.monotonic() + per
        try:
            for seed in corpus:
                harness(seed)
            edits = st.lists(
                st.tuples(st.integers(0, 1 << 16), st.binary(max_size=8), st.integers(0, 8)),
                max_size=6,
            )
            mutated = st.builds(_mutate, st.sampled_from(corpus), edits, st.integers(0, 1 << 16))
            inputs = st.one_of(mutated, st.binary(max_size=512))

            fuzz_batch = settings(
                max_examples=50,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )(given(inputs)(harness))
            while time.monotonic() < deadline:
                fuzz_batch()
        except Exception as exc:
            failures.append(name)
            print(f"!! finding in {name}: {type(exc).__name__}: {exc}", flush=True)
    return 1 if failures else 0


def _mutate(seed: bytes, edits: list[tuple[int, bytes, int]], cut: int) -> bytes:
    data = bytearray(seed)
    for position, insert, delete in edits:
        at = position % (len(data) + 1)
        data[at : at + delete] = insert
    if cut % 3 == 0 and data:
        del data[cut % len(data) :]
    return bytes(data)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="total time for all harnesses")
    parser.add_argument("--only", action="append", help="run only this harness (repeatable)")
    parser.add_argument("--hypothesis", action="store_true", help="force the Hypothesis fallback")
    parser.add_argument("--strict", action="store_true",
                        help="translators re-raise internal errors (TOKIOS_FUZZ_STRICT=1)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.strict:
        os.environ["TOKIOS_FUZZ_STRICT"] = "1"  # read by the harnesses, inherited by children
    if args.child:
        atheris_child(args.child, args.seconds)
        return 0
    names = discover()
    if args.only:
        unknown = set(args.only) - set(names)
        if unknown:
            parser.error(f"unknown harness: {', '.join(sorted(unknown))}")
        names = [n for n in names if n in args.only]
    if not names:
        print("no fuzz harnesses found")
        return 0
    use_atheris = not args.hypothesis
    if use_atheris:
        try:
            import atheris  # noqa: F401
        except ImportError:
            use_atheris = False
    if use_atheris:
        return run_atheris(names, args.seconds)
    return run_hypothesis(names, args.seconds)


if __name__ == "__main__":
    sys.exit(main())
