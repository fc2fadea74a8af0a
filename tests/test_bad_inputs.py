"""Bad and unusual inputs: each gets a clear error naming what was wrong and how to fix it, or is
handled correctly. Library and command line, random weights, tiny images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from nstlib.cli import main
from nstlib.images import load_image
from nstlib.stylize import stylize
from nstlib.vgg import load_vgg

pytestmark = pytest.mark.usefixtures("one_thread")

WEIGHTS = ["--weights", "random:vgg16:0"]
FAST = ["--size", "40", "--steps", "2", "--no-progress", *WEIGHTS]
SMALL = dict(content_layers=["relu3_1"], style_layers=["relu1_1", "relu2_1"], steps=2, progress=False, precision="float32")


def cli_error(capsys, argv) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert err.startswith("nstlib: error:") and "Traceback" not in err, err
    return code, err


# -- the start image at exactly the output size --------------------------------------------------

@pytest.mark.parametrize("init", ["content", "style", "path"])
def test_init_at_the_output_size_runs(images, tmp_path, init, capsys):
    """A photo already at the output size used to reach L-BFGS as a strided view and crash."""
    content, style = images
    value = str(content) if init == "path" else init
    out = tmp_path / "o.png"
    assert main(["stylize", str(content), str(style), "-o", str(out), "--steps", "2", "--no-progress", *WEIGHTS,
                 "--size", "40", "--init", value, "--style-size", "40"]) == 0, capsys.readouterr().err
    assert json.loads(out.with_suffix(".json").read_text())["steps_done"] == 2


def test_init_content_without_size_runs(images, random_vgg16):
    content, style = images
    r = stylize(str(content), str(style), init="content", extractor=random_vgg16, **SMALL)
    assert r.steps_done == 2 and r.image.shape == (1, 3, 32, 40)


# -- the output must not destroy an input ------------------------------------------------------------

@pytest.mark.parametrize("which", ["content", "style", "init"])
def test_output_naming_an_input_is_refused(images, tmp_path, capsys, which):
    content, style = images
    target = {"content": content, "style": style, "init": content}[which]
    before = target.read_bytes()
    extra = ["--init", str(content)] if which == "init" else []
    code, err = cli_error(capsys, ["stylize", str(content), str(style), "-o", str(target), *FAST, *extra])
    assert code == 2 and "would destroy it" in err
    assert target.read_bytes() == before


def test_output_naming_an_input_through_another_path_is_refused(images, tmp_path, capsys, monkeypatch):
    content, style = images
    monkeypatch.chdir(tmp_path)
    code, err = cli_error(capsys, ["stylize", str(content), str(style), "-o", "./content.png", *FAST])
    assert code == 2 and "CONTENT image itself" in err


# -- weights holding NaN ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_an_error_naming_the_layer(tmp_path, bad):
    state = load_vgg("random:vgg16:0").features.state_dict()
    state["5.weight"] = state["5.weight"].clone()
    state["5.weight"][0, 0, 0, 0] = bad
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"NaN or infinite values in features\.5\.weight|NaN or infinite values in .*5"):
        load_vgg(str(path))


def test_non_finite_start_loss_is_an_error(random_vgg16, monkeypatch):
    import copy

    net = copy.deepcopy(random_vgg16)
    with torch.no_grad():
        net.features[0].bias[0] = float("nan")
    with pytest.raises(ValueError, match="at the start, before any step"):
        stylize(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32), extractor=net, **SMALL)


# -- no layers left --------------------------------------------------------------------------------------

def test_empty_style_layers_drop_the_style_term(images, random_vgg16):
    content, style = images
    r = stylize(str(content), str(style), extractor=random_vgg16, **{**SMALL, "style_layers": ()})
    assert set(r.history) == {"total", "content:relu3_1"}


def test_tv_only_runs(images, random_vgg16):
    content, style = images
    r = stylize(str(content), str(style), extractor=random_vgg16, alpha=0, beta=0, tv_weight=1.0, **{**SMALL, "steps": 8})
    assert set(r.history) == {"total", "tv"} and r.loss[0] < r.history["total"][0, 0]


def test_cli_empty_style_layers_and_tv_only(images, tmp_path, capsys):
    content, style = images
    assert main(["stylize", str(content), str(style), "-o", str(tmp_path / "a.png"), *FAST, "--style-layers", ""]) == 0
    assert main(["stylize", str(content), str(style), "-o", str(tmp_path / "b.png"), *FAST,
                 "--alpha", "0", "--beta", "0", "--tv-weight", "1"]) == 0
    code, err = cli_error(capsys, ["stylize", str(content), str(style), "-o", str(tmp_path / "c.png"), *FAST,
                                   "--alpha", "0", "--beta", "0"])
    assert code == 1 and "nothing to optimize" in err


# -- images ---------------------------------------------------------------------------------------------

def test_mode_I_image_holding_8_bit_values(tmp_path):
    arr = np.tile(np.arange(0, 256, 4, dtype=np.int32), (16, 1))
    path = tmp_path / "grey.tif"  # TIFF keeps 32-bit integer pixels (PNG cannot)
    Image.fromarray(arr, mode="I").save(path)
    with Image.open(path) as check:
        assert check.mode == "I"
    img = load_image(path)
    assert img.shape == (1, 3, 16, 64) and float(img.max()) == pytest.approx(252 / 255, abs=1e-6)


def test_mode_I_image_out_of_range(tmp_path):
    with pytest.raises(ValueError, match="0..255 or 0..65535"):
        load_image(Image.fromarray(np.full((8, 8), 70000, dtype=np.int32), mode="I"))


@pytest.mark.parametrize("shape", [(3, 40, 50), (3, 40, 3), (1, 40, 4), (4, 64, 64)])
def test_channels_first_arrays_are_refused(shape):
    with pytest.raises(ValueError, match="transpose"):
        load_image(np.random.rand(*shape).astype(np.float32))


@pytest.mark.parametrize("url", ["https://example.org/photo.jpg", "http://example.org/a.png"])
def test_urls_say_they_are_not_read(url, capsys, tmp_path):
    with pytest.raises(ValueError, match="is a URL"):
        load_image(url)
    code, err = cli_error(capsys, ["stylize", url, url, "-o", str(tmp_path / "o.png"), *FAST])
    assert code == 1 and url in err and "Download it first" in err


# -- options ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [2**64, 2**63, -1])
def test_seed_out_of_range(images, tmp_path, capsys, random_vgg16, seed):
    content, style = images
    code, err = cli_error(capsys, ["stylize", str(content), str(style), "-o", str(tmp_path / "o.png"), *FAST, "--seed", str(seed)])
    assert code == 2 and "--seed must be from 0 to 2**63 - 1" in err
    with pytest.raises(ValueError, match="seed must be"):
        stylize(torch.rand(1, 3, 32, 32), None, size=32, extractor=random_vgg16, **{**SMALL, "seed": seed})


@pytest.mark.parametrize("extractor", ["random:vgg16:0", 16, torch.nn.Conv2d(3, 3, 3)])
def test_extractor_of_the_wrong_type(extractor):
    with pytest.raises(TypeError, match="extractor must be a network from nstlib.vgg.load_vgg"):
        stylize(torch.rand(1, 3, 32, 32), None, size=32, extractor=extractor, **SMALL)


# -- the extractor against torchvision's VGG ----------------------------------------------------------

@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
def test_extract_matches_torchvision_layer_by_layer(arch):
    """Same state dict in both: every named layer equals torchvision's features[: i + 1] on the preprocessed input."""
    import torchvision

    net = load_vgg(f"random:{arch}:3", pooling="max")
    tv = getattr(torchvision.models, arch)(weights=None).features.eval()
    tv.load_state_dict(net.features.state_dict())
    x = torch.rand(2, 3, 48, 40, generator=torch.Generator().manual_seed(0))
    ours = net.extract(x, net.names)
    h = net.preprocess(x)
    with torch.no_grad():
        for i, module in enumerate(tv):
            if isinstance(module, torch.nn.ReLU):
                module.inplace = False  # keep the conv output intact for comparison
            h = module(h)
            torch.testing.assert_close(ours[net.names[i]], h, rtol=1e-5, atol=1e-5, msg=f"{arch} {net.names[i]}")
    assert len(ours) == len(tv)


