"""Insert or update the course's generated cells in the notebooks: launch badges, Colab set-up,
"your turn" exercises with self-checks, collapsed solutions.

    python tools/course_cells.py [notebooks...]          # update (default: notebooks/*.ipynb)
    python tools/course_cells.py --check [notebooks...]  # exit 1 if a notebook is not up to date
    python tools/course_cells.py --readme                # print the README's badge line

Every generated cell carries one of the tags below in its metadata, and a fixed cell id. A run
removes every tagged cell and inserts the current ones at their places, so it is idempotent and
picks up a change of the repository address (pyproject.toml, [project.urls] Repository, the one
place it is written), of the exercises below, or of a solutions file:

- ``course:badges``: Colab and Binder badges, a markdown cell right after the title cell;
- ``course:colab-setup``: the first code cell: on Google Colab it fetches the course and
  installs its package, elsewhere it does nothing;
- ``course:selfcheck``: for each core idea taught in the notebook, three cells where the
  notebook first uses it (before the cell its `before` names; default "## Exercises"): the
  task, the student's function (its body between nbgrader's ``### BEGIN SOLUTION`` /
  ``### END SOLUTION``: the instructor edition holds the solution; see tools/student.py) and
  a ``# NBVAL_CHECK_OUTPUT`` cell calling `nstlib.selfcheck`, which stores the pass line it
  must print;
- ``course:solutions``: tools/solutions/<notebook stem>.md, verbatim, as a markdown cell right
  after "## Exercises" (none without that file).

Notebooks are written as json.dump(nb, f, indent=1, ensure_ascii=False) plus a newline, the
format nbformat writes (keys sorted), so that an unchanged notebook stays byte-identical.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
NOTEBOOKS = ROOT / "notebooks"
SOLUTIONS = ROOT / "tools" / "solutions"
BRANCH = "main"

TAG_BADGES = "course:badges"
TAG_SETUP = "course:colab-setup"
TAG_SELFCHECK = "course:selfcheck"
TAG_SOLUTIONS = "course:solutions"
TAGS = (TAG_BADGES, TAG_SETUP, TAG_SELFCHECK, TAG_SOLUTIONS)

COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
BINDER_BADGE = "https://mybinder.org/badge_logo.svg"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
CHECK = "# NBVAL_CHECK_OUTPUT"


# -- the repository address, read from pyproject.toml -------------------------------------------

def repository_url(pyproject: Path = PYPROJECT) -> str:
    """[project.urls] Repository of pyproject.toml, e.g. https://github.com/OWNER/REPO (no trailing slash)."""
    text = pyproject.read_text(encoding="utf-8")
    try:
        import tomllib
        urls = tomllib.loads(text).get("project", {}).get("urls", {})
    except ModuleNotFoundError:  # Python 3.10: no tomllib; the table is a few plain lines
        section = re.search(r"^\[project\.urls\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
        urls = dict(re.findall(r'^\s*"?([\w.-]+)"?\s*=\s*"([^"]*)"', section.group(1), re.M)) if section else {}
    url = urls.get("Repository", "")
    if not url:
        raise SystemExit(f"{pyproject}: no [project.urls] Repository = \"https://github.com/OWNER/REPO\"; "
                         f"the badges and the Colab set-up are made from it.")
    return url.rstrip("/").removesuffix(".git")


def owner_repo(url: str) -> str:
    """https://github.com/OWNER/REPO -> "OWNER/REPO" (the badges need a GitHub repository)."""
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+)", url)
    if not match:
        raise SystemExit(f"the repository address {url!r} (pyproject.toml, [project.urls] Repository) must be "
                         f"https://github.com/OWNER/REPO: Colab and Binder open notebooks from GitHub.")
    return f"{match[1]}/{match[2]}"


def colab_url(url: str, notebook: str) -> str:
    """Colab's address of notebooks/<notebook> (a file name such as 02_content_reconstruction.ipynb)."""
    return f"https://colab.research.google.com/github/{owner_repo(url)}/blob/{BRANCH}/notebooks/{notebook}"


def binder_url(url: str, notebook: str | None = None) -> str:
    """Binder's address of the repository, opening notebooks/<notebook> in JupyterLab (or the folder)."""
    base = f"https://mybinder.org/v2/gh/{owner_repo(url)}/{BRANCH}"
    if notebook is None:
        return f"{base}?urlpath=lab/tree/notebooks"
    return f"{base}?labpath={urllib.parse.quote(f'notebooks/{notebook}', safe='')}"


