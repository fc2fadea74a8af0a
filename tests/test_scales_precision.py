"""Coarse to fine, precision, stop reasons, presets and the independent measures, on small tensors.

A seeded random VGG-16 and images of 32-64 px: enough to check the plan of scales, the
bookkeeping across scales (history, best image, stopping at a coarse scale), that the losses
stay float32 when the network runs in bfloat16, and how `auto` decides. What bfloat16 does to
a real transfer is measured with the pretrained weights in test_pretrained_speed.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nstlib import metrics, precision as P
from nstlib.settings import FAST_LARGE_LAST_STEPS, FAST_LAST_STEPS, FAST_TOLERANCE, RunSettings
from nstlib.losses import build_objective, resolve_weights
from nstlib.stylize import StopOptimization, StopReason, plan_scales, scale_sizes, stylize

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = dict(content_layers=["relu3_1"], style_layers=["relu1_1", "relu2_1", "relu3_1"])


@pytest.fixture
def run(random_vgg16):
    g = torch.Generator().manual_seed(1)
    content, style = torch.rand(1, 3, 48, 64, generator=g), torch.rand(1, 3, 64, 64, generator=g)

    def go(**kw):
        kw.setdefault("precision", "float32")
        return stylize(kw.pop("content", content), kw.pop("style", style), extractor=random_vgg16, progress=False,
                       **{**FAST, **kw})

    return go


# -- the plan of scales ------------------------------------------------------------------------------

def test_scale_sizes_count_down_from_the_end():
    assert scale_sizes(128, 512) == [128, 181, 256, 362, 512]
    assert scale_sizes(128, 512, 2) == [128, 256, 512]
    assert scale_sizes(100, 256) == [128, 181, 256]
    assert scale_sizes(256, 256) == [256]


@pytest.mark.parametrize("start, end, factor", [(0, 256, 2), (300, 256, 2), (128, 256, 1.0), (128.0, 256, 2)])
def test_scale_sizes_rejects_bad_arguments(start, end, factor):
    with pytest.raises(ValueError):
        scale_sizes(start, end, factor)


def test_plan_keeps_the_aspect_and_shrinks_the_style_alike():
    plan = plan_scales((192, 256), [64, 128], [10, 5, 2], style_hw=(256, 200))
    assert [p.hw for p in plan] == [(48, 64), (96, 128), (192, 256)]
    assert [p.style_hw for p in plan] == [(64, 50), (128, 100), (256, 200)]
    assert [p.steps for p in plan] == [10, 5, 2]


def test_plan_appends_the_output_size_and_repeats_an_int_step_count():
    plan = plan_scales((64, 64), [32], 7)
    assert [(p.hw, p.steps) for p in plan] == [((32, 32), 7), ((64, 64), 7)]
    assert [p.hw for p in plan_scales((64, 64), None, 3)] == [(64, 64)]


@pytest.mark.parametrize("scales, steps, match", [
    ([64, 32], 3, "increase"),
    ([128], 3, "up to the output size"),
    ([0, 32], 3, "whole numbers"),
    ([32], [1, 2, 3], "one number per scale"),
    ([32], -1, ">= 0"),
    ([32], 2.5, "whole number"),
])
def test_plan_errors_say_what_to_do(scales, steps, match):
    with pytest.raises(ValueError, match=match):
        plan_scales((64, 64), scales, steps)


def test_plan_rejects_a_string_of_scales():
    with pytest.raises(TypeError, match="list of sizes"):
        plan_scales((64, 64), "32,64", 3)


# -- a run over several scales -----------------------------------------------------------------------

def test_history_has_a_block_per_scale_and_loss_is_the_output_sizes(run):
    r = run(scales=[32], steps=[4, 3])
    h = r.history
    assert r.image.shape == (1, 3, 48, 64) and r.steps_done == 7 and r.stop_reason is None
    assert list(h["scale"][:, 0]) == [0] * 4 + [1] * 3  # one row per L-BFGS step (one evaluation each)
    assert all(v.shape == (7, 1) for v in h.values())
    assert r.loss[0] == h["total"][4:].min()
    assert r.settings["scales"] == [32, 64] and r.settings["steps"] == [4, 3]


def test_a_single_scale_run_has_no_scale_column(run):
    assert "scale" not in run(steps=2).history


def test_gatys_content_weight_keeps_the_output_sizes_balance(run):
    """At a scale with 1/4 of the positions the content term is weighted 4x: the content loss sums over positions."""
    r = run(scales=[32], steps=[1, 1], alpha=2.0, beta=500.0)
    h = r.history
    style = sum(h[f"style:relu{b}_1"] for b in (1, 2, 3)) / 3
    coarse, fine = h["scale"][:, 0] == 0, h["scale"][:, 0] == 1
    factor = (48 * 64) / (24 * 32)
    np.testing.assert_allclose(h["total"][coarse], factor * 2.0 * h["content:relu3_1"][coarse] + 500.0 * style[coarse], rtol=1e-5)
    np.testing.assert_allclose(h["total"][fine], 2.0 * h["content:relu3_1"][fine] + 500.0 * style[fine], rtol=1e-5)


def test_the_normalized_variant_is_not_reweighted_per_scale(run):
    r = run(scales=[32], steps=[1, 1], variant="normalized", lambda_os=0.5)
    h = r.history
    for k in (0, 1):
        rows = h["scale"][:, 0] == k
        pixels = (24 * 32, 48 * 64)[k]
        style = sum(h[f"style:relu{b}_1"] for b in (1, 2, 3)) / 3
        np.testing.assert_allclose(h["total"][rows], pixels * (0.5 * h["content:relu3_1"][rows] + style[rows]), rtol=1e-5)


def test_callbacks_say_which_scale_runs(run):
    seen = []
    run(scales=[32], steps=[2, 2], callback=lambda i: seen.append((i.step, i.steps, i.scale, i.scales, i.size)), callback_every=1)
    assert seen == [(1, 4, 0, 2, (24, 32)), (2, 4, 0, 2, (24, 32)), (3, 4, 1, 2, (48, 64)), (4, 4, 1, 2, (48, 64))]


@pytest.mark.parametrize("how", ["callback", "stop", "ctrl-c"])
def test_stopping_at_a_coarse_scale_returns_its_best_image_at_the_output_size(run, how):
    import threading

    event = threading.Event()

    def cb(info):
        if info.step == 2:
            if how == "callback":
                raise StopOptimization
            if how == "ctrl-c":
                raise KeyboardInterrupt
            event.set()

    r = run(scales=[32], steps=[5, 5], callback=cb, callback_every=1, stop=event)
    expected = {"callback": StopReason.CALLBACK, "stop": StopReason.REQUEST, "ctrl-c": StopReason.INTERRUPTED}[how]
    assert r.stop_reason is expected and r.steps_done == 2
    assert r.image.shape == (1, 3, 48, 64)
    scale = r.history["scale"][:, 0]
    assert scale[-1] == 1 and (scale == 1).sum() == 1  # the upsampled image, evaluated at the output size
    assert np.isfinite(r.loss).all() and r.loss[0] == r.history["total"][-1, 0]


def test_stop_reason_is_saved_and_matches_the_text(run, tmp_path):
    r = run(steps=5, callback=lambda i: True, callback_every=2)
    assert r.stop_reason is StopReason.CALLBACK and r.stopped == "stopped by callback"
    import json

    meta = json.loads(r.save(tmp_path / "r.png").with_suffix(".json").read_text())
    assert meta["stop_reason"] == "callback" and meta["stopped"] == "stopped by callback"


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_coarse_to_fine_lowers_the_output_sizes_loss(run, optimizer, random_vgg16):
    """From noise, 2 scales reach a lower loss at the output size than the start had."""
    r = run(scales=[32], steps=[15, 10], optimizer=optimizer, init="noise")
    fine = r.history["total"][r.history["scale"][:, 0] == 1, 0]
    assert np.isfinite(fine).all() and fine.min() < fine[0]


def test_adam_carries_its_moments_to_the_next_scale(run, monkeypatch):
    """The second scale's Adam starts with the first's step count and resized moments, not from zero."""
    states = []
    original = torch.optim.Adam.step

    def spy(self, closure=None):
        p = self.param_groups[0]["params"][0]
        if p in self.state:
            states.append((tuple(p.shape), float(self.state[p]["step"])))
        return original(self, closure)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    run(scales=[32], steps=[3, 2], optimizer="adam")
    assert states[2] == ((1, 3, 48, 64), 3.0)  # first step at the output size: already 3 steps of history


def test_init_content_at_the_output_size_is_not_a_strided_view(random_vgg16):
    """The photo at exactly the output size used to reach L-BFGS as a non-contiguous tensor."""
    photo = torch.rand(1, 64, 64, 3).permute(0, 3, 1, 2)  # a channels-last view, as NumPy arrays give
    r = stylize(photo, torch.rand(1, 3, 64, 64), init="content", steps=2, extractor=random_vgg16, progress=False, **FAST)
    assert r.steps_done == 2


# -- precision -------------------------------------------------------------------------------------

def test_bfloat16_runs_the_network_but_the_losses_stay_float32(run, random_vgg16):
    r = run(steps=3, precision="bfloat16")
    assert r.settings["precision"] == "bfloat16" and r.image.dtype == torch.float32
    assert all(v.dtype == np.float32 for v in r.history.values())
    obj = build_objective(random_vgg16, torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32), content_layers=["relu2_1"],
                          style_layers=["relu1_1"], precision=P.Precision("bfloat16", "test"))
    assert all(t.dtype == torch.float32 for t in [*obj.content_targets.values(), *obj.style_targets.values()])


def test_bfloat16_features_come_channels_last_and_match_float32(random_vgg16):
    # channels_last is the layout oneDNN computes bfloat16 in (a 256 px step 0.24 -> 0.17 s here);
    # the image the loop optimizes stays contiguous, and its gradient too (L-BFGS flattens it).
    x = torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    bf16 = P.Precision("bfloat16", "test")
    feats = P.extract(random_vgg16, x, ["relu1_1", "relu3_1"], bf16)
    f32 = P.extract(random_vgg16, x, ["relu1_1", "relu3_1"], P.Precision("float32", "test"))
    for name, f in feats.items():
        assert f.dtype == torch.float32 and f.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(f, f32[name], rtol=0.05, atol=0.05 * float(f32[name].abs().max()))
    sum(f.sum() for f in feats.values()).backward()
    assert x.grad.is_contiguous() and torch.isfinite(x.grad).all()


def test_bfloat16_targets_make_the_photos_own_content_loss_zero(random_vgg16):
    """Targets are computed in the precision the image's features will be: no floor from rounding."""
    photo = torch.rand(1, 3, 32, 32)
    bf16 = P.Precision("bfloat16", "test")
    obj = build_objective(random_vgg16, photo, None, content_layers=["relu3_1"], style_layers=[], precision=bf16)
    total, _ = obj(P.extract(random_vgg16, photo, obj.layers, bf16), photo)
    assert float(total[0]) == 0.0


