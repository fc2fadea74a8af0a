"""The command line: `nstlib.cli.main` in-process with random weights and tiny images."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
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
    assert re.search(r"peak memory \d+ MiB \(process\)", stdout), stdout   # the CPU's peak, printed after the time
    assert str(out) in stdout and str(out.with_suffix(".json")) in stdout
    with Image.open(out) as img:
        assert img.size == (40, 32)  # (W, H): longest side 40, aspect kept
    meta = json.loads(out.with_suffix(".json").read_text())
    s = meta["settings"]
    assert s["size"] == [32, 40] and s["steps"] == 3 and meta["steps_done"] == 3
    assert s["beta"] == 100 and s["variant"] == "gatys"
    assert s["style_layers"] == {"relu1_1": 0.5, "relu2_1": 0.5}
    assert s["content"] == str(content)
    assert s["style"] == str(style) and s["style_weights"] is None  # one STYLE: a plain path, as before several


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


# -- several styles, colours, masks ---------------------------------------------------------------------

def _has_style_masks() -> bool:
    import inspect

    from nstlib.stylize import stylize

    return "style_masks" in inspect.signature(stylize).parameters


needs_style_masks = pytest.mark.skipif(
    not _has_style_masks(), reason="stylize(style_masks=...) is not in nstlib.stylize yet (the library part of --mask)")


@pytest.fixture
def style2(tmp_path) -> Path:
    """A second style image, 36x30, other noise than the `images` fixture's."""
    path = tmp_path / "style2.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 36, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def mask(tmp_path) -> Path:
    """A label image at the content's size (40x32): left half black (STYLE 1), right half white (STYLE 2)."""
    a = np.zeros((32, 40, 3), np.uint8)
    a[:, 20:] = 255
    path = tmp_path / "regions.png"
    Image.fromarray(a).save(path)
    return path