def badges_markdown(url: str, notebook: str) -> str:
    """The badges cell of one notebook: Open in Colab, launch Binder."""
    return (f"[![Open In Colab]({COLAB_BADGE})]({colab_url(url, notebook)}) "
            f"[![Launch Binder]({BINDER_BADGE})]({binder_url(url, notebook)})")


def readme_badges(url: str) -> str:
    """The README's badge line: the first notebook on Colab, the course in JupyterLab on Binder."""
    first = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))[0] if NOTEBOOKS.is_dir() else "01_setup_and_tour.ipynb"
    return (f"[![Open In Colab]({COLAB_BADGE})]({colab_url(url, first)}) "
            f"[![Launch Binder]({BINDER_BADGE})]({binder_url(url)})")


def colab_setup_source(url: str) -> str:
    """The Colab set-up cell. Plain Python (no !pip magic), so that a test can run it anywhere.

    Why a clone and an editable install, not `pip install git+URL`: nstlib finds the course
    images' lists and bundled images in the repository's data/ folder beside the package
    (nstlib.data.DATA_DIR), which a wheel does not contain. torch and torchvision are on Colab
    already: pip keeps them. The running kernel started before the install, so the clone is also
    put on sys.path for this session.
    """
    name = owner_repo(url).split("/")[1]
    return f'''# Colab set-up: on Google Colab, fetch the course and install its package (once per session,
# about a minute). Anywhere else this cell does nothing.
import sys

if "google.colab" in sys.modules:
    import os
    import subprocess

    COURSE = "/content/{name}"
    if not os.path.isdir(COURSE):
        subprocess.run(["git", "clone", "--depth", "1", "{url}", COURSE], check=True)
    # Editable: nstlib reads the course images from the clone's data/ folder. torch is kept as is.
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", COURSE], check=True)
    if COURSE not in sys.path:
        sys.path.insert(0, COURSE)   # this kernel started before the install
    from google.colab import output
    output.enable_custom_widget_manager()   # the notebooks' ipywidgets panels'''


# -- the "your turn" exercises --------------------------------------------------------------

@dataclass(frozen=True)
class Exercise:
    """One core idea: the task (markdown), the function (code with the solution marked), its self-check."""

    key: str       # short name, used in the cell ids
    task: str      # markdown, starting "### Your turn: ..."
    code: str      # the function, its body between BEGIN and END
    check: str     # the self-check call (the cell's last line; it prints its verdict, and returns True/False)
    expected: str  # the line the check prints for the solution
    before: str = "## Exercises"  # the start of the cell the three cells go before: where the piece is used
    module: str = "selfcheck"     # the nstlib module whose check the check cell calls


def _ex(key: str, task: str, code: str, check: str, expected: str, before: str = "## Exercises",
        module: str = "selfcheck") -> Exercise:
    return Exercise(key, task.strip(), code.strip(), check, expected, before, module)


