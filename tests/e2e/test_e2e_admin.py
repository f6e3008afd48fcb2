"""The admin HTTP API and ``tokios-gateway tunnels`` through the real processes: a gateway and
a connector run as an operator runs them, admin keys made with the CLI, the live tunnel list
read by the CLI from the running gateway over TLS, and a tenant admin managing its keys over
HTTPS while the official SDK uses them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import orjson
import pytest

from runtimes.connector.settings import SOFTWARE_VERSION
from tests.e2e.stack import ROOT, Stack, admin


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    built = Stack(workdir=tmp_path_factory.mktemp("admin"), backend="ollama")
    with built.running():
        yield built


def tunnels(stack: Stack, *args: str, key: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith("TOKIOS_")} | (env or {})
    if key is not None:
        environment["TOKIOS_ADMIN_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "runtimes.gateway.cli", "tunnels", *args],
        capture_output=True, text=True, cwd=ROOT, env=environment, timeout=30, check=False)


def test_tunnels_lists_the_live_connector_of_a_running_gateway(stack: Stack) -> None:
    operator = admin(stack.data, "admin-key", "add", "--operator", "--name", "e2e")["key"]
    done = tunnels(stack, "--url", stack.base_url, "--ca-file", str(stack.ca_file), "--json",
                   key=operator)
    assert done.returncode == 0, done.stderr
    answer = orjson.loads(done.stdout)
    (tunnel,) = answer["tunnels"]
    assert answer["nodes"] == [{"gateway": stack.base_url, "node": None, "answered": True,
                                "error": None}]  # a gateway of one process
    assert tunnel["gateway"] == stack.base_url and tunnel["tenant"] == "acme"
    assert tunnel["node"] is None
    assert tunnel["software_version"] == SOFTWARE_VERSION
    assert tunnel["protocol_version"] == 2 and tunnel["connector_token_id"] == stack.token_id
    # the connector checked its model server and reported it (healthy since it connected)
    assert tunnel["deployments"] == [{"name": "coder", "healthy": True, "reported": True,
                                      "since": tunnel["connected_since"],
                                      "upstream_models": [stack.upstream_model]}]
    assert tunnel["max_streams"] > 0 and tunnel["draining"] is False
    assert stack.token not in done.stdout and operator not in done.stdout + done.stderr

    # the text form, the URL and key from the environment, one gateway named twice: once
    text = tunnels(stack, "--ca-file", str(stack.ca_file), key=operator,
                   env={"TOKIOS_ADMIN_URL": f"{stack.base_url} {stack.base_url}/"})
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split()[:3] == ["GATEWAY", "SESSION", "TENANT"] and len(lines) == 2
    assert tunnel["session"] in lines[1] and "coder" in lines[1]

    # a tenant admin sees its tenant's tunnels only; other credentials are refused
    globex = admin(stack.data, "admin-key", "add", "globex")["key"]
    theirs = tunnels(stack, "--url", stack.base_url, "--ca-file", str(stack.ca_file),
                     "--json", key=globex)
    assert orjson.loads(theirs.stdout)["tunnels"] == []
    for wrong, code in ((stack.key, "unauthenticated"), ("tkadm-nope", "unauthenticated")):
        refused = tunnels(stack, "--url", stack.base_url, "--ca-file", str(stack.ca_file),
                          "--json", key=wrong)
        assert refused.returncode == 1
        assert orjson.loads(refused.stdout)["error"]["code"] == code
        assert wrong not in refused.stdout + refused.stderr
    untrusted = tunnels(stack, "--url", stack.base_url, "--json", key=operator)
    assert untrusted.returncode == 1
    assert orjson.loads(untrusted.stdout)["error"]["code"] == "tls"


def test_a_tenant_admin_manages_keys_over_https_while_the_sdk_uses_them(stack: Stack) -> None:
    tenant_admin = admin(stack.data, "admin-key", "add", "acme")["key"]
    headers = {"authorization": f"Bearer {tenant_admin}"}
    with stack.http(http2=True) as http:
        made = http.post(f"{stack.base_url}/admin/v1/tenants/acme/keys", headers=headers,
                         json={"name": "agent", "deployments": ["coder"]})
        assert made.status_code == 201, made.text
        key, key_id = made.json()["key"], made.json()["id"]
        with stack.openai(api_key=key) as client:
            answer = client.chat.completions.create(
                model="coder", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
            assert answer.choices[0].message.content
            revoked = http.post(f"{stack.base_url}/admin/v1/keys/{key_id}/revoke",
                                headers=headers)
            assert revoked.status_code == 200 and revoked.json()["revoked"] is True
            with pytest.raises(openai.AuthenticationError):  # at once: same gateway process
                client.chat.completions.create(
                    model="coder", max_tokens=5, messages=[{"role": "user", "content": "x"}])
        other = http.get(f"{stack.base_url}/admin/v1/tenants/globex/keys", headers=headers)
        assert other.status_code == 404
    listed = admin(stack.data, "key", "list", "acme")["keys"]
    assert any(k["id"] == key_id and k["status"] == "revoked" for k in listed)


def test_tunnels_of_a_gateway_of_several_workers_whichever_answers(tmp_path: Path) -> None:
    """With --workers the connection lands on any worker; each lists every worker's tunnels
    (it asks the others), so the connector's one tunnel is always there, once."""
    workers = Stack(workdir=tmp_path, backend="ollama", gateway_args=["--workers", "3"])
    with workers.running():
        operator = admin(workers.data, "admin-key", "add", "--operator")["key"]
        # the workers learn of each other through the cluster state, within about a second
        deadline = time.monotonic() + 5
        while len(orjson.loads(tunnels(workers, "--url", workers.base_url, "--ca-file",
                                       str(workers.ca_file), "--json",
                                       key=operator).stdout)["nodes"]) < 3:
            assert time.monotonic() < deadline, "the workers never saw each other"
            time.sleep(0.2)
        answered_by: set[str] = set()
        for _ in range(8):  # a new process, a new connection each time: spread over workers
            done = tunnels(workers, "--url", workers.base_url, "--ca-file",
                           str(workers.ca_file), "--json", key=operator)
            assert done.returncode == 0, done.stderr
            answer = orjson.loads(done.stdout)
            assert len(answer["tunnels"]) == 1, answer
            (tunnel,) = answer["tunnels"]
            assert tunnel["tenant"] == "acme" and tunnel["deployments"][0]["name"] == "coder"
            assert len(answer["nodes"]) == 3 and all(n["answered"] for n in answer["nodes"])
            answered_by.add(answer["nodes"][0]["node"])
            assert done.stderr == ""
        assert len(answered_by) > 1  # several workers answered, each with the whole list
        globex = admin(workers.data, "admin-key", "add", "globex")["key"]
        theirs = tunnels(workers, "--url", workers.base_url, "--ca-file",
                         str(workers.ca_file), "--json", key=globex)
        assert orjson.loads(theirs.stdout)["tunnels"] == []  # the peers filter by tenant too
