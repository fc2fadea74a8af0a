"""Colour preservation and style blending in `stylize` (Gatys et al. 2017), on small tensors.

Random weights show the bookkeeping (targets, settings, errors); what the techniques do to a
picture is tested with the pretrained weights in test_pretrained_beyond.py.
"""

from __future__ import annotations

import pytest
import torch

from nstlib import color, losses
from nstlib.stylize import stylize

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = dict(content_layers=["relu3_1"], style_layers=["relu1_1", "relu2_1"], steps=2, progress=False, precision="float32")


@pytest.fixture
def run(random_vgg16, content_image, style_image):
    def go(content=content_image, style=style_image, **kw):
        return stylize(content, style, extractor=random_vgg16, **{**FAST, **kw})
    return go


def test_blended_target_is_the_weighted_sum_of_grams(random_vgg16, style_image):
    other = torch.rand(1, 3, 40, 24, generator=torch.Generator().manual_seed(5))
    layers = ["relu1_1", "relu2_1"]
    one = [losses.build_objective(random_vgg16, None, s, content_layers=[], style_layers=layers) for s in (style_image, other)]
    both = losses.build_objective(random_vgg16, None, [style_image, other], content_layers=[], style_layers=layers,
                                  style_blend=[3.0, 1.0])
    for n in layers:
        expected = 0.75 * one[0].style_targets[n] + 0.25 * one[1].style_targets[n]
        assert torch.allclose(both.style_targets[n], expected, rtol=1e-5)
        assert torch.allclose(both.style_energy[n], expected.pow(2).sum(), rtol=1e-4)


def test_gatys_blend_has_the_minimum_of_the_weighted_losses(random_vgg16, style_image):
    # sum_k w_k ||G - A_k||^2 = ||G - sum_k w_k A_k||^2 + const: the same gradient
    other = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(7)).requires_grad_(True)
    layers = ["relu2_1"]
    grads = []
    for objs, ws in (([losses.build_objective(random_vgg16, None, [style_image, other], content_layers=[],
                                               style_layers=layers, style_blend=[0.3, 0.7])], [1.0]),
                     ([losses.build_objective(random_vgg16, None, s, content_layers=[], style_layers=layers)
                       for s in (style_image, other)], [0.3, 0.7])):
        x.grad = None
        total = sum(w * o(random_vgg16.extract(x, layers), x)[0].sum() for o, w in zip(objs, ws))
        total.backward()
        grads.append(x.grad.clone())
    assert torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-6 * grads[1].abs().max().item())


def test_one_style_in_a_list_is_the_same_run(run, style_image):
    a, b = run(style=style_image), run(style=[style_image])
    assert torch.equal(a.image, b.image)
    assert b.settings["style_weights"] is None


def test_blend_settings(run, style_image):
    other = torch.rand(1, 3, 48, 32, generator=torch.Generator().manual_seed(5))
    r = run(style=[style_image, other], style_weights=[1, 3])
    assert r.settings["style_weights"] == [0.25, 0.75]
    assert r.settings["style"] == ["<Tensor>", "<Tensor>"]
    assert r.settings["style_size"] == [[32, 32], [32, 21]]   # each keeps its own aspect, longest side = output's


@pytest.mark.parametrize("weights, words", [([1.0], "one weight per style image"), ([1, -1], ">= 0"), ([0, 0], "not all 0"),
                                            ("0.5,0.5", "list of numbers")])
def test_bad_style_weights(run, style_image, weights, words):
    with pytest.raises((ValueError, TypeError), match=words):
        run(style=[style_image, style_image], style_weights=weights)


def test_empty_style_list(run):
    with pytest.raises(ValueError, match="empty list"):
        run(style=[])


def test_histogram_recolours_the_style_before_the_run(run, monkeypatch, content_image, style_image):
    seen = {}
    real = losses.build_objective

    def spy(net, content, style, **kw):
        seen["style"] = style
        return real(net, content, style, **kw)

    monkeypatch.setattr("nstlib.plan.build_objective", spy)
    r = run(preserve_colors="histogram", color_method="pca", steps=0)
    (recoloured,) = seen["style"]
    assert torch.allclose(recoloured, color.match_color(style_image, content_image, "pca"), atol=1e-6)
    assert r.settings["preserve_colors"] == "histogram" and r.settings["color_method"] == "pca"


def test_luminance_result_has_the_photos_chroma(run, content_image):
    r = run(preserve_colors="luminance", init="noise", steps=3)
    yiq_r, yiq_c = color.rgb_to_yiq(r.image), color.rgb_to_yiq(content_image)
    # chroma from the photo wherever the recombined pixel was not clipped
    inside = ((color.yiq_to_rgb(yiq_r) > 0.001) & (color.yiq_to_rgb(yiq_r) < 0.999)).all(1, keepdim=True)
    assert torch.allclose((yiq_r[:, 1:] * inside), (yiq_c[:, 1:] * inside), atol=2e-3)
    assert r.settings["preserve_colors"] == "luminance" and r.settings["color_method"] is None


