"""The key figures of every notebook as 200 dpi PNGs for slides, and screenshots of the two widgets.

    python tools/slides.py                                  # every notebook, into build/slides/
    python tools/slides.py notebooks/04_gatys_style_transfer.ipynb --out /tmp/s --no-widgets

(``make slides`` runs it; ``SLIDES_NOTEBOOKS=...`` chooses notebooks.) Each notebook is executed
from top to bottom with nbclient in a kernel whose inline figures are 200 dpi PNGs (a temporary
IPYTHONDIR whose ipython_kernel_config.py sets ``InlineBackend.print_figure_kwargs``), in the run
mode the environment says: by default the device's (gpu on a GPU machine: the paper's sizes,
every transfer at 256 px or more; cpu without one: the CPU lecture's sizes, the transfer grids at
128 px), or the one ``NSTLIB_MODE=cpu|gpu`` forces. The run prints which, and what it means.
Every image/png output becomes ``OUT/<NN>_<section>_<k>.png`` (NN: the notebook's number,
section: the slug of the `## ` heading above the figure, k: the figure's number in that section). ``OUT/<NN>.json`` records
each figure's notebook, section and nearest sentence, and ``OUT/index.html`` and ``OUT/index.md``
list every figure in OUT (those of notebooks run earlier too).

The widgets cannot be drawn by a kernel alone: with ``--widgets`` (the default) JupyterLab is
started on copies of notebooks 1 and 6, headless Chromium (Playwright, as in
tests/test_browser.py) runs their cells down to the widget's, and the layer explorer (with a
reconstruction of "what this layer keeps") and the tuning panel (ready, and running) are saved as
``01_widget_layer-explorer.png``, ``06_widget_tuning-panel.png`` and
``06_widget_tuning-panel-running.png``, at twice the screen's pixels (about a minute in all on
2 cores). Without Chromium or Playwright that part fails with the reason; the figures are
written all the same.

Why a runner of its own and not an option of the lecture run (tests/lectures_html.py): that run
is the checked one, under nbval, and its pages embed every figure; at 200 dpi each figure has
four times the pixels of today's, and the pages (already 1-8 MB) would grow as much. Here the
figures go to files, nothing is checked, and a cell that fails is reported while the others
still give their figures.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import nbformat
from nbformat import NotebookNode

ROOT = Path(__file__).resolve().parent.parent
DPI = 200
# The kernel's matplotlib inline backend: every figure a cell shows, as a PNG at DPI. It is
# switched on at start: nstlib.viz's figures are not pyplot's and show through their own
# _repr_png_ (the figure's 100 dpi) unless the backend's printer for every Figure is registered.
KERNEL_CONFIG = f"""c.InteractiveShellApp.matplotlib = "inline"
c.InlineBackend.figure_formats = {{"png"}}
c.InlineBackend.print_figure_kwargs = {{"bbox_inches": "tight", "dpi": {DPI}}}
"""
WIDGET_NOTEBOOKS = {"explorer": "01_setup_and_tour.ipynb", "panel": "06_interactive_tuning.ipynb"}


@dataclass
class Figure:
    """One image/png output and where it stands in its notebook."""

    file: str  # name in the output folder
    notebook: str  # file name
    title: str  # the notebook's `# ` heading
    section: str  # the `## ` heading above it ("" before the first)
    sentence: str  # the nearest sentence of the text around it
    cell: int  # the cell's index in the notebook
    width: int = 0
    height: int = 0
    dpi: float = 0.0


# ------------------------------------------------------------------ reading a notebook

GREEK = {"alpha": "α", "beta": "β", "lambda": "λ", "sigma": "σ", "mu": "μ", "times": "×", "cdot": "·"}


def plain(text: str, greek: bool = True) -> str:
    """Markdown and simple TeX as plain text ($\\alpha$: α, or alpha when not `greek`)."""
    def tex(m: re.Match[str]) -> str:
        body = re.sub(r"\\(mathcal|mathrm|mathbf|text|vec|operatorname)\s*", "", m[1])  # keep their argument
        body = re.sub(r"\\[,;:! ]", " ", body)  # TeX's spaces
        body = re.sub(r"\\([A-Za-z]+)", lambda g: GREEK.get(g[1], g[1]) if greek else g[1], body)
        return body.replace("{", "").replace("}", "")
    text = re.sub(r"\$+([^$]*)\$+", tex, text)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)
    return " ".join(text.replace("**", "").replace("`", "").replace("__", "").split())


def slug(text: str, limit: int = 48) -> str:
    """A file-name part: lowercase ASCII words joined by dashes, at most `limit` characters."""
    words = re.sub(r"[^a-z0-9]+", " ", plain(text, greek=False).lower()).split()
    out = ""
    for w in words:
        if len(out) + len(w) + 1 > limit:
            break
        out = f"{out}-{w}" if out else w
    return out or "figure"


def notebook_number(path: Path) -> str:
    """"04" for 04_gatys_style_transfer.ipynb (the stem when it has no number)."""
    match = re.match(r"(\d+)", path.stem)
    return match[1] if match else path.stem


def headings(source: str, level: int) -> list[str]:
    """The text of the markdown headings of exactly `level` in a cell."""
    mark = "#" * level + " "
    return [line[len(mark):].strip() for line in source.splitlines() if line.startswith(mark)]


# A period that ends no sentence: "e.g.", "Fig. 4", "Gatys et al. used".
ABBREVIATION = re.compile(r"\b(e\.g|i\.e|Figs?|vs|cf|al|[Ee]q|No|approx)\.$")


def first_sentence(source: str) -> str:
    """The first sentence of a markdown cell's first paragraph that is not a heading, as plain text."""
    for para in re.split(r"\n\s*\n", source):
        para = para.strip()
        if not para or para.startswith(("#", "|", "<details", "```")):
            continue
        para = re.sub(r"^\*\*[^*]{1,40}[.:]\*\*\s*", "", para)  # a label ("**What to see.**") is no sentence
        text = plain(para)
        ends = [m.end(1) for m in re.finditer(r"([.!?])(\s|$)", text) if not ABBREVIATION.search(text[:m.end(1)])]
        sentence = text[:ends[0]] if ends else text
        return sentence if len(sentence) <= 240 else sentence[:239] + "…"
    return ""


