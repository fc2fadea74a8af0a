"""The executed lectures as HTML (`make lectures`, tests/lectures_html.py).

Browser part: with NSTLIB_LECTURES_DIR naming the folder `make lectures` wrote (`make test` sets
it), headless Chromium opens index.html from disk with the network cut off, checks that it links
every notebook in notebooks/, follows each link and checks the page: its title, its figures (PNG
data URIs, all decoded, as many as the executed notebook has image outputs) and no error output.
Screenshots: test-artifacts/lectures-index.png and test-artifacts/lectures-page.png. Without the
variable these tests are skipped; with it, a missing folder or page fails.

Plain part (always runs): the plugin's notebook assembly and index on a tiny fake notebook, and
the plugin end to end under nbval on a four-cell notebook in a subprocess.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import nbformat
import pytest

import lectures_html as L
from browser_tools import ARTIFACTS, CHROMIUM_FLAGS, ROOT  # the `chromium` fixture is in conftest.py

ENV_VAR = "NSTLIB_LECTURES_DIR"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# Lectures allowed to have no figure: 06's pictures live in its panel (a widget), which a static
# page cannot show, and in cpu mode the panel does not run by itself.
NO_FIGURE_EXPECTED = {"06_interactive_tuning"}
# A 1 x 1 PNG, for fake figures.
PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="

# Every <img>: whether it is decoded, its natural width and the start of its src.
IMAGES_JS = "() => Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.src.slice(0, 22)])"
# Error output on an nbconvert page: stderr blocks (errors are rendered as stderr) holding a traceback.
ERRORS_JS = """() => Array.from(document.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]'))
    .map(e => e.innerText).filter(t => /Traceback|Error:/.test(t)).map(t => t.slice(0, 400))"""


# ------------------------------------------------------------------ browser part

@pytest.fixture(scope="module")
def lectures_dir() -> Path:
    """The folder NSTLIB_LECTURES_DIR names; skip when unset, fail when it holds no index."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        pytest.skip(f"{ENV_VAR} is not set: run `make lectures` and set it to the folder it wrote "
                    "(make test does both)")
    folder = Path(value).resolve()
    if not (folder / "index.html").is_file():
        pytest.fail(f"{ENV_VAR}={value}: no index.html in {folder} (did `make lectures` run?)")
    return folder


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    """A headless Chromium (Playwright), shared by the module's tests."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the Python package playwright is not installed")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def offline_page(browser: Any) -> Iterator[tuple[Any, list[str]]]:
    """A fresh page whose network requests are refused; yields (page, the URLs it asked for)."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    asked: list[str] = []

    def refuse(route: Any) -> None:
        asked.append(route.request.url)
        route.abort()

    # The pages must work from disk: MathJax and require.js from a CDN may be asked for, and fail.
    context.route(re.compile(r"^(https?|wss?)://"), refuse)
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        yield page, asked
    finally:
        context.close()


def _open_index(page: Any, folder: Path) -> None:
    page.goto((folder / "index.html").as_uri())


