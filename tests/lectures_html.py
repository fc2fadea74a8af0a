"""Write the lectures that nbval executes as HTML pages, with an index: one run, two results.

    pytest notebooks --nbval-lax --nbval-current-env --lectures-html build/lectures

(``make lectures`` does this in cpu mode). nbval runs every code cell of a notebook in one kernel
and keeps what the kernel sent back in ``item.test_outputs``; this plugin puts those outputs back
into a copy of the notebook (cells that did not run stay empty, failed cells keep their error),
and when a notebook's last cell is done it writes ``DIR/<name>.ipynb`` and ``DIR/<name>.html``
(nbconvert's "lab" template, figures embedded as data URIs). ``DIR/index.html`` lists every
lecture with its title, its "What you will do" paragraph, its run time and how many of its
cells passed, plus the date, the run mode and the weights. It is rewritten after each notebook,
so an interrupted run still leaves a readable index.

The pages form a small site: each has previous / next links (in the order of the index), a
table of contents of its `## ` headings (nbconvert gives each heading an id), the launch links
(Colab, Binder) when pyproject.toml's [project.urls] names a GitHub Repository, and its
solutions (markdown `<details>` blocks) folded as written. Why these pages and not Jupyter Book:
the lectures are already executed once, by nbval, in the run that checks them, and each page is
written the moment its notebook is done. Jupyter Book would read or execute the notebooks again
in a build of its own, adds a Sphinx stack (and, in its 2.x line, a Node.js build) to the
dependencies, and its themes fetch fonts and scripts unless configured not to; CI has no
internet. Previous / next, a table of contents and two links are a few lines of HTML per page,
written in the same run, with nothing new to install, and every page still opens from disk.

The module is loaded as a plugin by ``addopts = "-p lectures_html"`` in pyproject.toml (tests/ is
on pytest's ``pythonpath``), not from a notebooks/conftest.py: a second module named ``conftest``
would shadow tests/conftest.py for ``from conftest import ...`` in ``pytest tests notebooks``.
Without ``--lectures-html`` it only declares the option: nbval runs exactly as before. The
functions below are plain and tested on a tiny fake notebook in ``tests/test_lectures_html.py``.
"""

from __future__ import annotations

import copy
import html
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import nbformat
import pytest
from nbformat import NotebookNode

from nstlib._io import atomic_group, atomic_write, ensure_folder

OPTION = "--lectures-html"
BADGES_TAG = "course:badges"  # the notebooks' launch-badge cell (tools/course_cells.py)
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = "[an interactive widget: open the notebook in JupyterLab to use it]"
# Outcomes of one cell, as the index counts them.
PASSED, FAILED, SKIPPED, NOT_RUN = "passed", "failed", "skipped", "not run"


@dataclass
class CellResult:
    """What happened to one code cell in this run."""

    outcome: str = NOT_RUN
    seconds: float = 0.0  # setup + call + teardown (the first cell's setup starts the kernel)
    outputs: list[NotebookNode] | None = None  # what the kernel sent; None: the cell did not run
    failure: str = ""  # pytest's report of a failed cell


@dataclass
class Lecture:
    """One line of the index."""

    name: str  # the notebook's file name without .ipynb
    title: str
    summary: str  # the "What you will do" paragraph, markdown
    counts: dict[str, int] = field(default_factory=dict)  # outcome -> number of code cells
    seconds: float = 0.0
    figures: int = 0  # image/png outputs
    page: str = ""  # "<name>.html" once written
    error: str = ""  # why the page could not be written

    @property
    def status(self) -> str:
        """FAILED (a cell failed, or the page could not be written), NOT_RUN (no cell ran) or PASSED."""
        if self.error or self.counts.get(FAILED):
            return FAILED
        if not any(self.counts.get(k) for k in (PASSED, SKIPPED)):
            return NOT_RUN
        return PASSED


# ------------------------------------------------------------------ the notebook with its outputs

