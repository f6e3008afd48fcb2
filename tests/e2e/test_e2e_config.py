"""A gateway and a connector configured only by their TOML files (plus the connector token in
the environment, as deploy/ advises), serving a real request; the gateway's JSON log line for
that request carries the request id the client got in ``x-request-id``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.e2e.stack import LISTENING, Proc, Stack, wait_for


def test_gateway_and_connector_from_config_files_with_json_logs(tmp_path: Path) -> None:
    with Stack(workdir=tmp_path, backend="ollama").running() as stack:
        assert stack.upstream is not None and stack.connector is not None
        stack.connector.stop()
        config = tmp_path / "gateway.toml"
        config.write_text(
            f'data = "{stack.data}"\nlisten = "127.0.0.1:0"\n'
            f'tls-cert = "{tmp_path / "cert.pem"}"\ntls-key = "{tmp_path / "key.pem"}"\n'
            'grace-period = 1\nlog-format = "json"\n')
        gateway = Proc("gateway", [sys.executable, "-m", "runtimes.gateway.cli", "serve"],
                       tmp_path / "config-gateway.log", env={"TOKIOS_CONFIG": str(config)})
        gateway.start()
        try:
            wait_for(lambda: LISTENING.search(gateway.log()) is not None, 20, "the gateway")
            match = LISTENING.search(gateway.log())
            assert match is not None
            port = int(match.group(3))
            connector_config = tmp_path / "connector.toml"
            connector_config.write_text(
                f'gateway = "https://127.0.0.1:{port}"\nupstream = "{stack.upstream.base_url}"\n'
                f'backend = "ollama"\nmodel = ["{stack.deployment}={stack.upstream_model}"]\n'
                f'ca-file = "{stack.ca_file}"\nlog-format = "json"\n')
            connector = Proc("connector", [sys.executable, "-m", "runtimes.connector.cli",
                                           "--config", str(connector_config)],
                             tmp_path / "config-connector.log",
                             env={"TOKIOS_CONNECTOR_TOKEN": stack.token})
            connector.start()
            try:
                stack.port = port
                stack.wait_served()
                with stack.openai() as client:
                    raw = client.chat.completions.with_raw_response.create(
                        model=stack.deployment,
                        messages=[{"role": "user", "content": "configured"}])
                assert raw.parse().choices[0].message.content == "Echo: configured"
                request_id = raw.headers["x-request-id"]
                entries = [json.loads(line) for line in gateway.log().splitlines()
                           if line.startswith("{")]
                assert entries and all({"time", "level", "logger", "message"} <= set(e)
                                       for e in entries)
                mine = [e for e in entries if e.get("request_id") == request_id]
                assert len(mine) == 1 and "/v1/chat/completions 200" in mine[0]["message"]
                assert any(line.startswith("{") for line in connector.log().splitlines())
            finally:
                connector.stop()
        finally:
            gateway.stop()
