"""``tokios-gateway serve --workers N``: N gateway processes on the same ports, cooperating as the
nodes of one gateway do (docs/scaling.md).

The parent process serves no request. :func:`run_workers`:

1. picks the ports (a port 0 in ``--listen``, ``--tunnel-listen`` or ``--metrics-listen`` becomes
   one free port, the same for every worker), a cluster secret and the folder of the local
   cluster state (the data directory, or a private temporary one);
2. starts N copies of the same command line, each told by the environment that it is worker i
   of N (:data:`WORKER_ENV`): a worker binds the shared ports with ``SO_REUSEPORT`` (the kernel
   spreads connections, and so requests and tunnels, over the workers), serves forwarded
   requests on a loopback port of its own, and publishes what its tunnels serve;
3. prints one banner once every worker said it is ready (through a pipe), then waits;
4. restarts a worker that dies (after a short back-off), and on SIGTERM/SIGINT passes SIGTERM to
   every worker (each drains within ``--grace-period``), waits for them and exits 0.

A worker that was told :data:`WORKER_ENV` behaves as ``serve`` does, with the differences above
(``runtimes.gateway.server`` reads :func:`worker_context`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from runtimes.gateway.options import ListenAddress, ServeOptions
from runtimes.logs import configure_logging

__all__ = ["MAX_WORKERS", "WORKER_ENV", "WorkerContext", "reuse_port_socket", "run_workers",
           "worker_context"]

logger = logging.getLogger("tokios.gateway")

#: The environment variable that makes ``serve`` a worker: JSON, see :class:`WorkerContext`.
WORKER_ENV = "TOKIOS_WORKER"
#: The most workers one gateway may run.
MAX_WORKERS = 256
#: Seconds the workers have to say they are ready.
READY_TIMEOUT = 60.0
#: Seconds before a worker that died is started again.
RESTART_DELAY = 1.0


@dataclass(frozen=True, slots=True)
class WorkerContext:
    """What a worker learns from its parent."""

    index: int
    count: int
    #: The shared ports, by option: ``listen``, ``tunnel_listen``, ``metrics_listen``.
    ports: dict[str, int]
    #: The secret nodes present to each other when forwarding (hex).
    cluster_secret: str
    #: The folder of the local cluster state (when there is no Redis).
    cluster_dir: str
    #: The write end of the readiness pipe.
    ready_fd: int

    def to_env(self) -> str:
        return json.dumps({"index": self.index, "count": self.count, "ports": self.ports,
                           "cluster_secret": self.cluster_secret,
                           "cluster_dir": self.cluster_dir, "ready_fd": self.ready_fd})

    def signal_ready(self) -> None:
        """Tell the parent this worker serves (once)."""
        with contextlib.suppress(OSError):
            os.write(self.ready_fd, f"{self.index}\n".encode())
            os.close(self.ready_fd)


def worker_context() -> WorkerContext | None:
    """This process's worker context, or None when it is not a worker."""
    raw = os.environ.get(WORKER_ENV)
    if not raw:
        return None
    data = json.loads(raw)
    return WorkerContext(index=int(data["index"]), count=int(data["count"]),
                         ports={str(k): int(v) for k, v in data["ports"].items()},
                         cluster_secret=str(data["cluster_secret"]),
                         cluster_dir=str(data["cluster_dir"]), ready_fd=int(data["ready_fd"]))


