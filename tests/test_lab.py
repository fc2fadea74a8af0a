"""`make lab` serves JupyterLab, as root or as a user, with or without a display: it prints the URL."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("make") is None or not (ROOT / ".venv" / ".installed").exists(),
                    reason="needs make and the course's .venv (make test installs it)")
def test_make_lab_serves_jupyterlab_and_prints_its_url(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "ws"))
    proc = subprocess.Popen(["make", "--no-print-directory", "lab", f"LAB_PORT={port}"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen, url = [], None
    try:
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                line = proc.stdout.readline()
                seen.append(line)
                m = re.search(rf"(http://127\.0\.0\.1:{port}/lab\?token=\w+)", line)
                url = m.group(1) if m else None
        assert url, "no URL printed:\n" + "".join(seen[-30:])
        if os.geteuid() == 0:
            assert any("--allow-root" in line for line in seen), "as root, make lab must pass --allow-root"
        page, status = "", None
        for _ in range(20):  # the URL is printed as the server starts listening
            try:
                with urllib.request.urlopen(url, timeout=30) as r:
                    page, status = r.read().decode("utf-8", "replace"), r.status
                break
            except OSError:
                time.sleep(0.5)
        assert status == 200 and "JupyterLab" in page, (status, page[:200])
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