def notebook_title(nb: NotebookNode, default: str = "") -> str:
    """The text of the notebook's first `# ` heading (the lecture's title)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return default


def what_you_will_do(nb: NotebookNode) -> str:
    """The first markdown cell's "What you will do." paragraph, without its label ('' if none)."""
    first = next((c for c in nb.cells if c.cell_type == "markdown"), None)
    if first is None:
        return ""
    for paragraph in re.split(r"\n\s*\n", first.source):
        match = re.match(r"\s*\**What you will do\.?\**\.?\s*", paragraph)
        if match:
            return " ".join(paragraph[match.end():].split())
    return ""


def degrade_widget(output: NotebookNode) -> NotebookNode:
    """A widget view without its widget state renders as nothing in static HTML: keep its text.

    nbval drops the comm messages that carry widget state, so a page cannot show the widget; its
    text/plain (ipywidgets' repr, e.g. "HBox(children=(...") is shown instead, after a note.
    """
    data = output.get("data")
    if not data or WIDGET_MIME not in data:
        return output
    output = copy.deepcopy(output)
    del output.data[WIDGET_MIME]
    text = output.data.get("text/plain", "")
    output.data["text/plain"] = f"{WIDGET_NOTE}\n{text}" if text else WIDGET_NOTE
    return output


def _merge_streams(outputs: list[NotebookNode]) -> list[NotebookNode]:
    """Merge each stream's chunks into one output and apply \\r, as nbval does (not for a failed cell)."""
    from nbval.plugin import coalesce_streams
    return coalesce_streams(copy.deepcopy(outputs))


def ends_with_semicolon(source: str) -> bool:
    """Whether IPython would hide the cell's result (`ax.legend();`).

    nbval executes with store_history=False, so IPython's own check reads a stale history and
    sends the result anyway: the page drops it, as JupyterLab would never have shown it.
    """
    from IPython.core.displayhook import DisplayHook
    try:
        return DisplayHook.semicolon_at_end_of_expression(source)
    except Exception:  # IPython syntax (%magic, !shell) that tokenize rejects
        return source.rstrip().endswith(";")


def executed_notebook(nb: NotebookNode, cells: list[CellResult]) -> NotebookNode:
    """A copy of `nb` whose code cells carry this run's outputs (`cells`: one per code cell, in order).

    Cells that ran get execution counts 1, 2, ... in order (nbval executes with
    store_history=False, so the kernel does not count); cells that did not run stay empty, and
    results that a trailing `;` hides are dropped.
    A failed cell without an error output (e.g. a checked output that differs) gets pytest's
    report as stderr, so that the page shows why it failed.
    """
    out = copy.deepcopy(nb)
    code = [c for c in out.cells if c.cell_type == "code"]
    if len(code) != len(cells):
        raise ValueError(f"{len(cells)} results for {len(code)} code cells")
    count = 0
    for cell, result in zip(code, cells):
        cell.outputs, cell.execution_count = [], None
        cell.metadata["lectures_html"] = {"outcome": result.outcome, "seconds": round(result.seconds, 3)}
        if result.outputs is None:
            continue
        count += 1
        cell.execution_count = count
        cell.outputs = [degrade_widget(o) for o in _merge_streams(result.outputs)]
        if ends_with_semicolon(cell.source):
            cell.outputs = [o for o in cell.outputs if o.output_type != "execute_result"]
        for o in cell.outputs:
            if o.output_type == "execute_result":
                o.execution_count = count
        if result.outcome == FAILED and not any(o.output_type == "error" for o in cell.outputs):
            cell.outputs.append(nbformat.v4.new_output("stream", name="stderr", text=result.failure or "this cell failed"))
    return out


def count_figures(nb: NotebookNode) -> int:
    """Number of image/png outputs (each one becomes an <img> on the page)."""
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def count_outcomes(cells: list[CellResult]) -> dict[str, int]:
    """Code cells per outcome, every outcome present."""
    return {k: sum(c.outcome == k for c in cells) for k in (PASSED, FAILED, SKIPPED, NOT_RUN)}


