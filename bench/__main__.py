"""Run the benchmarks (from the repository root).

    .venv/bin/python -m bench                 # every bench/*.py, each with its defaults
    .venv/bin/python -m bench --quick         # about a minute: micro + tunnel --quick
    .venv/bin/python -m bench NAME [ARGS...]  # one module, e.g. ``tunnel --runtime uvloop``

Imports each ``bench/*.py`` module (not starting with ``_``) in name order and calls its
``main()`` with no command-line arguments, so each prints its own table with its defaults.
``--quick`` runs the micro benchmarks (``QUICK``) with their defaults and ``tunnel --quick``,
and skips the rest. A module that fails is reported and the rest still run; the exit status
is 1 if any failed.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import traceback
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
#: What ``--quick`` runs, with these arguments (the rest is skipped).
QUICK = {"http_codecs": [], "ops_accounting": [], "proto_core": [], "translate_requests": [],
         "translate_stream": [],
         "tunnel": ["--quick"]}


def modules() -> list[Path]:
    return sorted(p for p in BENCH_DIR.glob("*.py") if not p.name.startswith("_"))


def run(path: Path, args: list[str] | None = None) -> bool:
    spec = importlib.util.spec_from_file_location(f"bench.{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it runs
    saved_argv = sys.argv
    sys.argv = [str(path), *(args or [])]  # each main() parses its own arguments
    try:
        spec.loader.exec_module(module)
        module.main()
    except Exception:
        traceback.print_exc()
        return False
    finally:
        sys.argv = saved_argv
    return True


def main() -> int:
    root = str(BENCH_DIR.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    argv = sys.argv[1:]
    quick = argv == ["--quick"]
    selected = [(p, None) for p in modules()]
    if quick:
        selected = [(p, QUICK[p.stem]) for p in modules() if p.stem in QUICK]
        skipped = [p.stem for p in modules() if p.stem not in QUICK]
        if skipped:
            print(f"--quick: skipping {', '.join(skipped)} (run: python -m bench NAME)")
    elif argv:
        path = BENCH_DIR / f"{argv[0]}.py"
        if argv[0].startswith(("-", "_")) or not path.exists():
            names = ", ".join(p.stem for p in modules())
            print(f"usage: python -m bench [--quick | NAME [ARGS...]]; NAME is one of {names}",
                  file=sys.stderr)
            return 2
        selected = [(path, argv[1:])]
    failed = []
    for path, args in selected:
        print(f"\n## bench/{path.name}\n", flush=True)
        start = time.perf_counter()
        if not run(path, args):
            failed.append(path.name)
        print(f"\n({time.perf_counter() - start:.1f} s)", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