def test_preserve_colors_errors(run, style_image):
    with pytest.raises(ValueError, match="'luminance', 'histogram'"):
        run(preserve_colors="yes")
    with pytest.raises(ValueError, match="needs|there is none"):
        stylize(None, style_image, size=32, preserve_colors="luminance", **FAST)
    with pytest.raises(ValueError, match="'cholesky', 'pca'"):
        run(preserve_colors="histogram", color_method="svd")


# -- spatial control ------------------------------------------------------------------------

def test_masks_from_a_label_image_sort_dark_to_light(make_image_file):
    import numpy as np
    from PIL import Image

    from nstlib import regions
    a = np.zeros((8, 12, 3), np.uint8)
    a[:, 6:] = (255, 255, 0)          # right half yellow (light), left half black (dark)
    a[:4, :6] = (200, 0, 0)           # top-left red (between)
    path = make_image_file("labels.png")
    Image.fromarray(a).save(path)
    m = regions.masks_from_labels(path, 3)
    assert m.shape == (3, 8, 12) and torch.equal(m.sum(0), torch.ones(8, 12))
    assert m[0, 7, 0] == 1 and m[1, 0, 0] == 1 and m[2, 0, 11] == 1      # black, red, yellow
    with pytest.raises(ValueError, match="3 distinct colour.*2 style image"):
        regions.masks_from_labels(path, 2)


def test_guided_gram_with_one_full_region_is_the_gram():
    from nstlib import regions
    f = torch.rand(2, 5, 6, 7, generator=torch.Generator().manual_seed(0))
    g = regions.guided_gram(f, torch.ones(1, 6, 7))
    assert g.shape == (2, 1, 5, 5)
    assert torch.allclose(g[:, 0], losses.gram_matrix(f, normalize=True), rtol=1e-5)
    half = torch.zeros(2, 6, 7)
    half[0, :, :3], half[1, :, 3:] = 1, 1
    g = regions.guided_gram(f, half)
    assert torch.allclose(g[:, 0], losses.gram_matrix(f[..., :3], normalize=True), rtol=1e-5)


def test_one_region_everywhere_is_the_plain_style_loss(random_vgg16, style_image, content_image):
    plain = losses.build_objective(random_vgg16, None, style_image, content_layers=[], style_layers=["relu1_1", "relu2_1"])
    guided = losses.build_objective(random_vgg16, None, [style_image], content_layers=[], style_layers=["relu1_1", "relu2_1"],
                                    style_masks=torch.ones(1, 32, 32))
    x = content_image
    for obj_a, obj_b in ((plain, guided),):
        a = obj_a(random_vgg16.extract(x, obj_a.layers), x)[0]
        b = obj_b(random_vgg16.extract(x, obj_b.layers), x)[0]
        assert torch.allclose(a, b, rtol=1e-4)


def test_style_masks_in_stylize(run, style_image):
    other = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    m = torch.zeros(2, 32, 32)
    m[0, :16], m[1, 16:] = 1, 1
    r = run(style=[style_image, other], style_masks=m)
    assert r.settings["style_masks"] == "<Tensor>" and r.settings["style_weights"] is None
    with pytest.raises(ValueError, match="exclude each other"):
        run(style=[style_image, other], style_masks=m, style_weights=[1, 1])
    with pytest.raises(ValueError, match=r"\(K, H, W\) must hold weights in \[0, 1\]|distinct colour"):
        run(style=[style_image, other], style_masks=m * 2)
    with pytest.raises(ValueError, match="no region"):
        run(style=[style_image, other], style_masks=torch.zeros(2, 32, 32))


def test_style_distance_of_a_region(random_vgg16, content_image, style_image):
    from nstlib import metrics
    layers = ("relu1_2", "relu2_2")
    whole = metrics.style_distance(random_vgg16, content_image, style_image, layers=layers)
    everywhere = metrics.style_distance(random_vgg16, content_image, style_image, layers=layers, mask=torch.ones(32, 32))
    assert torch.allclose(whole, everywhere, atol=1e-4)
    half = torch.zeros(32, 32)
    half[:, :16] = 1
    # the left half alone: the same as measuring the cropped image's own Gram at relu1_2 (no pooling before it)
    left = metrics.style_distance(random_vgg16, content_image, style_image, layers=("relu1_2",), mask=half)
    crop = metrics.style_distance(random_vgg16, content_image[..., :16], style_image, layers=("relu1_2",))
    assert not torch.allclose(left, whole, atol=1e-3)
    assert abs(left.item() - crop.item()) < 0.05
