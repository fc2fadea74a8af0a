"""The benchmark script runs end to end on a random VGG-16 and tiny images (numbers meaningless)."""

from __future__ import annotations

import io
import json
import re

import pytest
import torch

from nstlib import bench

pytestmark = pytest.mark.usefixtures("one_thread")


def test_main_reports_errors_in_one_line(capsys):
    assert bench.main(["--weights", "/no/such/weights.pth", "--sizes", "64"]) == 1
    assert capsys.readouterr().err.startswith("nstlib.bench: error:")


def test_curves_table_and_figure(monkeypatch, tmp_path):
    from nstlib import bench_curves as C

    monkeypatch.setattr(C, "PLAIN", C.PLAIN.replace(steps=6))
    real = C.RunSettings.preset
    monkeypatch.setattr(C.RunSettings, "preset", staticmethod(
        lambda name, size, **kw: real(name, size, **kw).replace(steps=3, scales=None)))
    g = torch.Generator().manual_seed(0)
    from nstlib.images import save_image

    save_image(torch.rand(1, 3, 48, 64, generator=g), tmp_path / "p.png")
    save_image(torch.rand(1, 3, 64, 64, generator=g), tmp_path / "s.png")
    monkeypatch.setenv("NSTLIB_IMAGE_DIR", str(tmp_path))
    curves = C.run_curves([("p.png", "s.png")], [64], ("fast", "paper"), device="cpu", weights="random:vgg16:0",
                          out=io.StringIO())
    assert [c.name for c in curves] == ["plain", "fast", "paper"] and all(c.points and c.wall_s > 0 for c in curves)
    plain = curves[0]
    assert plain.steps == 6 and plain.final == pytest.approx(min(v for _, v in plain.points), rel=1e-5)
    table = C.summary(curves)
    assert "| p.png x s.png | 64 | plain |" in table and "| p.png x s.png | 64 | fast |" in table
    png = C.figure(curves, tmp_path / "curves.png")
    assert png.stat().st_size > 1000
    # Above plain_up_to: no plain loop and no paper run (each would take half an hour at 1024 px).
    # The table and the curves so far are on disk after each curve: a stopped bench keeps them.
    large = C.run_curves([("p.png", "s.png")], [64], ("fast", "paper"), plain_up_to=32, device="cpu",
                         weights="random:vgg16:0", out=io.StringIO(), folder=tmp_path)
    assert [c.name for c in large] == ["fast"]
    table = (tmp_path / "curves.md").read_text()
    assert table == C.summary(large) + "\n" and "| p.png x s.png | 64 | fast |" in table
    assert [c["name"] for c in json.loads((tmp_path / "curves.json").read_text())] == ["fast"]
    # Each preset once per precision asked, named by it: the two precisions side by side.
    both = C.run_curves([("p.png", "s.png")], [64], ("fast",), plain_up_to=32, device="cpu", weights="random:vgg16:0",
                        out=io.StringIO(), precisions=("float32", "bfloat16"))
    assert [c.name for c in both] == ["fast float32", "fast bfloat16"]
    assert C.main(["--sizes", "64", "--pairs", "1", "--weights", "/no/such/weights.pth"]) == 1


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_per_step_table(precision):
    out = io.StringIO()
    rows = bench.run([32], steps=1, warmup=1, repeats=1, device="cpu", weights="random:vgg16:0", precision=precision, out=out)
    assert len(rows) == 1 and rows[0].stylize_s and rows[0].bare_s
    text = out.getvalue()
    assert f"precision {precision}" in text
    assert re.search(r"\| \d+ x 32 \|", text), text  # the paper's photo when NSTLIB_IMAGE_DIR has it, else noise
