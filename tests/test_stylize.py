"""nstlib.stylize on a seeded random VGG-16 and 32 px images: the loop, its results, its errors.

Random weights cannot show that a style moves; they do show that the optimizer lowers the loss,
that the bookkeeping (history, best image, stopping, saving) is right, and that bad input fails
early. Pretrained behaviour is tested in test_pretrained.py.
"""

from __future__ import annotations

import json
import threading
import warnings

import numpy as np
import pytest
import torch

import nstlib.plan as plan_module
from nstlib.images import load_image
from nstlib.losses import Objective, build_objective
from nstlib.stylize import StepInfo, StopOptimization, StyleResult, stylize

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest

GATYS_PARTS = {"total", "content:relu4_2", *(f"style:relu{b}_1" for b in range(1, 6))}
# Shallow layers: the network runs only to relu3_1, three times cheaper than to relu5_1. For
# tests of the loop's bookkeeping, where which layers are used does not matter.
FAST = dict(content_layers=["relu3_1"], style_layers=["relu1_1", "relu2_1", "relu3_1"])
FAST_PARTS = {"total", "content:relu3_1", "style:relu1_1", "style:relu2_1", "style:relu3_1"}
_DEFAULT = object()


@pytest.fixture
def run(random_vgg16, content_image, style_image):
    """stylize with the random VGG-16, no progress bar, small defaults: run(content, style, **kw)."""

    def go(content=_DEFAULT, style=_DEFAULT, **kw):
        content = content_image if content is _DEFAULT else content
        style = style_image if style is _DEFAULT else style
        kw.setdefault("steps", 3)
        # float32: these tests compare losses with a float32 recomputation; bfloat16 is tested in test_scales_precision.py
        kw.setdefault("precision", "float32")
        return stylize(content, style, extractor=random_vgg16, progress=False, **kw)

    return go


def loss_of(net, image, content, style, **kw) -> torch.Tensor:
    """The Gatys objective (defaults of stylize) evaluated on `image`: (B,)."""
    kw.setdefault("content_layers", ["relu4_2"])
    kw.setdefault("style_layers", [f"relu{b}_1" for b in range(1, 6)])
    kw.setdefault("style_weight", 1e3)
    obj = build_objective(net, content, style, **kw)
    with torch.no_grad():
        return obj(net.extract(image, obj.layers), image)[0]


# -- the result ------------------------------------------------------------------------------------

def test_result_structure(run):
    r = run(steps=4)
    assert isinstance(r, StyleResult)
    assert r.image.shape == (1, 3, 32, 32) and r.image.device.type == "cpu"
    assert r.image.dtype == torch.float32 and 0 <= float(r.image.min()) and float(r.image.max()) <= 1
    assert set(r.history) == GATYS_PARTS
    assert all(h.shape == (4, 1) and np.isfinite(h).all() for h in r.history.values())  # one row per step
    assert r.steps_done == 4 and r.stopped is None and r.wall_time > 0
    assert r.loss.shape == (1,) and r.loss[0] == r.history["total"].min()
    assert "RANDOM" in r.weights and r.device == "cpu"
    assert "1 image 32x32, 4 steps" in repr(r)
    assert r.to_pil().size == (32, 32)


def test_total_is_the_weighted_sum_of_parts(run):
    r = run(steps=2, alpha=2.0, beta=600.0, **FAST)
    h = r.history
    style = sum(h[f"style:relu{b}_1"] for b in range(1, 4)) / 3
    np.testing.assert_allclose(h["total"], 2.0 * h["content:relu3_1"] + 600.0 * style, rtol=1e-5)


@pytest.mark.parametrize("optimizer, ratio", [("lbfgs", 0.3), ("adam", 0.8)])
def test_content_reconstruction_lowers_the_loss(run, optimizer, ratio):
    r = run(style=None, optimizer=optimizer, steps=8)
    total = r.history["total"][:, 0]
    assert set(r.history) == {"total", "content:relu4_2"}
    assert total[-1] < ratio * total[0], total
    assert r.loss[0] == total.min()


