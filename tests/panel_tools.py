"""Waiting for background runs in the panel tests (tests/test_widgets.py, tests/test_explorer.py)."""

from __future__ import annotations

import time
from typing import Callable

WAIT = 120  # s: generous, for a loaded CI machine


def wait_until(cond: Callable[[], bool], timeout: float = WAIT) -> bool:
    """Poll `cond` every 20 ms until it is true or `timeout` s have passed; its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()
