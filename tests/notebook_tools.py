"""Keep committed notebooks small and nbval-ready.

Rule: code cells carry no outputs and no execution counts, except the few cells marked
``# NBVAL_CHECK_OUTPUT``: nbval (``--nbval-lax``) compares only those, against a small,
deterministic text output stored in the notebook (nbval needs an execution count to compare).

    python tests/notebook_tools.py refresh notebooks/*.ipynb   # re-run in smoke mode, keep checked outputs
    python tests/notebook_tools.py strip notebooks/*.ipynb     # drop every other output
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat

CHECK = "NBVAL_CHECK_OUTPUT"
MAX_CHECKED_CHARS = 4000
_TEXT_OUTPUTS = ("stream", "execute_result")


def is_checked(cell) -> bool:
    return cell.cell_type == "code" and CHECK in cell.source.splitlines()[0] if cell.source else False


def problems(nb) -> list[str]:
    """Why a notebook is not clean (empty list: clean)."""
    out = []
    if "widgets" in nb.metadata:
        out.append("the notebook stores saved widget state (metadata.widgets): strip it")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        where = f"cell {i} ({cell.source.splitlines()[0][:40] if cell.source else 'empty'!r})"
        if not is_checked(cell):
            if cell.outputs:
                out.append(f"{where} has outputs")
            if cell.execution_count is not None:
                out.append(f"{where} has an execution count")
            continue
        if cell.execution_count is None or not cell.outputs:
            out.append(f"{where} is marked {CHECK} but stores no reference output")
        for o in cell.outputs:
            if o.output_type not in _TEXT_OUTPUTS or (o.output_type == "execute_result" and set(o.data) != {"text/plain"}):
                out.append(f"{where} stores a non-text output ({o.output_type})")
        size = sum(len(o.get("text", "")) + len(o.get("data", {}).get("text/plain", "")) for o in cell.outputs)
        if size > MAX_CHECKED_CHARS:
            out.append(f"{where} stores {size} characters of output (max {MAX_CHECKED_CHARS})")
    return out


def strip(nb, keep_checked: bool = True):
    """Remove outputs and counts (but those of checked cells, if keep_checked), run metadata and widget state."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        if keep_checked and is_checked(cell):
            cell.outputs = [o for o in cell.outputs if o.output_type in _TEXT_OUTPUTS]
            for o in cell.outputs:
                o.pop("metadata", None) if o.output_type == "stream" else None
                if o.output_type == "execute_result":
                    o.data = {"text/plain": o.data.get("text/plain", "")}
                    o.metadata = {}
                    o.execution_count = 1
            cell.execution_count = 1 if cell.outputs else None
        else:
            cell.outputs = []
            cell.execution_count = None
    return nb


def refresh(path: Path) -> None:
    """Execute in smoke mode and keep only the checked cells' outputs."""
    from nbclient import NotebookClient

    os.environ.setdefault("NSTLIB_SMOKE", "1")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(strip(nb), path)


if __name__ == "__main__":
    cmd, *paths = sys.argv[1:]
    for p in map(Path, paths):
        if cmd == "refresh":
            refresh(p)
        elif cmd == "strip":
            nbformat.write(strip(nbformat.read(p, as_version=4)), p)
        else:
            sys.exit(f"unknown command {cmd!r}: use refresh or strip")
        print(f"{cmd}: {p}")
