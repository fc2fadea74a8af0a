"""Notebook 6 in a real browser: JupyterLab on loopback, headless Chromium driven by Playwright.

The test copies notebooks/06_interactive_tuning.ipynb into a temporary folder (so that the
browser never writes into the repository), starts JupyterLab there with a random token, opens
the notebook, runs every cell, presses the panel's Run button and checks, in the page, that
the preview image's pixels change while the run goes, and that Stop ends the run. Screenshots
go to test-artifacts/browser-panel-running.png and test-artifacts/browser-panel.png.

The browser is Debian's `chromium` (or $NSTLIB_CHROMIUM), installed by .ci/install-browser.sh
when missing; the test is skipped, with that script's reason, only where it cannot be had.
Every wait is bounded; the server is always stopped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time

import pytest

from browser_tools import ARTIFACTS, CHROMIUM_FLAGS, ROOT, jupyter_lab, run_cells  # the `chromium` fixture is in conftest.py

NOTEBOOK = ROOT / "notebooks" / "06_interactive_tuning.ipynb"
EXPLORER_NOTEBOOK = ROOT / "notebooks" / "01_setup_and_tour.ipynb"   # ends with the LayerExplorer

pytestmark = pytest.mark.timeout(360)

# Draws the preview <img> into a 16 x 16 canvas and returns its RGBA bytes (the image is a
# same-origin blob, so the canvas can be read back), or null while no image is decoded.
PIXELS_JS = """img => {
    if (!img.complete || !img.naturalWidth) return null;
    const c = document.createElement('canvas'); c.width = 16; c.height = 16;
    const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0, 16, 16);
    return Array.from(ctx.getImageData(0, 0, 16, 16).data);
}"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab serving copies of notebooks 6 and 1: yields (base URL, token, its log's path); always stopped."""
    root = tmp_path_factory.mktemp("lab")
    for nb in (NOTEBOOK, EXPLORER_NOTEBOOK):
        shutil.copy(nb, root / nb.name)
    home = tmp_path_factory.mktemp("jupyter-home")
    env = dict(os.environ)
    env.pop("NSTLIB_SMOKE", None)
    env.update({
        "NSTLIB_MODE": "cpu",  # the lecture's CPU sizes: 128 px, 200 steps, nothing runs by itself
        "NSTLIB_WEIGHTS": os.environ.get("NSTLIB_WEIGHTS") or "random:vgg16:0",  # offline: labelled RANDOM in the panel
        "IPYTHONDIR": str(home / "ipython"), "MPLBACKEND": "Agg",
    })
    with jupyter_lab(root, home, env) as (base, token):
        yield base, token, home / "lab.log"


@contextlib.contextmanager
def notebook_page(chromium: str, lab, tmp_path, url: str, failure_png: str, width: int = 1400):
    """A headless Chromium page on `url` (relative to the server), every cell run, none failed.

    On any failure: a full-page screenshot in test-artifacts/`failure_png` and the end of
    JupyterLab's log on stdout. The browser is always closed.
    """
    sync_api = pytest.importorskip("playwright.sync_api", reason="the Python package playwright is not installed (pip install playwright)")
    base, token, log = lab
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / failure_png).unlink(missing_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": width, "height": 1100},
        )
        page = browser.new_page()
        page.set_default_timeout(60_000)
        try:
            page.goto(f"{base}{url}{'&' if '?' in url else '?'}token={token}")
            run_cells(page, run_s=180)
            yield page
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / failure_png), full_page=True)  # to see what went wrong
            print("jupyter lab's log (end):\n" + log.read_text(errors="replace")[-3000:])
            raise
        finally:
            browser.close()


