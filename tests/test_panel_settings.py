"""nstlib.panel_settings without widgets: dict and JSON round trips, stylize's arguments."""

from __future__ import annotations

import json

import pytest

from nstlib.panel_settings import PanelSettings

KEYS = ["content", "style", "style2", "blend", "colors", "size", "steps", "optimizer", "variant", "alpha_over_beta",
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
    assert PanelSettings.from_dict({}).size == 128
    with pytest.raises(ValueError, match=r"unknown settings \['colour', 'sizes'\]"):
        PanelSettings.from_dict({"sizes": 64, "colour": "x", "seed": 1})


def test_stylize_kwargs_gatys():
    kw = PanelSettings(steps=7, seed=2, tv_weight=0.5, init="content", optimizer="adam", content_layer="relu3_2",
                       style_weights={"relu1_1": 0.5, "relu2_1": 0.0, "relu3_1": 2.0}).stylize_kwargs()
    assert kw == {"variant": "gatys", "content_layers": ["relu3_2"], "style_layers": {"relu1_1": 0.5, "relu3_1": 2.0},
                  "tv_weight": 0.5, "init": "content", "seed": 2, "optimizer": "adam", "steps": 7, "device": "cpu",
                  "alpha": 1.0, "beta": 1000.0}


def test_stylize_kwargs_normalized():
    kw = PanelSettings(variant="normalized", lambda_os=1e-3).stylize_kwargs()
    assert kw["variant"] == "normalized" and kw["lambda_os"] == 1e-3
    assert "alpha" not in kw and "beta" not in kw
    assert "style_weights" not in kw and "preserve_colors" not in kw


def test_stylize_kwargs_second_style_and_colours():
    kw = PanelSettings(style2="starry_night", blend=0.25, colors="histogram-pca").stylize_kwargs()
    assert kw["style_weights"] == [0.75, 0.25]
    assert kw["preserve_colors"] == "histogram" and kw["color_method"] == "pca"
    kw = PanelSettings(colors="luminance").stylize_kwargs()
    assert kw["preserve_colors"] == "luminance" and kw["color_method"] == "cholesky"
    assert PanelSettings(colors="histogram-cholesky").stylize_kwargs()["color_method"] == "cholesky"


def test_every_style_layer_off():
    off = {f"relu{i}_1": 0.0 for i in range(1, 6)}
    with pytest.raises(ValueError, match="every style layer is switched off: tick at least one, or use the gatys loss"):
        PanelSettings(variant="normalized", style_weights=off).stylize_kwargs()
    assert PanelSettings(style_weights=off).stylize_kwargs()["style_layers"] == {}, "gatys: a reconstruction"
