"""What the connector runtime costs: threaded vs asyncio vs uvloop, through the whole stack.

    .venv/bin/python -m bench.connector_runtimes [--requests 200] [--events 20000]

One real deployment on loopback, as the end-to-end suite builds it (``tests/e2e/stack.py``):
``tokios-gateway serve`` (TLS, its own process), a fast test model server (OpenAI-compatible
SSE, in this process) and ``tokios-connector`` (its own process), restarted once per runtime
against the SAME gateway and upstream. For each runtime it prints:

- latency: the median and p90 of sequential small whole (non-streamed) chat requests, and the
  overhead over calling the upstream directly (the tunnel's cost, gateway included);
- streaming throughput: one streamed answer of ``--events`` SSE chunks, in chunks/s and MB/s
  as the client receives them (translated by the connector);
- concurrent throughput: requests/s with ``--concurrency`` clients sending small requests.

Everything shares 2 cores here (client, upstream, gateway, connector), so compare the rows
with one another, not with other machines. Numbers vary by a few percent between runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.e2e.stack import Stack

CHAT = {"model": "coder", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class BenchStack(Stack):
    """The e2e stack whose asyncio connector can be told its event loop."""

    loop: str = "asyncio"

    def connector_argv(self, token: str | None = None) -> list[str]:
        argv = super().connector_argv(token)
        if self.runtime == "asyncio":
            argv += ["--loop", self.loop]
        return [*argv, "--log-level", "warning"]


def _latencies(client: httpx.Client, url: str, n: int, headers: dict[str, str]) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        response = client.post(url, json=CHAT, headers=headers)
        out.append(time.perf_counter() - started)
        assert response.status_code == 200, response.status_code
    return out


def _stream(client: httpx.Client, stack: Stack, events: int) -> tuple[float, int, float]:
    assert stack.upstream is not None
    stack.upstream.events = events
    try:
        started = time.perf_counter()
        size = 0
        chunks = 0
        with client.stream("POST", f"{stack.base_url}/v1/chat/completions",
                           json={**CHAT, "stream": True, "max_tokens": events * 2},
                           headers={"authorization": f"Bearer {stack.key}"}) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: "):
                    chunks += 1
                    size += len(line)
        return time.perf_counter() - started, chunks, size / 1e6
    finally:
        stack.upstream.events = 0


def _concurrent(stack: Stack, clients: int, per_client: int) -> float:
    def worker() -> None:
        with stack.http(timeout=60) as client:
            _latencies(client, f"{stack.base_url}/v1/chat/completions", per_client,
                       {"authorization": f"Bearer {stack.key}"})

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return clients * per_client / (time.perf_counter() - started)


def _ms(values: list[float], q: float) -> float:
    return 1000 * statistics.quantiles(values, n=100)[int(q) - 1] if q != 50 else \
        1000 * statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    runtimes = [("asyncio", "asyncio"), ("asyncio", "uvloop"), ("threaded", "-")]
    with tempfile.TemporaryDirectory() as tmp:
        stack = BenchStack(workdir=Path(tmp), backend="llamacpp")
        try:
            stack.up()
            assert stack.upstream is not None
            with httpx.Client(timeout=30) as direct:
                _latencies(direct, f"{stack.upstream.base_url}/v1/chat/completions", 20, {})
                base = _latencies(direct, f"{stack.upstream.base_url}/v1/chat/completions",
                                  args.requests, {})
            print(f"upstream called directly: median {_ms(base, 50):.2f} ms, "
                  f"p90 {_ms(base, 90):.2f} ms ({args.requests} requests)\n")
            rate_title = f"req/s x{args.concurrency}"
            print(f"{'runtime':<18}{'median ms':>10}{'p90 ms':>9}{'overhead ms':>13}"
                  f"{'stream chunks/s':>17}{'stream MB/s':>13}{rate_title:>11}")
            for runtime, loop in runtimes:
                assert stack.connector is not None
                stack.connector.stop()
                stack.runtime, stack.loop = runtime, loop
                stack.start_connector()
                stack.wait_served()
                url = f"{stack.base_url}/v1/chat/completions"
                auth = {"authorization": f"Bearer {stack.key}"}
                with stack.http(timeout=60) as client:
                    _latencies(client, url, 20, auth)  # warm-up: connections, caches
                    through = _latencies(client, url, args.requests, auth)
                    seconds, chunks, megabytes = _stream(client, stack, args.events)
                rate = _concurrent(stack, args.concurrency,
                                   max(5, args.requests // args.concurrency))
                name = runtime if runtime == "threaded" else f"asyncio ({loop})"
                print(f"{name:<18}{_ms(through, 50):>10.2f}{_ms(through, 90):>9.2f}"
                      f"{_ms(through, 50) - _ms(base, 50):>13.2f}{chunks / seconds:>17.0f}"
                      f"{megabytes / seconds:>13.2f}{rate:>11.0f}", flush=True)
        finally:
            stack.down()


if __name__ == "__main__":
    main()
