"""What a gateway of several processes gives and costs (issue: a gateway that outgrows one
process and one machine).

    .venv/bin/python -m bench cluster [--quick] [--workers 1 2 4] [--seconds 8]

Everything on loopback, each part its own process, as ``bench tunnel`` does (the raw uvloop
upstream, TLS from a trustme CA, wrk with HTTP/1.1 keep-alive POSTing a small chat). Two tables:

- **workers**: ``serve --workers N`` with one connector holding N tunnels (``--tunnels N``: they
  land on distinct workers, so every worker serves from its own tunnel): req/s and p50 at
  concurrency 32, and at 1;
- **one hop**: two gateway nodes (``--node-listen``, the local cluster file), one connector on
  node A; wrk against A (its own tunnel) and against B (every request forwarded to A): the
  latency one hop adds at concurrency 1, and req/s at 32.

On a machine with 2 cores, wrk, the upstream, the connectors and the workers share them: the
workers table shows how the gateway spreads, not what N cores would give.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.tunnel import BenchStack, WrkResult, machine, table, wrk  # noqa: E402
from tests.e2e.stack import LISTENING, Proc, wait_for  # noqa: E402

SECRET = "bench-cluster-secret-0123456789abcdef"


def _run_wrk(stack: BenchStack, port: int, connections: int, seconds: float) -> WrkResult:
    return wrk(f"https://127.0.0.1:{port}/v1/chat/completions", connections, seconds,
               stack.workdir, stack.keys)


def workers_row(workers: int, seconds: float) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        stack = BenchStack(workdir=Path(tmp), backend="llamacpp", key_count=8,
                           gateway_args=["--workers", str(workers), "--log-level", "warning"])
        stack.up()
        connectors: list[Proc] = []
        try:
            # one connector with a tunnel per worker: the workers name themselves in WELCOME,
            # so its tunnels land on distinct workers and no request needs a hop
            stack.tunnels = workers
            proc = Proc("connector", stack.connector_argv(), stack.workdir / "connector.log")
            proc.start()
            connectors.append(proc)
            stack.wait_served()
            wait_for(lambda: all(stack.served() for _ in range(6)), 20, "every worker routing")
            _run_wrk(stack, stack.port, 32, 2)  # warm up
            c32 = _run_wrk(stack, stack.port, 32, seconds)
            c1 = _run_wrk(stack, stack.port, 1, max(2, seconds // 2))
        finally:
            for proc in connectors:
                proc.stop()
            stack.down()
    return [str(workers), f"{c32.rps:,.0f}", f"{c32.p50_ms:.2f}", f"{c1.p50_ms:.2f}",
            c32.errors or c1.errors or "-"]


def hop_rows(seconds: float) -> list[list[str]]:
    with tempfile.TemporaryDirectory(prefix="bench-hop-") as tmp:
        workdir = Path(tmp)
        (workdir / "secret").write_text(SECRET)
        node_args = ["--node-listen", "127.0.0.1:0", "--cluster-secret-file",
                     str(workdir / "secret"), "--node-ca", str(workdir / "ca.pem"),
                     "--log-level", "warning"]
        stack = BenchStack(workdir=workdir, backend="llamacpp", key_count=8,
                           gateway_args=node_args)
        stack.up()
        node_b = Proc("node-b", [
            sys.executable, "-m", "runtimes.gateway.cli", "serve", "--data", str(stack.data),
            "--listen", "127.0.0.1:0", "--tls-cert", str(workdir / "cert.pem"),
            "--tls-key", str(workdir / "key.pem"), *node_args], workdir / "node-b.log")
        try:
            stack.start_connector()
            stack.wait_served()
            node_b.start()
            wait_for(lambda: LISTENING.search(node_b.log()) is not None, 20, "node B")
            match = LISTENING.search(node_b.log())
            assert match is not None
            port_b = int(match.group(3))
            port_a = stack.port
            stack.port = port_b
            stack.wait_served()  # B routes to A
            rows = []
            for name, port in (("A (own tunnel)", port_a), ("B (forwarded to A)", port_b)):
                _run_wrk(stack, port, 32, 2)
                c1 = _run_wrk(stack, port, 1, max(2, seconds // 2))
                c32 = _run_wrk(stack, port, 32, seconds)
                rows.append([name, f"{c1.p50_ms:.2f}", f"{c32.rps:,.0f}", f"{c32.p50_ms:.2f}",
                             c1.errors or c32.errors or "-"])
        finally:
            node_b.stop()
            stack.down()
    added = float(rows[1][1]) - float(rows[0][1])
    rows.append(["one hop adds (c=1 p50)", f"{added:+.2f}", "", "", ""])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 s per figure, workers 1 and 2")
    parser.add_argument("--workers", type=int, nargs="+", default=None,
                        help="worker counts to measure (default 1 2 4)")
    parser.add_argument("--seconds", type=float, default=8.0, help="per figure (default 8)")
    args = parser.parse_args()
    seconds = 3.0 if args.quick else args.seconds
    counts = args.workers or ([1, 2] if args.quick else [1, 2, 4])
    print(f"# bench cluster ({machine()})\n")
    print("## serve --workers N (one connector, --tunnels N), wrk POST small chat\n")
    print(table(["workers", "req/s c=32", "p50 ms c=32", "p50 ms c=1", "errors"],
                [workers_row(n, seconds) for n in counts]))
    print("\n## one forwarding hop between two nodes\n")
    print(table(["client talks to", "p50 ms c=1", "req/s c=32", "p50 ms c=32", "errors"],
                hop_rows(seconds)))


if __name__ == "__main__":
    main()
