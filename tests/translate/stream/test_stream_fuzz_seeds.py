"""Every stream fuzz harness passes on its committed seed corpus (a quick CI guard)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[3] / "fuzz"
HARNESSES = sorted(p.stem for p in FUZZ.glob("stream_*.py"))


def test_there_is_a_harness_per_stream_translator() -> None:
    expected = [f"stream_{codec}_{kind}" for codec in ("ollama", "sse")
                for kind in ("chat", "messages", "responses", "structured")]
    assert expected == HARNESSES


@pytest.mark.parametrize("strict", [False, True], ids=["lenient", "strict"])
@pytest.mark.parametrize("name", HARNESSES)
def test_harness_accepts_its_seeds(name: str, strict: bool,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKIOS_FUZZ_STRICT", "1" if strict else "0")
    sys.path.insert(0, str(FUZZ))
    try:
        harness = importlib.import_module(name).TestOneInput
    finally:
        sys.path.remove(str(FUZZ))
    seeds = sorted((FUZZ / "corpus" / name).iterdir())
    assert len(seeds) >= 10
    for seed in seeds:
        harness(seed.read_bytes())
