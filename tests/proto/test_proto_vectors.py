"""docs/protocol.md and the code agree: test vectors, state diagrams, code tables."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tokios_proto import (
    ErrorCode,
    Frame,
    FrameType,
    GatewayConnection,
    HelloReceived,
    ResetCode,
    decode_frames,
    encode_frame,
)
from tokios_proto import _payloads as payloads
from tokios_proto import _reports as reports
from tokios_proto._state import CONNECTION_TRANSITIONS, STREAM_TRANSITIONS, mermaid

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
BLOCKS = re.findall(r"```vector\n(.*?)```", DOC, re.S)

JSON_DECODERS = {
    FrameType.WELCOME: payloads.decode_welcome,
    FrameType.REJECT: payloads.decode_reject,
    FrameType.SETTINGS: payloads.decode_settings_update,
    FrameType.OPEN: payloads.decode_request_head,
    FrameType.RESPONSE: payloads.decode_response_head,
    FrameType.REPORT: reports.decode_report,
}
JSON_ENCODERS = {
    FrameType.WELCOME: payloads.encode_welcome,
    FrameType.REJECT: payloads.encode_reject,
    FrameType.SETTINGS: payloads.encode_settings_update,
    FrameType.OPEN: payloads.encode_request_head,
    FrameType.RESPONSE: payloads.encode_response_head,
    FrameType.REPORT: reports.encode_report,
}


def parse(block: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    lines = block.splitlines()
    for i, line in enumerate(lines):
        key, _, value = line.partition(":")
        if key == "hex":
            fields["hex"] = " ".join(lines[i + 1:])
            break
        fields[key] = value.strip()
    return fields


def test_the_spec_has_a_vector_for_every_frame_type() -> None:
    types = {parse(b)["type"] for b in BLOCKS}
    assert {t.name for t in FrameType} <= types
    assert len(BLOCKS) >= len(FrameType)


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: parse(b)["name"])
def test_vector(block: str) -> None:
    fields = parse(block)
    raw = bytes.fromhex(fields["hex"])
    frame_type: FrameType | int = (FrameType[fields["type"]] if fields["type"] in
                                   FrameType.__members__ else int(fields["type"], 16))
    flags, stream_id = int(fields["flags"], 16), int(fields["stream"])
    if "payload-json" in fields:
        payload = fields["payload-json"].encode()
    else:
        payload = bytes.fromhex(fields["payload-hex"])
    assert encode_frame(frame_type, flags, stream_id, payload) == raw
    assert decode_frames(raw) == [Frame(frame_type, flags, stream_id, payload)]
    if frame_type in JSON_DECODERS:
        value = JSON_DECODERS[frame_type](payload)  # type: ignore[index]
        assert JSON_ENCODERS[frame_type](value) == payload  # type: ignore[index, arg-type]
    if frame_type is FrameType.HELLO:
        hello, proposal = payloads.decode_hello(payload)
        assert payloads.encode_hello(hello, proposal) == payload
        gateway = GatewayConnection()
        gateway.receive_data(raw, 0.0)
        event = gateway.next_event()
        assert isinstance(event, HelloReceived)
        assert event.hello.credential.reveal() == "tok_example"
    if frame_type is FrameType.GOAWAY:
        goaway = payloads.decode_goaway(payload, 1024)
        assert payloads.encode_goaway(goaway) == payload


def test_state_diagrams_match_the_tables() -> None:
    assert f"```mermaid\n{mermaid(CONNECTION_TRANSITIONS)}\n```" in DOC  # type: ignore[arg-type]
    assert f"```mermaid\n{mermaid(STREAM_TRANSITIONS)}\n```" in DOC  # type: ignore[arg-type]


def test_code_tables_match_the_enums() -> None:
    for enum in (ErrorCode, ResetCode):
        for member in enum:
            assert re.search(rf"\| 0x{member.value:x} \| {member.name}\b", DOC) or \
                member.name == "CLIENT_GONE", member
    for member in FrameType:
        assert f"| 0x{member.value:02X} | {member.name} |" in DOC, member
