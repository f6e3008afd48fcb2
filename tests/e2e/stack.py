"""A whole Tokios deployment on loopback, driven only through its command-line contract.

:class:`Stack` runs, as real processes: ``tokios-gateway serve`` with TLS from a trustme CA,
``tokios-connector`` dialling it over ``wss://``, and a test model server speaking Ollama's or
the OpenAI-compatible protocol. Tenants, deployments, keys and tokens are made with the admin
CLI in yet another process, exactly as an operator would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import httpx
import openai
import orjson
import trustme

from tests.upstreams.model_servers import OllamaServer, OpenAICompatServer

ROOT = Path(__file__).resolve().parents[2]
_T = TypeVar("_T")

#: The connector runtime of Stacks built without one; conftest sets it per test.
DEFAULT_RUNTIME = ["asyncio"]

LISTENING = re.compile(r"listening on (https?)://([0-9.]+):(\d+)")
METRICS_AT = re.compile(r"metrics: https?://[0-9.]+:(\d+)/metrics")


class BackgroundLoop:
    """An asyncio loop in a daemon thread, for the test model servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float = 10) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def admin(data: Path | str, *args: str, env: Mapping[str, str] | None = None,
          ) -> dict[str, Any]:
    """Run ``tokios-gateway <args> --json --data DATA`` (``--store DATA`` for a PostgreSQL
    URL) in its own process (``env``: added to its environment); return its JSON."""
    where = "--store" if str(data).startswith("postgresql://") else "--data"
    result = subprocess.run(
        [sys.executable, "-m", "runtimes.gateway.cli", *args, "--json", where, str(data)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=None if env is None else {**os.environ, **env},
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, f"admin {args} failed: {result.stderr}"
    parsed: dict[str, Any] = orjson.loads(result.stdout)
    return parsed


@dataclass
class Proc:
    """A child process whose output is collected into a file (read it for the canary test)."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
        )
        log.close()

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Stack:
    """Gateway + connector + test upstream. Build with :meth:`up`, tear down with :meth:`down`."""

    workdir: Path
    backend: str  # "ollama" or "llamacpp"
    #: The connector runtime: ``tokios-connector --runtime asyncio|threaded`` (default: the
    #: runtime the e2e conftest selected for the current test, else asyncio).
    runtime: str = field(default_factory=lambda: DEFAULT_RUNTIME[0])
    upstream_model: str = "qwen3:8b"
    #: Extra ``tokios-connector`` arguments (e.g. ``["--keepalive-interval", "0.2"]``).
    connector_args: list[str] = field(default_factory=list)
    #: ``tokios-connector --tunnels`` (None: the command's default). The suites written for
    #: one tunnel per connector keep 1; the cluster tests hold several.
    tunnels: int | None = 1
    deployment: str = "coder"
    #: ``--log-level`` of the gateway and the connector (None: their default, info).
    log_level: str | None = None
    #: Extra ``tokios-gateway serve`` arguments and environment (e.g. ``--metrics-listen``).
    gateway_args: list[str] = field(default_factory=list)
    gateway_env: dict[str, str] = field(default_factory=dict)
    #: The PostgreSQL store (``--store URL``) instead of SQLite in ``data``.
    store_url: str | None = None
    #: The port of ``/metrics`` (the API port unless ``--metrics-listen`` is given).
    metrics_port: int = 0
    ca: trustme.CA = field(default_factory=trustme.CA)
    bg: BackgroundLoop = field(default_factory=BackgroundLoop)
    upstream: OllamaServer | OpenAICompatServer | None = None
    gateway: Proc | None = None
    connector: Proc | None = None
    port: int = 0
    key: str = ""
    key_id: str = ""
    token: str = ""
    token_id: str = ""
    other_key: str = ""

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    @property
    def store(self) -> Path | str:
        """What :func:`admin` takes: the PostgreSQL URL, else the data directory."""
        return self.store_url or self.data

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "ca.pem"

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx

    def http(self, *, http2: bool = False, timeout: float = 30) -> httpx.Client:
        return httpx.Client(verify=self.ssl_context(), http2=http2, timeout=timeout)

    def openai(self, api_key: str | None = None, **options: Any) -> openai.OpenAI:
        """The official OpenAI SDK, on its own HTTP client, trusting the test CA."""
        http = openai.DefaultHttpxClient(verify=self.ssl_context())
        return openai.OpenAI(
            base_url=f"{self.base_url}/v1",
            api_key=api_key or self.key,
            http_client=http,
            max_retries=0,
            **options,
        )

    def anthropic(self, api_key: str | None = None, **options: Any) -> anthropic.Anthropic:
        """The official Anthropic SDK (base URL without /v1, as Claude Code uses it)."""
        http = anthropic.DefaultHttpxClient(verify=self.ssl_context())
        return anthropic.Anthropic(
            base_url=self.base_url,
            api_key=api_key or self.key,
            http_client=http,
            max_retries=0,
            **options,
        )

    # -- bring-up -----------------------------------------------------------------------

    def up(self) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        cert.private_key_pem.write_to_path(str(self.workdir / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(self.workdir / "cert.pem"))
        for extra in cert.cert_chain_pems[1:]:
            with (self.workdir / "cert.pem").open("ab") as f:
                f.write(extra.bytes())

        server_cls = OllamaServer if self.backend == "ollama" else OpenAICompatServer
        self.upstream = server_cls(model_names=(self.upstream_model,))
        self.bg.run(self.upstream.__aenter__())

        admin(self.store, "tenant", "add", "acme")
        admin(self.store, "deployment", "add", "acme", self.deployment)
        admin(self.store, "deployment", "add", "acme", "unserved")
        key = admin(self.store, "key", "add", "acme", "--name", "e2e")
        self.key, self.key_id = key["key"], key["id"]
        token = admin(self.store, "connector-token", "add", "acme", "--deployment", self.deployment)
        self.token, self.token_id = token["token"], token["id"]
        admin(self.store, "tenant", "add", "globex")
        admin(self.store, "deployment", "add", "globex", "secret-model")
        self.other_key = admin(self.store, "key", "add", "globex")["key"]

        self.start_gateway()
        self.start_connector()
        self.wait_served()
        return self

    def start_gateway(self, port: int = 0) -> None:
        n = len(list(self.workdir.glob("gateway*.log")))
        self.gateway = Proc(
            "gateway",
            [
                sys.executable,
                "-m",
                "runtimes.gateway.cli",
                "serve",
                "--store" if self.store_url else "--data",
                str(self.store),
                "--listen",
                f"127.0.0.1:{port}",
                "--tls-cert",
                str(self.workdir / "cert.pem"),
                "--tls-key",
                str(self.workdir / "key.pem"),
                "--grace-period",
                "5",
                *self.log_args(),
                *self.gateway_args,
            ],
            self.workdir / f"gateway{n}.log",
            env=self.gateway_env,
        )
        self.gateway.start()

        def bound() -> bool:
            log = self.gateway.log() if self.gateway else ""
            match = LISTENING.search(log)
            if match:
                self.port = int(match.group(3))
                metrics = METRICS_AT.search(log)
                self.metrics_port = int(metrics.group(1)) if metrics else self.port
            assert self.gateway is not None and self.gateway.alive(), self.gateway.log()
            return bool(match)

        wait_for(bound, 20, "the gateway to listen")

    def log_args(self) -> list[str]:
        return [] if self.log_level is None else ["--log-level", self.log_level]

    def connector_argv(self, token: str | None = None) -> list[str]:
        assert self.upstream is not None
        return [
            sys.executable,
            "-m",
            "runtimes.connector.cli",
            "--gateway",
            self.base_url,
            "--token",
            token or self.token,
            "--upstream",
            self.upstream.base_url,
            "--backend",
            self.backend,
            "--model",
            f"{self.deployment}={self.upstream_model}",
            "--ca-file",
            str(self.ca_file),
            "--runtime",
            self.runtime,
            *(() if self.tunnels is None else ("--tunnels", str(self.tunnels))),
            *self.connector_args,
        ]

    def start_connector(self) -> None:
        n = len(list(self.workdir.glob("connector*.log")))
        self.connector = Proc(
            "connector", [*self.connector_argv(), *self.log_args()],
            self.workdir / f"connector{n}.log"
        )
        self.connector.start()

    def served(self) -> bool:
        """True when a request for the deployment reaches a connector (not 503)."""
        try:
            with self.http(timeout=5) as client:
                resp = client.post(
                    f"{self.base_url}/v1/chat/completions",
                    headers={"authorization": f"Bearer {self.key}"},
                    json={
                        "model": self.deployment,
                        "max_tokens": 5,
                        "messages": [{"role": "user", "content": "ping"}],
                    },
                )
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    def metrics(self, token: str | None = None) -> dict[str, Any]:
        """Scrape ``/metrics`` and parse it with prometheus-client's parser: {family name:
        family}."""
        from prometheus_client.parser import text_string_to_metric_families

        headers = {} if token is None else {"authorization": f"Bearer {token}"}
        with self.http(timeout=10) as client:
            resp = client.get(f"https://127.0.0.1:{self.metrics_port}/metrics", headers=headers)
        assert resp.status_code == 200, resp.text
        return {family.name: family for family in text_string_to_metric_families(resp.text)}

    def wait_served(self, timeout: float = 30) -> None:
        wait_for(self.served, timeout, "the connector to serve the deployment")

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("*.log")))

    def down(self) -> None:
        for proc in (self.connector, self.gateway):
            if proc is not None:
                proc.stop()
        if self.upstream is not None:
            self.bg.run(self.upstream.__aexit__(None, None, None))
        self.bg.stop()

    @contextlib.contextmanager
    def running(self) -> Iterator[Stack]:
        """:meth:`up`, yield the stack, :meth:`down`; if it cannot start, print its logs
        (the fixtures' way to build a stack)."""
        try:
            self.up()
        except BaseException:
            print(self.logs())
            self.down()
            raise
        try:
            yield self
        finally:
            self.down()


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def connections_to(pid: int, port: int) -> int:
    """How many ESTABLISHED TCP connections ``pid`` holds to a remote ``port`` (from /proc)."""
    inodes = _socket_inodes(pid)
    count = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if fields[3] == "01" and remote_port == port and fields[9] in inodes:
                count += 1
    return count


def listening_sockets(pid: int) -> list[str]:
    """The TCP/TCP6 sockets in LISTEN state owned by ``pid`` (read from /proc)."""
    inodes = _socket_inodes(pid)
    listening = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A = TCP_LISTEN
                listening.append(f"{table} {fields[1]}")
    return listening
