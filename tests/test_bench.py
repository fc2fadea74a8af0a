"""The benchmark script runs end to end on a random VGG-16 and tiny images (numbers meaningless)."""

from __future__ import annotations

import io
import re

import pytest
import torch

from nstlib import bench

pytestmark = pytest.mark.usefixtures("one_thread")


def test_time_to_quality_table(monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "PLAIN", bench.PLAIN.replace(steps=4))
    real_fast = bench.fast_settings
    monkeypatch.setattr(bench, "fast_settings", lambda size: real_fast(size).replace(scales=[32], steps=[3, 2]))
    g = torch.Generator().manual_seed(0)
    photo, painting = tmp_path / "p.png", tmp_path / "s.png"
    from nstlib.images import save_image

    save_image(torch.rand(1, 3, 48, 64, generator=g), photo)
    save_image(torch.rand(1, 3, 64, 64, generator=g), painting)
    out = io.StringIO()
    rows = bench.run_quality([64], device="cpu", weights="random:vgg16:0", content=str(photo), style=str(painting), out=out)
    text = out.getvalue()
    plain, fast = rows
    assert (plain.name, fast.name) == ("plain", "fast") and plain.hw == fast.hw == (48, 64)
    assert plain.precision == "float32" and all(r.wall_s > 0 and r.loss > 0 for r in rows)
    assert "| 48 x 64 | plain | float32 |" in text and "| 48 x 64 | fast |" in text
    assert "p.png / s.png" in text


def test_bench_refuses_half_a_pair():
    with pytest.raises(ValueError, match="both --content and --style"):
        bench.run_quality([64], device="cpu", weights="random:vgg16:0", content="x.png", out=io.StringIO())


def test_main_reports_errors_in_one_line(capsys):
    assert bench.main(["--weights", "random:vgg16:0", "--content", "missing.png", "--style", "missing.png", "--sizes", "64"]) == 1
    assert capsys.readouterr().err.startswith("nstlib.bench: error:")


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_per_step_table(precision):
    out = io.StringIO()
    rows = bench.run([32], steps=1, warmup=1, repeats=1, device="cpu", weights="random:vgg16:0", precision=precision, out=out)
    assert len(rows) == 1 and rows[0].stylize_s and rows[0].bare_s
    text = out.getvalue()
    assert f"precision {precision}" in text
    assert re.search(r"\| \d+ x 32 \|", text), text  # the paper's photo when NSTLIB_IMAGE_DIR has it, else noise