def test_precision_choices_and_errors():
    cpu = torch.device("cpu")
    assert P.resolve_precision("float32", cpu).name == "float32"
    assert P.resolve_precision("bfloat16", cpu).name == "bfloat16"
    with pytest.raises(ValueError, match="'auto', 'float32', 'bfloat16'"):
        P.resolve_precision("fp16", cpu)
    with pytest.raises(ValueError, match="MPS"):
        P.resolve_precision("bfloat16", torch.device("mps"))
    assert P.resolve_precision("auto", torch.device("mps")).name == "float32"


@pytest.mark.parametrize("native, expected", [(False, "float32"), (True, "bfloat16")])
def test_auto_decides_from_the_hardware(monkeypatch, native, expected):
    monkeypatch.delenv(P.ENV_VAR, raising=False)
    monkeypatch.setattr(P, "native_bfloat16", lambda device: native)
    chosen = P.resolve_precision("auto", torch.device("cpu"))
    assert chosen.name == expected and chosen.reason.startswith("auto")
    assert P.resolve_precision("auto", torch.device("cpu")) == chosen, "the same machine, the same choice"


def test_auto_never_times_anything(monkeypatch):
    # The same command on the same machine gives the same picture whatever the load: no clock is read.
    import time

    monkeypatch.delenv(P.ENV_VAR, raising=False)
    monkeypatch.setattr(time, "perf_counter", lambda: pytest.fail("auto read the clock"))
    P.resolve_precision("auto", torch.device("cpu"))


