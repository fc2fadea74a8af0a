"""Headless Chromium for the browser tests (test_browser.py, test_lectures_html.py).

The browser is Debian's `chromium` (or $NSTLIB_CHROMIUM), installed by .ci/install-browser.sh
when missing; Playwright starts it through `executable_path`. The `chromium` fixture (in
conftest.py) skips a test, with that script's reason, only where no Chromium can be had.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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