def test_index_links_every_lecture(lectures_dir: Path, offline_page: tuple[Any, list[str]]) -> None:
    page, asked = offline_page
    _open_index(page, lectures_dir)
    listed = page.eval_on_selector_all("li.lecture", "els => els.map(e => e.dataset.notebook)")
    assert sorted(listed) == [p.name for p in NOTEBOOKS], "the index must list every notebook in notebooks/"
    assert listed == sorted(listed), "lectures are listed in order"
    for path in NOTEBOOKS:
        link = page.locator(f'li.lecture[data-notebook="{path.name}"] a.lecture-link')
        assert link.count() == 1, f"the index has no link to {path.name}'s page"
        assert link.get_attribute("href") == f"{path.stem}.html"
        title = L.notebook_title(nbformat.read(path, as_version=4))
        assert link.inner_text() == title
    run = page.locator("dl.run").inner_text()
    for word in ("Date", "Mode", "Weights", "Run time", "Cells"):
        assert word in run, f"the index does not say the run's {word}"
    assert asked == [], f"the index must be self-contained, yet it asked for {asked}"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "lectures-index.png"), full_page=True)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_lecture_page_shows_its_figures_and_no_error(lectures_dir: Path, offline_page: tuple[Any, list[str]],
                                                     path: Path) -> None:
    page, _ = offline_page
    _open_index(page, lectures_dir)
    entry = page.locator(f'li.lecture[data-notebook="{path.name}"]')
    assert entry.count() == 1, f"the index does not list {path.name}"
    assert entry.locator("a.lecture-link").count() == 1, f"the index has no page for {path.name}: {entry.inner_text()}"
    listed_figures = int(entry.get_attribute("data-figures"))
    assert (lectures_dir / f"{path.stem}.html").is_file(), f"the index links {path.stem}.html, which is missing"
    entry.locator("a.lecture-link").click()
    page.wait_for_url(f"**/{path.stem}.html")
    page.wait_for_load_state("load")

    title = L.notebook_title(nbformat.read(path, as_version=4))
    assert page.title() == title
    assert title in page.locator("h1").first.inner_text()

    executed = nbformat.read(lectures_dir / f"{path.stem}.ipynb", as_version=4)
    figures = L.count_figures(executed)
    assert listed_figures == figures, "the index and the executed notebook disagree"
    page.wait_for_function("() => Array.from(document.images).every(i => i.complete)")
    images = page.evaluate(IMAGES_JS)
    broken = [i for i, (_, width, _) in enumerate(images) if width == 0]
    assert not broken, f"{len(broken)} of {len(images)} images did not load (numbers {broken[:10]})"
    pngs = sum(src.startswith("data:image/png;base64") for _, _, src in images)
    print(f"\n{path.stem}: {len(images)} images, {pngs} PNG figures, {figures} image/png outputs in the notebook")
    assert pngs == figures, f"{pngs} PNG figures on the page, {figures} image/png outputs in the executed notebook"
    if path.stem not in NO_FIGURE_EXPECTED:
        assert pngs >= 1, "a lecture page without a single figure"

    shown = page.evaluate(ERRORS_JS)
    assert not shown, f"the page shows {len(shown)} error output(s), the first:\n{shown[0]}"
    errors = [f"cell {c.execution_count}: {o.ename}: {o.evalue}" for c in executed.cells if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    assert not errors, f"error outputs in the executed notebook: {errors}"

    # The site: the next lecture in the index's order, a table of contents, solutions folded.
    i = NOTEBOOKS.index(path)
    following = page.locator("nav.site.top a.next")
    if i + 1 < len(NOTEBOOKS):
        assert following.get_attribute("href") == f"{NOTEBOOKS[i + 1].stem}.html", "next must link the next lecture"
    else:
        assert following.count() == 0, "the last lecture has no next link"
    assert page.locator("nav.toc a").count() >= 1, "a lecture page without a table of contents"
    assert page.evaluate("() => Array.from(document.querySelectorAll('details')).every(d => !d.open)"), \
        "a solution is unfolded on the page"

    if path == NOTEBOOKS[0]:
        ARTIFACTS.mkdir(exist_ok=True)
        first = page.locator('img[src^="data:image/png"]').first
        if first.count():
            first.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "lectures-page.png"))


# ------------------------------------------------------------------ browser part: a fake site

SOLUTION = "<details><summary>Solution</summary>\n\nThe answer is **42**.\n\n```python\nanswer = 42\n```\n\n</details>"
FILLER = "\n\n".join(["A paragraph that makes the page long enough to scroll."] * 60)