@pytest.mark.parametrize("forced", ["float32", "bfloat16"])
def test_nstlib_precision_forces_what_auto_resolves_to(monkeypatch, forced):
    monkeypatch.setenv(P.ENV_VAR, forced)
    chosen = P.resolve_precision("auto", torch.device("cpu"))
    assert chosen.name == forced and "NSTLIB_PRECISION" in chosen.reason
    other = "bfloat16" if forced == "float32" else "float32"
    assert P.resolve_precision(other, torch.device("cpu")).name == other, "an explicit precision still wins"


def test_nstlib_precision_is_checked(monkeypatch):
    monkeypatch.setenv(P.ENV_VAR, "fp16")
    with pytest.raises(ValueError, match="NSTLIB_PRECISION must be 'float32' or 'bfloat16'.*'fp16'"):
        P.resolve_precision("auto", torch.device("cpu"))


def test_a_onednn_cap_below_bfloat16_means_float32(monkeypatch):
    # ONEDNN_MAX_CPU_ISA=AVX2 (a laptop without AVX-512) forbids the native bfloat16 kernels.
    monkeypatch.delenv(P.ENV_VAR, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not P.native_bfloat16(torch.device("cpu"))
    assert P.resolve_precision("auto", torch.device("cpu")).name == "float32"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_amx")
    assert P.native_bfloat16(torch.device("cpu"))


# -- one place for the weights and the presets ----------------------------------------------------------

@pytest.mark.parametrize("variant, kw, match", [
    ("gatys", dict(lambda_os=1.0), "lambda_os"),
    ("normalized", dict(alpha=1.0), "alpha and beta"),
    ("cubist", {}, "variant must be one of"),
])
def test_weights_are_checked_in_one_place(run, variant, kw, match):
    with pytest.raises(ValueError, match=match):
        resolve_weights(variant, **kw)
    with pytest.raises(ValueError, match=match):
        run(variant=variant, **kw)


def test_weight_defaults():
    assert resolve_weights("gatys") == resolve_weights("gatys", 1.0, 1e3)
    w = resolve_weights("normalized")
    assert (w.content, w.style) == (1e-2, 1.0)


def test_style_layer_presets_are_accepted_by_name(run):
    r = run(steps=1, style_layers="choi-kim")
    assert list(r.settings["style_layers"]) == ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"]
    with pytest.raises(TypeError, match="list of layer names"):
        run(steps=1, style_layers="relu1_1")


def test_presets():
    draft = RunSettings.preset("draft", 512)
    assert list(draft.scales) == [128, 256, 512] and list(draft.steps) == [80, 30, 30] and draft.init == "content"
    assert draft.tolerance is None
    # fast: the same scales, the last one until converged (at most FAST_LAST_STEPS)
    fast = RunSettings.preset("fast", 512)
    assert list(fast.scales) == [128, 256, 512] and list(fast.steps) == [80, 30, FAST_LAST_STEPS]
    assert fast.tolerance == FAST_TOLERANCE and fast.init == "content"
    assert RunSettings.preset("fast", 128).scales is None and RunSettings.preset("fast", 128).steps == FAST_LAST_STEPS
    assert RunSettings.preset("draft", 128).steps == 80
    # above 512 px a converged picture costs minutes per 10 steps on a CPU: 30 steps at the output size
    large = RunSettings.preset("fast", 1024)
    assert list(large.scales) == [128, 256, 512, 1024] and list(large.steps) == [80, 30, 30, FAST_LARGE_LAST_STEPS]
    assert list(RunSettings.preset("fast", (768, 1024)).steps)[-1] == FAST_LARGE_LAST_STEPS
    assert RunSettings.preset("fast", 256, tolerance=None).tolerance is None, "changes win over the preset"
    assert list(RunSettings.preset("fast", (300, 200)).scales) == [150, 300]
    paper = RunSettings.preset("paper", 256)
    assert (paper.init, paper.scales, paper.steps, paper.tolerance) == ("noise", None, 300, None)
    with pytest.raises(ValueError, match="fast, draft, paper"):
        RunSettings.preset("quick")


def test_preset_runs_through_stylize(random_vgg16):
    s = RunSettings.preset("fast", 64, steps=[2, 1], scales=[32], precision="float32")
    r = stylize(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64), s, extractor=random_vgg16, progress=False)
    assert r.image.shape == (1, 3, 64, 64) and r.steps_done == 3


