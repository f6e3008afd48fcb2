"""The metrics endpoint's rules (token, loopback only, bounded labels, exposition formats) and
the usage recorder's buffer (hourly counts, a failed write kept, an early write when full)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from prometheus_client.parser import text_string_to_metric_families

from runtimes.gateway.metrics import GatewayMetrics, endpoint_label, scrape
from runtimes.gateway.usage import UsageRecorder
from runtimes.store import StoreError, UsageRow

TOKEN = "0123456789abcdef-token"


def test_endpoint_labels_are_a_bounded_set() -> None:
    assert endpoint_label("/v1/chat/completions") == "/v1/chat/completions"
    assert endpoint_label("/v1/chat/completions/") == "/v1/chat/completions"
    assert endpoint_label("/v1/models/secret-model-name") == "/v1/models/{id}"
    for path in ("/wp-admin", "/v1/chat/completions-x", "/" + "a" * 500):
        assert endpoint_label(path) == "other"


def test_a_token_is_asked_for_when_set_and_compared_whole() -> None:
    metrics = GatewayMetrics()
    metrics.request_done("acme", "coder", "/v1/chat/completions", 200, duration=0.5, ttfb=0.1)
    peer = ("203.0.113.9", 5555)
    for headers in ({}, {"authorization": "Bearer " + TOKEN[:-1]},
                    {"authorization": "Basic " + TOKEN}, {"authorization": TOKEN}):
        answer = scrape(metrics, headers, peer, token=TOKEN, local_only=True)
        assert answer.status == 401 and TOKEN.encode() not in answer.body
    answer = scrape(metrics, {"authorization": "Bearer " + TOKEN}, peer, token=TOKEN,
                    local_only=True)
    assert answer.status == 200
    families = {f.name: f for f in text_string_to_metric_families(answer.body.decode())}
    (sample,) = [s for s in families["tokios_requests"].samples
                 if s.name == "tokios_requests_total"]
    assert sample.labels == {"tenant": "acme", "deployment": "coder",
                             "endpoint": "/v1/chat/completions", "status": "200"}
    assert sample.value == 1


def test_without_a_token_the_api_port_answers_loopback_clients_only() -> None:
    metrics = GatewayMetrics()
    for peer in (("127.0.0.1", 1), ("::1", 1), ("::ffff:127.0.0.1", 1)):
        assert scrape(metrics, {}, peer, token=None, local_only=True).status == 200
    for peer in (("10.0.0.8", 1), ("2001:db8::1", 1), None, ("not-an-ip", 1)):
        assert scrape(metrics, {}, peer, token=None, local_only=True).status == 403
    # a port of its own (--metrics-listen) answers whoever reaches it
    assert scrape(metrics, {}, ("10.0.0.8", 1), token=None, local_only=False).status == 200


def test_openmetrics_when_asked_for() -> None:
    metrics = GatewayMetrics()
    metrics.rate_limited("acme", "key_rpm")
    answer = scrape(metrics, {"accept": "application/openmetrics-text; version=1.0.0"},
                    ("127.0.0.1", 1), token=None, local_only=True)
    assert answer.headers[0][1].startswith("application/openmetrics-text")
    assert answer.body.rstrip().endswith(b"# EOF")
    plain = scrape(metrics, {}, ("127.0.0.1", 1), token=None, local_only=True)
    assert plain.headers[0][1].startswith("text/plain")
    assert b'tokios_rate_limited_total{reason="key_rpm",tenant="acme"} 1.0' in plain.body


class FlakyStore:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.written: list[UsageRow] = []

    def record_usage(self, rows: Sequence[UsageRow]) -> None:
        if self.failures:
            self.failures -= 1
            raise StoreError("database is locked")
        self.written.extend(rows)


def test_counts_add_up_per_hour_and_a_failed_write_is_kept() -> None:
    async def main() -> None:
        clock = [7200.0 + 10]
        store = FlakyStore(failures=1)
        recorder = UsageRecorder(store, clock=lambda: clock[0])  # type: ignore[arg-type]
        recorder.record("t", "k", "d", 10, 5, estimated=False)
        recorder.record("t", "k", "d", 3, -4, estimated=True)  # a negative count is 0
        clock[0] += 3600
        recorder.record("t", "k", "d", 1, 1, estimated=False)
        await recorder.flush()  # fails: kept
        assert store.written == [] and len(recorder) == 2
        recorder.record("t", "k", "d", 1, 1, estimated=False)
        await recorder.flush()
        assert len(recorder) == 0
        rows = sorted(store.written, key=lambda r: r.bucket)
        assert [(r.bucket, r.requests, r.input_tokens, r.output_tokens, r.estimated_requests,
                 r.estimated_input_tokens) for r in rows] == [
            (7200, 2, 13, 5, 1, 3), (10800, 2, 2, 2, 0, 0)]

    asyncio.run(main())


def test_a_full_buffer_is_written_before_the_interval() -> None:
    async def main() -> None:
        store = FlakyStore(failures=0)
        recorder = UsageRecorder(store, flush_interval=3600,  # type: ignore[arg-type]
                                 max_entries=3)
        recorder.start()
        for n in range(3):
            recorder.record("t", f"k{n}", "d", 1, 1, estimated=False)
        for _ in range(100):
            if len(store.written) == 3:
                break
            await asyncio.sleep(0.01)
        assert len(store.written) == 3
        recorder.record("t", "k9", "d", 1, 1, estimated=False)
        await recorder.close()  # the last write at shutdown
        assert len(store.written) == 4

    asyncio.run(asyncio.wait_for(main(), 10))
