"""The mutation score of the last ``scripts/mutation`` run, per module, as a Markdown table.

Reads mutmut's result files (``mutants/**/*.py.meta``). A mutant is *detected* when a test
failed (killed) or hung (timeout); the score is detected / tested, where tested leaves out the
mutants not run yet. ``--survivors`` also lists the surviving mutants of each module.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DETECTED = {1, 3, 36, 24, -24, 152, 255}  # killed (1, 3) or timeout (mutmut's exit codes)
SURVIVED = 0
NO_TESTS = {5, 33}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--survivors", action="store_true", help="list the surviving mutants")
    args = parser.parse_args()
    metas = sorted((ROOT / "mutants").glob("**/*.py.meta"))
    if not metas:
        raise SystemExit("no results: run scripts/mutation first")
    rows, survivors, total = [], {}, Counter()
    for meta in metas:
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if not codes:
            continue
        module = str(meta.relative_to(ROOT / "mutants"))[: -len(".meta")]
        count = Counter()
        for name, code in codes.items():
            if code is None:
                count["not run"] += 1
            elif code in DETECTED:
                count["detected"] += 1
            elif code == SURVIVED:
                count["survived"] += 1
                survivors.setdefault(module, []).append(name)
            elif code in NO_TESTS:
                count["no tests"] += 1
            else:
                count["other"] += 1
        total.update(count)
        rows.append((module, count))
    print("| module | mutants | detected | survived | no tests | score |")
    print("|---|---|---|---|---|---|")
    for module, count in [*rows, ("**all**", total)]:
        tested = sum(count.values()) - count["not run"]
        score = f"{100 * count['detected'] / tested:.1f}%" if tested else "not run"
        print(f"| {module} | {sum(count.values())} | {count['detected']} | {count['survived']} "
              f"| {count['no tests']} | {score} |")
    if total["not run"]:
        print(f"\n({total['not run']} mutants not run yet)")
    if args.survivors:
        for module, names in survivors.items():
            print(f"\n{module}:")
            for name in names:
                print(f"  {name}")


if __name__ == "__main__":
    main()