def lecture_page(nb: NotebookNode, name: str, source_dir: Path, site: SiteLinks | None = None) -> str:
    """The executed notebook as one HTML page (nbconvert "lab" template), with the site's links.

    Figures (image/png outputs) are always embedded as data URIs by the template. The exporter's
    `embed_images` is off on purpose: it only inlines images that *markdown* links to (the
    notebooks have none), and it re-parses every HTML block of a markdown cell on its own, which
    closes a `<details>` block at its first blank line and drops its `</details>`: a solution
    would end up outside its fold, always visible.
    """
    from nbconvert import HTMLExporter

    nb = copy.deepcopy(nb)
    nb.metadata["title"] = notebook_title(nb, name)  # the page's <title>
    if site is not None:
        # The site's bar carries the launch links; the notebook's badge cell (tools/course_cells.py)
        # shows badge images from Colab and Binder, which a page read offline cannot load.
        nb.cells = [c for c in nb.cells if BADGES_TAG not in c.get("metadata", {}).get("tags", [])]
    for cell in nb.cells:
        # A cell folded in the notebook (the checked claims: their code and thresholds) shows only
        # its output on the page: one line per claim in the reading path.
        if cell.get("metadata", {}).get("jupyter", {}).get("source_hidden"):
            cell.metadata["transient"] = {"remove_source": True}
    exporter = HTMLExporter(template_name="lab", embed_images=False)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": name, "path": str(source_dir)}})
    return add_site_links(body, site) if site is not None else body


# ------------------------------------------------------------------ the pages as a small site

COLAB = "https://colab.research.google.com/github/{repo}/blob/{branch}/{path}"
BINDER = "https://mybinder.org/v2/gh/{repo}/{branch}?labpath={path_q}"
BRANCH = "main"  # the branch the launch links open (the repository's default)


@dataclass
class SiteLinks:
    """A page's place in the site: its neighbours (page, title), the index, its launch links."""

    prev: tuple[str, str] | None = None
    next: tuple[str, str] | None = None
    index: str = "index.html"
    launch: dict[str, str] = field(default_factory=dict)  # "Open in Colab" -> URL


def repository_url(pyproject: Path) -> str | None:
    """[project.urls] Repository of a pyproject.toml (None: no file, no key)."""
    import tomllib
    try:
        with open(pyproject, "rb") as f:
            urls = tomllib.load(f).get("project", {}).get("urls", {})
    except (OSError, tomllib.TOMLDecodeError):
        return None
    value = next((v for k, v in urls.items() if k.lower() == "repository"), None)
    return value.strip() if isinstance(value, str) and value.strip() else None


def launch_links(repo_url: str | None, notebook: str, branch: str = BRANCH) -> dict[str, str]:
    """Colab and Binder URLs for `notebook` (its path in the repository), or {} if not on GitHub."""
    from urllib.parse import quote
    match = re.match(r"^https?://(?:www\.)?github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?/?$", repo_url or "")
    if not match:
        return {}  # Colab and Binder's gh/ provider open GitHub repositories only
    repo, path = match[1], notebook.strip("/")
    return {"Open in Colab": COLAB.format(repo=repo, branch=branch, path=path),
            "Launch Binder": BINDER.format(repo=repo, branch=branch, path_q=quote(path, safe=""))}


def find_pyproject(path: Path) -> Path | None:
    """The nearest pyproject.toml at or above `path`'s folder (the repository's root), or None."""
    for folder in path.resolve().parents:
        if (folder / "pyproject.toml").is_file():
            return folder / "pyproject.toml"
    return None


def site_links(order: list[Path], titles: dict[Path, str], path: Path) -> SiteLinks:
    """Neighbours of `path` in `order` (the lectures of this run, as the index lists them), launch links."""
    def page(p: Path) -> tuple[str, str]:
        return f"{p.stem}.html", titles.get(p, p.stem)

    i = order.index(path)
    pyproject = find_pyproject(path)
    launch = {}
    if pyproject is not None:
        launch = launch_links(repository_url(pyproject), path.resolve().relative_to(pyproject.parent).as_posix())
    return SiteLinks(prev=page(order[i - 1]) if i > 0 else None,
                     next=page(order[i + 1]) if i + 1 < len(order) else None, launch=launch)


# <h2 id="...">text<a class="anchor-link" href="#...">: nbconvert's rendering of a `## ` heading.
H2 = re.compile(r'<h2 id="([^"]+)">(.*?)<a class="anchor-link"', re.S)


