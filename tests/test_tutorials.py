"""The tutorials are committed with their outputs (Read the Docs renders them without executing them).

Checks, without executing anything: every code cell of every notebook in ``tutorials/`` was executed, in order, in
one kernel, without an error; a cell that ends in a bare expression shows its value; every tutorial is linked
from ``docs/tutorials/`` and listed in ``docs/tutorials.md``. ``make tutorials`` refreshes the outputs.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "tutorials").glob("*.ipynb"))
FIX = "run `make tutorials` (or `jupyter execute --inplace tutorials/<name>.ipynb`) and commit the outputs"


def _code_cells(path: Path) -> list[tuple[int, dict]]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return [
        (i, c) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and "".join(c["source"]).strip()
    ]


def _shows_a_value(source: str) -> bool:
    """Whether the cell ends in a bare name, attribute or subscript (e.g. ``adata``, ``adata.uns["x"]``).

    Such a value is displayed by Jupyter (it is never None in a tutorial); calls are not counted, since many
    return None, nor is a trailing ``;``, which hides the value.
    """
    if source.rstrip().endswith(";"):
        return False
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        return False
    return (
        bool(tree.body)
        and isinstance(tree.body[-1], ast.Expr)
        and isinstance(tree.body[-1].value, ast.Name | ast.Attribute | ast.Subscript)
    )


def test_there_are_tutorials():
    assert len(NOTEBOOKS) >= 2, NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_code_cell_has_its_output(path):
    cells = _code_cells(path)
    assert cells, f"{path.name} has no code cells"
    counts = [c.get("execution_count") for _, c in cells]
    missing = [i for (i, _), n in zip(cells, counts, strict=True) if n is None]
    assert not missing, f"{path.name}: code cells {missing} were not executed; {FIX}"
    assert counts == list(range(1, len(cells) + 1)), (
        f"{path.name}: execution counts {counts} are not 1 … {len(cells)}: the stored outputs do not come from one "
        f"run from the top; {FIX}"
    )
    for i, cell in cells:
        errors = [o for o in cell["outputs"] if o["output_type"] == "error"]
        assert not errors, f"{path.name}: cell {i} stored an error ({errors[0].get('ename')}); {FIX}"
        if _shows_a_value("".join(cell["source"])):
            assert cell["outputs"], f"{path.name}: cell {i} ends in a value but stores no output; {FIX}"


def test_shows_a_value():
    assert _shows_a_value("x = 1\nadata")
    assert _shows_a_value('adata.uns["fold"]')
    assert not _shows_a_value("adata;")
    assert not _shows_a_value("ht.pp.check_folds(adata)")
    assert not _shows_a_value("x = 1")


def test_tutorials_are_linked_and_listed():
    links = ROOT / "docs" / "tutorials"
    toctree = (ROOT / "docs" / "tutorials.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^tutorials/([\w.-]+)\s*$", toctree, flags=re.MULTILINE))
    for link in links.iterdir():
        assert link.is_symlink(), (
            f"docs/tutorials/{link.name} should be a symlink to ../../tutorials/{link.name}"
        )
        assert link.resolve().is_file(), f"docs/tutorials/{link.name} does not resolve ({link.readlink()})"
        assert link.resolve().parent == (ROOT / "tutorials").resolve(), link.readlink()
    for path in NOTEBOOKS:
        assert (links / path.name).is_symlink(), (
            f"tutorials/{path.name} has no link in docs/tutorials/: `ln -s ../../tutorials/{path.name} docs/tutorials/`"
        )
        assert path.stem in listed, f"tutorials/{path.stem} is not in the toctree of docs/tutorials.md"
