"""Golden fixtures: upstream stream bytes in, exact client bytes out, for every backend codec ×
client format × feature. Every output is also validated and accumulated by the official SDKs,
and what the client ends up with is checked against the scenario.

Regenerate the fixture files after an intended change with ``TOKIOS_UPDATE_GOLDEN=1``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from stream_scenarios import CLIENT_STOP, CLIENTS, SCENARIOS, Scenario, scenario_id
from stream_sdk_check import outcome

from tokios_translate._common import ClientFormat
from tokios_translate.stream import open_stream_translator

FIXTURES = Path(__file__).parent / "fixtures"
UPDATE = os.environ.get("TOKIOS_UPDATE_GOLDEN") == "1"


def translate(scenario: Scenario, client: ClientFormat) -> bytes:
    translator = open_stream_translator(scenario.context(client))
    out = translator.feed(scenario.upstream)
    assert translator.done, "the terminal event must be emitted as soon as it arrives"
    tail = translator.finish()
    assert tail == b""
    return out


CASES = [(s, c) for s in SCENARIOS for c in CLIENTS]


@pytest.mark.parametrize(
    ("scenario", "client"), CASES, ids=[f"{scenario_id(s)}-{c.value}" for s, c in CASES]
)
def test_golden_stream(scenario: Scenario, client: ClientFormat) -> None:
    body = translate(scenario, client)
    path = FIXTURES / f"{scenario_id(scenario)}.{client.value}.sse"
    if UPDATE:
        path.write_bytes(body)
    assert body == path.read_bytes(), f"output differs from {path.name}"

    result = outcome(client.value, body, include_usage=scenario.include_usage)
    if not (scenario.error and client is ClientFormat.RESPONSES):
        # (response.failed lists only the items that were completed)
        assert result.text == scenario.text
    assert result.reasoning == scenario.reasoning
    assert result.tools == scenario.tools
    assert result.error == scenario.error
    if scenario.stop is None:
        assert result.stop is None
        return
    assert result.stop == CLIENT_STOP[client][scenario.stop]
    if client is ClientFormat.MESSAGES:
        # message_start carried the estimate; message_delta the exact (or estimated) count.
        assert result.input_tokens == (scenario.input_tokens or 7)
        assert result.output_tokens == scenario.output_tokens
    elif client is ClientFormat.CHAT and not scenario.include_usage:
        assert result.input_tokens is None
    else:
        assert result.input_tokens == scenario.input_tokens
        assert result.output_tokens == scenario.output_tokens