EXERCISES: dict[str, list[Exercise]] = {
    "02_content_reconstruction": [
        _ex("extract", r"""
### Your turn: the features of the layers you ask for

Write the function your extractor calls at every step. `x` (already normalized) goes through the
modules of `features` in order, and module `i` is named `names[i]`. Keep the output of each
module whose name is in `layers`, in a dict `{name: output}`, and stop after the deepest of them:
the modules after it cost time at every step of the optimization and give nothing. `layers` may
come in any order. Leave the outputs attached to the graph (no `torch.no_grad()`, no `.detach()`):
the optimization needs the gradient through them. The check compares your function with the
library's `VGGFeatures.extract` on a tiny VGG-16 with random weights, counts the modules you run,
and says what differs.
""", '''
def your_extract(features, names, x, layers):
    """x (B, 3, H, W), normalized; features[i] is named names[i] -> {layer: (B, C, h, w)} for each of layers."""
    ### BEGIN SOLUTION
    last = max(names.index(name) for name in layers)
    out = {}
    for i in range(last + 1):
        x = features[i](x)
        if names[i] in layers:
            out[names[i]] = x
    return out
    ### END SOLUTION
''', "selfcheck_vgg.check_extract(your_extract)",
            "✓ extract matches nstlib.vgg.VGGFeatures.extract on 3 layer sets (tiny random VGG-16) and stops at "
            "the deepest layer",
            before="# Your extractor: the normalization, then your extract", module="selfcheck_vgg"),
        _ex("content-loss", r"""
### Your turn: the content loss, one value per image

Write the content loss for a *batch*, as the library computes it: `F` and `P` are the features
of $B$ generated images and of their photos, each `(B, N, H, W)`, and the result holds one
$L_\text{content} = \frac12 \sum_{i,j} (F_{ij} - P_{ij})^2$ per image, shape `(B,)`. No loops:
sum over every dimension but the first. The cell after it checks your function against
`nstlib.losses.content_loss` on three small inputs and says what differs.
""", '''
def your_content_loss(F, P):
    """F, P: (B, N, H, W) features of the generated images and of the photos -> (B,)."""
    ### BEGIN SOLUTION
    return 0.5 * (F - P).pow(2).flatten(1).sum(1)
    ### END SOLUTION
''', "selfcheck.check_content_loss(your_content_loss)",
            "✓ content_loss matches nstlib.losses.content_loss on 3 test inputs",
            before="## The optimization, written out"),
        _ex("loss-and-grad", r"""
### Your turn: the loss and its gradient, for the optimizer

The heart of the loop is the function L-BFGS calls at every step: the loss of an image and its
gradient. Write its torch part as a function of what it uses: it computes the content loss of the
image `x` at `layer` against `target` (the photo's features), $\frac12 \sum (F - P)^2$ as one
number, back-propagates it into `x.grad` and returns it. The check runs the loop below
(`lbfgs.minimize`) around your function on a tiny
VGG-16 with random weights and compares the loss curve with `stylize`'s; then the loop runs on your
function.
""", '''
def your_loss_and_grad(net, layer, x, target):
    """One evaluation: x (1, 3, H, W) requires grad, target (1, N, h, w) -> the loss, shape (); fills x.grad."""
    ### BEGIN SOLUTION
    F = net.extract(x, [layer])[layer]
    loss = 0.5 * (F - target).pow(2).sum()
    loss.backward()
    return loss
    ### END SOLUTION
''', "selfcheck.check_loss_and_grad(your_loss_and_grad)",
            "✓ loss_and_grad gives the same 5-step L-BFGS loss curve as nstlib.stylize.stylize "
            "(tiny random VGG-16, relu2_2, 32 px)",
            before="# The whole method: your loss_and_grad inside L-BFGS with bounds"),
    ],
    "03_style_reconstruction": [
        _ex("gram-matrix", r"""
### Your turn: the Gram matrix of a batch, without loops

Write `my_gram` again, for a batch and without Python loops: `F` is `(B, C, H, W)`, the result
`(B, C, C)` holds one $G = F F^\top$ per image (sum over the $M = H W$ positions, no
normalisation). Reshape each image's features to `(C, M)` and use one batched matrix product
(`@` or `torch.bmm`). The check compares with `nstlib.losses.gram_matrix`.
""", '''
def your_gram_matrix(F):
    """F: (B, C, H, W) features -> (B, C, C), G_ij = sum_k F_ik F_jk for each image."""
    ### BEGIN SOLUTION
    b, c, h, w = F.shape
    F = F.reshape(b, c, h * w)
    return F @ F.transpose(1, 2)
    ### END SOLUTION
''', "selfcheck.check_gram_matrix(your_gram_matrix)",
            "✓ gram_matrix matches nstlib.losses.gram_matrix on 3 test inputs",
            before="# Your E_l on a real layer"),
        _ex("style-loss", r"""
### Your turn: the style loss of one layer, with its normalisation

Write the paper's $E_l = \frac{1}{4 N_l^2 M_l^2} \sum_{i,j} (G^l_{ij} - A^l_{ij})^2$ for the
features `F` of the generated image and `S` of the painting, both `(1, N, H, W)` (the same size),
as one number. You may use `losses.gram_matrix`. If the check reports a factor, it names the
part of the normalisation that is missing.
""", '''
def your_style_loss(F, S):
    """F, S: (1, N, H, W) features of the generated image and of the painting -> E_l, shape ()."""
    ### BEGIN SOLUTION
    N, M = F.shape[1], F.shape[2] * F.shape[3]
    G, A = losses.gram_matrix(F)[0], losses.gram_matrix(S)[0]
    return ((G - A) ** 2).sum() / (4 * N**2 * M**2)
    ### END SOLUTION
''', "selfcheck.check_style_loss(your_style_loss)",
            "✓ style_loss matches nstlib.losses.style_loss on 3 test inputs",
            before="# Your E_l on a real layer"),
    ],
    "04_gatys_style_transfer": [
        _ex("total-loss", r"""
### Your turn: the total loss

Write the one new piece of the transfer, the loss it lowers. `F`, `P`: the features of the image
and of the photo at the content layer, `(1, N, H, W)`. `G`, `A`: lists with one Gram matrix per
style layer, of the image and of the painting, each `(N_l, N_l)` and already divided by the number
of positions $M_l$ (`gram` below). Return one number,
$\alpha \mathcal L_\text{content} + \beta \mathcal L_\text{style}$, with
$\mathcal L_\text{content} = \frac12 \sum (F - P)^2$ and $\mathcal L_\text{style} = \sum_l w_l E_l$:
$w_l = 1/L$ for $L$ style layers and $E_l = \frac{1}{4 N_l^2} \sum (G_l - A_l)^2$ (the paper's
$\frac{1}{4 N_l^2 M_l^2}$, with $M_l$ already inside the Gram matrices). The check compares your
function with the reference on three small inputs and names the usual mistakes; the transfer
below runs on it.
""", '''
def your_total_loss(F, P, G, A, alpha, beta):
    """F, P: (1, N, H, W); G, A: lists of (N_l, N_l) Gram matrices / M_l, one per style layer -> shape ()."""
    ### BEGIN SOLUTION
    content = 0.5 * ((F - P) ** 2).sum()
    style = sum(((g - a) ** 2).sum() / (4 * g.shape[0] ** 2) for g, a in zip(G, A)) / len(G)
    return alpha * content + beta * style
    ### END SOLUTION
''', "selfcheck_transfer.check_total_loss(your_total_loss)",
            "✓ total_loss matches alpha * content + beta * sum_l w_l E_l on 3 test inputs (1 to 3 style layers)",
            before="# 2. The transfer: your total loss", module="selfcheck_transfer"),
    ],
    "05_normalized_losses": [
        _ex("normalized-style-loss", r"""
### Your turn: the normalized style loss, from a stored target

In a run the painting's Gram matrices are computed once and stored *per position*:
`A = losses.gram_matrix(S, normalize=True)`, `(1, N, N)`. Write Choi & Kim's style loss of one
layer from the generated image's features `F` `(1, N, H, W)` and that stored target:
$\lVert G - A \rVert_F^2 / \lVert A \rVert_F^2$ with $G$ per position as well, one number.
The check compares with `nstlib.losses.normalized_style_loss`, on feature maps whose size is not
the painting's; the cells after it use your function on the network's features.
""", '''
def your_normalized_style_loss(F, A):
    """F: (1, N, H, W) features, A: (1, N, N) the target Gram per position -> the loss, shape ()."""
    ### BEGIN SOLUTION
    G = losses.gram_matrix(F, normalize=True)
    return ((G - A) ** 2).sum() / (A ** 2).sum()
    ### END SOLUTION
''', "selfcheck.check_normalized_style_loss(your_normalized_style_loss)",
            "✓ normalized_style_loss matches nstlib.losses.normalized_style_loss on 3 test inputs",
            before="# Your normalized style loss on a real layer"),
    ],
    "07_beyond_the_paper": [
        _ex("rgb-to-yiq", r"""
### Your turn: RGB to YIQ

`my_luminance` above computes $Y$ only. Write the whole transform: every pixel's colour vector
$(R, G, B)$ becomes $(Y, I, Q) = M (R, G, B)^\top$ with the matrix `YIQ` below (rows: Y, I, Q),
for a batch `(B, 3, H, W)` -> `(B, 3, H, W)`, without loops (`torch.einsum` or a reshape and a
matrix product). The check compares with `nstlib.color.rgb_to_yiq`.
""", '''
YIQ = torch.tensor([[0.299, 0.587, 0.114],
                    [0.596, -0.274, -0.322],
                    [0.211, -0.523, 0.312]])


def your_rgb_to_yiq(img):
    """img: (B, 3, H, W) RGB in [0, 1] -> (B, 3, H, W) YIQ."""
    ### BEGIN SOLUTION
    return torch.einsum("kc,bchw->bkhw", YIQ.to(img), img)
    ### END SOLUTION
''', "selfcheck.check_rgb_to_yiq(your_rgb_to_yiq)",
            "✓ rgb_to_yiq matches nstlib.color.rgb_to_yiq on 3 test inputs"),
    ],
}