# -- memory: estimated before anything is allocated ------------------------------------------------------

def test_memory_estimate_grows_with_size_batch_and_depth(random_vgg16):
    from nstlib.memory import estimate_bytes

    deep, shallow = ["relu4_2", "relu5_1"], ["relu2_1"]
    e = lambda hw, layers=deep, **kw: estimate_bytes(random_vgg16, hw, layers, **kw)  # noqa: E731
    assert e((512, 512)) > 3 * e((256, 256)) - 3 * 150 * 2**20
    assert e((256, 256), batch=4) > e((256, 256))
    assert e((256, 256), layers=shallow) < e((256, 256))
    assert e((256, 256), optimizer="adam") < e((256, 256))
    assert e((256, 256), precision="bfloat16") < e((256, 256))


def test_a_size_that_does_not_fit_is_refused_before_allocating(random_vgg16, monkeypatch):
    import nstlib.plan as S

    monkeypatch.setattr(S, "free_bytes", lambda device: 400 * 2**20)
    with pytest.raises(MemoryError, match=r"needs about .* but this machine has 419.4 MB free\. The largest size that fits is about \d+ px"):
        stylize(torch.rand(1, 3, 30, 40), torch.rand(1, 3, 32, 32), size=4000, extractor=random_vgg16, **SMALL)
    r = stylize(torch.rand(1, 3, 30, 40), torch.rand(1, 3, 32, 32), size=40, extractor=random_vgg16, **SMALL)
    assert r.settings["memory_estimate_mb"] > 0


