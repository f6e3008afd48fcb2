"""docs/translation.md's support matrix is generated from the golden cases and checked here.

The table between the ``matrix`` markers must equal the one built from
tests/translate/translate_cases.py; every ``yes`` cell has a golden case that passes
(test_translate_golden.py runs it), every ``dropped`` cell a case asserting the drop upstream, every
``error`` cell a case asserting the error envelope. Regenerate with TOKIOS_UPDATE_DOCS=1.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from translate_cases import BACKENDS, CLIENTS, FEATURES, Case, all_cases

DOC = Path(__file__).resolve().parents[2] / "docs" / "translation.md"
START, END = "<!-- matrix:start -->", "<!-- matrix:end -->"
CLIENT_TITLE = {"chat": "Chat", "responses": "Responses", "messages": "Messages"}
BACKEND_TITLE = {"ollama": "Ollama", "openai": "OpenAI-compat."}


def cell(case: Case) -> str:
    text = {"yes": "yes", "dropped": "**dropped**", "error": "error", "n/a": "n/a"}[case.status]
    return f"{text}: {case.note}" if case.note else text


def matrix() -> str:
    cases = {(c.feature, c.client, c.backend): c for c in all_cases()}
    columns = [(c, b) for c in CLIENTS for b in BACKENDS]
    lines = [
        "| Feature | " + " | ".join(
            f"{CLIENT_TITLE[c.value]} → {BACKEND_TITLE[b]}" for c, b in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name, description in FEATURES:
        cells = [cell(cases[(name, c, b)]) for c, b in columns]
        lines.append(f"| `{name}`: {description} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def test_doc_matrix_is_generated_from_the_cases() -> None:
    text = DOC.read_text()
    before, rest = text.split(START, 1)
    current, after = rest.split(END, 1)
    expected = "\n" + matrix() + "\n"
    if os.environ.get("TOKIOS_UPDATE_DOCS") == "1":
        DOC.write_text(before + START + expected + END + after)
        current = expected
    assert current == expected, "docs/translation.md matrix is stale: TOKIOS_UPDATE_DOCS=1"


def test_every_doc_cell_is_backed_by_a_case() -> None:
    text = DOC.read_text().split(START, 1)[1].split(END, 1)[0]
    rows = [r for r in text.strip().splitlines()[2:] if r.startswith("| `")]
    cases = {(c.feature, c.client, c.backend): c for c in all_cases()}
    columns = [(c, b) for c in CLIENTS for b in BACKENDS]
    assert len(rows) == len(FEATURES)
    for row in rows:
        feature = re.match(r"\| `([^`]+)`", row)
        assert feature is not None
        cells = [c.strip() for c in row.strip().strip("|").split("|")[1:]]
        assert len(cells) == len(columns)
        for text_cell, (client, backend) in zip(cells, columns, strict=True):
            case = cases[(feature.group(1), client, backend)]
            status = text_cell.split(":", 1)[0].strip("* ")
            assert status == case.status, (feature.group(1), client, backend)
            if status == "dropped":
                assert case.check_up is not None or case.check_view is not None
            if status == "error":
                assert case.error is not None
            if status == "yes":
                assert case.check_up is not None or case.check_view is not None
