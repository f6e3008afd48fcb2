"""The real-model stack: llama-cpp-python's server with Gemma 3 270M behind gateway + connector.

Built once per module (the model loads once), driven like :mod:`tests.e2e.stack` drives its
test upstreams: real processes, TLS from a trustme CA, provisioning through the admin CLI.
Without the ``demo`` extra the tests skip, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from runtimes.quickstart import engine
from tests.e2e.stack import Proc, Stack, admin

DEPLOYMENT = "gemma"


def require_engine() -> None:
    """Skip when the demo extra is missing; fail instead when running in CI."""
    missing = engine.missing()
    if not missing:
        return
    message = (f"the demo extra is not installed (missing {', '.join(missing)}): "
               "./scripts/setup-dev installs it")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@dataclass
class RealModelStack(Stack):
    """:class:`Stack` with llama-cpp-python + Gemma as the upstream instead of a test server."""

    engine_proc: Proc | None = None
    engine_url: str = ""

    def up(self) -> RealModelStack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        cert.private_key_pem.write_to_path(str(self.workdir / "key.pem"))
        (self.workdir / "cert.pem").write_bytes(
            b"".join(pem.bytes() for pem in cert.cert_chain_pems))

        port = engine.free_port()
        self.engine_url = f"http://127.0.0.1:{port}"
        self.engine_proc = Proc(
            "engine",
            engine.server_argv(sys.executable, engine.model_path(),
                               chat_config=engine.write_chat_config(self.workdir), port=port,
                               ctx_size=2048, threads=os.cpu_count() or 1),
            self.workdir / "engine.log",
            env=engine.server_env(),
        )
        self.engine_proc.start()
        engine.wait_until_ready(self.engine_url, self.engine_proc.popen, timeout=90)

        admin(self.data, "tenant", "add", "acme")
        admin(self.data, "deployment", "add", "acme", self.deployment)
        key = admin(self.data, "key", "add", "acme", "--name", "real-model")
        self.key, self.key_id = key["key"], key["id"]
        token = admin(self.data, "connector-token", "add", "acme", "--deployment", self.deployment)
        self.token, self.token_id = token["token"], token["id"]

        self.start_gateway()
        self.start_connector()
        self.wait_served(timeout=60)
        return self

    def connector_argv(self, token: str | None = None) -> list[str]:
        return [
            sys.executable, "-m", "runtimes.connector.cli",
            "--gateway", self.base_url,
            "--token", token or self.token,
            "--upstream", self.engine_url,
            "--backend", engine.BACKEND,
            "--model", f"{self.deployment}={engine.MODEL_ALIAS}",
            "--ca-file", str(self.ca_file),
        ]

    def down(self) -> None:
        super().down()
        if self.engine_proc is not None:
            self.engine_proc.stop()


@pytest.fixture(scope="module")
def real_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealModelStack]:
    require_engine()
    workdir: Path = tmp_path_factory.mktemp("real-model")
    built = RealModelStack(workdir=workdir, backend=engine.BACKEND, deployment=DEPLOYMENT,
                           upstream_model=engine.MODEL_ALIAS)
    with built.running():
        yield built