def test_the_largest_fitting_size_fits(random_vgg16):
    from nstlib.memory import estimate_bytes, largest_fitting_side

    layers = ["relu4_2", "relu5_1"]
    budget = 2 * 2**30
    side = largest_fitting_side(random_vgg16, (3000, 4000), layers, budget)  # searched below the size asked
    assert 16 < side < 4000
    assert estimate_bytes(random_vgg16, (round(3000 * side / 4000), side), layers) <= budget
    assert estimate_bytes(random_vgg16, (round(3000 * (side + 8) / 4000), side + 8), layers) > budget


def test_cli_refuses_a_huge_size_in_one_line(images, tmp_path, capsys):
    content, style = images
    code, err = cli_error(capsys, ["stylize", str(content), str(style), "-o", str(tmp_path / "o.png"),
                                   "--size", "100000", "--no-progress", *WEIGHTS])
    assert code == 1 and "The largest size that fits is about" in err and "--size" in err
    assert not (tmp_path / "o.png").exists()


# -- Ctrl-C twice ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scales", [None, [16]])
def test_a_second_ctrl_c_still_returns_the_best_image(random_vgg16, monkeypatch, scales):
    import nstlib.loop as S

    pressed = {"first": False, "second": False}
    original = S.Loop.record

    def record(self, *args, **kwargs):
        if pressed["first"] and not pressed["second"]:
            pressed["second"] = True
            raise KeyboardInterrupt  # the second Ctrl-C, during the evaluation after the first
        return original(self, *args, **kwargs)

    def cb(info):
        if info.step == 2:
            pressed["first"] = True
            raise KeyboardInterrupt

    monkeypatch.setattr(S.Loop, "record", record)
    kw = {**SMALL, "steps": [4, 4] if scales else 4, "style_layers": ["relu1_1"], "content_layers": ["relu2_1"]}
    r = stylize(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32), extractor=random_vgg16, scales=scales,
                callback=cb, callback_every=1, **kw)
    # Only a run stopped at a coarser scale evaluates again (its picture at the output size).
    assert pressed["second"] == bool(scales) and r.stop_reason.value == "interrupted" and r.steps_done == 2
    assert r.image.shape == (1, 3, 32, 32) and torch.isfinite(r.image).all()


def test_the_cli_ignores_ctrl_c_while_it_saves():
    import os
    import signal

    from nstlib.cli import _no_ctrl_c

    with _no_ctrl_c():
        os.kill(os.getpid(), signal.SIGINT)  # would raise KeyboardInterrupt outside
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# -- the command-line battery: (what, extra argv, exit status, words in the one-line error) -------------
# "{c}" / "{s}" / "{o}" / "{d}" are the content, style, output path and a scratch folder.