def test_two_styles_with_weights(images, style2, tmp_path, capsys):
    content, style = images
    out = tmp_path / "blend.png"
    code = main(["stylize", str(content), str(style), str(style2), "-o", str(out), *FAST, "--style-weights", "1,3"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"style:   {style}, {style2}" in captured.out and "style_weights=1.0,3.0" in captured.out
    s = _settings_of(out)
    assert s["style"] == [str(style), str(style2)]
    assert s["style_weights"] == pytest.approx([0.25, 0.75])


def test_two_styles_blend_equally_by_default(images, style2, tmp_path, capsys):
    content, style = images
    out = tmp_path / "equal.png"
    assert main(["stylize", str(content), str(style), str(style2), "-o", str(out), *FAST]) == 0, capsys.readouterr().err
    assert _settings_of(out)["style_weights"] == pytest.approx([0.5, 0.5])


@pytest.mark.parametrize("extra, preserve, method", [
    (["--preserve-colors", "luminance"], "luminance", None),
    (["--preserve-colors", "histogram", "--color-method", "pca"], "histogram", "pca"),
    (["--preserve-colors", "histogram"], "histogram", "cholesky"),
])
def test_preserve_colors(images, tmp_path, capsys, extra, preserve, method):
    content, style = images
    out = tmp_path / "colors.png"
    assert main(["stylize", str(content), str(style), "-o", str(out), *FAST, *extra]) == 0, capsys.readouterr().err
    s = _settings_of(out)
    assert s["preserve_colors"] == preserve and s["color_method"] == method


def test_color_choices_are_the_librarys():
    from nstlib import cli, color

    assert cli.PRESERVE_COLORS == color.PRESERVE_COLORS and cli.COLOR_METHODS == color.COLOR_METHODS


@pytest.mark.parametrize("n_styles, extra, code, words", [
    (2, ["--style-weights", "1"], 2, "--style-weights has 1 value but 2 STYLE images were given; give one per style, e.g. 0.5,0.5"),
    (2, ["--style-weights", "1,2,3"], 2, "has 3 values but 2 STYLE images"),
    (2, ["--style-weights", "0.7,-0.3"], 2, "expected finite numbers >= 0 (e.g. 0.7,0.3), got -0.3"),
    (2, ["--style-weights", "0,0"], 2, "all 0"),
    (2, ["--style-weights", "much,little"], 2, "expected numbers >= 0 separated by commas, one per STYLE"),
    (2, ["--style-weights", "1,nan"], 2, "finite numbers >= 0"),
    (1, ["--style-weights", "1"], 2, "--style-weights blends several STYLE images, and 1 was given"),
    (1, ["--color-method", "pca"], 2, "--color-method only applies to --preserve-colors histogram, got no --preserve-colors"),
    (1, ["--preserve-colors", "luminance", "--color-method", "pca"], 2, "only applies to --preserve-colors histogram"),
    (1, ["--preserve-colors", "sepia"], 2, "invalid choice: 'sepia'"),
    (1, ["--color-method", "svd", "--preserve-colors", "histogram"], 2, "invalid choice: 'svd'"),
    (1, ["--mask", "{mask}"], 2, "--mask places several STYLE images by region, and 1 was given"),
    (2, ["--mask", "{mask}", "--style-weights", "1,1"], 2, "--mask and --style-weights exclude each other"),
    (2, ["--mask", "{d}/nope.png"], 1, "no image file"),
])
def test_bad_style_options(images, style2, mask, tmp_path, capsys, monkeypatch, n_styles, extra, code, words):
    """Usage errors and missing files are refused before the weights load."""
    def too_late(*args, **kwargs):
        raise AssertionError("the weights were loaded before the options were checked")

    monkeypatch.setattr("nstlib.vgg.load_vgg", too_late)
    content, style = images
    styles = [str(style), str(style2)][:n_styles]
    extra = [a.format(mask=mask, d=tmp_path) for a in extra]
    out = tmp_path / "x.png"
    got, line = run_error(capsys, ["stylize", str(content), *styles, "-o", str(out), *FAST, *extra])
    assert got == code and words in line, line
    assert not out.exists()


def test_a_missing_second_style_fails_before_the_weights_load(images, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("nstlib.vgg.load_vgg", lambda *a, **k: pytest.fail("weights loaded before the STYLE files were checked"))
    content, style = images
    missing = tmp_path / "nope.jpg"
    code, line = run_error(capsys, ["stylize", str(content), str(style), str(missing), "-o", str(tmp_path / "x.png"), *FAST])
    assert code == 1 and "no image file" in line and str(missing) in line


def test_output_naming_the_second_style_or_the_mask_is_refused(images, style2, mask, tmp_path, capsys):
    content, style = images
    for target, what in ((style2, "STYLE"), (mask, "--mask")):
        before = target.read_bytes()
        code, line = run_error(capsys, ["stylize", str(content), str(style), str(style2), "-o", str(target), *FAST,
                                        "--mask", str(mask)])
        assert code == 2 and f"is the {what} image itself" in line
        assert target.read_bytes() == before


def test_a_style_after_an_option_gets_a_hint(images, style2, tmp_path, capsys):
    content, style = images
    code, line = run_error(capsys, ["stylize", str(content), str(style), "-o", str(tmp_path / "x.png"), str(style2), *FAST])
    assert code == 2 and f"unrecognized arguments: {style2}" in line and "STYLE paths go together after CONTENT" in line


@needs_style_masks
def test_mask_with_two_styles(images, style2, mask, tmp_path, capsys):
    content, style = images
    out = tmp_path / "regions_out.png"
    code = main(["stylize", str(content), str(style), str(style2), "-o", str(out), *FAST, "--mask", str(mask)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"mask:    {mask}" in captured.out
    s = _settings_of(out)
    assert s["style"] == [str(style), str(style2)] and s["style_masks"] == str(mask) and s["style_weights"] is None


@needs_style_masks
def test_mask_with_more_colours_than_styles(images, style2, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("nstlib.vgg.load_vgg", lambda *a, **k: pytest.fail("weights loaded before the mask was checked"))
    content, style = images
    a = np.zeros((32, 40, 3), np.uint8)
    a[:, 13:26] = 128
    a[:, 26:] = 255
    three = tmp_path / "three.png"
    Image.fromarray(a).save(three)
    code, line = run_error(capsys, ["stylize", str(content), str(style), str(style2), "-o", str(tmp_path / "x.png"), *FAST,
                                    "--mask", str(three)])
    assert code == 1 and "3 distinct colour" in line


def test_mask_without_library_support_says_so(images, style2, mask, tmp_path, capsys, monkeypatch):
    """Until stylize takes style_masks, --mask is one clear line, not a TypeError."""
    monkeypatch.setattr("nstlib.stylize.stylize", lambda content, style, **kwargs: None)
    content, style = images
    code, line = run_error(capsys, ["stylize", str(content), str(style), str(style2), "-o", str(tmp_path / "x.png"), *FAST,
                                    "--mask", str(mask)])
    assert code == 2 and "--mask needs stylize(style_masks=...)" in line


def test_the_readme_command_lines_parse():
    """Every `python -m nstlib ...` example of the README and docs/ is a valid command line (parsed, not run)."""
    import shlex

    from nstlib.cli import _check_style_options, build_parser

    root = Path(__file__).resolve().parent.parent
    readme = "\n".join(p.read_text() for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))])
    lines = [line.split("#")[0] for line in readme.splitlines() if line.startswith("python -m nstlib ")]
    assert any("--mask" in line for line in lines) and any("--style-weights" in line for line in lines)
    parser = build_parser()
    for line in lines:
        args = parser.parse_args(shlex.split(line)[3:])
        if args.command == "stylize":
            _check_style_options(args, len(args.style))
    assert any("--settings" in line for line in lines)


def test_lr_with_lbfgs_is_refused_with_a_hint(images, tmp_path, capsys):
    # L-BFGS finds its step length by a line search: an lr would be silently ignored.
    content, style = images
    code = main(["stylize", str(content), str(style), "-o", str(tmp_path / "out.png"), "--size", "48", "--steps", "3",
                 "--no-progress", *WEIGHTS, "--lr", "0.5"])
    assert code != 0 and "line search" in capsys.readouterr().err


def test_ratio_is_alpha_over_beta_on_the_papers_scale(images, tmp_path, capsys, monkeypatch):
    # --ratio R: beta = 1, alpha = K * R with K of the loaded network and the run's style layers,
    # the convention of the notebooks and the panel (nstlib.paper_scale).
    from nstlib import paper_scale
    seen = []
    monkeypatch.setattr(paper_scale, "scale", lambda net, layers: seen.append((net.arch, tuple(layers))) or 82.0)
    content, style = images
    out = tmp_path / "paper.png"
    assert main(["stylize", str(content), str(style), "-o", str(out), *FAST, "--ratio", "1e-3",
                 "--style-layers", "relu1_1,relu2_1"]) == 0, capsys.readouterr().err
    s = json.loads(out.with_suffix(".json").read_text())["settings"]
    assert s["alpha"] == pytest.approx(82.0 * 1e-3) and s["beta"] == 1.0
    assert seen == [("vgg16", ("relu1_1", "relu2_1"))]
    assert main(["stylize", str(content), str(style), "-o", str(out), *FAST, "--ratio", "1e-4"]) == 0
    assert seen[-1] == ("vgg16", ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")), "the preset's layers"


@pytest.mark.parametrize("extra, message", [
    (["--ratio", "1e-3", "--alpha", "1"], "--ratio sets alpha and beta of the gatys variant"),
    (["--ratio", "1e-3", "--variant", "normalized"], "--ratio sets alpha and beta of the gatys variant"),
    (["--ratio", "0"], "expected alpha/beta on the paper's scale, a number > 0"),
    (["--ratio", "-1"], "expected a finite number >= 0"),
])
def test_ratio_errors_say_what_to_give(images, tmp_path, capsys, extra, message):
    content, style = images
    code, line = run_error(capsys, ["stylize", str(content), str(style), "-o", str(tmp_path / "x.png"), *FAST, *extra])
    assert code == 2 and message in line, line
