"""Every figure the docs quote comes from a command of bench/ (issue 12, "docs that are true").

A *figure table* is a Markdown table with a measurement unit in its header row (ms, µs, req/s,
KB, ...) and a number in a cell; it must name the command that printed it, ``python -m bench
NAME`` or ``bench/NAME.py``, in the text that introduces it or the paragraph after it. A
section with *prose figures* (a number with µs, KB or a rate such as req/s) must name one in
itself or in a section it belongs to. Each named command must exist (``bench/NAME.py``), and
every ``--option`` written after it must be an option that module defines. Configured values
(timeouts, limits) are not figures: they carry KiB/MiB or plain seconds, which the checks leave
alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "runtimes" / "netio" / "README.md",
        ROOT / "README.md"]

UNIT_HEADER = re.compile(r"(?<![\w/])(ms|µs|req/s|KB|MB|[a-z]+/s)(?!\w)")
NUMBER_CELL = re.compile(r"^\**[~+-]?\d[\d,.]*\**$")
PROSE_FIGURE = re.compile(r"\d[\d,.]*k?\s?(?:µs|KB|req/s|[a-z]+/s)(?![\w/])")
COMMAND = re.compile(r"python -m bench ([a-z_]+)((?: [^`\n]*)?)|bench/([a-z_]+)\.py")


@dataclass
class Section:
    doc: Path
    line: int
    level: int
    title: str
    text: list[str]
    parents: list[Section]

    def commands(self, *, inherited: bool) -> list[tuple[str, str]]:
        sections = [self, *self.parents] if inherited else [self]
        found = []
        for section in sections:
            for match in COMMAND.finditer("\n".join(section.text)):
                found.append((match.group(1) or match.group(3), match.group(2) or ""))
        return found


def sections(doc: Path) -> list[Section]:
    out: list[Section] = []
    stack: list[Section] = []
    current = Section(doc, 1, 0, doc.name, [], [])
    out.append(current)
    in_code = False
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            in_code = not in_code
        heading = None if in_code else re.match(r"(#+) (.*)", line)
        if heading:
            level = len(heading.group(1))
            stack = [s for s in [*stack, current] if s.level < level]
            current = Section(doc, number, level, heading.group(2), [line], list(reversed(stack)))
            out.append(current)
        else:
            current.text.append("" if in_code and not line.startswith("python") else line)
    return out


def figure_tables(section: Section) -> list[int]:
    """Index (in ``section.text``) of each figure table's header row."""
    found = []
    text = section.text
    for i, line in enumerate(text):
        starts = line.startswith("|") and (i == 0 or not text[i - 1].startswith("|"))
        if not starts or not UNIT_HEADER.search(line):
            continue
        rows = []
        for row in text[i + 2:]:
            if not row.startswith("|"):
                break
            rows.append(row)
        cells = [c.strip() for row in rows for c in row.strip("|").split("|")]
        if any(NUMBER_CELL.match(c) for c in cells):
            found.append(i)
    return found


def prose_figures(section: Section) -> list[str]:
    """Figures written as text, in paragraphs or in table cells (e.g. a table of targets)."""
    return [m.group(0) for line in section.text for m in PROSE_FIGURE.finditer(line)]


ALL = [s for doc in DOCS for s in sections(doc)]


def _id(section: Section) -> str:
    return f"{section.doc.relative_to(ROOT)}:{section.line}"


def caption(section: Section, header: int) -> str:
    """The text that introduces or follows a table: the lines since the previous table (or the
    heading) and the paragraph right after it."""
    text = section.text
    start = header
    while start > 0 and not text[start - 1].startswith("|"):
        start -= 1
    end = header
    while end < len(text) and text[end].startswith("|"):
        end += 1
    after = end
    while after < len(text) and (after == end or text[after].strip()):
        after += 1
    return "\n".join(text[start:header] + text[end:after])


TABLES = [(s, i) for s in ALL for i in figure_tables(s)]


@pytest.mark.parametrize(("section", "header"), TABLES,
                         ids=[f"{_id(s)}+{i}" for s, i in TABLES])
def test_each_figure_table_names_the_bench_command_that_printed_it(section: Section,
                                                                  header: int) -> None:
    assert COMMAND.search(caption(section, header)), (
        f"{_id(section)} ({section.title}): the table at line {section.line + header} does not "
        "name the bench command that printed it, before it or in the paragraph after it")


@pytest.mark.parametrize("section", [s for s in ALL if prose_figures(s)], ids=_id)
def test_each_section_with_figures_names_a_bench_command(section: Section) -> None:
    assert section.commands(inherited=True), (
        f"{_id(section)} ({section.title}): figures {prose_figures(section)[:3]} with no bench "
        "command in this section or the ones it belongs to")


COMMANDS = sorted({c for s in ALL for c in s.commands(inherited=False)})


@pytest.mark.parametrize(("name", "arguments"), COMMANDS)
def test_each_named_bench_command_exists_with_its_options(name: str, arguments: str) -> None:
    module = BENCH / f"{name}.py"
    assert module.is_file(), f"no bench/{name}.py"
    source = module.read_text(encoding="utf-8")
    for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", arguments):
        assert f'"{option}"' in source, f"bench/{name}.py has no option {option}"


def test_the_checks_find_figures_where_there_are_some() -> None:
    """The checks can fail: performance.md's tables are found, and a table or a paragraph of
    figures without a command is caught."""
    performance = [s for s in ALL if s.doc.name == "performance.md"]
    assert sum(len(figure_tables(s)) for s in performance) >= 5
    fake = Section(ROOT / "x.md", 1, 2, "x", ["## x", "", "| path | req/s |", "|---|---|",
                                               "| a | 1,234 |"], [])
    assert figure_tables(fake) == [2] and not COMMAND.search(caption(fake, 2))
    prose = Section(ROOT / "x.md", 1, 2, "x", ["## x", "It costs 5 µs per event."], [])
    assert prose_figures(prose) == ["5 µs"] and not prose.commands(inherited=True)
    named = Section(ROOT / "x.md", 1, 2, "x", ["`python -m bench tunnel --quick`"], [])
    assert named.commands(inherited=False) == [("tunnel", " --quick")]
