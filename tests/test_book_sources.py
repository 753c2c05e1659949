"""The chapters' sources (jupytext py:percent) as readers copy them: code lines fit 80 columns."""

from __future__ import annotations

from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parent.parent / "book"
CHAPTERS = sorted(BOOK.glob("[0-9]*.py"))
WIDTH = 80


def code_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line inside a code cell of a py:percent source."""
    lines, in_code, out = text.splitlines(), False, []
    for number, line in enumerate(lines, start=1):
        if line.startswith("# %%"):
            in_code = "[markdown]" not in line
            continue
        if in_code:
            out.append((number, line))
    return out


def test_code_lines_parses_cells():
    text = "# %% [markdown]\n# " + "x" * 100 + "\n# %%\nshort = 1\n# %% tags=['a']\nlong = 2\n"
    assert code_lines(text) == [(4, "short = 1"), (6, "long = 2")]


def test_there_are_chapters():
    assert len(CHAPTERS) >= 10


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_code_fits_the_column(path):
    wide = [f"{path.name}:{n}: {len(line)} columns" for n, line in code_lines(path.read_text())
            if len(line) > WIDTH]
    assert not wide, "\n".join(wide)
