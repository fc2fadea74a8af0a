"""A class on one machine (tools/class_test.py, `make class-test`): the small version, 8 real
Jupyter kernels of which 2 run a transfer, every kernel shut down at the end."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import class_test  # noqa: E402


def test_the_set_up_is_notebook_1s_first_cells():
    code = class_test.setup_code()
    assert "vgg.load_vgg()" in code and 'load_or_fallback("tubingen"' in code
    assert "starry_night" not in code  # it stops at the photo: the painting is the transfer's


def test_the_set_up_cells_must_be_found(tmp_path):
    nb = tmp_path / "nb.ipynb"
    nb.write_text('{"cells": [{"cell_type": "code", "source": ["import torch"]}]}')
    with pytest.raises(ValueError, match="SETUP_UNTIL"):
        class_test.setup_code(nb)


def test_running_must_leave_idle_kernels():
    with pytest.raises(ValueError, match="--running"):
        class_test.run_class(n=2, running=2)


@pytest.mark.timeout(400)
def test_a_small_class_survives_and_is_shut_down():
    """8 kernels, 2 running the panel's transfer (96 px): none dies, none is left, the idle ones
    answer within the issue's 2 s, and the memory is what the README's section plans for."""
    r = class_test.run_class(n=8, running=2, size=96, timeout_s=360, log=lambda *_: None)
    assert not r["died"] and not r["left_running"] and not r["errors"], r
    assert r["idle_replies"] > 0 and r["slowest_idle_reply_s"] < class_test.REPLY_LIMIT, r
    assert r["pss_per_kernel_mib_max"] < 900, r
    assert all(t > 0 for t in r["transfers_s"]) and r["transfer_alone_s"] > 0, r
