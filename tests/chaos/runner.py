"""The chaos run: real traffic through a real stack while its parts are killed and restarted.

    report = ChaosRun(workdir, seconds=30).run()
    assert not report.defects, report.summary()

What runs (all real processes, as in tests/e2e/stack.py): ``tokios-gateway serve`` over TLS,
TWO ``tokios-connector`` processes serving one deployment, a scripted model server that answers
each request slowly (``first_delay`` before the head, then one word every ``slow`` seconds:
0.5-2 s answers). Client workers (HTTP/1.1 and HTTP/2, httpx) send a mix of Chat, Messages,
Responses and Ollama requests, streamed and not, each with a unique prompt whose answer the
model server scripts exactly. Meanwhile the fault injector SIGKILLs one connector every
``kill_every`` seconds (and starts a new one), and once in the run restarts the gateway with a
drain (SIGTERM, then a new process on the same port).

Each request gets a :class:`~tests.chaos.classify.Verdict`; a run passes when no request is a
``DEFECT``. ``python -m tests.chaos --help`` runs it by hand for longer (release checks).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import signal
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.chaos.classify import Api, Outcome, Seen, Verdict, judge
from tests.e2e.stack import Proc, Stack

#: The longest a request may take before it counts as hung (answers take 0.5-2 s; a drain
#: lasts at most the gateway's grace period, 5 s in the stack).
REQUEST_BOUND = 30.0
#: Words per answer (the model server pads "Echo: <prompt>" with w0, w1, ...).
WORDS = 20


@dataclass
class Report:
    """Counts per verdict and detail, and every defect with what the client saw."""

    seconds: float
    outcomes: collections.Counter[tuple[Verdict, str]] = field(
        default_factory=collections.Counter)
    defects: list[tuple[Outcome, Seen]] = field(default_factory=list)
    connector_kills: int = 0
    gateway_restarts: int = 0

    def add(self, outcome: Outcome, seen: Seen) -> None:
        detail = outcome.detail if outcome.verdict is not Verdict.COMPLETE else ""
        if outcome.verdict is Verdict.CLEAN_ERROR and outcome.detail.startswith("in-stream"):
            detail = "in-stream error"
        self.outcomes[(outcome.verdict, detail)] += 1
        if outcome.verdict is Verdict.DEFECT:
            self.defects.append((outcome, seen))

    def count(self, verdict: Verdict) -> int:
        return sum(n for (v, _), n in self.outcomes.items() if v is verdict)

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())

    def summary(self) -> str:
        lines = [f"chaos: {self.total} requests in {self.seconds:.0f} s, "
                 f"{self.connector_kills} connector kills, "
                 f"{self.gateway_restarts} gateway restarts"]
        for (verdict, detail), n in sorted(self.outcomes.items(),
                                           key=lambda item: (item[0][0].value, item[0][1])):
            lines.append(f"  {verdict.value:<12} {n:>6}  {detail}")
        for outcome, seen in self.defects[:10]:
            lines.append(f"  DEFECT {outcome.detail}: {seen.api.name} stream={seen.stream} "
                         f"status={seen.status} body[-200:]={seen.body[-200:]!r}")
        return "\n".join(lines)


class ChaosRun:
    """One chaos run (see module doc). ``runtime``: the connectors' ``--runtime``."""

    def __init__(self, workdir: Path, *, seconds: float = 30, clients: int = 16,
                 kill_every: float = 5.0, restart_gateway: bool = True,
                 runtime: str = "asyncio", backend: str = "ollama", seed: int = 0) -> None:
        self.workdir = workdir
        self.seconds = seconds
        self.clients = clients
        self.kill_every = kill_every
        self.restart_gateway = restart_gateway
        self.rng = random.Random(seed)
        self.stack = Stack(workdir=workdir, backend=backend, runtime=runtime)
        self.connectors: list[Proc] = []
        self.report = Report(seconds)
        #: (start, end) of each gateway restart, end None while it is under way.
        self.restarts: list[list[float | None]] = []
        self._sequence = 0

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> Report:
        with self.stack.running() as stack:
            assert stack.connector is not None and stack.upstream is not None
            self.connectors = [stack.connector, self._new_connector()]
            stack.upstream.slow, stack.upstream.events = 0.05, WORDS
            stack.upstream.first_delay = 0.3
            asyncio.run(self._main())
            for proc in self.connectors:
                proc.stop()
        return self.report

    async def _main(self) -> None:
        deadline = time.monotonic() + self.seconds
        faults = asyncio.create_task(self._inject_faults(deadline))
        workers = [asyncio.create_task(self._worker(i, deadline)) for i in range(self.clients)]
        try:
            await asyncio.gather(*workers)
        finally:
            faults.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await faults

    # -- faults ----------------------------------------------------------------------------

    def _new_connector(self) -> Proc:
        n = len(list(self.workdir.glob("connector*.log")))
        proc = Proc("connector", self.stack.connector_argv(), self.workdir / f"connector{n}.log")
        proc.start()
        return proc

    async def _inject_faults(self, deadline: float) -> None:
        restart_at = time.monotonic() + self.seconds / 2 if self.restart_gateway else None
        while time.monotonic() < deadline:
            await asyncio.sleep(self.kill_every)
            if restart_at is not None and time.monotonic() >= restart_at:
                restart_at = None
                await asyncio.to_thread(self._restart_gateway)
                continue
            victim = self.rng.randrange(len(self.connectors))
            self.connectors[victim].stop(signal.SIGKILL)
            self.report.connector_kills += 1
            self.connectors[victim] = await asyncio.to_thread(self._new_connector)

    def _restart_gateway(self) -> None:
        stack = self.stack
        assert stack.gateway is not None
        window: list[float | None] = [time.monotonic(), None]
        self.restarts.append(window)
        stack.gateway.stop(signal.SIGTERM, timeout=30)
        stack.start_gateway(port=stack.port)
        window[1] = time.monotonic()
        self.report.gateway_restarts += 1

    def _restarting(self, started: float, ended: float) -> bool:
        """True when [started, ended] overlaps a gateway restart (plus a second after)."""
        for begin, end in self.restarts:
            assert begin is not None
            if started <= (end if end is not None else ended) + 1.0 and ended >= begin:
                return True
        return False

    # -- traffic ---------------------------------------------------------------------------

    def _clients(self, http2: bool) -> httpx.AsyncClient:
        ctx = ssl.create_default_context()
        self.stack.ca.configure_trust(ctx)
        return httpx.AsyncClient(verify=ctx, http2=http2, timeout=REQUEST_BOUND,
                                 base_url=self.stack.base_url)

    async def _worker(self, index: int, deadline: float) -> None:
        async with self._clients(http2=index % 2 == 1) as client:
            while time.monotonic() < deadline:
                api = self.rng.choice(list(Api))
                stream = self.rng.random() < 0.6
                seen = await self._one(client, api, stream)
                outcome = judge(seen)
                self.report.add(outcome, seen)
                if outcome.verdict is not Verdict.COMPLETE:
                    await asyncio.sleep(0.2)  # as a client's retry back-off would

    def _request(self, api: Api, stream: bool) -> tuple[dict[str, object], dict[str, str], str]:
        self._sequence += 1
        prompt = f"chaos {self._sequence}"
        words = f"Echo: {prompt}".split(" ")
        words += [f"w{i}" for i in range(WORDS - len(words))]
        expected = " ".join(words)
        model = self.stack.deployment
        messages = [{"role": "user", "content": prompt}]
        headers = {"authorization": f"Bearer {self.stack.key}"}
        body: dict[str, object]
        if api is Api.MESSAGES:
            headers = {"x-api-key": self.stack.key, "anthropic-version": "2023-06-01"}
            body = {"model": model, "max_tokens": 200, "messages": messages}
        elif api is Api.RESPONSES:
            body = {"model": model, "input": prompt}
        else:
            body = {"model": model, "messages": messages}
        body["stream"] = stream
        return body, headers, expected

    async def _one(self, client: httpx.AsyncClient, api: Api, stream: bool) -> Seen:
        body, headers, expected = self._request(api, stream)
        started = time.monotonic()
        status: int | None = None
        content_type = ""
        received = bytearray()
        failure: str | None = None
        refused = timed_out = False
        try:
            async with asyncio.timeout(REQUEST_BOUND), client.stream(
                    "POST", api.value, json=body, headers=headers) as response:
                status = response.status_code
                content_type = response.headers.get("content-type", "")
                async for piece in response.aiter_raw():
                    received += piece
        except TimeoutError:
            timed_out = True
        except httpx.TimeoutException:
            timed_out = True
        except httpx.ConnectError as exc:
            failure, refused = type(exc).__name__, True
        except httpx.HTTPError as exc:
            failure = type(exc).__name__
        return Seen(api=api, stream=stream, expected_text=expected, status=status,
                    content_type=content_type, body=bytes(received), failure=failure,
                    refused=refused, timed_out=timed_out,
                    gateway_restarting=self._restarting(started, time.monotonic()))