def nearest_sentence(cells: list[NotebookNode], i: int) -> str:
    """The first sentence of the markdown cell nearest to cell `i` (the one before wins a tie)."""
    for d in range(1, len(cells)):
        for j in (i - d, i + d):
            if 0 <= j < len(cells) and cells[j].cell_type == "markdown":
                sentence = first_sentence(cells[j].source)
                if sentence:
                    return sentence
    return ""


def title_of(name: str) -> str:
    """The `# ` heading of notebooks/<name> as plain text ('' if it cannot be read)."""
    try:
        nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    except (OSError, ValueError):
        return ""
    return plain(next((h for c in nb.cells if c.cell_type == "markdown" for h in headings(c.source, 1)), ""))


def figures_of(nb: NotebookNode, path: Path) -> list[tuple[Figure, bytes]]:
    """Every image/png output of an executed notebook, named and placed; in order."""
    import base64

    nn, title = notebook_number(path), ""
    section, counts, out = "", {}, []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            title = title or next(iter(headings(cell.source, 1)), "")
            section = next(reversed(headings(cell.source, 2)), section)
            continue
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if not png:
                continue
            part = slug(section) if section else "intro"
            counts[part] = counts.get(part, 0) + 1
            fig = Figure(f"{nn}_{part}_{counts[part]}.png", path.name, plain(title), plain(section),
                         nearest_sentence(nb.cells, i), i)
            out.append((fig, base64.b64decode(png)))
    return out


def png_facts(data: bytes) -> tuple[int, int, float]:
    """Width, height and dpi (from the PNG's pHYs; 0 when it has none) of a PNG."""
    import io

    from PIL import Image
    with Image.open(io.BytesIO(data)) as img:
        dpi = img.info.get("dpi", (0, 0))[0]
        return img.width, img.height, round(float(dpi), 1)


# ------------------------------------------------------------------ running a notebook

def kernel_env(ipython_dir: Path) -> dict[str, str]:
    """The kernel's environment: ours, with a profile for 200 dpi figures and the inline backend."""
    profile = ipython_dir / "profile_default"
    profile.mkdir(parents=True, exist_ok=True)
    (profile / "ipython_kernel_config.py").write_text(KERNEL_CONFIG)
    env = dict(os.environ, IPYTHONDIR=str(ipython_dir))
    env.pop("MPLBACKEND", None)  # Agg (as in the smoke tests) would draw no figure at all
    return env


