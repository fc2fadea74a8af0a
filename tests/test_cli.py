"""The command line: `nstlib.cli.main` in-process with random weights and tiny images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from nstlib.cli import main, parse_layers

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny images run faster on one thread

WEIGHTS = ["--weights", "random:vgg16:0"]
FAST = ["--size", "40", "--steps", "3", "--no-progress", *WEIGHTS]


def run_error(capsys, argv: list[str]) -> tuple[int, str]:
    """Run main, return (exit status, stderr); stderr must be one `nstlib: error:` line, no traceback."""
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("nstlib: error: "), err
    assert "Traceback" not in err
    return code, lines[0]


def test_stylize_writes_png_and_settings(images, tmp_path, capsys):
    content, style = images
    out = tmp_path / "out.png"
    code = main(["stylize", str(content), str(style), "-o", str(out), *FAST, "--beta", "100", "--style-layers", "relu1_1,relu2_1"])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "RANDOM weights" in stdout  # the weights line
    assert str(out) in stdout and str(out.with_suffix(".json")) in stdout
    with Image.open(out) as img:
        assert img.size == (40, 32)  # (W, H): longest side 40, aspect kept
    meta = json.loads(out.with_suffix(".json").read_text())
    s = meta["settings"]
    assert s["size"] == [32, 40] and s["steps"] == 3 and meta["steps_done"] == 3
    assert s["beta"] == 100 and s["variant"] == "gatys"
    assert s["style_layers"] == {"relu1_1": 0.5, "relu2_1": 0.5}
    assert s["content"] == str(content)


def test_noise_level(images, tmp_path, capsys):
    content, style = images
    out = tmp_path / "faint.png"
    code = main(["stylize", str(content), str(style), "-o", str(out), *FAST, "--init", "noise", "--noise-level", "0.02"])
    assert code == 0, capsys.readouterr().err
    s = json.loads(out.with_suffix(".json").read_text())["settings"]
    assert s["init"] == "noise" and s["noise_level"] == pytest.approx(0.02)


def test_normalized_with_lambda_os_and_layer_weights(images, tmp_path, capsys):
    content, style = images
    out = tmp_path / "norm.png"
    code = main(["stylize", str(content), str(style), "-o", str(out), *FAST, "--variant", "normalized",
                 "--lambda-os", "0.001", "--style-layers", "choi-kim", "--content-layers", "relu3_2=1",
                 "--optimizer", "adam", "--init", "content"])
    assert code == 0, capsys.readouterr().err
    s = json.loads(out.with_suffix(".json").read_text())["settings"]
    assert s["variant"] == "normalized" and s["lambda_os"] == pytest.approx(1e-3) and s["alpha"] is None
    assert list(s["style_layers"]) == ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"]  # VGG-16's last ReLUs
    assert s["content_layers"] == {"relu3_2": 1.0} and s["optimizer"] == "adam" and s["init"] == "content"


@pytest.mark.parametrize(
    "argv, code, words",
    [
        (["--nonsense"], 2, "unrecognized arguments"),
        (["--variant", "normalized", "--alpha", "1"], 2, "--lambda-os"),
        (["--lambda-os", "0.1"], 2, "--variant normalized"),
        (["--style-layers", "relu1_1=1,relu2_1"], 2, "every layer or to none"),
        (["--steps", "many"], 2, "whole number"),
        (["--noise-level", "0"], 2, "in (0, 1]"),
        (["--noise-level", "faint"], 2, "in (0, 1]"),
        (["--style-layers", "relu1_1,relu9_9"], 1, "relu9_9"),
        (["--content-layers", "relu3_4"], 1, "Block 3 of vgg16 has 3"),  # relu3_4 exists in VGG-19 only
        (["--size", "12"], 1, "too small"),
        (["--device", "tpu"], 1, "unknown device"),
    ],
)
def test_bad_options(images, tmp_path, capsys, argv, code, words):
    content, style = images
    out = tmp_path / "out.png"
    got, line = run_error(capsys, ["stylize", str(content), str(style), "-o", str(out), *FAST, *argv])
    assert got == code
    assert words in line
    assert not out.exists()


def test_bad_files(images, tmp_path, capsys, monkeypatch):
    """Bad paths fail before the weights are loaded (a typo must not cost a download or a run)."""
    def too_late(*args, **kwargs):
        raise AssertionError("the weights were loaded before the paths were checked")

    monkeypatch.setattr("nstlib.vgg.load_vgg", too_late)
    content, style = images
    missing = tmp_path / "nope.jpg"
    code, line = run_error(capsys, ["stylize", str(missing), str(style), "-o", str(tmp_path / "a.png"), *FAST])
    assert code == 1 and "no image file" in line and str(missing) in line

    text = tmp_path / "notes.png"
    text.write_text("not an image")
    code, line = run_error(capsys, ["stylize", str(content), str(text), "-o", str(tmp_path / "a.png"), *FAST])
    assert code == 1 and "not an image" in line

    out = tmp_path / "no" / "such" / "folder" / "a.png"
    code, line = run_error(capsys, ["stylize", str(content), str(style), "-o", str(out), *FAST])
    assert code == 1 and "does not exist" in line and str(out.parent) in line

    code, line = run_error(capsys, ["stylize", str(content), str(style), "-o", str(tmp_path / "a.txt"), *FAST])
    assert code == 2 and "suffix" in line


def test_missing_weights_file_says_how_to_get_weights(images, tmp_path, capsys):
    content, style = images
    missing = tmp_path / "vgg19.pth"
    code = main(["stylize", str(content), str(style), "-o", str(tmp_path / "a.png"), "--size", "40", "--weights", str(missing)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("nstlib: error: ") and str(missing) in err and "Traceback" not in err
    assert "How to get them" in err and "NSTLIB_WEIGHTS" in err  # the full, multi-line help


def test_ctrl_c_saves_best_image(images, tmp_path, capsys, monkeypatch):
    """Ctrl-C during the optimization: stylize returns the best image so far, the CLI saves it."""
    content, style = images
    out = tmp_path / "int.png"

    def ctrl_c(*args, **kwargs):  # the preview writer, called after step 2, plays the user's Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr("nstlib.images.save_image", ctrl_c)  # previews only; the result is saved by StyleResult.save
    code = main(["stylize", str(content), str(style), "-o", str(out), *FAST, "--steps", "10", "--save-every", "2"])
    captured = capsys.readouterr()
    assert code == 130, captured.err
    assert "saved the best image so far" in captured.out
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["steps_done"] == 2 and "interrupted" in meta["stopped"]
    assert out.exists()


def test_layers_and_weights_commands(capsys):
    assert main(["layers", "--arch", "vgg16", "--size", "64x48"]) == 0
    out = capsys.readouterr().out
    assert "relu5_3" in out and "relu5_4" not in out
    assert "(512, 4, 3)" in out  # relu5_x at 64x48: stride 16
    assert main(["weights", *WEIGHTS]) == 0
    assert "VGG-16" in capsys.readouterr().out


def test_parse_layers():
    assert parse_layers("relu1_1, relu2_1", "x") == ("relu1_1", "relu2_1")
    assert parse_layers("relu4_2=1,relu5_2=0.5", "x") == {"relu4_2": 1.0, "relu5_2": 0.5}
    assert parse_layers("Choi-Kim", "x") == "choi-kim"
    assert parse_layers("", "x") == ()


def test_module_entry_point(images, tmp_path):
    """`python -m nstlib stylize ...` end to end, in a fresh process."""
    content, style = images
    out = tmp_path / "sub.png"
    # the default weights come from the environment; one thread, as in-process (see conftest)
    env = {**os.environ, "NSTLIB_WEIGHTS": "random:vgg16:1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "nstlib", "stylize", str(content), str(style), "-o", str(out),
         "--size", "40", "--steps", "2", "--no-progress"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM weights (seed 1)" in proc.stdout and "$NSTLIB_WEIGHTS" in proc.stdout
    assert out.exists() and out.with_suffix(".json").exists()


# -- presets, scales, precision ---------------------------------------------------------------------

def _settings_of(out: Path) -> dict:
    return json.loads(out.with_suffix(".json").read_text())["settings"]


def test_fast_preset_is_the_default_and_paper_is_one_flag_away(images, tmp_path, capsys):
    content, style = images
    fast, paper = tmp_path / "fast.png", tmp_path / "paper.png"
    assert main(["stylize", str(content), str(style), "-o", str(fast), *FAST]) == 0
    assert "settings (preset fast)" in capsys.readouterr().out
    assert main(["stylize", str(content), str(style), "-o", str(paper), *FAST, "--preset", "paper"]) == 0
    f, p = _settings_of(fast), _settings_of(paper)
    assert f["init"] == "content" and p["init"] == "noise"
    assert f["scales"] is None and p["scales"] is None  # 40 px: no coarser scale worth running
    assert p["style_layers"] == {f"relu{b}_1": 0.2 for b in range(1, 6)} and p["optimizer"] == "lbfgs"


def test_scales_and_steps_per_scale(images, tmp_path, capsys):
    content, style = images
    out = tmp_path / "c2f.png"
    assert main(["stylize", str(content), str(style), "-o", str(out), *FAST, "--scales", "20", "--steps", "2,1",
                 "--precision", "float32"]) == 0
    stdout = capsys.readouterr().out
    assert "scales=20" in stdout and "steps=2,1" in stdout and "precision float32 (as asked)" in stdout
    s = _settings_of(out)
    assert s["scales"] == [20, 40] and s["steps"] == [2, 1] and s["precision"] == "float32"
    assert json.loads(out.with_suffix(".json").read_text())["steps_done"] == 3
    out2 = tmp_path / "one.png"
    assert main(["stylize", str(content), str(style), "-o", str(out2), *FAST, "--scales", "none"]) == 0
    assert _settings_of(out2)["scales"] is None


@pytest.mark.parametrize("extra, words", [
    (["--scales", "20", "--steps", "1,2,3"], "one number per scale"),
    (["--scales", "30,20"], "increasing sizes"),
    (["--scales", "80"], "up to the output size"),
    (["--scales", "big"], "expected sizes in px"),
    (["--steps", "3,x"], "one per scale"),
    (["--precision", "fp16"], "invalid choice"),
    (["--preset", "quick"], "invalid choice"),
])
def test_bad_scale_step_and_precision_options(images, tmp_path, capsys, extra, words):
    content, style = images
    code, line = run_error(capsys, ["stylize", str(content), str(style), "-o", str(tmp_path / "x.png"), *FAST, *extra])
    assert code == 2 and words in line, line
    assert not (tmp_path / "x.png").exists()


def test_weight_errors_read_the_same_in_the_library_and_the_command_line(images, tmp_path, capsys):
    from nstlib.losses import resolve_weights

    content, style = images
    _, line = run_error(capsys, ["stylize", str(content), str(style), "-o", str(tmp_path / "x.png"), *FAST, "--lambda-os", "1"])
    with pytest.raises(ValueError) as e:
        resolve_weights("gatys", lambda_os=1.0)
    assert str(e.value) in line