def table_of_contents(body: str) -> list[tuple[str, str]]:
    """(id, label) of each `## ` heading of a rendered page, in order; the label is plain text."""
    toc = []
    for anchor, inner in H2.findall(body):
        text = html.unescape(re.sub(r"<[^>]+>", "", inner)).strip()
        toc.append((anchor, _plain_math(text)))
    return toc


SITE_CSS = """
nav.site { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 1200px;
           margin: 0 auto; padding: .6rem 1rem; display: flex; flex-wrap: wrap; gap: .4rem 1.2rem; align-items: center; }
nav.site a { color: #0969da; text-decoration: none; }
nav.site a:hover { text-decoration: underline; }
nav.site .next { margin-left: auto; }
nav.site .launch a { display: inline-block; background: #eff2f5; border: 1px solid #d1d9e0; border-radius: 1rem;
                     padding: 0 .7rem; font-size: .85rem; margin-right: .4rem; }
nav.toc { font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 1200px; margin: 0 auto;
          padding: .2rem 1rem .8rem; }
nav.toc ol { margin: .2rem 0 0; padding-left: 1.4rem; columns: 2 22rem; }
nav.toc a { color: #0969da; text-decoration: none; }
"""


def _site_nav(site: SiteLinks, where: str) -> str:
    """The bar of previous / index / next links (and, at the top, the launch links)."""
    parts = []
    if site.prev:
        parts.append(f'<a class="prev" rel="prev" href="{html.escape(site.prev[0])}">← {html.escape(site.prev[1])}</a>')
    parts.append(f'<a class="index" href="{html.escape(site.index)}">All lectures</a>')
    if where == "top" and site.launch:
        links = "".join(f'<a href="{html.escape(url)}" target="_blank" rel="noopener">{html.escape(label)}</a>'
                        for label, url in site.launch.items())
        parts.append(f'<span class="launch">{links}</span>')
    if site.next:
        parts.append(f'<a class="next" rel="next" href="{html.escape(site.next[0])}">{html.escape(site.next[1])} →</a>')
    return f'<nav class="site {where}" aria-label="lectures">{"".join(parts)}</nav>'


def _toc_nav(toc: list[tuple[str, str]]) -> str:
    if not toc:
        return ""
    items = "".join(f'<li><a href="#{html.escape(anchor)}">{html.escape(label)}</a></li>' for anchor, label in toc)
    return f'<nav class="toc" aria-label="contents"><strong>Contents</strong><ol>{items}</ol></nav>'


def add_site_links(body: str, site: SiteLinks) -> str:
    """The page with the site's CSS, a top bar (links, launch links), its contents, a bottom bar.

    Only adds elements: it never touches the notebook's own HTML, so `<details>` blocks (the
    solutions) stay closed as written.
    """
    top = _site_nav(site, "top") + _toc_nav(table_of_contents(body))
    body, n_head = re.subn(r"</head>", f"<style>{SITE_CSS}</style>\n</head>", body, count=1)
    body, n_open = re.subn(r"(<body[^>]*>)", lambda m: f"{m[1]}\n{top}", body, count=1)
    end = body.rfind("</body>")  # the last one: an output could hold an HTML page of its own
    if not (n_head and n_open and end >= 0):
        raise ValueError("the page has no </head>, <body> or </body> to put the site's links in")
    return f"{body[:end]}{_site_nav(site, 'bottom')}\n{body[end:]}"


# ------------------------------------------------------------------ the index

