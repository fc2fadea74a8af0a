"""Committed notebooks carry no bulky outputs and no execution counts (see notebook_tools.py)."""

import re
from pathlib import Path

import nbformat
import pytest

from notebook_tools import CHECK, is_checked, problems

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 3


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert problems(nb) == [], f"{path.name}: run `python tests/notebook_tools.py refresh {path}`"
    assert any(is_checked(c) for c in nb.cells), f"{path.name} has no {CHECK} cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_opens_with_goals_and_ends_with_exercises_and_references(path):
    nb = nbformat.read(path, as_version=4)
    # The collapsed solutions (tools/course_cells.py, tag course:solutions) sit between the two.
    cells = [c for c in nb.cells if "course:solutions" not in c.metadata.get("tags", [])]
    first, exercises, references = cells[0].source, cells[-2].source, cells[-1].source
    for word in ("What you will do", "What you will learn", "What you need"):
        assert word in first, f"{path.name}: the first cell should say '{word}'"
    assert exercises.startswith("## Exercises"), f"{path.name}: the cell before the references should hold the exercises"
    assert references.startswith("## References"), f"{path.name}: the last cell should list the references"
    # every reference says where to find it: a DOI, an arXiv id or a link
    items = [line for line in references.splitlines() if line.startswith("- ")]
    assert items, f"{path.name}: the references cell lists no reference"
    for item in references.split("\n- ")[1:]:
        assert re.search(r"doi\.org|doi:|arXiv:|arxiv\.org|https?://", item), f"{path.name}: no DOI, arXiv id or link in {item[:80]!r}"


INLINE = "course:inline-question"


@pytest.mark.parametrize("stem", ["02_content_reconstruction", "03_style_reconstruction", "04_gatys_style_transfer"])
def test_the_spine_stops_for_an_inline_question_with_a_folded_answer(stem):
    # cs231n's inline questions: where a student should stop and think, a question, room for the
    # student's answer, and a model answer that stays folded until opened
    nb = nbformat.read(NOTEBOOKS[0].parent / f"{stem}.ipynb", as_version=4)
    questions = [c for c in nb.cells if INLINE in c.metadata.get("tags", [])]
    assert questions, f"{stem} has no cell tagged {INLINE}"
    for c in questions:
        assert c.cell_type == "markdown" and c.source.startswith("**Inline question"), c.source[:80]
        assert "*Your answer:*" in c.source
        assert "<details>" in c.source and "</details>" in c.source.split("*Your answer:*")[1]


def test_problems_catches_outputs():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(1)")
    cell.outputs = [nbformat.v4.new_output("stream", text="1\n")]
    cell.execution_count = 3
    nb.cells.append(cell)
    assert len(problems(nb)) == 2