def test_style_only(run, random_vgg16, style_image):
    r = run(content=None, size=32, steps=4)
    assert r.image.shape == (1, 3, 32, 32)
    assert set(r.history) == {"total", *(f"style:relu{b}_1" for b in range(1, 6))}
    assert r.history["total"][-1, 0] < r.history["total"][0, 0]
    assert r.settings["content"] is None and r.settings["size"] == [32, 32]
    r = run(content=None, size=(32, 48), steps=0)
    assert r.image.shape == (1, 3, 32, 48)


def test_normalized_variant(run):
    r = run(variant="normalized", steps=6, style_layers=["relu1_2", "relu2_2", "relu3_3"])
    assert set(r.history) == {"total", "content:relu4_2", "style:relu1_2", "style:relu2_2", "style:relu3_3"}
    assert r.history["total"][-1, 0] < r.history["total"][0, 0]
    assert r.settings["lambda_os"] == 1e-2 and r.settings["alpha"] is None


def test_beta_zero_drops_style(run):
    r = run(beta=0, steps=1)
    assert set(r.history) == {"total", "content:relu4_2"}
    assert r.settings["style_size"] is None


def test_alpha_zero_drops_content(run):
    r = run(alpha=0, steps=1)
    assert "content:relu4_2" not in r.history and "style:relu1_1" in r.history


def test_tv_weight_adds_tv_part(run):
    r = run(tv_weight=1e-3, steps=2, **FAST)
    assert "tv" in r.history and r.history["tv"].shape == (2, 1)


def test_init_content_starts_at_content(run, content_image):
    r = run(init="content", steps=1)
    assert r.history["content:relu4_2"][0, 0] == 0
    assert r.history["style:relu1_1"][0, 0] > 0
    r = run(init="content", steps=0, style=None)
    assert torch.equal(r.image, content_image)


def test_init_style_starts_at_style(run):
    r = run(init="style", steps=0)
    assert all(r.history[f"style:relu{b}_1"][0, 0] < 1e-10 for b in range(1, 6))
    assert r.history["content:relu4_2"][0, 0] > 0


def test_init_image(run, style_image):
    r = run(init=style_image, steps=0, style=None)
    assert torch.allclose(r.image, style_image)


def test_init_noise_is_seeded(run):
    a, b, c = run(seed=3, steps=2, **FAST), run(seed=3, steps=2, **FAST), run(seed=4, steps=2, **FAST)
    assert torch.equal(a.image, b.image)
    assert not torch.allclose(a.image, c.image)
    start = run(seed=3, steps=0, **FAST)
    assert start.steps_done == 0 and start.history["total"].shape == (1, 1)
    assert torch.equal(start.image, torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3)))


def test_noise_level_scales_the_start_around_grey(run):
    full = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    start = run(seed=3, steps=0, noise_level=0.02, **FAST)
    assert torch.allclose(start.image, 0.5 + 0.02 * (full - 0.5))
    assert start.image.min() >= 0.49 and start.image.max() <= 0.51
    assert start.settings["noise_level"] == 0.02
    assert run(seed=3, steps=0, init="content", **FAST).settings["noise_level"] is None  # not used: not recorded


@pytest.mark.parametrize("level", [0, -0.1, 1.5, float("nan"), True, "0.1"])
def test_noise_level_out_of_range(run, level):
    with pytest.raises(ValueError, match=r"noise_level must be a number in \(0, 1\]"):
        run(steps=0, noise_level=level, **FAST)


def test_style_image_of_another_size(run):
    style = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    r = run(style=style, steps=1)
    assert r.image.shape == (1, 3, 32, 32)
    assert r.settings["style_size"] == [24, 32]  # longest side = the output's longest side
    assert r.settings["style"] == "<ndarray>"
    r = run(style=style, style_size=(40, 40), steps=0)
    assert r.settings["style_size"] == [40, 40]