def format_seconds(seconds: float) -> str:
    """9 s, 1 min 37 s, 1 h 02 min."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def run_info() -> dict[str, str]:
    """Date, mode, device, weights and images of this run, as the kernels see them (same environment)."""
    info = {"date": datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")}
    try:
        from nstlib import course
        from nstlib.devices import describe_device

        run = course.mode(verbose=False)
        info["mode"], info["device"] = f"{run.name} ({run.reason})", describe_device(run.device)
    except Exception as e:  # the index must still be written: say why the mode is unknown
        info["mode"] = f"unknown ({type(e).__name__}: {e})"
    info["weights"] = os.environ.get("NSTLIB_WEIGHTS", "").strip() or "not set: torchvision's VGG-19, downloaded on first use"
    info["images"] = os.environ.get("NSTLIB_IMAGE_DIR", "").strip() or "not set: the course's images (downloaded on first use)"
    return info


GREEK = {"alpha": "α", "beta": "β", "gamma": "γ", "lambda": "λ", "mu": "μ", "sigma": "σ", "times": "×", "cdot": "·"}


def _plain_math(text: str) -> str:
    """Simple inline TeX as text ($\\alpha/\\beta$ -> α/β): the index loads no MathJax."""
    def plain(m: re.Match[str]) -> str:
        tex = re.sub(r"\\([A-Za-z]+)\s*", lambda g: GREEK.get(g[1], g[0]), m[1])
        return m[0] if "\\" in tex else tex.replace("{", "").replace("}", "")
    return re.sub(r"(?<!\$)\$([^$\n]+)\$(?!\$)", plain, text)


def _markdown_inline(text: str) -> str:
    """One markdown paragraph as HTML (code spans, emphasis; simple math as text)."""
    from nbconvert.filters import markdown2html_mistune
    return markdown2html_mistune(_plain_math(text))


def _lecture_item(lec: Lecture) -> str:
    c = lec.counts
    ran = c.get(PASSED, 0) + c.get(FAILED, 0)
    cells = f"{c.get(PASSED, 0)}/{ran} cells passed" if ran else "no cell ran"
    if c.get(FAILED):
        cells += f", {c[FAILED]} failed"
    extra = [f"{c[k]} {k}" for k in (SKIPPED, NOT_RUN) if c.get(k)]
    facts = [f'<span class="badge {html.escape(lec.status.replace(" ", "-"))}">{html.escape(cells)}</span>']
    facts += [f"<span>{html.escape(x)}</span>" for x in extra]
    facts += [f"<span>{format_seconds(lec.seconds)}</span>",
              f"<span>{lec.figures} figure{'s' if lec.figures != 1 else ''}</span>",
              f'<span class="file">{html.escape(lec.name)}.ipynb</span>']
    title = html.escape(lec.title)
    heading = f'<a class="lecture-link" href="{html.escape(lec.page)}">{title}</a>' if lec.page else title
    error = f'<p class="error">{html.escape(lec.error)}</p>' if lec.error else ""
    attrs = " ".join(f'data-{k}="{v}"' for k, v in (("passed", c.get(PASSED, 0)), ("failed", c.get(FAILED, 0)),
                                                     ("figures", lec.figures)))
    return (f'<li class="lecture {html.escape(lec.status.replace(" ", "-"))}" data-notebook="{html.escape(lec.name)}.ipynb" '
            f'data-title="{title}" {attrs}>\n<h2>{heading}</h2>\n'
            f'<div class="what">{_markdown_inline(lec.summary) if lec.summary else ""}</div>\n{error}'
            f'<p class="facts">{" ".join(facts)}</p>\n</li>')


INDEX_CSS = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --pass: #1a7f37; --fail: #cf222e; --skip: #9a6700; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       background: #f6f8fa; }
main { max-width: 56rem; margin: 0 auto; padding: 2.5rem 1.25rem 4rem; }
header h1 { font-size: 1.9rem; margin: 0 0 .3rem; }
header .lede { color: var(--muted); margin: 0 0 1.2rem; }
dl.run { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; margin: 0 0 2rem;
         padding: 1rem 1.25rem; background: #fff; border: 1px solid var(--line); border-radius: 8px; font-size: .92rem; }
dl.run dt { color: var(--muted); }
dl.run dd { margin: 0; overflow-wrap: anywhere; }
ol.lectures { list-style: none; margin: 0; padding: 0; }
li.lecture { background: #fff; border: 1px solid var(--line); border-left: 6px solid var(--pass); border-radius: 8px;
             padding: 1rem 1.25rem; margin: 0 0 1rem; }
li.lecture.failed { border-left-color: var(--fail); }
li.lecture.not-run { border-left-color: var(--line); }
li.lecture h2 { font-size: 1.25rem; margin: 0 0 .4rem; }
li.lecture h2 a { color: #0969da; text-decoration: none; }
li.lecture h2 a:hover { text-decoration: underline; }
.what p { margin: 0 0 .6rem; }
code { font: .88em ui-monospace, SFMono-Regular, Menlo, monospace; background: #eff2f5; padding: .05em .3em; border-radius: 4px; }
.facts { display: flex; flex-wrap: wrap; gap: .4rem 1rem; margin: 0; color: var(--muted); font-size: .9rem; align-items: center; }
.badge { color: #fff; background: var(--pass); border-radius: 1rem; padding: .05rem .7rem; font-weight: 600; }
.badge.failed { background: var(--fail); }
.badge.not-run { background: var(--muted); }
.file { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .85rem; }
.error { color: var(--fail); }
footer { color: var(--muted); font-size: .85rem; margin-top: 2rem; }
"""


