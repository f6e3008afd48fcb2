"""The incremental SSE parser and NDJSON reader (§9.9)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokios_translate.stream.readers import NDJSONReader, ReaderLimitError, SSEMessage, SSEParser


def parse_all(pieces: list[bytes]) -> list[SSEMessage]:
    parser = SSEParser()
    out: list[SSEMessage] = []
    for piece in pieces:
        out += parser.feed(piece)
    return out + parser.finish()


def test_sse_fields_comments_multiline_and_event_names() -> None:
    stream = (
        b": llama.cpp ping\n"
        b"event: message_start\n"
        b"id: 7\nretry: 100\nunknown: x\n"
        b"data: first\n"
        b"data:second\n"
        b"data\n"
        b"\n"
        b"data: plain\n\n"
        b"\n\n"  # blank lines without data dispatch nothing
        b"event: only-name\n\n"
    )
    assert parse_all([stream]) == [
        SSEMessage(event="message_start", data=b"first\nsecond\n"),
        SSEMessage(event="", data=b"plain"),
    ]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_sse_every_line_ending(newline: bytes) -> None:
    stream = b"event: e" + newline + b"data: {\"a\":1}" + newline + newline + b"data: [DONE]"
    stream += newline + newline
    assert parse_all([stream]) == [
        SSEMessage(event="e", data=b'{"a":1}'),
        SSEMessage(event="", data=b"[DONE]"),
    ]


def test_sse_crlf_split_between_cr_and_lf_is_one_line_end() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: x\r") == []
    assert parser.feed(b"\n\r") == []
    assert parser.feed(b"\n") == [SSEMessage(event="", data=b"x")]
    assert parser.finish() == []


def test_sse_bom_is_skipped_even_when_split() -> None:
    assert parse_all([b"\xef", b"\xbb", b"\xbfdata: 1\n\n"]) == [SSEMessage(event="", data=b"1")]


def test_sse_split_inside_utf8_character() -> None:
    data = "data: é👋\n\n".encode()
    pieces = [data[i : i + 1] for i in range(len(data))]
    assert parse_all(pieces) == [SSEMessage(event="", data="é👋".encode())]


def test_sse_finish_dispatches_an_unterminated_event() -> None:
    assert parse_all([b"data: [DONE]"]) == [SSEMessage(event="", data=b"[DONE]")]
    assert parse_all([b"data: [DONE]\r"]) == [SSEMessage(event="", data=b"[DONE]")]


def test_sse_limit_on_a_line_without_end() -> None:
    parser = SSEParser(max_event_size=64)
    parser.feed(b"data: " + b"x" * 50)
    with pytest.raises(ReaderLimitError):
        parser.feed(b"x" * 50)


def test_sse_limit_on_many_data_lines() -> None:
    parser = SSEParser(max_event_size=64)
    with pytest.raises(ReaderLimitError):
        parser.feed(b"data: 0123456789\n" * 10)


def test_sse_does_not_rescan_a_long_partial_line() -> None:
    parser = SSEParser()
    for _ in range(1000):
        assert parser.feed(b"x" * 100) == []
    assert parser._scan == 100_000  # the search resumes where it stopped


LINE_CHARS = st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",))


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(["", "delta", "error"]),
            st.lists(st.text(alphabet=LINE_CHARS, max_size=20), min_size=1, max_size=3),
        ),
        max_size=6,
    ),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    cuts=st.lists(st.integers(0, 2000), max_size=20),
)
def test_sse_round_trip_any_split(
    events: list[tuple[str, list[str]]], newline: str, cuts: list[int]
) -> None:
    text = ""
    for name, lines in events:
        if name:
            text += f"event: {name}{newline}"
        text += ": comment" + newline
        text += "".join(f"data: {line}{newline}" for line in lines) + newline
    data = text.encode()
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
    expected = [
        SSEMessage(event=name, data="\n".join(lines).encode()) for name, lines in events
    ]
    assert parse_all(pieces) == expected


def test_ndjson_partial_lines_across_reads() -> None:
    reader = NDJSONReader()
    assert reader.feed(b'{"a":') == []
    assert reader.feed(b'1}\n{"b"') == [b'{"a":1}']
    assert reader.feed(b":2}\r\n\n  \n") == [b'{"b":2}']
    assert reader.feed(b'{"c":3}') == []
    assert reader.finish() == [b'{"c":3}']
    assert reader.finish() == []


def test_ndjson_limit() -> None:
    reader = NDJSONReader(max_line_size=10)
    assert reader.feed(b"0123456789\n") == [b"0123456789"]
    with pytest.raises(ReaderLimitError):
        reader.feed(b"0123456789x")


def test_sse_limit_on_a_read_without_line_end() -> None:
    parser = SSEParser(max_event_size=64)
    assert parser.feed(b": started\n") == []
    with pytest.raises(ReaderLimitError):
        parser.feed(b"data: " + b"x" * 100)


def test_sse_fast_and_slow_paths_agree_on_a_partial_tail() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n\ndata: b") == [SSEMessage(event="", data=b"a")]
    assert parser.feed(b"c\n\n") == [SSEMessage(event="", data=b"bc")]
    assert parser.feed(b"data: d\n\n") == [SSEMessage(event="", data=b"d")]
