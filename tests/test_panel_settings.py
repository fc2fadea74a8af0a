"""nstlib.panel_settings without widgets: dict and JSON round trips, the RunSettings they make."""

from __future__ import annotations

import json

import pytest

from nstlib.panel_settings import CPU_SIZE, PanelSettings
from nstlib.settings import RunSettings

KEYS = ["content", "style", "style2", "blend", "colors", "preset", "size", "steps", "optimizer", "variant", "style_loss", "alpha_over_beta",
        "lambda_os", "style_layer_set", "style_weights", "content_layer", "init", "pooling", "tv_weight", "seed",
        "device", "weights"]


def test_dict_has_the_panels_keys_in_order_and_round_trips():
    s = PanelSettings(variant="normalized", lambda_os=1e-3, seed=3,
                      style_weights={"relu1_1": 0.5, "relu2_1": 0.0, "relu3_1": 2.0, "relu4_1": 0.2, "relu5_1": 0.2})
    d = s.to_dict()
    assert list(d) == KEYS
    assert PanelSettings.from_dict(d) == s
    d["style_weights"]["relu1_1"] = 9.0
    assert s.style_weights["relu1_1"] == 0.5, "to_dict returns a copy"
    assert PanelSettings().to_dict()["style_weights"] == {f"relu{i}_1": 0.2 for i in range(1, 6)}


def test_json_round_trip_and_the_saved_file():
    s = PanelSettings(content="path:/tmp/me.png", style2="starry_night", blend=0.25, colors="histogram-pca")
    text = s.to_json()
    assert list(json.loads(text)) == KEYS
    assert PanelSettings.from_json(text) == s
    saved = json.dumps({"panel": s.to_dict(), "steps_done": 3})  # what TuningPanel.save writes
    assert PanelSettings.from_json(saved) == s


def test_missing_keys_keep_the_base_and_unknown_keys_are_named():
    base = PanelSettings(size=64, seed=5)
    s = PanelSettings.from_dict({"seed": 7}, base=base)
    assert (s.size, s.seed, base.seed) == (64, 7, 5)
    assert PanelSettings.from_dict({}).size == CPU_SIZE
    with pytest.raises(ValueError, match=r"unknown settings \['colour', 'sizes'\]"):
        PanelSettings.from_dict({"sizes": 64, "colour": "x", "seed": 1})


def test_run_settings_gatys():
    rs = PanelSettings(preset="paper", steps=7, seed=2, tv_weight=0.5, init="content", optimizer="adam",
                       content_layer="relu3_2", style_weights={"relu1_1": 0.5, "relu2_1": 0.0, "relu3_1": 2.0}).run_settings()
    assert isinstance(rs, RunSettings)
    assert (rs.variant, rs.content_layers, rs.style_layers) == ("gatys", ("relu3_2",), {"relu1_1": 0.5, "relu3_1": 2.0})
    assert (rs.tv_weight, rs.init, rs.seed, rs.optimizer, rs.steps, rs.device) == (0.5, "content", 2, "adam", 7, "cpu")
    assert (rs.alpha, rs.beta, rs.lambda_os) == (1.0, 1000.0, None)
    assert rs.scales is None and rs.size == CPU_SIZE and rs.weights == "torchvision" and rs.pooling == "avg"


def test_run_settings_normalized():
    rs = PanelSettings(variant="normalized", lambda_os=1e-3).run_settings()
    assert rs.variant == "normalized" and rs.lambda_os == 1e-3
    assert rs.alpha is None and rs.beta is None
    assert rs.style_weights is None and rs.preserve_colors is None


def test_run_settings_second_style_and_colours():
    rs = PanelSettings(style2="starry_night", blend=0.25, colors="histogram-pca").run_settings()
    assert rs.style_weights == (0.75, 0.25)
    assert rs.preserve_colors == "histogram" and rs.color_method == "pca"
    rs = PanelSettings(colors="luminance").run_settings()
    assert rs.preserve_colors == "luminance" and rs.color_method == "cholesky"
    assert PanelSettings(colors="histogram-cholesky").run_settings().color_method == "cholesky"


def test_every_style_layer_off():
    off = {f"relu{i}_1": 0.0 for i in range(1, 6)}
    with pytest.raises(ValueError, match="every style layer is switched off: tick at least one, or use the gatys loss"):
        PanelSettings(variant="normalized", style_weights=off).run_settings()
    assert PanelSettings(style_weights=off).run_settings().style_layers == {}, "gatys: a reconstruction"


def test_presets_fast_and_paper():
    fast = PanelSettings()  # the panel's default on a CPU
    assert (fast.preset, fast.init) == ("fast", "content")
    rs = fast.run_settings()
    assert rs.init == "content" and rs.precision == "auto" and rs.optimizer == "lbfgs"
    assert (rs.scales, rs.steps) == ((96, 192), (80, 30))
    assert fast.describe_schedule() == "scales 96 → 192 px, steps 80 + 30, from the photo"
    big = PanelSettings(size=512, steps=50).run_settings()
    assert (big.scales, big.steps) == ((128, 256, 512), (50, 30, 30)), "the command line's fast scales at 512 px"
    assert PanelSettings(size=40, steps=6).schedule() == (None, 6), "too small for a coarser scale"
    paper = PanelSettings(preset="paper", init="noise", steps=150)
    rs = paper.run_settings()
    assert (rs.init, rs.scales, rs.steps, rs.noise_level) == ("noise", None, 150, 1.0)
    assert paper.describe_schedule() == f"one scale, {CPU_SIZE} px, 150 steps, from noise"
    with pytest.raises(ValueError, match="preset must be one of"):
        PanelSettings(preset="turbo").run_settings()


def test_old_saved_panel_json_without_preset_loads_with_the_default():
    old = {k: v for k, v in PanelSettings(init="noise", steps=150, size=128).to_dict().items() if k != "preset"}
    s = PanelSettings.from_json(json.dumps({"panel": old, "steps_done": 150}))
    assert s.preset == "fast" and (s.init, s.steps, s.size) == ("noise", 150, 128)


def test_alpha_over_beta_is_on_the_papers_scale_given_the_networks_factor():
    # K = r* / 1e-3 of the loaded network (nstlib.paper_scale.scale): the run's alpha/beta is the control's times K.
    rs = PanelSettings(alpha_over_beta=1e-4).run_settings(82.0)
    assert rs.alpha / rs.beta == pytest.approx(1e-4 * 82.0)
    assert PanelSettings(alpha_over_beta=1e-4).run_settings().alpha / PanelSettings(alpha_over_beta=1e-4).run_settings().beta \
        == pytest.approx(1e-4), "without a factor the control is the raw loss's alpha/beta"
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="paper_scale must be a positive number"):
            PanelSettings().run_settings(bad)
    assert PanelSettings(variant="normalized").run_settings(82.0).lambda_os == pytest.approx(1e-2), "normalized: no factor"


def test_the_panels_fast_is_the_librarys_draft():
    # A live preview wants a fixed, quick schedule: the panel's "fast" runs the library's draft
    # (no convergence test), whatever the command line's default does.
    rs = PanelSettings(preset="fast", size=192).run_settings()
    assert rs.tolerance is None and list(rs.steps) == [80, 30]
    with pytest.raises(ValueError, match="'fast', 'paper'"):
        PanelSettings(preset="draft").run_settings()