def execute(path: Path, ipython_dir: Path, cell_timeout: int) -> tuple[NotebookNode, list[str]]:
    """Run a notebook from top to bottom in its folder; (the executed notebook, its cells' errors)."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=cell_timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=kernel_env(ipython_dir))
    errors = [f"{path.name} cell {i}: {o.ename}: {o.evalue}" for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    return nb, errors


def write_figures(nb: NotebookNode, path: Path, out: Path) -> list[Figure]:
    """The notebook's figures as PNGs in `out` (its earlier ones removed) and <NN>.json beside them."""
    nn = notebook_number(path)
    for old in out.glob(f"{nn}_*.png"):
        if "_widget_" not in old.name:  # the screenshots are made by another step
            old.unlink()
    figures = []
    for fig, data in figures_of(nb, path):
        (out / fig.file).write_bytes(data)
        fig.width, fig.height, fig.dpi = png_facts(data)
        figures.append(fig)
    (out / f"{nn}.json").write_text(json.dumps([asdict(f) for f in figures], indent=1, ensure_ascii=False))
    return figures


# ------------------------------------------------------------------ the index

def read_manifests(out: Path) -> list[Figure]:
    """Every figure the manifests in `out` list and whose PNG is there, in file-name order."""
    figures = []
    for manifest in sorted(out.glob("*.json")):
        try:
            entries = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        figures += [Figure(**e) for e in entries if isinstance(e, dict) and (out / e.get("file", "")).is_file()]
    return sorted(figures, key=lambda f: f.file)


def describe_size(f: Figure) -> str:
    """"1600x900 px, 200 dpi", or "... px, screenshot" for a browser's PNG (which records no dpi)."""
    if not f.width:
        return ""
    return f"{f.width}x{f.height} px, " + (f"{f.dpi:g} dpi" if f.dpi else "screenshot")


def index_md(figures: list[Figure], info: str) -> str:
    """The index as markdown: one line per figure."""
    lines = ["# Slides: the notebooks' figures", "", info, ""]
    notebook = None
    for f in figures:
        if f.notebook != notebook:
            notebook = f.notebook
            lines += ["", f"## {f.title or f.notebook} ({f.notebook})", ""]
        size = describe_size(f)
        lines.append(f"- `{f.file}` ({size}): {f.section or 'introduction'}. {f.sentence}".rstrip())
    return "\n".join(lines) + "\n"