def test_panel_in_jupyterlab_previews_live_and_stops(chromium, lab, tmp_path):
    with notebook_page(chromium, lab, tmp_path, f"/lab/tree/{NOTEBOOK.name}", "browser-failure.png") as page:
        panel = page.locator(".nst-panel").first
        panel.wait_for(state="attached")
        # JupyterLab does not render cells scrolled out of view: bring the panel into view.
        panel.scroll_into_view_if_needed()
        preview, status = panel.locator("img.nst-preview"), panel.locator(".nst-status")
        page.wait_for_function("el => el.innerText.startsWith('Ready')", arg=status.element_handle(), timeout=30_000)

        def pixels():
            return preview.evaluate(PIXELS_JS)

        before = pixels()
        assert before is not None, "the preview shows a placeholder before Run"
        panel.locator("button.nst-run").click()
        t_click = time.monotonic()
        seen, first_change = [before], None
        while time.monotonic() - t_click < 60 and len(seen) < 5:
            px = pixels()
            if px is not None and _differs(px, seen[-1]):
                seen.append(px)
                first_change = first_change or time.monotonic() - t_click
            time.sleep(0.15)
        print(f"\nbrowser: first preview {first_change} s after the click; {len(seen) - 1} different previews")
        assert len(seen) >= 4, f"the preview changed only {len(seen) - 1} times in 60 s; status: {status.inner_text()}"
        assert "step" in status.inner_text()
        assert panel.locator("button.nst-run").is_disabled(), "a second Run must not start while one runs"
        panel.screenshot(path=str(ARTIFACTS / "browser-panel-running.png"))

        panel.locator("button.nst-stop").click()
        page.wait_for_function("el => el.innerText.startsWith('Stopped')", arg=status.element_handle(), timeout=60_000)
        final = pixels()
        time.sleep(2.0)
        assert not _differs(pixels(), final, tol=0.0), "the preview changed after Stop"
        assert status.inner_text().startswith("Stopped (stopped by request)")
        assert panel.locator("button.nst-run").is_enabled() and panel.locator("button.nst-stop").is_disabled()
        panel.screenshot(path=str(ARTIFACTS / "browser-panel.png"))


# The index of the first <option> whose text starts with `arg` in a <select> (-1: none).
OPTION_JS = """(sel, prefix) => Array.from(sel.options).findIndex(o => o.text.trim().startsWith(prefix))"""


def test_layer_explorer_in_jupyterlab(chromium, lab, tmp_path):
    """Notebook 1's LayerExplorer: choose a layer, the montage changes; start a reconstruction,
    its previews change; Stop ends it. Screenshot: test-artifacts/browser-explorer.png."""
    # A workspace of its own, reset: the server's default workspace still has notebook 6 open
    # from the panel test, and JupyterLab would restore it as the current tab.
    url = f"/lab/workspaces/explorer/tree/{EXPLORER_NOTEBOOK.name}?reset"
    with notebook_page(chromium, lab, tmp_path, url, "browser-explorer-failure.png", width=1500) as page:
        ex = page.locator(".nst-explorer").first
        ex.wait_for(state="attached")
        ex.scroll_into_view_if_needed()
        montage, recon = ex.locator("img.nst-montage"), ex.locator("img.nst-recon")
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=montage.element_handle(), timeout=30_000)
        before = montage.evaluate(PIXELS_JS)
        layer = next(sel for sel in ex.locator("select").all() if sel.evaluate(OPTION_JS, "relu4_1") >= 0)
        layer.select_option(index=layer.evaluate(OPTION_JS, "relu4_1"))
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30 and not _differs(montage.evaluate(PIXELS_JS), before):
            time.sleep(0.1)
        changed_after = time.monotonic() - t0
        print(f"\nbrowser: the montage changed {changed_after:.2f} s after choosing relu4_1")
        assert _differs(montage.evaluate(PIXELS_JS), before), "the montage did not change after choosing a layer"

        ex.locator("button.nst-recon-start").click()
        t_click = time.monotonic()
        seen = [recon.evaluate(PIXELS_JS)]
        while time.monotonic() - t_click < 60 and len(seen) < 4:
            px = recon.evaluate(PIXELS_JS)
            if px is not None and _differs(px, seen[-1]):
                seen.append(px)
            time.sleep(0.15)
        assert len(seen) >= 4, f"the reconstruction preview changed only {len(seen) - 1} times in 60 s"
        ex.screenshot(path=str(ARTIFACTS / "browser-explorer.png"))
        ex.locator("button.nst-stop").click()
        page.wait_for_function("el => el.disabled", arg=ex.locator("button.nst-stop").element_handle(), timeout=30_000)
        final = recon.evaluate(PIXELS_JS)
        time.sleep(2.0)
        assert not _differs(recon.evaluate(PIXELS_JS), final, tol=0.0), "the reconstruction changed after Stop"


def _differs(a: list[int] | None, b: list[int] | None, tol: float = 0.5) -> bool:
    """Mean absolute difference of two 16 x 16 RGBA samples above `tol` (0-255 scale)."""
    if a is None or b is None:
        return a is not b
    return sum(abs(x - y) for x, y in zip(a, b)) / len(a) > tol
