"""``python -m tests.chaos``: the chaos run by hand, for as long as a release check wants.

    python -m tests.chaos --seconds 600 --runtime threaded --backend llamacpp

Prints the verdict counts and each defect; exits 1 if any request is a defect.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tests.chaos.runner import ChaosRun


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos",
        description="Real traffic (Chat, Messages, Responses, Ollama; streamed and not; "
        "HTTP/1.1 and HTTP/2) through a real gateway and two connectors while connectors "
        "are SIGKILLed and the gateway is restarted with a drain. Every request must end "
        "complete or as a clean error in the client's format.")
    parser.add_argument("--seconds", type=float, default=120,
                        help="how long the traffic runs (default 120)")
    parser.add_argument("--clients", type=int, default=32,
                        help="concurrent clients, half HTTP/1.1, half HTTP/2 (default 32)")
    parser.add_argument("--kill-every", type=float, default=5.0,
                        help="seconds between connector SIGKILLs (default 5)")
    parser.add_argument("--no-gateway-restart", action="store_true",
                        help="do not restart the gateway halfway")
    parser.add_argument("--runtime", choices=["asyncio", "threaded"], default="asyncio",
                        help="the connectors' --runtime (default asyncio)")
    parser.add_argument("--backend", choices=["ollama", "llamacpp"], default="ollama",
                        help="the scripted model server's protocol (default ollama)")
    parser.add_argument("--seed", type=int, default=0, help="the traffic's random seed")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the logs go (default: a new temporary folder)")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tokios-chaos-"))
    report = ChaosRun(workdir, seconds=args.seconds, clients=args.clients,
                      kill_every=args.kill_every, restart_gateway=not args.no_gateway_restart,
                      runtime=args.runtime, backend=args.backend, seed=args.seed).run()
    print(report.summary())
    print(f"logs: {workdir}")
    return 1 if report.defects else 0


if __name__ == "__main__":
    sys.exit(main())
