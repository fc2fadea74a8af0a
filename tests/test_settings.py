"""nstlib.settings.RunSettings: checks in one place, numbers of any kind, JSON that reproduces a run."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from nstlib.cli import main
from nstlib.images import load_image, save_image
from nstlib.settings import RunSettings
from nstlib.stylize import stylize

SMALL = dict(content_layers=["relu2_1"], style_layers=["relu1_1", "relu2_1"], precision="float32")


def test_numbers_of_any_kind_are_numbers():
    s = RunSettings(steps=np.int64(200), seed=torch.tensor(3), optimizer="adam", lr=np.float32(0.5), noise_level=torch.tensor(0.25),
                    size=np.int32(64), scales=[np.int64(32)], tv_weight=np.float64(1.5), alpha=torch.tensor(2.0))
    assert (s.steps, s.seed, s.lr, s.size, s.scales, s.tv_weight, s.alpha) == (200, 3, 0.5, 64, (32,), 1.5, 2.0)
    assert type(s.steps) is int and type(s.seed) is int and type(s.lr) is float
    assert s.noise_level == pytest.approx(0.25)
    assert RunSettings(steps=[np.int64(3), 4]).steps == (3, 4)
    json.dumps(s.to_dict())  # all plain JSON


@pytest.mark.parametrize("kw, error, words", [
    (dict(steps=2.5), ValueError, "steps"),
    (dict(optimizer="sgd"), ValueError, "optimizer must be one of"),
    (dict(variant="gatys", lambda_os=1.0), ValueError, "lambda_os"),
    (dict(variant="normalized", beta=1.0), ValueError, "alpha and beta"),
    (dict(style_layers="relu1_1"), TypeError, "write ['relu1_1']"),
    (dict(scales="32,64"), TypeError, "list of sizes"),
    (dict(scales=[64, 32]), ValueError, "increase"),
    (dict(pooling="median"), ValueError, "pooling must be one of"),
    (dict(precision="half"), ValueError, "precision must be one of"),
    (dict(style_weights=[1, -1]), ValueError, ">= 0"),
    (dict(size=(1, 2, 3)), ValueError, "two positive ints"),
])
def test_checks_say_what_was_expected(kw, error, words):
    with pytest.raises(error) as e:
        RunSettings(**kw)
    assert words in str(e.value)


def test_replace_is_checked_and_an_unknown_name_gets_a_hint():
    s = RunSettings.preset("fast", 512)
    assert dataclasses.replace(s, beta=1e4).beta == 1e4
    with pytest.raises(ValueError, match="steps"):
        dataclasses.replace(s, steps=-1)
    with pytest.raises(TypeError, match="did you mean 'steps'"):
        s.replace(stepz=3)
    with pytest.raises(TypeError, match="did you mean 'steps'"):
        stylize(torch.rand(1, 3, 32, 32), None, stepz=3)


def test_json_round_trip():
    s = RunSettings.preset("fast", (300, 200), beta=[1e3, 1e4], style_layers={"relu1_1": 0.5, "relu2_1": 1.0})
    assert RunSettings.from_json(s.to_json()) == s


def test_the_saved_json_reproduces_the_picture(random_vgg16, tmp_path):
    g = torch.Generator().manual_seed(0)
    photo, painting = torch.rand(1, 3, 40, 48, generator=g), torch.rand(1, 3, 48, 48, generator=g)
    first = stylize(photo, painting, extractor=random_vgg16, progress=False, size=40, scales=[24], steps=[3, 2],
                    init="content", tv_weight=0.5, beta=[1e2, 1e3], **SMALL)
    first.save(tmp_path / "out.png")
    again = stylize(photo, painting, RunSettings.from_json(tmp_path / "out.json"), extractor=random_vgg16, progress=False)
    assert torch.equal(first.image, again.image)
    assert again.settings["steps"] == [3, 2] and again.settings["scales"] == [24, 40]


def test_an_old_saved_json_still_loads():
    old = {"settings": {"content": "photo.jpg", "style": ["a.jpg", "b.jpg"], "size": [192, 256],
                        "style_size": [[256, 200], [256, 256]], "style_weights": [0.5, 0.5], "style_masks": None,
                        "preserve_colors": None, "color_method": None, "variant": "gatys",
                        "content_layers": {"relu4_2": 1.0}, "style_layers": {"relu1_1": 0.2}, "alpha": 1.0,
                        "beta": 1000.0, "lambda_os": None, "tv_weight": 0.0, "init": "noise", "noise_level": 1.0,
                        "seed": 0, "optimizer": "lbfgs", "steps": 300, "scales": None, "precision": "bfloat16",
                        "precision_reason": "auto: measured", "lr": 1.0, "device": "cpu", "pooling": "avg",
                        "arch": "vgg19", "memory_estimate_mb": 300, "nstlib": "0.1.0", "torch": "2.5.0"}}
    s = RunSettings.from_json(json.dumps(old))
    assert (s.size, s.style_size, s.style_weights, s.precision, s.color_method) == ((192, 256), 256, (0.5, 0.5),
                                                                                     "bfloat16", "cholesky")
    with pytest.raises(ValueError, match=r"unknown run settings 'stepz' \(did you mean 'steps'\?\)"):
        RunSettings.from_json(json.dumps({"settings": {"stepz": 3}}))


def test_the_command_line_reads_settings_and_options_override_them(tmp_path, capsys):
    g = torch.Generator().manual_seed(1)
    photo, painting = tmp_path / "p.png", tmp_path / "s.png"
    save_image(torch.rand(1, 3, 40, 48, generator=g), photo)
    save_image(torch.rand(1, 3, 48, 48, generator=g), painting)
    common = ["--no-progress", "--weights", "random:vgg16:0"]
    first = tmp_path / "first.png"
    assert main(["stylize", str(photo), str(painting), "-o", str(first), "--size", "40", "--steps", "2", "--beta", "50",
                 "--precision", "float32", *common]) == 0
    again = tmp_path / "again.png"
    assert main(["stylize", str(photo), str(painting), "-o", str(again), "--settings", str(first.with_suffix(".json")),
                 *common]) == 0
    assert f"settings (from {first.with_suffix('.json')})" in capsys.readouterr().out
    a, b = (json.loads(p.with_suffix(".json").read_text())["settings"] for p in (first, again))
    assert a == b
    assert torch.equal(load_image(first), load_image(again))
    third = tmp_path / "third.png"
    assert main(["stylize", str(photo), str(painting), "-o", str(third), "--settings", str(first.with_suffix(".json")),
                 "--steps", "1", *common]) == 0
    c = json.loads(third.with_suffix(".json").read_text())["settings"]
    assert c["steps"] == 1 and c["beta"] == 50.0
    assert main(["stylize", str(photo), str(painting), "-o", str(third), "--settings", str(first), "--preset", "paper",
                 *common]) == 2
