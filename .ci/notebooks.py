"""Chapter notebooks: build them from their jupytext sources, or check they are in sync.

Each chapter is written as a py:percent file ``book/NN_name.py`` (readable diffs) and
committed with its executed ``book/NN_name.ipynb`` (what nbval validates and the book
renders).

    python .ci/notebooks.py build book/01_background.py ...   # convert, execute, strip
    python .ci/notebooks.py check                             # sources == notebooks
"""

from __future__ import annotations

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


def check() -> int:
    bad = 0
    for src in sorted((ROOT / "book").glob("[0-9]*.py")):
        ipynb = src.with_suffix(".ipynb")
        if not ipynb.exists():
            print(f"{ipynb.relative_to(ROOT)}: missing (run make nb NB={src.relative_to(ROOT)})")
            bad += 1
            continue
        want = [(c.cell_type, c.source.strip(), c.metadata.get("tags", [])) for c in _from_source(src).cells]
        have = [(c.cell_type, c.source.strip(), c.metadata.get("tags", []))
                for c in nbformat.read(ipynb, as_version=4).cells]
        if want != have:
            print(f"{ipynb.relative_to(ROOT)}: out of sync with {src.name} (run make nb NB=book/{src.name})")
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
    elif sys.argv[1:] == ["check"]:
        sys.exit(check())
    else:
        sys.exit(__doc__)