CLI_CASES = [
    ("missing content", ["{d}/nope.jpg", "{s}"], 1, "no image file"),
    ("content is a folder", ["{d}", "{s}"], 1, "is a folder"),
    ("empty content file", ["{d}/empty.png", "{s}"], 1, "empty file"),
    ("text file as image", ["{d}/text.png", "{s}"], 1, "not an image"),
    ("truncated png", ["{d}/truncated.png", "{s}"], 1, "could not be decoded"),
    ("missing style", ["{c}", "{d}/nope.jpg"], 1, "no image file"),
    ("output suffix .txt", ["{c}", "{s}", "-o", "{d}/out.txt"], 2, "unknown image suffix"),
    ("output folder missing", ["{c}", "{s}", "-o", "{d}/no/such/out.png"], 1, "does not exist"),
    ("output is a folder", ["{c}", "{s}", "-o", "{d}/sub.png"], 1, "is a folder"),
    ("size 0", ["--size", "0"], 2, "sizes must be >= 1"),
    ("size word", ["--size", "big"], 2, "expected a number of pixels"),
    ("size 10x0", ["--size", "10x0"], 2, "sizes must be >= 1"),
    ("size too small for relu5_1", ["--size", "8"], 1, "too small for layer"),
    ("style size too small", ["--style-size", "8"], 1, "the style image is"),
    ("steps negative", ["--steps", "-1"], 2, ">= 0"),
    ("steps fraction", ["--steps", "1.5"], 2, "whole number"),
    ("alpha negative", ["--alpha", "-1"], 2, "finite number >= 0"),
    ("beta nan", ["--beta", "nan"], 2, "finite number >= 0"),
    ("lambda_os with gatys", ["--lambda-os", "1"], 2, "--variant normalized"),
    ("alpha with normalized", ["--variant", "normalized", "--alpha", "1"], 2, "--lambda-os"),
    ("unknown content layer", ["--content-layers", "relu9_9"], 1, "not a layer of vgg16"),
    ("layer weight not a number", ["--style-layers", "relu1_1=x"], 2, "weight of 'relu1_1'"),
    ("layer named twice", ["--style-layers", "relu1_1,relu1_1"], 2, "twice"),
    ("weights on some layers only", ["--content-layers", "relu4_2=1,relu5_2"], 2, "every layer or to none"),
    ("optimizer sgd", ["--optimizer", "sgd"], 2, "invalid choice"),
    ("variant unknown", ["--variant", "cubist"], 2, "invalid choice"),
    ("lr zero", ["--lr", "0"], 1, "lr must be > 0"),
    ("init file missing", ["--init", "{d}/nope.png"], 1, "no file at"),
    ("init word", ["--init", "pink"], 1, "expected noise, content, style or an image file"),
    ("weights file missing", ["--weights", "{d}/nope.pth"], 1, "nope.pth"),
    ("weights arch unknown", ["--weights", "random:vgg99"], 1, "random"),
    ("device cuda without a GPU", ["--device", "cuda"], 1, "no CUDA GPU"),
    ("device unknown", ["--device", "tpu"], 1, "unknown device"),
    ("pooling median", ["--pooling", "median"], 2, "invalid choice"),
    ("save-every 0", ["--save-every", "0"], 2, ">= 1"),
    ("tv weight negative", ["--tv-weight", "-1"], 2, "finite number >= 0"),
    ("seed word", ["--seed", "abc"], 2, "invalid int value"),
    ("precision half", ["--precision", "half"], 2, "invalid choice"),
    ("scales above the size", ["--scales", "80"], 2, "up to the output size"),
    ("scales decreasing", ["--scales", "30,20"], 2, "increasing"),
    ("steps per scale miscounted", ["--scales", "20", "--steps", "1,2,3"], 2, "one number per scale"),
    ("a sliver of an image", ["{d}/sliver.png", "{s}"], 1, "too small for layer"),
]


@pytest.fixture
def scratch(tmp_path, images):
    d = tmp_path / "scratch"
    d.mkdir()
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("not a picture")
    (d / "truncated.png").write_bytes(images[0].read_bytes()[:200])
    (d / "sub.png").mkdir()
    Image.fromarray(np.zeros((2, 400, 3), np.uint8)).save(d / "sliver.png")
    return d