def index_html(figures: list[Figure], info: str) -> str:
    """The index as one page with thumbnails (files beside it, nothing from the network)."""
    rows, notebook = [], None
    for f in figures:
        if f.notebook != notebook:
            notebook = f.notebook
            rows.append(f"<h2>{html.escape(f.title or f.notebook)} <small>{html.escape(f.notebook)}</small></h2>")
        size = describe_size(f)
        rows.append(f'<figure><a href="{html.escape(f.file)}"><img src="{html.escape(f.file)}" loading="lazy" alt=""></a>'
                    f"<figcaption><code>{html.escape(f.file)}</code> {html.escape(size)}<br>"
                    f"<b>{html.escape(f.section or 'Introduction')}</b> {html.escape(f.sentence)}</figcaption></figure>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Slides: the notebooks' figures</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem; color: #1f2328; }}
figure {{ display: inline-block; vertical-align: top; width: 20rem; margin: 0 1rem 1.5rem 0; }}
figure img {{ max-width: 100%; max-height: 14rem; border: 1px solid #d1d9e0; }}
figcaption {{ font-size: .85rem; color: #59636e; }}
small {{ color: #59636e; font-weight: normal; }}
</style></head><body>
<h1>Slides: the notebooks' figures</h1>
<p>{html.escape(info)}</p>
{chr(10).join(rows)}
</body></html>
"""


def write_index(out: Path, info: str) -> list[Figure]:
    """index.md and index.html over every figure in `out`; the figures listed."""
    figures = read_manifests(out)
    (out / "index.md").write_text(index_md(figures, info))
    (out / "index.html").write_text(index_html(figures, info))
    return figures


# ------------------------------------------------------------------ the widgets, in a browser

def widget_screenshots(out: Path, notebooks_dir: Path, env: dict[str, str], scale: float = 2.0) -> list[Figure]:
    """Screenshots of the layer explorer (notebook 1) and the tuning panel (notebook 6) in JupyterLab.

    Raises RuntimeError with the reason when Chromium, Playwright or the server is missing.
    """
    sys.path.insert(0, str(ROOT / "tests"))
    from browser_tools import CHROMIUM_FLAGS, find_chromium, jupyter_lab
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        raise RuntimeError("the Python package playwright is not installed") from e
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("no Chromium: run `make browser` (bash .ci/install-browser.sh)")

    figures = []
    with tempfile.TemporaryDirectory(prefix="nst-slides-lab-") as tmp:
        root, home = Path(tmp) / "root", Path(tmp) / "home"
        root.mkdir()
        for name in WIDGET_NOTEBOOKS.values():
            shutil.copy(notebooks_dir / name, root / name)
        server_env = dict(env, IPYTHONDIR=str(home / "ipython"), MPLBACKEND="Agg")  # the widgets draw their own images
        with jupyter_lab(root, home, server_env) as (base, token), sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(
                str(home / "profile"), executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": 1900, "height": 1200}, device_scale_factor=scale)
            try:
                page = browser.new_page()
                page.set_default_timeout(60_000)
                figures += _panel_shots(page, f"{base}/lab/tree/{WIDGET_NOTEBOOKS['panel']}?token={token}", out)
                url = f"{base}/lab/workspaces/explorer/tree/{WIDGET_NOTEBOOKS['explorer']}?reset&token={token}"
                figures += _explorer_shot(page, url, out)
            finally:
                browser.close()
    for f in figures:
        f.width, f.height, f.dpi = png_facts((out / f.file).read_bytes())
    return figures


def _open_and_run(page: Any, url: str, marker: str) -> None:
    """Open a notebook in JupyterLab and run its cells down to the widget's (the rest is not needed)."""
    from browser_tools import run_cells  # tests/ is on the path (widget_screenshots)
    page.goto(url)
    run_cells(page, marker)


def _panel_shots(page: Any, url: str, out: Path) -> list[Figure]:
    """Notebook 6's tuning panel, ready and then running (a few seconds after Run, stopped after)."""
    _open_and_run(page, url, "panel = widgets.TuningPanel(")
    panel = page.locator(".nst-panel").first
    panel.scroll_into_view_if_needed()  # JupyterLab does not render cells out of view
    status = panel.locator(".nst-status")
    page.wait_for_function("el => el.innerText.startsWith('Ready')", arg=status.element_handle(), timeout=60_000)
    name = WIDGET_NOTEBOOKS["panel"]
    ready = Figure("06_widget_tuning-panel.png", name, title_of(name), "The panel",
                   "The tuning panel before Run: every control, the preview of the photo.", -1)
    panel.screenshot(path=str(out / ready.file))
    panel.locator("button.nst-run").click()
    page.wait_for_function("el => /step [1-9]/.test(el.innerText)", arg=status.element_handle(), timeout=120_000)
    time.sleep(3.0)  # a few previews in: the picture has started to change
    running = Figure("06_widget_tuning-panel-running.png", name, title_of(name), "The panel",
                     f"The tuning panel while it runs: {status.inner_text().strip()[:120]}", -1)
    panel.screenshot(path=str(out / running.file))
    _stop(panel.locator("button.nst-stop"))
    return [ready, running]


def _explorer_shot(page: Any, url: str, out: Path) -> list[Figure]:
    """Notebook 1's layer explorer once its montage is drawn."""
    _open_and_run(page, url, "widgets.LayerExplorer(")
    ex = page.locator(".nst-explorer").first
    ex.scroll_into_view_if_needed()
    montage = ex.locator("img.nst-montage")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=montage.element_handle(), timeout=60_000)
    # "What this layer keeps" for a few seconds, so that the slide shows no empty box.
    ex.locator("button.nst-recon-start").click()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=ex.locator("img.nst-recon").element_handle(),
                           timeout=60_000)
    time.sleep(6.0)
    fig = Figure("01_widget_layer-explorer.png", WIDGET_NOTEBOOKS["explorer"], title_of(WIDGET_NOTEBOOKS["explorer"]),
                 "A live layer explorer", "The layer explorer: a layer's feature maps, a channel over the image, its "
                 "Gram matrix, and what the layer keeps (a reconstruction from faint noise).", -1)
    ex.screenshot(path=str(out / fig.file))
    _stop(ex.locator("button.nst-stop"))
    return [fig]


def _stop(button: Any) -> None:
    """Press a widget's Stop button unless the run has already ended (the button is disabled then)."""
    if button.is_enabled():
        button.click()


# ------------------------------------------------------------------ the command line

def notebook_paths(args: Iterable[str]) -> list[Path]:
    """The notebooks that arguments name (files or folders), sorted; a clear error for a wrong one."""
    paths: list[Path] = []
    for arg in args:
        p = Path(arg)
        if p.is_dir():
            paths += sorted(p.glob("[0-9]*.ipynb"))
        elif p.suffix == ".ipynb" and p.is_file():
            paths.append(p)
        else:
            raise SystemExit(f"slides: {arg} is not a notebook (.ipynb) or a folder of notebooks")
    if not paths:
        raise SystemExit(f"slides: no notebook in {' '.join(args)}")
    return sorted({p.resolve() for p in paths})


def run_mode() -> str:
    """The mode the notebooks will run in (nstlib.course.mode: NSTLIB_MODE, NSTLIB_SMOKE, the device)."""
    from nstlib import course  # imports torch: only when a run starts

    return course.mode(verbose=False).name


def mode_note(mode: str) -> str:
    """What the mode means for the slides' sizes, in one line."""
    if mode == "gpu":
        return "mode gpu: the paper's sizes (every transfer at 256 px or more)"
    if mode == "cpu":
        return ("mode cpu (no GPU found): the CPU lecture's sizes (transfer grids at 128 px); for slides at 256 px "
                "or more run make slides on a GPU machine (Colab will do), where the mode is gpu")
    return f"mode {mode}: tiny images, pictures not meaningful"


def run_info(mode: str) -> str:
    """One line: when, which mode, which weights."""
    weights = os.environ.get("NSTLIB_WEIGHTS") or "torchvision's VGG-19"
    return f"Written {time.strftime('%Y-%m-%d %H:%M')} by tools/slides.py; mode {mode}; weights {weights}; {DPI} dpi."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", default=[str(ROOT / "notebooks")],
                        help="notebooks or folders (default: notebooks/)")
    parser.add_argument("--out", default=str(ROOT / "build" / "slides"), help="output folder (default: build/slides)")
    parser.add_argument("--widgets", action=argparse.BooleanOptionalAction, default=True,
                        help="screenshots of the tuning panel and the layer explorer in JupyterLab (default: on)")
    parser.add_argument("--cell-timeout", type=int, default=900, help="seconds one cell may run (default 900)")
    args = parser.parse_args(argv)
    # `timeout` and CI stop a run with SIGTERM: exit through the `finally` blocks, which stop
    # JupyterLab (a process group of its own that would otherwise outlive this one).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    paths, problems = notebook_paths(args.notebooks), []
    mode = run_mode()
    print(f"slides: {mode_note(mode)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="nst-slides-ipython-") as ipython_dir:
        for path in paths:
            t0 = time.monotonic()
            nb, errors = execute(path, Path(ipython_dir), args.cell_timeout)
            figures = write_figures(nb, path, out)
            problems += errors
            print(f"slides: {path.name}: {len(figures)} figures in {time.monotonic() - t0:.0f} s"
                  + (f", {len(errors)} failed cell(s)" if errors else ""), flush=True)
    if args.widgets:
        t0 = time.monotonic()
        try:
            shots = widget_screenshots(out, ROOT / "notebooks", dict(os.environ))
            (out / "widgets.json").write_text(json.dumps([asdict(f) for f in shots], indent=1, ensure_ascii=False))
            print(f"slides: {len(shots)} widget screenshots in {time.monotonic() - t0:.0f} s", flush=True)
        except Exception as e:  # the figures are written: say why the screenshots are not
            problems.append(f"widget screenshots: {type(e).__name__}: {e}")
    figures = write_index(out, run_info(mode))
    print(f"slides: {len(figures)} PNGs listed in {out / 'index.html'} (and index.md)")
    for p in problems:
        print(f"slides: FAILED: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