# -- cells ------------------------------------------------------------------------------------

def _lines(text: str) -> list[str]:
    """A cell source as nbformat stores it: lines with their newline, the last one without."""
    return text.splitlines(keepends=True)


def markdown_cell(cell_id: str, tag: str, text: str) -> dict[str, Any]:
    return {"cell_type": "markdown", "id": cell_id, "metadata": {"tags": [tag]}, "source": _lines(text)}


def code_cell(cell_id: str, tag: str, text: str, printed: str | None = None) -> dict[str, Any]:
    """A code cell; with `printed`, the stored output of a checked cell: that line."""
    outputs: list[dict[str, Any]] = []
    if printed is not None:
        outputs = [{"name": "stdout", "output_type": "stream", "text": [printed + "\n"]}]
    return {"cell_type": "code", "execution_count": 1 if printed is not None else None, "id": cell_id,
            "metadata": {"tags": [tag]}, "outputs": outputs, "source": _lines(text)}


def exercise_cells(ex: Exercise) -> list[dict[str, Any]]:
    """The three cells of one exercise: the task, the function, the self-check (with its stored pass line)."""
    # Assigned, so that the cell shows the verdict line only, no bare True under it (a trailing ";"
    # does not hide it under nbval, which runs cells outside IPython's history).
    check = f"{CHECK}\nfrom nstlib import {ex.module}\n\npassed = {ex.check}"
    return [markdown_cell(f"course-{ex.key}-task", TAG_SELFCHECK, ex.task),
            code_cell(f"course-{ex.key}-code", TAG_SELFCHECK, ex.code),
            code_cell(f"course-{ex.key}-check", TAG_SELFCHECK, check, printed=ex.expected)]


