"""Run every benchmark: ``.venv/bin/python -m bench`` (from the repository root).

Imports each ``bench/*.py`` module (not starting with ``_``) in name order and calls its
``main()`` with no command-line arguments, so each prints its own table with its defaults.
A module that fails is reported and the rest still run; the exit status is 1 if any failed.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import traceback
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def modules() -> list[Path]:
    return sorted(p for p in BENCH_DIR.glob("*.py") if not p.name.startswith("_"))


def run(path: Path) -> bool:
    spec = importlib.util.spec_from_file_location(f"bench.{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it runs
    saved_argv = sys.argv
    sys.argv = [str(path)]  # each main() parses its own (default) arguments
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
    failed = []
    for path in modules():
        print(f"\n## bench/{path.name}\n", flush=True)
        start = time.perf_counter()
        if not run(path):
            failed.append(path.name)
        print(f"\n({time.perf_counter() - start:.1f} s)", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
