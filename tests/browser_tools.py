"""Headless Chromium for the browser tests (test_browser.py, test_lectures_html.py) and the slides.

The browser is Debian's `chromium` (or $NSTLIB_CHROMIUM), installed by .ci/install-browser.sh
when missing; Playwright starts it through `executable_path`. The `chromium` fixture (in
conftest.py) skips a test, with that script's reason, only where no Chromium can be had.
Here too, for the browser test and the slides: `jupyter_lab` (a JupyterLab server on loopback)
and `run_cells` (runs a notebook's cells in a JupyterLab page).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"  # screenshots (git-ignored)
INSTALL = ROOT / ".ci" / "install-browser.sh"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def find_chromium() -> str | None:
    """Path of a Chromium-family browser ($NSTLIB_CHROMIUM first), or None."""
    for name in (os.environ.get("NSTLIB_CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome-stable", "google-chrome"):
        if name and (path := shutil.which(name)):
            return path
    return None


# ------------------------------------------------------------------ JupyterLab on loopback
# One server recipe for test_browser.py's `lab` fixture and tools/slides.py, so that the slides
# show the widgets as the test sees them.

def free_port() -> int:
    """A free TCP port on loopback."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyter_lab(root: Path, home: Path, env: dict[str, str], wait_s: float = 90.0) -> Iterator[tuple[str, str]]:
    """JupyterLab serving `root` on loopback with a random token: yields (base URL, token); always stopped.

    `home` holds its config, runtime, settings and log (home/lab.log); `env` is the server's
    (and its kernels') environment. Raises RuntimeError, with the end of the log, if it does not start.
    """
    import secrets
    import sys
    import time
    import urllib.request

    port, token = free_port(), secrets.token_hex(16)
    env = dict(env, JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(home / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"))
    # No "get notified about Jupyter news?" toast over the widgets in the screenshots.
    news = home / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True, exist_ok=True)
    news.write_text('{"fetchNews": "false"}')
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--IdentityProvider.token={token}",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--ServerApp.root_dir={root}", "--ServerApp.terminals_enabled=False",
           "--LabApp.expose_app_in_browser=True", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers run as root
    base = f"http://127.0.0.1:{port}"
    with open(home / "lab.log", "w+") as log:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + wait_s
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    why = f"exited with {proc.returncode}" if proc.poll() is not None else f"did not answer within {wait_s:.0f} s"
                    raise RuntimeError(f"jupyter lab {why}:\n{log.read()[-3000:]}")
                try:
                    with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                time.sleep(0.5)
            yield base, token
        finally:
            stop_process_group(proc)


def stop_process_group(proc: subprocess.Popen) -> None:
    """End a server started in a process group of its own (start_new_session=True), its kernels
    with it: SIGTERM lets JupyterLab shut its kernels down; SIGKILL after 20 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


# ------------------------------------------------------------------ running a notebook in JupyterLab
# Once the notebook is open and its kernel idle: marks every code cell not run, starts running
# them all (marker null) or down to the first one whose source holds `marker`, and returns the
# index of the last cell to run; -1 while not ready. It awaits nothing: a promise held across
# the run can be dropped with the page's script context (Playwright: "Resulting promise was
# garbage collected"); CELLS_RAN_JS waits for the run instead. The counts are cleared because a
# stored notebook has some, which CELLS_RAN_JS would take for cells already run.
START_CELLS_JS = """(marker) => {
    const app = window.jupyterapp;
    if (!app || !app.commands.hasCommand('notebook:run-all-above')) return -1;
    const nb = app.shell.currentWidget;
    if (!nb || !nb.context || !nb.context.isReady || !nb.sessionContext || !nb.sessionContext.isReady) return -1;
    const k = nb.sessionContext.session && nb.sessionContext.session.kernel;
    if (!k || k.status !== 'idle' || !nb.content || !nb.content.widgets) return -1;
    const cells = nb.content.widgets;
    const index = marker === null ? cells.length - 1
        : cells.findIndex(c => c.model.type === 'code' && c.model.sharedModel.getSource().includes(marker));
    if (index < 0) throw new Error('no cell holds ' + marker);
    for (const c of cells) if (c.model.type === 'code') c.model.executionCount = null;
    const failed = e => console.error('running the cells failed', e);
    if (index + 1 < cells.length) {
        nb.content.activeCellIndex = index + 1;
        app.commands.execute('notebook:run-all-above').catch(failed);
    } else {
        app.commands.execute('notebook:run-all-cells').catch(failed);
    }
    return index;
}"""
# True when the code cells up to `index` ran and the kernel is idle again.
CELLS_RAN_JS = """(index) => {
    const nb = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const k = nb && nb.sessionContext && nb.sessionContext.session && nb.sessionContext.session.kernel;
    if (!k) return false;
    const cells = nb.content.widgets.slice(0, index + 1).filter(c => c.model.type === 'code');
    return k.status === 'idle' && cells.every(c => c.model.executionCount !== null);
}"""
# Playwright's errors when JupyterLab reloads the page while it starts: try again.
# A closed page or browser is not among them: that error is raised at once, as it is.
_RELOADED = ("Execution context was destroyed", "navigat", "garbage collected")


def run_cells(page, marker: str | None = None, ready_s: float = 120.0, run_s: float = 600.0) -> None:
    """Run the open notebook's code cells in `page`: all of them, or from the top down to the
    first one whose source holds `marker`; return when they ran and the kernel is idle.

    RuntimeError when the notebook or its kernel is not ready within `ready_s`, or a cell fails
    (with its error). Playwright's TimeoutError when the cells take longer than `run_s`.
    """
    import time

    end, index = time.monotonic() + ready_s, -1
    while index < 0:
        if time.monotonic() > end:
            raise RuntimeError(f"the notebook or its kernel was not ready within {ready_s:.0f} s")
        try:
            index = page.evaluate(START_CELLS_JS, marker)
        except Exception as e:  # playwright's Error
            if not any(m in str(e) for m in _RELOADED):
                raise
        if index < 0:
            time.sleep(0.5)
    page.wait_for_function(CELLS_RAN_JS, arg=index, timeout=run_s * 1000, polling=500)
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']")
    if errors.count():
        raise RuntimeError(f"a cell failed in the browser:\n{errors.first.inner_text()[:2000]}")
