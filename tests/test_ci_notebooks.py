"""The chapter tool .ci/notebooks.py: relayout keeps outputs only for layout-only edits."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

_SPEC = importlib.util.spec_from_file_location(
    "ci_notebooks", Path(__file__).resolve().parent.parent / ".ci" / "notebooks.py")
tool = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(tool)

SOURCE = '# %% [markdown]\n# Title\n\n# %%\ntotal = sum([1, 2, 3])  # six\nprint(total)\n'


def _chapter(tmp_path, source=SOURCE):
    src = tmp_path / "01_x.py"
    src.write_text(source)
    nb = tool._from_source(src)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="6\n")]
    nb.cells[1].execution_count = 1
    nbformat.write(nb, src.with_suffix(".ipynb"))
    return src


def test_relayout_keeps_outputs_of_reflowed_code(tmp_path):
    src = _chapter(tmp_path)
    src.write_text(SOURCE.replace("total = sum([1, 2, 3])  # six",
                                  "total = sum([1,\n             2, 3])  # 1 + 2 + 3"))
    tool.relayout([str(src)])
    cell = nbformat.read(src.with_suffix(".ipynb"), as_version=4).cells[1]
    assert "2, 3])  # 1 + 2 + 3" in cell.source and cell.outputs[0].text == "6\n"


def test_relayout_takes_text_cells(tmp_path):
    src = _chapter(tmp_path)
    src.write_text(SOURCE.replace("# Title", "# Title\n#\nA paragraph more."))
    tool.relayout([str(src)])
    cells = nbformat.read(src.with_suffix(".ipynb"), as_version=4).cells
    assert "A paragraph more." in cells[0].source and cells[1].outputs[0].text == "6\n"


@pytest.mark.parametrize("edit", [
    ("sum([1, 2, 3])", "sum([1, 2, 4])"),        # other code
    ("print(total)", "print(total)\n# %%\nx = 1"),  # a cell added
    ("# %%\n", '# %% tags=["nbval-ignore-output"]\n'),  # other tags
], ids=["code", "cells", "tags"])
def test_relayout_refuses_other_changes(tmp_path, edit):
    src = _chapter(tmp_path)
    src.write_text(SOURCE.replace(*edit))
    with pytest.raises(SystemExit, match="build it instead"):
        tool.relayout([str(src)])


def test_tree_compares_programs_held_in_strings():
    one = 'W = r"""\nx = f(a,\n      b)\n"""'
    assert tool._tree(one) == tool._tree('W = r"""\nx = f(a, b)\n"""')
    assert tool._tree(one) != tool._tree('W = r"""\nx = f(a, c)\n"""')


def test_stale_lists_missing_and_out_of_sync_notebooks(tmp_path):
    src = _chapter(tmp_path)
    assert tool.stale(tmp_path) == []
    (tmp_path / "02_y.py").write_text(SOURCE)  # no notebook yet
    src.write_text(SOURCE.replace("print(total)", "print(total * 2)"))
    assert [p.name for p in tool.stale(tmp_path)] == ["01_x.py", "02_y.py"]