def test_content_size_argument(run):
    r = run(content=np.zeros((40, 80, 3), np.uint8), size=32, steps=0)
    assert r.image.shape == (1, 3, 16, 32)


# -- batches ------------------------------------------------------------------------------------------

def test_batch_of_alphas(run):
    r = run(alpha=[1.0, 10.0], steps=2, **FAST)
    assert r.image.shape == (2, 3, 32, 32)
    assert all(h.shape == (2, 2) for h in r.history.values())
    assert r.loss.shape == (2,)
    assert r.settings["alpha"] == [1.0, 10.0]


def test_adam_batch_equals_separate_runs(run):
    # The same start for every item: an image passed as init (init="noise" draws one per item).
    start = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    kw = dict(optimizer="adam", init=start, steps=4, **FAST)
    batch = run(alpha=[1.0, 10.0], **kw)
    one, ten = run(alpha=1.0, **kw), run(alpha=10.0, **kw)
    assert not torch.allclose(one.image, ten.image, atol=1e-3)  # the two settings do differ
    torch.testing.assert_close(batch.image[0:1], one.image, atol=2e-4, rtol=0)
    torch.testing.assert_close(batch.image[1:2], ten.image, atol=2e-4, rtol=0)
    np.testing.assert_allclose(batch.history["total"][:, 0], one.history["total"][:, 0], rtol=1e-4)
    np.testing.assert_allclose(batch.history["total"][:, 1], ten.history["total"][:, 0], rtol=1e-4)


def test_batch_lengths_must_agree(run):
    with pytest.raises(ValueError, match="same length"):
        run(alpha=[1.0, 2.0], beta=[1.0, 2.0, 3.0])


# -- callbacks and stopping -------------------------------------------------------------------------

def test_callback_every_n_steps(run):
    seen: list[StepInfo] = []
    r = run(steps=6, callback=seen.append, callback_every=2, **FAST)
    assert [i.step for i in seen] == [2, 4, 6]
    assert r.stopped is None and r.steps_done == 6
    for info in seen:
        assert isinstance(info, StepInfo) and info.steps == 6
        assert info.image.shape == (1, 3, 32, 32) and 0 <= float(info.image.min()) and float(info.image.max()) <= 1
        assert set(info.parts) == FAST_PARTS - {"total"}
        assert info.elapsed >= 0 and np.isfinite(info.loss)
        # the loss evaluated during that step (before or after its update)
        rows = r.history["total"][info.step - 1 : info.step + 1, 0]
        assert any(info.loss == pytest.approx(float(v), rel=1e-5) for v in rows)


@pytest.mark.parametrize("how", ["return True", "raise StopOptimization"])
def test_callback_stops_early_with_best_image(run, random_vgg16, content_image, how):
    def cb(info):
        if info.step == 3:
            if how == "return True":
                return True
            raise StopOptimization
        return None

    r = run(style=None, optimizer="adam", lr=0.3, steps=50, callback=cb, callback_every=1, content_layers=["relu3_1"])
    assert r.steps_done == 3 and r.stopped == "stopped by callback"
    assert r.history["total"].shape == (4, 1)
    # the image returned is the one with the lowest loss seen
    recomputed = loss_of(random_vgg16, r.image, content_image, None, content_layers=["relu3_1"], style_layers=[])
    assert float(recomputed[0]) == pytest.approx(float(r.loss[0]), rel=1e-4)


def test_best_image_not_last(run, content_image):
    # Adam's first step moves every pixel by lr; with lr=0.8 the loss jumps up from the start
    # (the content image) and never comes back down in 4 steps: the start is returned.
    r = run(optimizer="adam", lr=0.8, steps=4, init="content", **FAST)
    total = r.history["total"][:, 0]
    assert total.argmin() == 0 and total[-1] > 1.5 * total[0], total
    assert torch.allclose(r.image, content_image)


