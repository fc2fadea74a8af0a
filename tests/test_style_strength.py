"""Choi & Kim's claims, measured with `metrics.style_strength` and the pretrained weights.

Each test runs a small version of one of the paper's comparisons (48 px, the paper's layer sets,
initialised from the content image) and asserts what was measured on the shared ImageNet VGG-16
(Caffe) weights, with margins. Where a claim of the paper did NOT reproduce on this network, the
test says so and asserts the part that did; the numbers are in the comments and in notebook 5.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nstlib import images, losses, metrics, vgg
from nstlib.stylize import stylize

pytestmark = pytest.mark.pretrained

SIZE = 48
STYLES = ("starry_night", "the_scream", "shipwreck")
WEIGHTS = [1e-2, 1e-1, 1e0, 1e1]


@pytest.fixture(scope="module")
def setup(pretrained_net, paper_images):
    net = pretrained_net
    photo = images.load_image(paper_images / "tubingen.jpg", SIZE)
    styles = {k: images.load_image(paper_images / f"{k}.jpg", SIZE) for k in STYLES}
    return net, photo, styles, list(vgg.choi_kim_style_layers(net.arch))


def _sweep(net, photo, style, layers, variant):
    kw = dict(alpha=WEIGHTS, beta=1.0) if variant == "gatys" else dict(variant="normalized", lambda_os=WEIGHTS)
    r = stylize(photo, style, extractor=net, content_layers=["relu4_2"], style_layers=layers, init="content",
                optimizer="adam", lr=0.04, steps=60, progress=False, **kw)
    return metrics.style_strength(net, r.image, photo, style).numpy()


def test_one_decade_of_lambda_os_serves_three_styles(setup):
    """Fig. 2a vs 6a. Measured (48 px, Adam 60 steps, one batch per sweep, weights 1e-2 .. 1e1):

    strength  original (alpha)      normalized (lambda_os)
    starry    1.12 1.12 1.00 0.71   0.96 0.94 0.61 0.20
    scream    1.06 1.05 0.84 0.53   0.99 0.83 0.46 0.15
    shipwreck 1.12 1.11 0.83 0.47   1.17 1.03 0.47 0.18
    normalized: the lambda_os giving strength 0.4 / 0.6 spreads 0.32 / 0.41 decades over the three
    paintings. original: Starry Night never gets down to 0.6 within alpha <= 10 while the others
    do, so its spread is larger than that of the normalized loss but not measurable in this sweep.
    A longer sweep (64 px, L-BFGS 50 steps, 9 weights, notebook 5) gave original spreads of
    0.04-0.75 decades and normalized 0.15-0.96: on this VGG-16 the original loss does not need
    100x different alpha/beta for different paintings, so "much less spread" does not reproduce
    clearly. What does: one decade of lambda_os serves all three, which the test asserts.
    """
    net, photo, styles, layers = setup
    strength = {(k, v): _sweep(net, photo, styles[k], layers, v) for k in STYLES for v in ("gatys", "normalized")}
    for (k, v), s in strength.items():
        print(f"strength {k:13} {v:10}", np.round(s, 2))
    for target in (0.4, 0.6):
        norm = [metrics.weight_for_strength(WEIGHTS, strength[k, "normalized"], target) for k in STYLES]
        assert not any(math.isnan(x) for x in norm), (target, strength)
        orig = [metrics.weight_for_strength(WEIGHTS, strength[k, "gatys"], target) for k in STYLES]
        print(f"strength {target}: spread normalized {max(norm) - min(norm):.2f}, original {max(orig) - min(orig):.2f} decades")
        assert max(norm) - min(norm) < 1.0, f"normalized spread at strength {target}: {norm}"
    # Both losses' strength falls monotonically (within noise) as the content weight rises.
    for key, s in strength.items():
        assert s[0] > s[-1] + 0.3, (key, s)


def test_raising_one_layer_100x_moves_every_layer_with_the_normalized_loss(setup):
    """Fig. 2b vs 6b. Measured gain of the emphasised layer's own strength (x100 vs all 0.2):
    original   relu1_2 +0.77  relu2_2 +0.14  relu3_3 +0.23  relu4_3 +0.02  relu5_3 +0.00
    normalized relu1_2 +0.33  relu2_2 +0.31  relu3_3 +0.26  relu4_3 +0.49  relu5_3 +0.22
    (reproduces: with the original loss the deep layers do not respond at all).
    """
    net, photo, styles, layers = setup
    style = styles["starry_night"]
    n = len(layers)
    weights = {layer: [0.2] + [20.0 if j == i else 0.2 for j in range(n)] for i, layer in enumerate(layers)}
    gains = {}
    for variant, kw in (("gatys", dict(alpha=1e-1, beta=1.0)), ("normalized", dict(variant="normalized", lambda_os=1e-1))):
        r = stylize(photo, style, extractor=net, content_layers=["relu4_2"], style_layers=weights, init="content",
                    optimizer="adam", lr=0.03, steps=70, progress=False, **kw)
        per_layer = metrics.style_strength(net, r.image, photo, style, layers=layers, per_layer=True)
        gains[variant] = np.array([(per_layer[l][i + 1] - per_layer[l][0]).item() for i, l in enumerate(layers)])
    print("gains", {k: np.round(v, 2) for k, v in gains.items()})
    assert gains["normalized"].min() > 0.08, gains
    assert gains["gatys"].min() < 0.05, gains  # the original loss leaves at least one layer unmoved


def test_normalized_balance_does_not_depend_on_resolution(setup, paper_images):
    """Fig. 2c vs 6c, the mechanism. The original content loss is a sum over positions while the
    style loss is per position, so at twice the size the content term weighs ~4x more against the
    style term; the normalized loss divides both by their targets' energy, so the balance stays.
    Measured on the same pair of images (photo, painting) at 48 and 96 px: the ratio of weighted
    content to weighted style loss grows 4.8x with the original loss and 1.24x with the normalized.
    """
    net, _, _, layers = setup
    growth = {}
    for variant in ("gatys", "normalized"):
        ratio = []
        for size in (48, 96):
            photo = images.load_image(paper_images / "tubingen.jpg", size)
            style = images.load_image(paper_images / "starry_night.jpg", size)
            x = images.resize(images.load_image(paper_images / "the_scream.jpg"), tuple(photo.shape[-2:]))
            obj = losses.build_objective(net, photo, style, content_layers=["relu4_2"], style_layers=layers,
                                         variant=variant, pixels=photo.shape[-2] * photo.shape[-1])
            with torch.no_grad():
                _, parts = obj(net.extract(x, obj.layers), x)
            content = sum(float(obj.content_weights[n] * parts[f"content:{n}"]) for n in obj.content_targets)
            style_term = sum(float(obj.style_weights[n] * parts[f"style:{n}"]) for n in obj.style_targets)
            ratio.append(content / style_term)
        growth[variant] = ratio[1] / ratio[0]
    print("content/style balance growth 48 -> 96 px:", growth)
    assert growth["gatys"] > 2.5, growth
    assert 0.5 < growth["normalized"] < 2.0, growth


def test_strength_across_resolutions_end_to_end(setup, paper_images):
    """Fig. 2c vs 6c, end to end: the same settings at 48 and 80 px (L-BFGS, 25 steps). Measured:
    original  alpha=1: 0.94 -> 0.86; normalized lambda_os=0.1: 0.81 -> 0.85, lambda_os=1: 0.42 -> 0.30.
    Does NOT reproduce at these sizes: both variants change by about 0.1. At 48-80 px and a fixed
    step count, the loss balance (previous test) is not what limits the result; receptive fields
    and convergence are. The test bounds the normalized change, which is what the paper claims.
    """
    net, _, _, layers = setup
    for kw in (dict(lambda_os=0.1), dict(lambda_os=1.0)):
        s_at = []
        for size in (48, 80):
            photo = images.load_image(paper_images / "tubingen.jpg", size)
            style = images.load_image(paper_images / "starry_night.jpg", size)
            r = stylize(photo, style, extractor=net, variant="normalized", content_layers=["relu4_2"], style_layers=layers,
                        init="content", steps=25, progress=False, **kw)
            s_at.append(metrics.style_strength(net, r.image, photo, style).item())
        print("normalized", kw, np.round(s_at, 2))
        assert abs(s_at[1] - s_at[0]) < 0.25, (kw, s_at)
