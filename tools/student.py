"""Write the student edition of the notebooks: solutions replaced by stubs, outputs cleared.

    python tools/student.py [--out build/student] [notebooks...]    # default: notebooks/*.ipynb

The instructor notebooks (notebooks/) are the tested source. In the student edition:

- every code cell's lines between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` (the markers
  included) become ``# YOUR CODE HERE`` and ``raise NotImplementedError``, indented as the
  BEGIN marker was (nbgrader's markers and stub, so nbgrader can be used as well);
- cells tagged ``course:solutions`` (the collapsed solutions to the open exercises) are removed;
- every code cell's outputs and execution count are cleared;

and everything else stays as it is (same cells, ids, metadata and text). The self-check cells
then print "not written yet" until the student writes the function above them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = ("# YOUR CODE HERE", "raise NotImplementedError")
TAG_SOLUTIONS = "course:solutions"


def stub_solutions(source: str, where: str = "a cell") -> str:
    """source with each BEGIN ... END SOLUTION block replaced by the stub (at the BEGIN line's indentation)."""
    out: list[str] = []
    indent: str | None = None   # the BEGIN marker's indentation while inside a block
    for line in source.splitlines(keepends=True):
        stripped = line.strip()
        if stripped == BEGIN:
            if indent is not None:
                raise ValueError(f"{where}: '{BEGIN}' inside another solution block")
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(f"{indent}{stub}\n" for stub in STUB)
        elif stripped == END:
            if indent is None:
                raise ValueError(f"{where}: '{END}' without '{BEGIN}'")
            indent = None
        elif indent is None:
            out.append(line)
    if indent is not None:
        raise ValueError(f"{where}: '{BEGIN}' without '{END}'")
    text = "".join(out)
    # nbformat keeps no newline after a cell's last line: keep the source's own ending.
    return text if source.endswith("\n") else text.removesuffix("\n")


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def student_notebook(nb: dict[str, Any], name: str = "notebook") -> dict[str, Any]:
    """The student edition of one notebook (a new dict; nb is not changed)."""
    cells = []
    for i, cell in enumerate(nb["cells"]):
        if TAG_SOLUTIONS in cell.get("metadata", {}).get("tags", []):
            continue
        cell = dict(cell)
        if cell["cell_type"] == "code":
            src = cell["source"]
            text = "".join(src) if isinstance(src, list) else src
            if BEGIN in text or END in text:
                stubbed = stub_solutions(text, f"{name}, cell {i}")
                cell["source"] = _lines(stubbed) if isinstance(src, list) else stubbed
            cell["outputs"] = []
            cell["execution_count"] = None
        cells.append(cell)
    return {**nb, "cells": cells}


def render(nb: dict[str, Any]) -> str:
    """The notebook file's text, in the repository's format."""
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def write_student_edition(paths: list[Path], out: Path) -> list[Path]:
    """Write each notebook's student edition into `out`; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        nb = json.loads(path.read_text(encoding="utf-8"))
        target = out / path.name
        target.write_text(render(student_notebook(nb, path.name)), encoding="utf-8")
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "student", help="default: build/student")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    try:
        written = write_student_edition(paths, args.out)
    except ValueError as error:
        print(f"student edition: {error}", file=sys.stderr)
        return 1
    print(f"student edition: {len(written)} notebooks in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