def test_stop_event_before_start(run):
    stop = threading.Event()
    stop.set()
    r = run(steps=10, stop=stop)
    assert r.steps_done == 0 and r.stopped == "stopped by request"
    assert r.history["total"].shape == (1, 1) and torch.isfinite(r.image).all()


def test_stop_event_set_from_another_thread(run):
    stop = threading.Event()

    def cb(info):
        if info.step == 2:
            t = threading.Thread(target=stop.set)
            t.start()
            t.join()

    r = run(steps=10, stop=stop, callback=cb, callback_every=1, **FAST)
    assert r.steps_done == 2 and r.stopped == "stopped by request"


def test_keyboard_interrupt_in_callback(run):
    def cb(info):
        if info.step == 2:
            raise KeyboardInterrupt

    r = run(steps=10, callback=cb, callback_every=1, **FAST)
    assert "interrupted" in r.stopped and r.steps_done == 2
    assert torch.isfinite(r.image).all() and r.history["total"].shape == (2, 1)


def test_keyboard_interrupt_inside_a_step(run, random_vgg16, monkeypatch):
    calls = {"n": 0}
    real = random_vgg16.extract

    def extract(x, layers):
        calls["n"] += 1
        if calls["n"] == 5:  # 2 target computations, then steps 1, 2, and Ctrl-C in step 3
            raise KeyboardInterrupt
        return real(x, layers)

    monkeypatch.setitem(random_vgg16.__dict__, "extract", extract)  # removed again afterwards
    r = run(steps=10, **FAST)
    assert "interrupted" in r.stopped and r.steps_done == 2
    assert torch.isfinite(r.image).all()


# -- non-finite losses ---------------------------------------------------------------------------------

def test_huge_lr_adam_stays_finite_and_returns_the_best_image(run):
    """The pixels are clamped to [0, 1] after every step, so even lr=1e30 cannot make the loss
    non-finite: the steps jump to the corners of the box, and the run returns its best image."""
    r = run(optimizer="adam", lr=1e30, steps=8, **FAST)
    assert r.stopped is None and r.steps_done == 8
    assert torch.isfinite(r.image).all() and 0 <= float(r.image.min()) and float(r.image.max()) <= 1
    assert np.isfinite(r.loss).all() and float(r.loss[0]) == pytest.approx(float(r.history["total"].min()))


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_nan_objective_returns_best_finite_image(run, monkeypatch, optimizer):
    class NaNAfterTwoCalls(Objective):
        calls = 0

        def __call__(self, features, image):
            total, parts = super().__call__(features, image)
            NaNAfterTwoCalls.calls += 1
            if NaNAfterTwoCalls.calls > 2:
                total = total * float("nan")
            return total, parts

    real = plan_module.build_objective

    def fake_build_objective(*args, **kwargs):
        obj = real(*args, **kwargs)
        obj.__class__ = NaNAfterTwoCalls
        return obj

    monkeypatch.setattr(plan_module, "build_objective", fake_build_objective)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        r = run(optimizer=optimizer, steps=5, **FAST)
    assert "non-finite" in r.stopped
    assert torch.isfinite(r.image).all()
    assert np.isfinite(r.loss).all() and r.loss[0] == np.nanmin(r.history["total"][:2])