def site_notebook(title: str) -> nbformat.NotebookNode:
    """A lecture with two `## ` sections far apart, the second holding a folded solution."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\n**What you will do.** Read.\n\n## First part\n\n{FILLER}"),
                nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_markdown_cell(f"## Exercises\n\n1. Find the answer.\n\n{SOLUTION}\n\n{FILLER}")]
    return nb


@pytest.fixture
def fake_site(tmp_path: Path) -> Path:
    """Two lecture pages and their index, written as the plugin writes them."""
    names = ["01_first", "02_second"]
    books = {n: site_notebook(f"{k + 1} · {n[3:].title()}") for k, n in enumerate(names)}
    order = [tmp_path / f"{n}.ipynb" for n in names]
    titles = {p: L.notebook_title(books[p.stem]) for p in order}
    for p in order:
        site = L.site_links(order, titles, p)
        (tmp_path / f"{p.stem}.html").write_text(L.lecture_page(books[p.stem], p.stem, tmp_path, site))
    lectures = [L.Lecture(p.stem, titles[p], "Read.", {L.PASSED: 1}, page=f"{p.stem}.html") for p in order]
    (tmp_path / "index.html").write_text(L.index_page(lectures, {}))
    return tmp_path


def test_site_next_link_toc_and_a_solution_in_the_browser(fake_site: Path, offline_page: tuple[Any, list[str]]) -> None:
    page, _ = offline_page
    page.goto((fake_site / "01_first.html").as_uri())
    assert page.locator("nav.site.top a.prev").count() == 0, "the first lecture has no previous link"

    # A table-of-contents link scrolls to its heading.
    heading = page.locator("h2#Exercises")
    assert heading.evaluate("h => h.getBoundingClientRect().top") > 1000, "the fake page must put Exercises below the fold"
    page.locator("nav.toc a", has_text="Exercises").click()
    page.wait_for_function("() => location.hash === '#Exercises'")
    page.wait_for_function("() => Math.abs(document.querySelector('h2#Exercises').getBoundingClientRect().top) < 50")

    # The solution: folded, then open after a click on its summary.
    details, answer = page.locator("details").first, page.locator("details p", has_text="The answer is")
    assert details.evaluate("d => d.open") is False and not answer.is_visible(), "the solution must start folded"
    details.locator("summary").click()
    answer.wait_for(state="visible")
    assert details.evaluate("d => d.open") is True and page.locator("details pre", has_text="answer = 42").is_visible()

    # Next lands on the next lecture, which links back.
    page.locator("nav.site.top a.next").click()
    page.wait_for_url("**/02_second.html")
    assert page.title() == "2 · Second"
    assert page.locator("nav.site.top a.next").count() == 0, "the last lecture has no next link"
    page.locator("nav.site.bottom a.prev").click()
    page.wait_for_url("**/01_first.html")
    page.locator("nav.site.top a.index").click()
    page.wait_for_url("**/index.html")
    assert page.locator("li.lecture").count() == 2


# ------------------------------------------------------------------ plain part: a fake notebook

def fake_notebook() -> nbformat.NotebookNode:
    """A title cell, a goal paragraph and four code cells."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 9 · A fake lecture\n\n**What you will do.** Draw one `figure`\nand print.\n\n"
                                      "**What you will learn.** Nothing."),
        nbformat.v4.new_code_cell("print('a'); print('b')"),
        nbformat.v4.new_code_cell("show()"),
        nbformat.v4.new_code_cell("1 / 0"),
        nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint('claim')"),
        nbformat.v4.new_markdown_cell("## Exercises"),
        nbformat.v4.new_code_cell("never()"),
    ]
    return nb


def fake_results() -> list[L.CellResult]:
    """What nbval would report for fake_notebook()'s five code cells."""
    out = nbformat.v4.new_output
    widget = out("display_data", data={L.WIDGET_MIME: {"model_id": "x"}, "text/plain": "IntSlider(value=3)"})
    return [
        L.CellResult(L.PASSED, 0.5, [out("stream", name="stdout", text="a\n"), out("stream", name="stdout", text="b\n")]),
        L.CellResult(L.PASSED, 1.0, [out("display_data", data={"image/png": PNG_1PX, "text/plain": "<Figure>"}), widget,
                                     out("execute_result", data={"text/plain": "3"}, execution_count=0)]),
        L.CellResult(L.FAILED, 0.1, [out("error", ename="ZeroDivisionError", evalue="division by zero",
                                         traceback=["Traceback", "ZeroDivisionError"])], "Cell execution caused an exception"),
        L.CellResult(L.FAILED, 0.1, [out("stream", name="stdout", text="claim\n")], "Cell outputs differ"),
        L.CellResult(L.NOT_RUN),
    ]