def is_generated(cell: dict[str, Any]) -> bool:
    """Whether a cell was inserted by this script (it carries one of TAGS)."""
    return any(tag in TAGS for tag in cell.get("metadata", {}).get("tags", []))


def _source(cell: dict[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _exercises_index(cells: list[dict[str, Any]], name: str) -> int:
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "markdown" and _source(cell).startswith("## Exercises"):
            return i
    raise SystemExit(f"{name}: no markdown cell starting '## Exercises': cannot place the exercises' cells.")


def _index_of(cells: list[dict[str, Any]], start: str, name: str) -> int:
    """The first cell (not a generated one) whose source starts with `start`."""
    for i, cell in enumerate(cells):
        if not is_generated(cell) and _source(cell).startswith(start):
            return i
    raise SystemExit(f"{name}: no cell starting {start!r}: cannot place an exercise's cells before it.")


def update_notebook(nb: dict[str, Any], name: str, url: str, solutions_dir: Path = SOLUTIONS) -> dict[str, Any]:
    """nb with every generated cell removed and the current ones inserted; `name` is the file name."""
    stem = Path(name).stem
    cells = [c for c in nb["cells"] if not is_generated(c)]
    if not cells or cells[0]["cell_type"] != "markdown":
        raise SystemExit(f"{name}: the first cell must be the markdown title cell.")
    head = [markdown_cell("course-badges", TAG_BADGES, badges_markdown(url, name)),
            code_cell("course-colab-setup", TAG_SETUP, colab_setup_source(url))]
    cells = cells[:1] + head + cells[1:]
    _exercises_index(cells, name)   # every notebook ends with its exercises
    for ex in EXERCISES.get(stem, []):   # each where its piece is first used (default: before the exercises)
        at = _index_of(cells, ex.before, name)
        cells = cells[:at] + exercise_cells(ex) + cells[at:]
    at = _exercises_index(cells, name)
    solution_file = solutions_dir / f"{stem}.md"
    after = [markdown_cell("course-solutions", TAG_SOLUTIONS, solution_file.read_text(encoding="utf-8").rstrip("\n"))] \
        if solution_file.is_file() else []
    cells = cells[:at + 1] + after + cells[at + 1:]
    return {**nb, "cells": cells}


def render(nb: dict[str, Any]) -> str:
    """The notebook file's text, in the repository's format."""
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def process(path: Path, url: str, check: bool, solutions_dir: Path = SOLUTIONS) -> bool:
    """Update one notebook (or, with check, only compare); returns whether it was up to date."""
    text = path.read_text(encoding="utf-8")
    new = render(update_notebook(json.loads(text), path.name, url, solutions_dir))
    if new == text:
        return True
    if not check:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(new, encoding="utf-8")
        tmp.replace(path)   # atomic: an editor or a test never reads half a notebook
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook is not up to date")
    parser.add_argument("--readme", action="store_true", help="print the README's badge line and exit")
    parser.add_argument("--solutions", type=Path, default=SOLUTIONS, help="folder of <notebook stem>.md solutions")
    args = parser.parse_args(argv)
    url = repository_url()
    if args.readme:
        print(readme_badges(url))
        return 0
    paths = args.notebooks or sorted(NOTEBOOKS.glob("*.ipynb"))
    stale = [p for p in paths if not process(p, url, args.check, args.solutions)]
    for p in stale:
        print(f"{'not up to date' if args.check else 'updated'}: {p}")
    if args.check and stale:
        print("run `make course-cells` (python tools/course_cells.py) to update them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