# -- bad input ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(variant="johnson"), "variant"),
        (dict(optimizer="sgd"), "optimizer"),
        (dict(steps=-1), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(steps=True), "steps"),
        (dict(callback_every=0), "callback_every"),
        (dict(variant="normalized", alpha=[1.0, 10.0]), "lambda_os"),
        (dict(variant="normalized", beta=10.0), "lambda_os"),
        (dict(lambda_os=0.1), "lambda_os"),
        (dict(alpha=-1.0), ">= 0"),
        (dict(lr=0.0), "lr"),
        (dict(lr=-1.0), "lr"),
        (dict(init="bogus"), "init"),
        (dict(style_layers=["relu4_4"]), "not a layer of vgg16"),
        (dict(content_layers="relu4_2"), r"\['relu4_2'\]"),
        (dict(device="tpu"), "device"),
    ],
)
def test_bad_arguments(run, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        run(**kwargs)


@pytest.mark.parametrize("tv_weight", [-1.0, float("nan"), float("inf")])
def test_bad_tv_weight(run, tv_weight):
    with pytest.raises(ValueError, match="tv"):
        run(tv_weight=tv_weight)


def test_no_images(run):
    with pytest.raises(ValueError, match="neither"):
        run(content=None, style=None)


def test_no_content_needs_size(run):
    with pytest.raises(ValueError, match="size="):
        run(content=None)


def test_init_content_without_content(run):
    with pytest.raises(ValueError, match="needs a content image"):
        run(content=None, size=32, init="content")


def test_nothing_to_optimize(run):
    with pytest.raises(ValueError, match="nothing to optimize"):
        run(style=None, alpha=0)


def test_image_too_small_for_the_layers(run):
    with pytest.raises(ValueError, match=r"8x8 px, too small for layer relu5_1.*16x16"):
        run(content=torch.rand(3, 8, 8))
    run(content=torch.rand(3, 8, 8), style=None, steps=1)  # relu4_2 alone needs only 8 px
    with pytest.raises(ValueError, match=r"style image is 8x8 px, too small for layer relu5_1"):
        run(style_size=8)


def test_bad_image_fails_before_the_network_runs(run, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        run(content=tmp_path / "missing.png")


# -- saving and settings ----------------------------------------------------------------------------------

def test_save_writes_png_and_json(run, tmp_path):
    r = run(steps=2, alpha=[1.0, 10.0], **FAST)
    path = r.save(tmp_path / "out.png", index=1)
    assert path == tmp_path / "out.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "out.png"]  # no temp files
    assert torch.allclose(load_image(path), r.image[1:2], atol=0.5 / 255 + 1e-6)
    meta = json.loads((tmp_path / "out.json").read_text())
    assert meta["settings"]["variant"] == "gatys" and meta["settings"]["alpha"] == [1.0, 10.0]
    assert meta["steps_done"] == 2 and meta["batch_index"] == 1 and meta["stopped"] is None
    assert meta["final_loss"] == pytest.approx(float(r.loss[1]))
    assert "RANDOM" in meta["weights"]


@pytest.mark.parametrize("alpha", [1.0, [1.0, 2.0], torch.tensor([1.0, 2.0]), np.array([1.0, 2.0]), np.float32(2.0)],
                         ids=["float", "list", "tensor", "numpy", "numpy-scalar"])
def test_settings_are_json(run, alpha):
    r = run(alpha=alpha, steps=0, style_layers={"relu1_1": 1.0, "relu2_1": torch.tensor(0.5)})
    text = json.dumps(r.settings)
    back = json.loads(text)
    for key in ("content", "style", "size", "variant", "content_layers", "style_layers", "alpha", "beta",
                "init", "seed", "optimizer", "steps", "lr", "device", "pooling", "arch", "torch", "nstlib"):
        assert key in back, key
    assert back["arch"] == "vgg16" and back["optimizer"] == "lbfgs" and back["lr"] is None  # L-BFGS has no lr
    assert back["style_layers"] == {"relu1_1": 1.0, "relu2_1": 0.5}


def test_settings_name_the_files(run, make_image_file):
    content, style = make_image_file("c.png", size=(32, 32)), make_image_file("s.jpg", size=(32, 32))
    r = run(content=content, style=style, steps=0)
    assert r.settings["content"] == str(content) and r.settings["style"] == str(style)


def test_no_warnings_on_a_normal_run(run):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(steps=1, **FAST)