def test_title_and_goal_come_from_the_first_markdown_cell() -> None:
    nb = fake_notebook()
    assert L.notebook_title(nb) == "9 · A fake lecture"
    assert L.what_you_will_do(nb) == "Draw one `figure` and print."
    assert L.notebook_title(nbformat.v4.new_notebook(), "x") == "x" and L.what_you_will_do(nbformat.v4.new_notebook()) == ""


def test_executed_notebook_carries_each_cells_outputs() -> None:
    nb = L.executed_notebook(fake_notebook(), fake_results())
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == [1, 2, 3, 4, None]
    assert [o.text for o in code[0].outputs] == ["a\nb\n"], "stream chunks are merged"
    png, widget, result = code[1].outputs
    assert "image/png" in png.data and widget.data == {"text/plain": f"{L.WIDGET_NOTE}\nIntSlider(value=3)"}, \
        "a widget keeps its text only"
    assert result.execution_count == 2
    assert [o.output_type for o in code[2].outputs] == ["error"], "a failed cell keeps its error, nothing added"
    assert code[3].outputs[-1].name == "stderr" and "Cell outputs differ" in code[3].outputs[-1].text
    assert code[4].outputs == [] and code[4].metadata["lectures_html"]["outcome"] == L.NOT_RUN
    assert L.count_figures(nb) == 1
    assert fake_notebook().cells[1].outputs == [], "the source notebook is not changed"
    with pytest.raises(ValueError):
        L.executed_notebook(fake_notebook(), fake_results()[:2])


def test_a_trailing_semicolon_hides_the_result() -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in ("ax.legend();  # quiet", "ax.legend()", "%time f();")]
    result = nbformat.v4.new_output("execute_result", data={"text/plain": "<Legend>"}, execution_count=0)
    shown = L.executed_notebook(nb, [L.CellResult(L.PASSED, 0.0, [result]) for _ in nb.cells])
    assert [len(c.outputs) for c in shown.cells] == [0, 1, 0]


def test_widget_with_no_text_gets_a_note() -> None:
    out = nbformat.v4.new_output("display_data", data={L.WIDGET_MIME: {"model_id": "x"}})
    assert L.degrade_widget(out).data == {"text/plain": L.WIDGET_NOTE}
    assert L.WIDGET_MIME in out.data, "the original output is not changed"


def test_lecture_status_and_counts() -> None:
    counts = L.count_outcomes(fake_results())
    assert counts == {L.PASSED: 2, L.FAILED: 2, L.SKIPPED: 0, L.NOT_RUN: 1}
    assert L.Lecture("a", "A", "", counts).status == L.FAILED
    assert L.Lecture("a", "A", "", {L.PASSED: 3}).status == L.PASSED
    assert L.Lecture("a", "A", "", {L.PASSED: 3}, error="export failed").status == L.FAILED
    assert L.Lecture("a", "A", "", {L.NOT_RUN: 3}).status == L.NOT_RUN
    assert [L.format_seconds(s) for s in (9.4, 97, 3725)] == ["9 s", "1 min 37 s", "1 h 02 min"]


def test_index_page_lists_lectures_with_their_facts() -> None:
    nb = fake_notebook()
    done = L.Lecture("09_fake", L.notebook_title(nb), L.what_you_will_do(nb), L.count_outcomes(fake_results()), 97.0,
                     figures=1, page="09_fake.html")
    waiting = L.Lecture("10_next", "10 · <Next>", "", {L.NOT_RUN: 4})
    page = L.index_page([done, waiting], {"date": "2030-01-01", "mode": "cpu (test)", "weights": "random"})
    assert '<a class="lecture-link" href="09_fake.html">9 · A fake lecture</a>' in page
    assert "Draw one <code>figure</code> and print." in page
    assert "2/4 cells passed, 2 failed" in page and "1 not run" in page and "1 min 37 s" in page and "1 figure<" in page
    assert 'data-notebook="09_fake.ipynb"' in page and 'data-failed="2"' in page and 'data-figures="1"' in page
    assert "10 · &lt;Next&gt;" in page and "no cell ran" in page, "titles are escaped; a lecture not run has no link"
    assert "cpu (test)" in page and "random" in page and "2030-01-01" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the index must not load anything from the network"


