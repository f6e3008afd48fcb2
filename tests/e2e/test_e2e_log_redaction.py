"""End to end: at ``--log-level debug`` no secret and no content reaches any process's log.

Gateway and connector run at debug on both connector runtimes. Requests go over HTTP/1.1 and
HTTP/2 (httpx, and the official OpenAI SDK on an HTTP/2 client), streamed and not, carrying
canaries in the API key, a custom header, the query string and the prompt (which the scripted
upstream echoes, so the completion carries it too), plus requests with wrong keys (401). No
canary may appear in any log, while the request lines (method, path, status) must, so the check
is not vacuous; the connector (with its health checks and ``--metrics-listen``) logs each
request's line with the gateway's request id, and its metrics carry no canary either.
docs/operations.md, "Logs".
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.stack import Stack

pytestmark = pytest.mark.timeout(180)

pytest.importorskip("runtimes.connector.cli")

#: (backend, connector runtime): both runtimes, both upstream codecs.
STACKS = [("ollama", "asyncio"), ("llamacpp", "threaded")]


@pytest.fixture(scope="module", params=STACKS, ids=["-".join(pair) for pair in STACKS])
def debug_stack(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    backend, runtime = request.param
    workdir: Path = tmp_path_factory.mktemp(f"logs-{backend}-{runtime}")
    built = Stack(workdir=workdir, backend=backend, runtime=runtime, log_level="debug",
                  connector_args=["--health-interval", "0.2",
                                  "--metrics-listen", "127.0.0.1:0"])
    with built.running():
        yield built


class Canaries:
    """Unique strings no log line may contain."""

    def __init__(self) -> None:
        tag = secrets.token_hex(6)
        self.header = f"canaryhdr{tag}"
        self.query = f"canaryqry{tag}"
        self.prompt = f"canaryprompt{tag}"
        self.wrong_bearer = f"canarybearer{tag}"
        self.wrong_api_key = f"canaryapikey{tag}"
        self.wrong_tokios = f"sk-tokios-canary{tag}_{secrets.token_hex(16)}"

    def all(self, stack: Stack) -> list[str]:
        secret = stack.key.split("_", 1)[1]
        token_secret = stack.token.split("_", 1)[1]
        return [self.header, self.query, self.prompt, self.wrong_bearer, self.wrong_api_key,
                self.wrong_tokios, self.wrong_tokios.split("_", 1)[1], stack.key, secret,
                stack.token, token_secret, stack.other_key]


def _chat(stack: Stack, canaries: Canaries, stream: bool) -> dict[str, Any]:
    return {"model": stack.deployment, "stream": stream, "max_tokens": 20,
            "messages": [{"role": "user", "content": f"say {canaries.prompt}"}]}


def _exchange(stack: Stack, http: httpx.Client, canaries: Canaries, version: str) -> None:
    """Every kind of request, on one client (HTTP/1.1 or HTTP/2)."""
    url = f"{stack.base_url}/v1/chat/completions"
    params = {"canary": canaries.query, "api-key": canaries.query}
    bearer = {"authorization": f"Bearer {stack.key}", "x-canary": canaries.header}
    resp = http.post(url, params=params, headers=bearer, json=_chat(stack, canaries, False))
    assert resp.status_code == 200, resp.text
    assert resp.http_version == version
    assert canaries.prompt in resp.text  # the completion carries the canary
    with http.stream("POST", url, params=params, headers=bearer,
                     json=_chat(stack, canaries, True)) as streamed:
        assert streamed.status_code == 200
        assert canaries.prompt in "".join(streamed.iter_text())
    anthropic = {"x-api-key": stack.key, "anthropic-version": "2023-06-01",
                 "x-canary": canaries.header}
    messages = {"model": stack.deployment, "max_tokens": 20, "stream": True,
                "messages": [{"role": "user", "content": canaries.prompt}]}
    with http.stream("POST", f"{stack.base_url}/v1/messages", params=params, headers=anthropic,
                     json=messages) as streamed:
        assert streamed.status_code == 200
        assert canaries.prompt in "".join(streamed.iter_text())
    for wrong in ({"authorization": f"Bearer {canaries.wrong_bearer}"},
                  {"authorization": f"Bearer {canaries.wrong_tokios}"},
                  {"x-api-key": canaries.wrong_api_key, "anthropic-version": "2023-06-01"}):
        path = "/v1/messages" if "x-api-key" in wrong else "/v1/chat/completions"
        denied = http.post(f"{stack.base_url}{path}", params=params,
                           headers={**wrong, "x-canary": canaries.header},
                           json=_chat(stack, canaries, False))
        assert denied.status_code == 401, denied.text


def test_no_secret_or_content_in_debug_logs(debug_stack: Stack) -> None:
    stack = debug_stack
    canaries = Canaries()
    for http2 in (False, True):
        with stack.http(http2=http2) as http:
            _exchange(stack, http, canaries, "HTTP/2" if http2 else "HTTP/1.1")
    # The official SDK on an HTTP/2 client, with a custom header and query string.
    h2 = openai.DefaultHttpxClient(verify=stack.ssl_context(), http2=True)
    with openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=stack.key, http_client=h2,
                       max_retries=0, default_headers={"x-canary": canaries.header},
                       default_query={"canary": canaries.query}) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=stack.deployment, messages=[{"role": "user", "content": canaries.prompt}])
        assert raw.http_response.http_version == "HTTP/2"
        answer = raw.parse()
        assert canaries.prompt in (answer.choices[0].message.content or "")
        with pytest.raises(openai.AuthenticationError):
            client.with_options(api_key=canaries.wrong_bearer).models.list()
    time.sleep(0.3)  # the last request lines reach the files

    logs = stack.logs()
    leaked = [canary for canary in canaries.all(stack) if canary in logs]
    assert not leaked, f"leaked into the logs: {leaked}\n{logs[-6000:]}"
    # Not vacuous: the request lines are there, for every kind of request sent.
    assert stack.gateway is not None and stack.connector is not None
    gateway = stack.gateway.log()
    for line in (r"POST /v1/chat/completions 200 ", r"POST /v1/messages 200 ",
                 r"POST /v1/chat/completions 401 ", r"POST /v1/messages 401 ",
                 r"GET /v1/models 401 "):
        assert re.search(rf"INFO tokios\.gateway: {line}", gateway), (line, gateway[-4000:])
    assert len(re.findall(r"POST /v1/chat/completions 200 ", gateway)) >= 5
    connector = stack.connector.log()
    assert re.search(r"INFO tokios\.connector: stream \d+ \S+ done in", connector)
    # each request the gateway forwarded is in the connector's log under the same request id
    answered = re.findall(r"POST /v1/(?:chat/completions|messages) 200 .* (req_\w+)", gateway)
    assert len(answered) >= 5
    for request_id in answered:
        assert re.search(rf"stream \d+ \S+ done in \S+ {request_id}", connector), request_id
    port = re.search(r"metrics: http://127\.0\.0\.1:(\d+)/metrics", connector)
    assert port, connector[-2000:]
    metrics = httpx.get(f"http://127.0.0.1:{port.group(1)}/metrics", timeout=5).text
    assert "tokios_connector_upstream_request_duration_seconds_count" in metrics
    leaked = [canary for canary in canaries.all(stack) if canary in metrics]
    assert not leaked, f"leaked into the connector's metrics: {leaked}"
