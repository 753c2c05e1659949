"""Chapter notebooks: build them from their jupytext sources, or check they are in sync.

Each chapter is written as a py:percent file ``book/NN_name.py`` (readable diffs) and
committed with its executed ``book/NN_name.ipynb`` (what nbval validates and the book
renders).

    python .ci/notebooks.py build book/01_background.py ...   # convert, execute, strip
    python .ci/notebooks.py check                             # sources == notebooks
    python .ci/notebooks.py stale                             # build the out-of-sync ones
    python .ci/notebooks.py relayout book/01_background.py   # layout-only edits, outputs kept

``relayout`` copies a source's cells into its notebook without executing it: text cells
(they have no outputs) freely, code cells only where the code has the same syntax tree as
before (line breaks, parentheses and comments alone changed; a string holding a program is
compared by its tree too), so the stored outputs are still the outputs of that code. Any
other change (code, tags, cells added or removed) is refused: build it.
"""

from __future__ import annotations

import ast
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
KERNEL = {"name": "python3", "display_name": "Python 3", "language": "python"}


def _from_source(src: Path) -> nbformat.NotebookNode:
    nb = jupytext.read(src)
    nb.metadata = {"kernelspec": KERNEL, "language_info": {"name": "python"}}
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i}"  # stable ids: regenerating a notebook gives a clean diff
        cell.metadata = {k: v for k, v in cell.metadata.items() if k == "tags"}
    return nb


def _strip(nb: nbformat.NotebookNode) -> None:
    nb.metadata = {"kernelspec": KERNEL, "language_info": {"name": "python"}}
    count = 0
    for cell in nb.cells:
        cell.metadata = {k: v for k, v in cell.metadata.items() if k == "tags"}
        if cell.cell_type == "code":
            # nbval needs a count on every cell with outputs; sequential ones keep diffs stable.
            count += 1
            cell.execution_count = count
            for out in cell.outputs:
                if "execution_count" in out:
                    out.execution_count = count


def build(sources: list[str]) -> None:
    os.environ.setdefault("IPYTHONDIR", str(ROOT / ".ipython"))
    for name in sources:
        src = Path(name)
        start = time.perf_counter()
        nb = _from_source(src)
        NotebookClient(nb, timeout=900, kernel_name="python3",
                       resources={"metadata": {"path": str(src.parent)}}).execute()
        _strip(nb)
        nbformat.validate(nb)
        nbformat.write(nb, src.with_suffix(".ipynb"))
        print(f"{src.with_suffix('.ipynb')}: executed in {time.perf_counter() - start:.0f} s")


def _tree(code: str) -> str:
    """The syntax tree of a cell's code: line breaks, parentheses and comments ignored."""
    lines = [line for line in code.splitlines() if not line.lstrip().startswith(("%", "!"))]
    tree = ast.parse("\n".join(lines))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "\n" in node.value:
            try:  # a string holding a program (a subprocess workload): compare its tree
                node.value = ast.dump(ast.parse(node.value))
            except SyntaxError:
                pass
    return ast.dump(tree)


def relayout(sources: list[str]) -> None:
    for name in sources:
        src = Path(name)
        fresh = _from_source(src)
        old = nbformat.read(src.with_suffix(".ipynb"), as_version=4)
        if [c.cell_type for c in fresh.cells] != [c.cell_type for c in old.cells]:
            raise SystemExit(f"{name}: cells added or removed; build it instead")
        changed = 0
        for new, cell in zip(fresh.cells, old.cells):
            if new.source == cell.source and new.metadata.get("tags") == cell.metadata.get("tags"):
                continue
            if new.metadata.get("tags") != cell.metadata.get("tags") or (
                    new.cell_type == "code" and _tree(new.source) != _tree(cell.source)):
                raise SystemExit(f"{name}: a cell changed beyond its layout; build it instead:\n"
                                 f"{new.source[:400]}")
            cell.source = new.source
            changed += 1
        nbformat.write(old, src.with_suffix(".ipynb"))
        print(f"{src.with_suffix('.ipynb')}: {changed} cells relaid out, outputs kept")


def _in_sync(src: Path) -> bool:
    ipynb = src.with_suffix(".ipynb")
    if not ipynb.exists():
        return False
    want = [(c.cell_type, c.source.strip(), c.metadata.get("tags", [])) for c in _from_source(src).cells]
    have = [(c.cell_type, c.source.strip(), c.metadata.get("tags", []))
            for c in nbformat.read(ipynb, as_version=4).cells]
    return want == have


def stale(book: Path = ROOT / "book") -> list[Path]:
    """Chapter sources whose notebook is missing or holds other cells (to be executed)."""
    return [src for src in sorted(book.glob("[0-9]*.py")) if not _in_sync(src)]


def check() -> int:
    bad = 0
    for src in stale():
        ipynb = src.with_suffix(".ipynb")
        what = "missing" if not ipynb.exists() else f"out of sync with {src.name}"
        print(f"{ipynb.relative_to(ROOT)}: {what} (run make nb NB=book/{src.name})")
        bad += 1
    for ipynb in sorted((ROOT / "book").glob("[0-9]*.ipynb")):
        if not ipynb.with_suffix(".py").exists():
            print(f"{ipynb.relative_to(ROOT)}: has no jupytext source {ipynb.with_suffix('.py').name}")
            bad += 1
    print("notebooks in sync" if not bad else f"{bad} notebook(s) out of sync")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "build" and len(sys.argv) > 2:
        build(sys.argv[2:])
    elif len(sys.argv) > 2 and sys.argv[1] == "relayout":
        relayout(sys.argv[2:])
    elif sys.argv[1:] == ["stale"]:
        build([str(src) for src in stale()])
    elif sys.argv[1:] == ["check"]:
        sys.exit(check())
    else:
        sys.exit(__doc__)
