"""Real PostgreSQL and Redis servers for the tests, from Debian's packages, on loopback.

    with PostgresServer() as pg:          # initdb into a fresh folder, postgres on a free port
        dsn = pg.create_database("t1")    # postgresql://tokios@127.0.0.1:PORT/t1
    with RedisServer() as redis:          # redis-server on a free port, no persistence
        url = redis.url                   # redis://127.0.0.1:PORT/0

Nothing is mocked: these are the servers a multi-node gateway runs against, started and torn
down by the fixtures (tests/conftest.py: ``postgres_server``, ``redis_server``). ``./scripts/
setup-dev`` installs the packages (``postgresql``, ``redis-server``) where they are missing.
PostgreSQL refuses to run as root, so as root it runs as the ``postgres`` user the package
creates. Both are tuned for tests: no fsync, no snapshots.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PostgresServer", "RedisServer", "ServiceUnavailable", "free_port"]


class ServiceUnavailable(RuntimeError):
    """The server's programs are not installed here (run ./scripts/setup-dev as root)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s")


def _postgres_bin() -> Path:
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False)
        candidate = Path(out.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if versions:
        return Path(versions[-1]).parent
    raise ServiceUnavailable("PostgreSQL is not installed (Debian: apt-get install postgresql)")


class PostgresServer:
    """A throwaway PostgreSQL cluster (see module doc). Superuser ``tokios``, trust auth on
    127.0.0.1 only."""

    USER = "tokios"

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        self.port = 0
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._as: list[str] = []

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{self.USER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresServer:
        self.dir = Path(tempfile.mkdtemp(prefix="tokios-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        data = self.dir / "data"
        subprocess.run([*self._as, str(self.bin / "initdb"), "-D", str(data), "-U", self.USER,
                        "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"],
                       check=True, capture_output=True, timeout=120)
        self.port = free_port()
        log = (self.dir / "postgres.log").open("wb")
        self.proc = subprocess.Popen(
            [*self._as, str(self.bin / "postgres"), "-D", str(data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=200"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        _wait_port(self.port, self.proc, "postgres")
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 30) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def create_database(self, name: str) -> str:
        """A new, empty database; its DSN."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn_for(name)

    def log(self) -> str:
        assert self.dir is not None
        path = self.dir / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # smart shutdown would wait for clients: SIGINT is "fast"
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer:
    """A throwaway redis-server on 127.0.0.1 (see module doc)."""

    def __init__(self) -> None:
        found = shutil.which("redis-server")
        if found is None:
            raise ServiceUnavailable("Redis is not installed (Debian: apt-get install "
                                     "redis-server)")
        self.program = found
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir: Path | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.dir = Path(tempfile.mkdtemp(prefix="tokios-redis-"))
        self.port = free_port()
        log = (self.dir / "redis.log").open("wb")
        self.proc = subprocess.Popen(
            [self.program, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--protected-mode", "yes"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        _wait_port(self.port, self.proc, "redis-server")
        return self

    def flush(self) -> None:
        import redis

        with redis.Redis.from_url(self.url) as client:
            client.flushall()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
