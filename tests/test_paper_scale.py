"""The course's one content/style convention: alpha/beta on the paper's scale (nstlib.paper_scale)."""

import weakref

import pytest

from nstlib import data, losses, paper_scale


@pytest.fixture
def fresh_cache(monkeypatch):
    monkeypatch.setattr(paper_scale, "_scales", weakref.WeakKeyDictionary())


def test_k_is_r_star_of_the_reference_pair_over_the_papers_ratio(random_vgg16, fresh_cache):
    layers = ("relu1_1", "relu2_1", "relu3_1")
    photo, _ = data.load_or_fallback("tubingen", size=paper_scale.CALIBRATION_SIZE)
    painting, _ = data.load_or_fallback("starry_night", size=paper_scale.CALIBRATION_SIZE)
    r_star = losses.balance_ratio(random_vgg16, photo, painting, style_layers=list(layers))
    assert paper_scale.scale(random_vgg16, layers) == pytest.approx(r_star / 1e-3, rel=1e-6)
    # the paper's 1e-3 is r* itself: alpha = r*, beta = 1
    assert paper_scale.weights(random_vgg16, 1e-3, list(layers)) == {"alpha": pytest.approx(r_star, rel=1e-6), "beta": 1.0}
    assert paper_scale.weights(random_vgg16, 1e-5, layers)["alpha"] == pytest.approx(r_star * 1e-2, rel=1e-6)


def test_k_is_measured_once_per_network_and_layer_set(random_vgg16, random_vgg19, fresh_cache, monkeypatch):
    calls = []
    real = losses.balance_ratio
    monkeypatch.setattr(losses, "balance_ratio", lambda *a, **k: calls.append(k["style_layers"]) or real(*a, **k))
    k1 = paper_scale.scale(random_vgg16, ["relu1_1", "relu2_1"])
    assert paper_scale.scale(random_vgg16, ("relu1_1", "relu2_1")) == k1 and len(calls) == 1
    paper_scale.scale(random_vgg16, ["relu1_1"])
    paper_scale.scale(random_vgg19, ["relu1_1", "relu2_1"])
    assert len(calls) == 3, "another layer set or another network is calibrated again"


@pytest.mark.parametrize("ratio", [0, -1e-3, float("nan"), float("inf"), "1e-3", True, None])
def test_a_ratio_that_is_not_a_positive_number_is_refused(random_vgg16, ratio):
    with pytest.raises(ValueError, match=r"ratio \(alpha/beta on the paper's scale, e.g. 1e-3\) must be a positive number"):
        paper_scale.weights(random_vgg16, ratio, ["relu1_1"])


@pytest.mark.parametrize("layers", [[], "relu1_1", [1, 2]])
def test_style_layers_must_be_names(random_vgg16, layers):
    with pytest.raises(ValueError, match="style_layers must be a non-empty sequence of layer names"):
        paper_scale.scale(random_vgg16, layers)