def test_index_shows_simple_math_as_text() -> None:
    lec = L.Lecture("04_x", "4 · X", r"the grid (layers × $\alpha/\beta$) and $\frac{a}{b}$, for $5", {L.PASSED: 1})
    page = L.index_page([lec], {})
    assert "the grid (layers × α/β) and $\\frac{a}{b}$, for $5" in page, "unknown TeX and lone dollars stay as written"


def test_lecture_page_embeds_figures_and_drops_widget_views() -> None:
    nb = L.executed_notebook(fake_notebook(), fake_results())
    page = L.lecture_page(nb, "09_fake", ROOT / "notebooks")
    assert page.count(f'src="data:image/png;base64,{PNG_1PX}"') == 1
    assert "<title>9 · A fake lecture</title>" in page
    assert L.WIDGET_MIME not in page and "IntSlider(value=3)" in page
    assert "ZeroDivisionError" in page and "Cell outputs differ" in page


def test_site_links_toc_and_folded_solution_on_a_page() -> None:
    nb = site_notebook("9 · A fake lecture")
    nb.cells[0].source += "\n\n## The `Gram` matrix and $\\alpha/\\beta$"
    badges = nbformat.v4.new_markdown_cell("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](x)")
    badges.metadata["tags"] = [L.BADGES_TAG]
    nb.cells.insert(1, badges)
    launch = L.launch_links("https://github.com/someone/nst-course", "notebooks/09_fake.ipynb")
    site = L.SiteLinks(prev=("08_a.html", "8 · <A>"), next=("10_b.html", "10 · B"), launch=launch)
    page = L.lecture_page(nb, "09_fake", ROOT / "notebooks", site)
    toc = L.table_of_contents(page)
    assert [label for _, label in toc] == ["First part", "The Gram matrix and α/β", "Exercises"]
    for anchor, _ in toc:
        assert f'id="{anchor}"' in page and f'href="#{anchor}"' in page, f"the TOC links a heading that is not there: {anchor}"
    assert page.count('rel="prev" href="08_a.html"') == 2 and page.count('rel="next" href="10_b.html"') == 2, \
        "previous / next at the top and at the bottom"
    assert "← 8 · &lt;A&gt;" in page and 'class="index" href="index.html"' in page
    assert 'href="https://colab.research.google.com/github/someone/nst-course/blob/main/notebooks/09_fake.ipynb"' in page
    assert "https://mybinder.org/v2/gh/someone/nst-course/main?labpath=notebooks%2F09_fake.ipynb" in page
    # The solution stays one folded block: summary, answer and code inside <details>, none opened.
    folded = re.search(r"<details><summary>Solution</summary>(.*?)</details>", page, re.S)
    assert folded and "The answer is" in folded[1] and "answer" in folded[1].split("<pre>")[-1], \
        "the solution must stay inside its <details> block"
    assert not re.search(r"<details[^>]*\bopen\b", page)
    assert "colab-badge.svg" not in page, "the notebook's badge images (remote) are left out: the bar has the links"
    assert "colab-badge.svg" in L.lecture_page(nb, "09_fake", ROOT / "notebooks"), "kept on a page outside the site"
    assert L.table_of_contents(L.lecture_page(nbformat.v4.new_notebook(), "x", ROOT)) == []