# -- the independent measures -----------------------------------------------------------------------------

def test_measures_of_a_picture(random_vgg16):
    g = torch.Generator().manual_seed(0)
    photo = torch.rand(1, 3, 64, 64, generator=g)
    smooth = torch.nn.functional.avg_pool2d(photo, 5, 1, 2)
    noisy = (smooth + 0.2 * torch.randn(1, 3, 64, 64, generator=g)).clamp(0, 1)
    assert float(metrics.noise_level(noisy)) > 3 * float(metrics.noise_level(smooth))
    assert float(metrics.edge_agreement(smooth, smooth)) == pytest.approx(1.0, abs=1e-5)
    assert float(metrics.edge_agreement(smooth, torch.rand(1, 3, 64, 64, generator=g))) < 0.3
    assert float(metrics.content_distance(random_vgg16, photo, photo)) == 0.0
    both = torch.cat([photo, noisy])
    d = metrics.style_distance(random_vgg16, both, photo)
    assert d.shape == (2,) and d[0] < d[1]
    with pytest.raises(ValueError, match="same size"):
        metrics.content_distance(random_vgg16, photo, torch.rand(1, 3, 32, 32))


def test_from_the_photo_the_finer_scale_gets_the_photos_detail_back(run):
    """Zero steps at every scale from the photo: the coarse photo upsampled plus the lost detail band is the photo."""
    photo = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(3))
    r = run(content=photo, scales=[32], steps=[0, 0], init="content")
    torch.testing.assert_close(r.image, photo, atol=1e-5, rtol=0)
    r = run(content=photo, scales=[32], steps=[0, 0], init="noise")
    assert r.image.shape == photo.shape and not torch.allclose(r.image, photo, atol=0.1)


def test_loss_plot_marks_the_scales(run):
    import matplotlib

    matplotlib.use("Agg")
    from nstlib.viz import plot_losses

    r = run(scales=[32], steps=[2, 2])
    fig = plot_losses(r)
    ax = fig.axes[0]
    assert "scale" not in [t.get_text() for t in ax.get_legend().get_texts()]
    assert len([ln for ln in ax.lines if ln.get_linestyle() == "-."]) == 1  # one boundary between two scales
