"""Headless Chromium for the browser tests (test_browser.py, test_lectures_html.py) and the slides.

The browser is Debian's `chromium` (or $NSTLIB_CHROMIUM), installed by .ci/install-browser.sh
when missing; Playwright starts it through `executable_path`. The `chromium` fixture (in
conftest.py) skips a test, with that script's reason, only where no Chromium can be had.
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


# ------------------------------------------------------------------ JupyterLab for screenshots
# A plain (non-pytest) version of test_browser.py's `lab` fixture, for tools/slides.py: the same
# command line, settings and waits, so that the slides show the widgets as the test sees them.

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
