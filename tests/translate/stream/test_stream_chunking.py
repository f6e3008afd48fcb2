"""Any chunking of an upstream stream gives byte-identical client output.

Splits fall anywhere: inside UTF-8 characters, inside ``data:`` field names, between CR and LF.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stream_scenarios import CLIENTS, SCENARIOS, Scenario, scenario_id

from tokios_translate._common import ClientFormat
from tokios_translate.stream import open_stream_translator


def run(scenario: Scenario, client: ClientFormat, pieces: list[bytes]) -> bytes:
    translator = open_stream_translator(scenario.context(client))
    out = [translator.feed(piece) for piece in pieces]
    out.append(translator.finish())
    assert translator.done
    return b"".join(out)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=150, deadline=None)
@given(
    scenario=st.sampled_from(SCENARIOS),
    client=st.sampled_from(CLIENTS),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
    newline=st.sampled_from([b"\n", b"\r\n", b"\r"]),
)
def test_any_chunking_gives_identical_output(
    scenario: Scenario, client: ClientFormat, cuts: list[int], newline: bytes
) -> None:
    whole = run(scenario, client, [scenario.upstream])
    upstream = scenario.upstream
    if not scenario.backend.speaks_ollama:  # NDJSON has only LF (CRLF tested below)
        upstream = upstream.replace(b"\n", newline)
    assert run(scenario, client, split(upstream, cuts)) == whole


@pytest.mark.parametrize("scenario", SCENARIOS, ids=scenario_id)
def test_one_byte_at_a_time(scenario: Scenario) -> None:
    for client in CLIENTS:
        whole = run(scenario, client, [scenario.upstream])
        bytewise = [scenario.upstream[i : i + 1] for i in range(len(scenario.upstream))]
        assert run(scenario, client, bytewise) == whole


@pytest.mark.parametrize("newline", [b"\r\n", b"\r"])
@pytest.mark.parametrize(
    "scenario", [s for s in SCENARIOS if not s.backend.speaks_ollama], ids=scenario_id
)
def test_sse_line_endings_do_not_matter(scenario: Scenario, newline: bytes) -> None:
    converted = scenario.upstream.replace(b"\n", newline)
    for client in CLIENTS:
        whole = run(scenario, client, [scenario.upstream])
        pieces = [converted[i : i + 7] for i in range(0, len(converted), 7)]
        assert run(scenario, client, pieces) == whole


@pytest.mark.parametrize(
    "scenario", [s for s in SCENARIOS if s.backend.speaks_ollama], ids=scenario_id
)
def test_ndjson_crlf_does_not_matter(scenario: Scenario) -> None:
    converted = scenario.upstream.replace(b"\n", b"\r\n")
    for client in CLIENTS:
        assert run(scenario, client, [converted]) == run(scenario, client, [scenario.upstream])


def test_output_is_emitted_as_soon_as_each_event_completes() -> None:
    """Never buffer a whole response: each upstream unit yields its client bytes at once."""
    scenario = next(s for s in SCENARIOS if s.name == "text" and s.backend.speaks_ollama)
    lines = scenario.upstream.splitlines(keepends=True)
    for client in CLIENTS:
        translator = open_stream_translator(scenario.context(client))
        first = translator.feed(lines[0][:-1])  # the line is not complete yet
        assert b"Hello" not in first
        assert b"Hello, " in translator.feed(b"\n")
        assert "wörld".encode() in translator.feed(lines[1])