def index_page(lectures: list[Lecture], info: dict[str, str]) -> str:
    """The self-contained index page (inline CSS, no scripts, no network)."""
    total = {k: sum(lec.counts.get(k, 0) for lec in lectures) for k in (PASSED, FAILED)}
    rows = [("Date", info.get("date", "")), ("Mode", info.get("mode", "")), ("Device", info.get("device", "")),
            ("Weights", info.get("weights", "")), ("Images", info.get("images", "")),
            ("Run time", f"{format_seconds(sum(lec.seconds for lec in lectures))} in all"),
            ("Cells", f"{total[PASSED]} passed, {total[FAILED]} failed")]
    run = "\n".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in rows if v)
    items = "\n".join(_lecture_item(lec) for lec in lectures)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Neural style transfer: the lectures, executed</title>
<style>{INDEX_CSS}</style>
</head>
<body>
<main>
<header>
<h1>Neural style transfer: the lectures, executed</h1>
<p class="lede">Every notebook run from top to bottom under nbval, with its figures. A cell passes when it runs
without an error and, for the cells that check a claim, when the claim holds.</p>
<dl class="run">
{run}
</dl>
</header>
<ol class="lectures">
{items}
</ol>
<footer>Written by tests/lectures_html.py (<code>make lectures</code>).</footer>
</main>
</body>
</html>
"""


# ------------------------------------------------------------------ the pytest plugin

def _notebook_cells(items: list[pytest.Item]) -> Iterator[tuple[Path, list[pytest.Item]]]:
    """nbval's cell items grouped by notebook, in run order."""
    groups: dict[Path, list[pytest.Item]] = {}
    for item in items:
        if hasattr(item, "test_outputs") and hasattr(item, "cell_num"):  # nbval's IPyNbCell
            groups.setdefault(Path(item.parent.path), []).append(item)
    yield from groups.items()


