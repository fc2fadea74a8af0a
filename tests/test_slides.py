"""`make slides` (tools/slides.py): a notebook's figures as 200 dpi PNGs, named by section, with an index.

The runner is run on a tiny fake notebook in smoke mode (a kernel starts; a few seconds): two
figures in one section (one pyplot, one non-pyplot Figure shown through its own _repr_png_, as
nstlib.viz's are), one in the next, a failing cell. The widget screenshots (JupyterLab and
Chromium on notebooks 1 and 6) take about two minutes on the 2-core machine and are not run
here: `python tools/slides.py notebooks/01_setup_and_tour.ipynb --out /tmp/s` checks them by hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from PIL import Image

from browser_tools import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import slides as S  # tools/ is no package: found through sys.path, above

FIGSIZES = [(3.0, 2.0), (4.0, 1.5), (2.0, 2.0)]  # inches, as the fake notebook draws them


def fake_notebook() -> nbformat.NotebookNode:
    """A title, two `## ` sections with figures, and a cell that fails."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 9 · A fake lecture\n\n**What you will do.** Draw."),
        nbformat.v4.new_markdown_cell("## The Gram matrix and $\\alpha/\\beta$\n\nTwo **figures** follow. More text."),
        nbformat.v4.new_code_cell(f"import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize={FIGSIZES[0]})\n"
                                  "ax.plot([0, 1]);\nplt.show()"),
        # Not a pyplot figure: shown through _repr_png_ (nstlib.viz's figures are like this one).
        nbformat.v4.new_code_cell("from io import BytesIO\nfrom matplotlib.figure import Figure\n"
                                  "class Fig(Figure):\n    def _repr_png_(self):\n        b = BytesIO()\n"
                                  "        self.savefig(b, format='png')\n        return b.getvalue()\n"
                                  f"f = Fig(figsize={FIGSIZES[1]})\nf.add_subplot().plot([1, 0])\nf"),
        nbformat.v4.new_markdown_cell("## Next part"),
        nbformat.v4.new_code_cell("1 / 0"),
        nbformat.v4.new_code_cell(f"fig, ax = plt.subplots(figsize={FIGSIZES[2]})\nax.imshow([[0, 1], [1, 0]]);\nplt.show()"),
        nbformat.v4.new_markdown_cell("**What to see.** A checkerboard."),
    ]
    return nb


@pytest.mark.timeout(120)
def test_slides_writes_200_dpi_figures_and_an_index(tmp_path: Path) -> None:
    nb_path, out = tmp_path / "09_fake.ipynb", tmp_path / "slides"
    nbformat.write(fake_notebook(), nb_path)
    out.mkdir()
    (out / "09_stale_1.png").write_bytes(b"old")  # a figure of an earlier run: removed
    env = dict(os.environ, NSTLIB_SMOKE="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "slides.py"), str(nb_path), "--out", str(out), "--no-widgets"],
                         env=env, capture_output=True, text=True, timeout=110)
    assert run.returncode == 1, f"a failed cell makes the run fail:\n{run.stdout}\n{run.stderr[-2000:]}"
    assert "09_fake.ipynb cell 5: ZeroDivisionError" in run.stderr, run.stderr[-2000:]

    names = ["09_the-gram-matrix-and-alpha-beta_1.png", "09_the-gram-matrix-and-alpha-beta_2.png", "09_next-part_1.png"]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(names), "one PNG per figure, named by section; old ones gone"
    for name, (w_in, h_in) in zip(names, FIGSIZES):
        with Image.open(out / name) as img:
            assert img.info["dpi"][0] == pytest.approx(S.DPI, abs=0.5), f"{name}: not {S.DPI} dpi"
            # bbox_inches="tight" trims or adds a margin: within 12 % of the figure's size at 200 dpi.
            assert abs(img.width - w_in * S.DPI) < 0.12 * w_in * S.DPI, f"{name}: {img.size} for {w_in} x {h_in} in"
            assert abs(img.height - h_in * S.DPI) < 0.12 * h_in * S.DPI, f"{name}: {img.size} for {w_in} x {h_in} in"

    manifest = json.loads((out / "09.json").read_text())
    assert [m["file"] for m in manifest] == names
    first, last = manifest[0], manifest[-1]
    assert first["section"] == "The Gram matrix and α/β" and first["sentence"] == "Two figures follow."
    assert first["title"] == "9 · A fake lecture" and first["notebook"] == "09_fake.ipynb"
    assert last["section"] == "Next part" and last["sentence"] == "A checkerboard.", "a bold label is skipped"
    index = (out / "index.md").read_text()
    for name in names:
        assert f"`{name}`" in index
    assert "200 dpi" in index and "mode smoke" in index
    page = (out / "index.html").read_text()
    assert all(f'src="{name}"' in page for name in names) and "http" not in page


def test_names_and_sentences() -> None:
    assert S.slug(r"The Fig. 4 grid: style layers × $\alpha/\beta$") == "the-fig-4-grid-style-layers-alpha-beta"
    assert S.slug("`conv2_2` or `conv4_2` as the content layer?") == "conv2-2-or-conv4-2-as-the-content-layer"
    assert len(S.slug("word " * 30)) <= 48 and S.slug("§ ¶") == "figure"
    assert S.notebook_number(Path("04_gatys.ipynb")) == "04" and S.notebook_number(Path("intro.ipynb")) == "intro"
    assert S.first_sentence("## Head\n\nThe **loss** is 1.5 here. And more.") == "The loss is 1.5 here."
    assert S.first_sentence("| a | b |\n\n<details><summary>x</summary>") == ""
    cells = [nbformat.v4.new_markdown_cell("Before."), nbformat.v4.new_code_cell("x"), nbformat.v4.new_markdown_cell("After.")]
    assert S.nearest_sentence(cells, 1) == "Before.", "the text before wins a tie"


def test_notebook_paths_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="is not a notebook"):
        S.notebook_paths([str(tmp_path / "missing.ipynb")])
    with pytest.raises(SystemExit, match="no notebook"):
        S.notebook_paths([str(tmp_path)])
    assert [p.name for p in S.notebook_paths([str(ROOT / "notebooks")])][:2] == ["01_setup_and_tour.ipynb",
                                                                                 "02_content_reconstruction.ipynb"]