@pytest.mark.parametrize("what, argv, code, words", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_battery(images, scratch, tmp_path, capsys, what, argv, code, words):
    content, style = images
    fill = lambda a: a.format(c=content, s=style, d=scratch, o=tmp_path / "o.png")  # noqa: E731
    args = [fill(a) for a in argv]
    own_images = bool(argv) and not argv[0].startswith("-")
    positional, rest = (args[:2], args[2:]) if own_images else ([str(content), str(style)], args)
    if "-o" not in rest:
        rest = ["-o", str(tmp_path / "o.png"), *rest]
    base = ["--size", "40", "--steps", "1", "--no-progress", *WEIGHTS]
    got, err = cli_error(capsys, ["stylize", *positional, *base, *rest])
    assert got == code and words in err, err


LIB_CASES = [
    ("neither image", dict(content=None, style=None), ValueError, "got neither"),
    ("optimizer sgd", dict(optimizer="sgd"), ValueError, "optimizer must be one of"),
    ("steps negative", dict(steps=-1), ValueError, ">= 0"),
    ("callback_every 0", dict(callback_every=0), ValueError, "callback_every"),
    ("lr negative", dict(lr=-1.0), ValueError, "lr must be > 0"),
    ("content layers as a string", dict(content_layers="relu4_2"), TypeError, "write ['relu4_2']"),
    ("precision half", dict(precision="half"), ValueError, "precision must be one of"),
    ("device cuda without a GPU", dict(device="cuda"), ValueError, "no CUDA GPU"),
    ("batch lengths differ", dict(alpha=[1.0, 2.0], beta=[1.0, 2.0, 3.0]), ValueError, "same length"),
    ("tv weight negative", dict(tv_weight=-1.0), ValueError, "finite and >= 0"),
    ("init word", dict(init="pink"), ValueError, "init must be"),
    ("image with NaN", dict(content=torch.full((1, 3, 32, 32), float("nan"))), ValueError, "NaN"),
    ("image above 1", dict(content=torch.full((1, 3, 32, 32), 2.0)), ValueError, "[0, 1]"),
    ("image of the wrong shape", dict(content=torch.rand(5)), ValueError, "image"),
    ("scales not increasing", dict(scales=[32, 16]), ValueError, "increase"),
    ("scales as a string", dict(scales="16,32"), TypeError, "list of sizes"),
    ("size zero", dict(size=0), ValueError, "positive"),
    ("size of three numbers", dict(size=(1, 2, 3)), ValueError, "two positive ints"),
    ("texture without a size", dict(content=None, size=None), ValueError, "pass size="),
    ("seed negative", dict(seed=-1), ValueError, "seed must be"),
    ("seed a float", dict(seed=1.5), ValueError, "seed must be"),
]


@pytest.mark.parametrize("what, kw, error, words", LIB_CASES, ids=[c[0] for c in LIB_CASES])
def test_library_battery(random_vgg16, what, kw, error, words):
    kw = dict(kw)
    content = kw.pop("content", torch.rand(1, 3, 32, 32))
    style = kw.pop("style", torch.rand(1, 3, 32, 32))
    with pytest.raises(error) as e:
        stylize(content, style, extractor=random_vgg16, **{**SMALL, **kw})
    assert words in str(e.value), str(e.value)


# -- environment settings and saved settings ---------------------------------------------------------------

@pytest.mark.parametrize("setting, words", [
    ("bogus:thing", "bogus"),
    ("{d}", "folder"),
    ("caffe:{d}/nope.pth", "nope.pth"),
])
def test_bad_nstlib_weights_environment(images, tmp_path, capsys, monkeypatch, setting, words):
    content, style = images
    monkeypatch.setenv("NSTLIB_WEIGHTS", setting.format(d=tmp_path))
    code = main(["stylize", str(content), str(style), "-o", str(tmp_path / "o.png"), "--size", "40", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and words in err and "NSTLIB_WEIGHTS" in err and "Traceback" not in err, err


def test_bad_run_mode_environment(monkeypatch):
    from nstlib import course

    monkeypatch.setenv("NSTLIB_MODE", "turbo")
    with pytest.raises(ValueError, match="NSTLIB_MODE must be one of smoke, cpu, gpu"):
        course.mode(verbose=False)


@pytest.mark.parametrize("text, words", [("{not json", "not valid JSON"), ("[1, 2]", "must be a dict"),
                                         ('{"colour": "red"}', "unknown settings")])
def test_bad_saved_settings(tmp_path, text, words):
    from nstlib.widgets import TuningPanel

    path = tmp_path / "run.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=words):
        TuningPanel(weights="random:vgg16:0").from_settings(path)


def test_a_result_without_a_finite_loss_saves_valid_json(tmp_path):
    import math

    from nstlib.stylize import StyleResult

    r = StyleResult(image=torch.rand(1, 3, 8, 8), history={"total": np.zeros((0, 1))}, settings={}, wall_time=0.0, steps_done=0)
    assert math.isnan(float(r.loss[0]))
    meta = json.loads(r.save(tmp_path / "r.png").with_suffix(".json").read_text())  # strict JSON: no NaN
    assert meta["final_loss"] is None


def test_cli_refuses_a_huge_style_size_in_one_line(images, tmp_path, capsys):
    content, style = images
    code, err = cli_error(capsys, ["stylize", str(content), str(style), "-o", str(tmp_path / "o.png"),
                                   "--size", "40", "--style-size", "100000", "--no-progress", *WEIGHTS])
    assert code == 1 and "style image needs about" in err and "--style-size" in err