class LectureRecorder:
    """Collects each nbval cell's outcome, time and outputs; writes a notebook's page when it is done."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.notebooks: dict[Path, list[pytest.Item]] = {}
        self.results: dict[str, CellResult] = {}  # by node id
        self.lectures: dict[Path, Lecture] = {}  # the notebooks written so far
        self.index_error = ""  # why index.html could not be written, if it could not

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.notebooks = dict(_notebook_cells(session.items))
        if any(path.parent.resolve() == self.out_dir for path in self.notebooks):
            # <name>.ipynb would overwrite the lecture itself.
            raise pytest.UsageError(f"{OPTION} {self.out_dir} is the notebooks' own folder: choose another one")
        self.results = {item.nodeid: CellResult() for items in self.notebooks.values() for item in items}
        # Pages of an earlier run must not pass for this one's if this run cannot write them.
        for path in self.notebooks:
            for suffix in (".html", ".ipynb"):
                (self.out_dir / f"{path.stem}{suffix}").unlink(missing_ok=True)
        (self.out_dir / "index.html").unlink(missing_ok=True)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        result = self.results.get(report.nodeid)
        if result is None:
            return
        result.seconds += report.duration
        if report.failed:
            result.outcome, result.failure = FAILED, report.longreprtext
        elif report.skipped and result.outcome != FAILED:
            result.outcome = SKIPPED  # NBVAL_SKIP, or xfail after a timed-out cell
        elif report.when == "call" and result.outcome == NOT_RUN:
            result.outcome = PASSED

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> Any:
        done = yield
        if item.nodeid in self.results:
            self.results[item.nodeid].outputs = item.test_outputs
            if nextitem is None or nextitem.parent is not item.parent:  # the notebook's kernel is stopped
                self.write_lecture(Path(item.parent.path), item.parent.nb)
        return done

    def write_lecture(self, path: Path, nb: NotebookNode) -> None:
        """Write <name>.ipynb and <name>.html, then the index. An export error is reported, not raised."""
        cells = [self.results[item.nodeid] for item in self.notebooks[path]]
        lec = Lecture(path.stem, notebook_title(nb, path.stem), what_you_will_do(nb), count_outcomes(cells),
                      sum(c.seconds for c in cells))
        try:
            executed = executed_notebook(nb, cells)
            lec.figures = count_figures(executed)
            executed.metadata["lectures_html"] = {"counts": lec.counts, "seconds": round(lec.seconds, 3),
                                                  "figures": lec.figures}
            page = lecture_page(executed, path.stem, path.parent, self.site_links(path))
            ensure_folder(self.out_dir)
            with atomic_group():  # the notebook and its page: both or neither (the old ones kept)
                with atomic_write(self.out_dir / f"{path.stem}.ipynb", "w") as f:
                    nbformat.write(executed, f)
                with atomic_write(self.out_dir / f"{path.stem}.html", "w") as f:
                    f.write(page)
            lec.page = f"{path.stem}.html"
        except Exception as e:  # one broken page must not stop the other lectures
            lec.error = f"the page could not be written: {type(e).__name__}: {e}"
            print(f"\n{OPTION}: {path.name}: {lec.error}", file=sys.stderr)
        self.lectures[path] = lec
        self.write_index()

    def site_links(self, path: Path) -> SiteLinks:
        """The page's neighbours among this run's notebooks (the index's order), its launch links."""
        # A notebook without code cells has no items (nbval collects code cells): its file name then.
        titles = {p: notebook_title(items[0].parent.nb, p.stem) if items else p.stem for p, items in self.notebooks.items()}
        return site_links(list(self.notebooks), titles, path)

    def write_index(self) -> None:
        """index.html over every collected notebook (those not run yet are listed as not run)."""
        lectures = []
        for path, items in self.notebooks.items():
            if path in self.lectures:
                lectures.append(self.lectures[path])
            else:
                nb = items[0].parent.nb
                cells = [self.results[item.nodeid] for item in items]
                lectures.append(Lecture(path.stem, notebook_title(nb, path.stem), what_you_will_do(nb),
                                        count_outcomes(cells), sum(c.seconds for c in cells)))
        try:
            ensure_folder(self.out_dir)
            with atomic_write(self.out_dir / "index.html", "w") as f:
                f.write(index_page(lectures, run_info()))
        except OSError as e:  # one line (the file, the cause); the run goes on and fails at its end
            self.index_error = str(e)
            print(f"\n{OPTION}: {e}", file=sys.stderr)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        # An interrupted run: write what ran of the notebook that was going.
        for path, items in self.notebooks.items():
            ran = any(self.results[item.nodeid].outcome != NOT_RUN for item in items)
            if path not in self.lectures and ran:
                self.write_lecture(path, items[0].parent.nb)
        if self.notebooks:
            self.write_index()
        failed = any(lec.error for lec in self.lectures.values()) or self.index_error
        if failed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.notebooks:
            pages = sum(bool(lec.page) for lec in self.lectures.values())
            terminalreporter.write_line(f"{OPTION}: {pages} lecture page(s) and the index in {self.out_dir}/index.html")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("nbval").addoption(
        OPTION, metavar="DIR", default=None,
        help="write each notebook nbval runs, with its outputs, as DIR/<name>.html (+ .ipynb) and "
             "DIR/index.html (make lectures: build/lectures)")


def pytest_configure(config: pytest.Config) -> None:
    out = config.getoption(OPTION.lstrip("-").replace("-", "_"))
    if out and not config.getoption("collectonly"):
        config.pluginmanager.register(LectureRecorder(Path(out).resolve()), "lectures-html")
