"""``python -m runtimes.quickstart``: install into ``.venv`` (stage one), then run (stage two).

Runs on the system Python with the standard library only, until it hands over to the venv's
Python with :func:`os.execv`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from runtimes.quickstart import install, options


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = options.parse(argv)
    if not args.skip_install:
        home: Path = args.home
        try:
            python = install.ensure_installed(
                with_engine=args.upstream is None, log_path=home / "logs" / "install.log")
        except install.InstallError as exc:
            sys.stderr.write(f"install failed; the end of pip's log:\n{exc}\n")
            return 1
        except KeyboardInterrupt:
            return 130
        if Path(sys.prefix).resolve() != install.VENV.resolve():
            stage_two = [str(python), "-m", "runtimes.quickstart.run", *argv, "--skip-install"]
            os.execv(python, stage_two)  # noqa: S606 (the venv's own python)
    from runtimes.quickstart import run  # noqa: PLC0415 (needs the venv's packages)

    return run.main(args)


if __name__ == "__main__":
    sys.exit(main())