def test_launch_links_from_pyproject(tmp_path: Path) -> None:
    for url in ("https://github.com/a/b", "https://github.com/a/b/", "https://github.com/a/b.git", "http://www.github.com/a/b"):
        links = L.launch_links(url, "notebooks/01_x.ipynb")
        assert list(links) == ["Open in Colab", "Launch Binder"], url
        assert links["Open in Colab"].endswith("/github/a/b/blob/main/notebooks/01_x.ipynb"), url
    for url in (None, "", "https://gitlab.com/a/b", "https://github.com/a", "https://github.com/a/b/tree/main"):
        assert L.launch_links(url, "notebooks/01_x.ipynb") == {}, f"no launch links for {url!r}"
    pyproject = tmp_path / "pyproject.toml"
    assert L.repository_url(pyproject) is None, "no file: no badges"
    pyproject.write_text('[project]\nname = "x"\n')
    assert L.repository_url(pyproject) is None, "no [project.urls]: no badges"
    pyproject.write_text('[project]\nname = "x"\n[project.urls]\nRepository = "https://github.com/a/b"\n')
    assert L.repository_url(pyproject) == "https://github.com/a/b"
    # site_links: neighbours in the given order; the notebook's path in the repository for the badges.
    (tmp_path / "notebooks").mkdir()
    order = [tmp_path / "notebooks" / f"{n}.ipynb" for n in ("01_a", "02_b", "03_c")]
    first, middle, last = (L.site_links(order, {order[1]: "2 · B"}, p) for p in order)
    assert first.prev is None and first.next == ("02_b.html", "2 · B")
    assert middle.prev == ("01_a.html", "01_a") and middle.next == ("03_c.html", "03_c")
    assert last.next is None
    assert middle.launch["Launch Binder"] == "https://mybinder.org/v2/gh/a/b/main?labpath=notebooks%2F02_b.ipynb"
    pyproject.write_text("not toml [")
    assert L.site_links(order, {}, order[0]).launch == {}, "a broken pyproject.toml: no badges, no error"


@pytest.mark.timeout(300)
def test_plugin_under_nbval_writes_pages_and_index(tmp_path: Path) -> None:
    """The hooks end to end: nbval runs a four-cell notebook (a figure, an error, a skipped cell) in a kernel."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 1 · Tiny\n\n**What you will do.** Run four cells.\n\n## Part one"),
        nbformat.v4.new_code_cell(f"from IPython.display import display\ndisplay({{'image/png': '{PNG_1PX}'}}, raw=True)\n"
                                  "print('shown')"),
        nbformat.v4.new_code_cell("1 / 0"),
        nbformat.v4.new_code_cell("# NBVAL_SKIP\nprint('skipped')"),
        nbformat.v4.new_code_cell("print('after the error')"),
    ]
    nbformat.write(nb, tmp_path / "01_tiny.ipynb")
    out = tmp_path / "html"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-m", "pytest", "01_tiny.ipynb", "-p", "lectures_html", "-p", "no:cacheprovider",
                          "--nbval-lax", "--nbval-current-env", "--lectures-html", str(out)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280)
    assert run.returncode == 1, f"one cell fails, so pytest fails:\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}"
    assert "2 passed" in run.stdout and "1 failed" in run.stdout and "1 skipped" in run.stdout, run.stdout[-2000:]
    executed = nbformat.read(out / "01_tiny.ipynb", as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert [c.metadata["lectures_html"]["outcome"] for c in code] == [L.PASSED, L.FAILED, L.SKIPPED, L.PASSED]
    assert [c.execution_count for c in code] == [1, 2, None, 3]
    assert code[0].outputs[-1].text == "shown\n" and code[1].outputs[0].ename == "ZeroDivisionError"
    assert executed.metadata["lectures_html"]["figures"] == 1
    page = (out / "01_tiny.html").read_text()
    assert page.count('src="data:image/png;base64,') == 1 and "after the error" in page
    assert 'href="#Part-one"' in page and 'class="index" href="index.html"' in page, "the page's contents and links"
    index = (out / "index.html").read_text()
    assert 'href="01_tiny.html"' in index and "2/3 cells passed, 1 failed" in index and "Run four cells." in index


def test_a_folded_cell_shows_only_its_output_on_the_page() -> None:
    # The checked claims are folded in the notebooks (metadata.jupyter.source_hidden): their code
    # and thresholds stay out of the reading path, their one-line verdict stays.
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# 9 · A fake lecture"),
        nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nthreshold_secret = 0.25\nprint('claim line')",
                                  metadata={"jupyter": {"source_hidden": True}},
                                  outputs=[nbformat.v4.new_output("stream", text="✓ claim line (measured: 1)\n")]),
        nbformat.v4.new_code_cell("shown_code = 1"),
    ])
    page = L.lecture_page(nb, "09_fake", ROOT / "notebooks")
    assert "threshold_secret" not in page and "✓ claim line" in page
    assert "shown_code" in page