def reuse_port_socket(address: ListenAddress) -> socket.socket:
    """A TCP socket bound to ``address`` with SO_REUSEPORT (not yet listening)."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address.host, address.port))
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class _Supervisor:
    def __init__(self, options: ServeOptions, argv: list[str], workers: int) -> None:
        self.options = options
        self.argv = argv
        self.count = workers
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * workers
        self.stopping = False
        self.held: list[socket.socket] = []
        self.ports: dict[str, int] = {}
        self.secret = os.environ.get("TOKIOS_CLUSTER_SECRET") or secrets.token_hex(32)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.cluster_dir = str(options.data_dir)
        self.ready_r, self.ready_w = os.pipe()

    def _reserve_ports(self) -> None:
        """Port 0 becomes one free port for every worker: bound here (never listening, so it
        takes no connection) until the workers listen on it too."""
        for name in ("listen", "tunnel_listen", "metrics_listen"):
            address: ListenAddress | None = getattr(self.options, name)
            if address is None:
                continue
            sock = reuse_port_socket(address)
            self.held.append(sock)
            self.ports[name] = sock.getsockname()[1]

    def _spawn(self, index: int) -> None:
        context = WorkerContext(index=index, count=self.count, ports=self.ports,
                                cluster_secret=self.secret, cluster_dir=self.cluster_dir,
                                ready_fd=self.ready_w)
        env = {**os.environ, WORKER_ENV: context.to_env(), "PYTHONUNBUFFERED": "1"}
        self.procs[index] = subprocess.Popen(  # noqa: S603 (our own program, our own argv)
            [sys.executable, "-m", "runtimes.gateway.cli", *self.argv], env=env,
            pass_fds=(self.ready_w,))

    def _wait_ready(self) -> bool:
        ready: set[int] = set()
        deadline = time.monotonic() + READY_TIMEOUT
        buffer = b""
        while len(ready) < self.count and time.monotonic() < deadline and not self.stopping:
            if any(p is not None and p.poll() is not None for p in self.procs):
                return False
            readable, _, _ = select.select([self.ready_r], [], [], 0.2)
            if readable:
                buffer += os.read(self.ready_r, 4096)
                *lines, buffer = buffer.split(b"\n")
                ready.update(int(line) for line in lines if line.strip())
        return len(ready) == self.count

    def _banner(self) -> str:
        scheme = "http" if self.options.insecure_http else "https"
        listen = self.options.listen
        host = f"[{listen.host}]" if ":" in listen.host else listen.host
        return (f"tokios-gateway listening on {scheme}://{host}:{self.ports['listen']} "
                f"({self.count} workers)")

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        if self.options.data_dir is None or not Path(self.options.data_dir).is_dir():
            self._tmp = tempfile.TemporaryDirectory(prefix="tokios-cluster-")
            self.cluster_dir = self._tmp.name
        try:
            self._reserve_ports()
        except OSError as exc:
            sys.stderr.write(f"tokios-gateway: cannot listen: {exc.strerror or exc}\n")
            return 1
        for index in range(self.count):
            self._spawn(index)
        if not self._wait_ready():
            sys.stderr.write("tokios-gateway: the workers did not start (see above)\n")
            self._stop_all()
            return 1
        for sock in self.held:
            sock.close()
        sys.stderr.write(self._banner() + "\n")
        sys.stderr.flush()
        restart_at: dict[int, float] = {}
        while not self.stopping:
            time.sleep(0.1)
            for index, proc in enumerate(self.procs):
                if proc is None or proc.poll() is None or self.stopping:
                    continue
                if index not in restart_at:
                    logger.error("worker %d exited with %s: restarting it", index,
                                 proc.returncode)
                    restart_at[index] = time.monotonic() + RESTART_DELAY
                elif time.monotonic() >= restart_at[index]:
                    del restart_at[index]
                    self._spawn(index)
        logger.info("shutting down %d workers", self.count)
        self._stop_all()
        return 0

    def _stop_all(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.options.grace_period + 10
        for proc in self.procs:
            if proc is None:
                continue
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for sock in self.held:
            sock.close()
        with contextlib.suppress(OSError):
            os.close(self.ready_r)
            os.close(self.ready_w)
        if self._tmp is not None:
            self._tmp.cleanup()


def run_workers(options: ServeOptions, argv: list[str], workers: int) -> int:
    """Run ``workers`` worker processes of the command line ``argv`` (``serve ...``) and
    supervise them until SIGTERM/SIGINT (see the module doc). Returns the exit code."""
    configure_logging(options.log_level, fmt=options.log_format)
    return _Supervisor(options, argv, workers).run()
