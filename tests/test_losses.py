"""nstlib.losses: each formula against a direct computation, and the Objective's bookkeeping."""

from __future__ import annotations

import pytest
import torch

from nstlib.losses import (
    Objective,
    as_batch_weight,
    build_objective,
    content_loss,
    gram_matrix,
    layer_weight_dict,
    normalized_content_loss,
    normalized_style_loss,
    style_loss,
    tv_loss,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest


def feats(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# -- Gram matrices ---------------------------------------------------------------------------------

def test_gram_matrix_against_loop():
    f = feats(2, 3, 4, 5)
    g = gram_matrix(f)
    assert g.shape == (2, 3, 3)
    for b in range(2):
        for i in range(3):
            for j in range(3):
                expected = sum(float(f[b, i, y, x] * f[b, j, y, x]) for y in range(4) for x in range(5))
                assert abs(float(g[b, i, j]) - expected) < 1e-9
    assert torch.allclose(g, g.transpose(1, 2))  # symmetric


def test_gram_matrix_batch_items_are_independent():
    f = feats(3, 4, 6, 6)
    g = gram_matrix(f)
    for b in range(3):
        assert torch.allclose(g[b : b + 1], gram_matrix(f[b : b + 1]))


def test_gram_matrix_normalize_divides_by_positions():
    f = feats(1, 4, 6, 7)
    assert torch.allclose(gram_matrix(f, normalize=True), gram_matrix(f) / 42)
    # per-position Grams of an image and of the same texture tiled twice agree
    tiled = torch.cat([f, f], dim=3)
    assert torch.allclose(gram_matrix(tiled, normalize=True), gram_matrix(f, normalize=True))


@pytest.mark.parametrize("shape", [(2, 5, 4, 6), (1, 1, 3, 3), (1, 4, 1, 1)])
def test_gram_matrix_of_channels_last_features_is_the_same_and_keeps_the_layout(shape):
    # bfloat16 runs hand the Grams channels_last maps (nstlib.precision.extract); the Gram reads
    # them as (B, H*W, C) and its gradient must come back in that layout, with the same values.
    f = feats(*shape)
    f_last = f.clone(memory_format=torch.channels_last).requires_grad_(True)
    f_first = f.clone().requires_grad_(True)
    w = feats(shape[0], shape[1], shape[1], seed=1)
    (gram_matrix(f_last, normalize=True) * w).sum().backward()
    (gram_matrix(f_first, normalize=True) * w).sum().backward()
    assert torch.allclose(gram_matrix(f_last), gram_matrix(f), atol=1e-12)
    assert torch.allclose(f_last.grad, f_first.grad, atol=1e-12)
    if shape[1] > 1 and shape[2] * shape[3] > 1:
        assert f_last.grad.is_contiguous(memory_format=torch.channels_last) and not f_last.grad.is_contiguous()


def test_gram_matrix_bad_shape():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        gram_matrix(feats(4, 6, 6))


# -- zero for identical inputs ------------------------------------------------------------------

def test_losses_zero_for_identical_inputs():
    f = feats(2, 8, 5, 5)
    a = gram_matrix(f, normalize=True)
    assert torch.all(content_loss(f, f) == 0)
    assert torch.all(style_loss(f, a) == 0)
    assert torch.all(normalized_content_loss(f, f) == 0)
    assert torch.all(normalized_style_loss(f, a) == 0)
    for loss in (content_loss(f, f), style_loss(f, a), normalized_content_loss(f, f), normalized_style_loss(f, a)):
        assert loss.shape == (2,)


def test_losses_positive_for_different_inputs():
    f, p = feats(2, 8, 5, 5, seed=1), feats(1, 8, 5, 5, seed=2)
    a = gram_matrix(p, normalize=True)
    for loss in (content_loss(f, p), style_loss(f, a), normalized_content_loss(f, p), normalized_style_loss(f, a)):
        assert loss.shape == (2,) and torch.all(loss > 0)


# -- the formulas ------------------------------------------------------------------------------------

def test_content_loss_formula():
    f, p = feats(2, 3, 4, 4, seed=1), feats(1, 3, 4, 4, seed=2)
    loss = content_loss(f, p)
    for b in range(2):
        assert torch.isclose(loss[b], 0.5 * ((f[b] - p[0]) ** 2).sum())


def test_gatys_style_loss_equals_paper_formula():
    # E_l = 1 / (4 N^2 M^2) * sum_ij (G_ij - A_ij)^2 with raw Grams, when the sizes match
    n, h, w = 6, 5, 4
    m = h * w
    f, s = feats(2, n, h, w, seed=1), feats(1, n, h, w, seed=2)
    g, a = gram_matrix(f), gram_matrix(s)
    paper = ((g - a) ** 2).sum(dim=(1, 2)) / (4 * n**2 * m**2)
    ours = style_loss(f, gram_matrix(s, normalize=True))
    assert torch.allclose(ours, paper, rtol=1e-10)


def test_style_loss_with_another_style_size():
    # A style texture tiled to twice the size has the same per-position statistics: loss 0.
    s = feats(1, 4, 6, 6, seed=3)
    big = torch.cat([s, s], dim=2)
    assert float(style_loss(s, gram_matrix(big, normalize=True))) < 1e-20


def test_normalized_losses_are_divided_by_target_energy():
    f, p = feats(2, 5, 4, 4, seed=1), feats(1, 5, 4, 4, seed=2)
    expected = ((f - p) ** 2).sum(dim=(1, 2, 3)) / (p**2).sum()
    assert torch.allclose(normalized_content_loss(f, p), expected)
    energy = (p**2).flatten(1).sum(1)
    assert torch.allclose(normalized_content_loss(f, p, energy), expected)

    a = gram_matrix(p, normalize=True)
    g = gram_matrix(f, normalize=True)
    expected = ((g - a) ** 2).sum(dim=(1, 2)) / (a**2).sum()
    assert torch.allclose(normalized_style_loss(f, a), expected)
    assert torch.allclose(normalized_style_loss(f, a, (a**2).flatten(1).sum(1)), expected)


@pytest.mark.parametrize("k", [1e-3, 7.0, 1e4])
def test_normalized_losses_are_scale_invariant(k):
    f, p = feats(2, 5, 4, 4, seed=1), feats(1, 5, 4, 4, seed=2)
    assert torch.allclose(normalized_content_loss(k * f, k * p), normalized_content_loss(f, p), rtol=1e-9)
    a, ka = gram_matrix(p, normalize=True), gram_matrix(k * p, normalize=True)
    assert torch.allclose(normalized_style_loss(k * f, ka), normalized_style_loss(f, a), rtol=1e-9)
    # ... whereas the Gatys losses grow with the scale (k^2 and k^4)
    assert torch.allclose(content_loss(k * f, k * p), k**2 * content_loss(f, p), rtol=1e-9)
    assert torch.allclose(style_loss(k * f, ka), k**4 * style_loss(f, a), rtol=1e-9)


def test_tv_loss_checkerboard():
    n = 6
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    board = ((yy + xx) % 2).float().view(1, 1, n, n)
    assert float(tv_loss(board)) == 2 * n * (n - 1)
    assert tv_loss(torch.cat([board, 0.5 * board])).tolist() == [2 * n * (n - 1), 0.5 * n * (n - 1)]


def test_tv_loss_constant_image_and_gradient():
    assert torch.all(tv_loss(torch.full((2, 3, 5, 5), 0.7)) == 0)
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 3, 4)  # steps of 1 along width
    assert float(tv_loss(ramp)) == 3 * 3


def test_shape_mismatch_errors():
    with pytest.raises(ValueError, match="same size"):
        content_loss(feats(1, 3, 4, 4), feats(1, 3, 4, 5))
    with pytest.raises(ValueError, match="same size"):
        normalized_content_loss(feats(1, 3, 4, 4), feats(1, 2, 4, 4))
    with pytest.raises(ValueError, match="target Gram"):
        style_loss(feats(1, 3, 4, 4), torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="target Gram"):
        normalized_style_loss(feats(1, 3, 4, 4), torch.zeros(3, 3))


# -- weights -----------------------------------------------------------------------------------------

def test_layer_weight_dict():
    assert layer_weight_dict(["a", "b", "c", "d"], "x") == {n: 0.25 for n in "abcd"}
    assert layer_weight_dict({"a": 2.0}, "x") == {"a": 2.0}
    assert layer_weight_dict([], "x") == {}
    with pytest.raises(TypeError, match=r"\['relu4_2'\]"):
        layer_weight_dict("relu4_2", "content_layers")
    with pytest.raises(ValueError, match="twice"):
        layer_weight_dict(["a", "a"], "style_layers")


def test_as_batch_weight():
    assert as_batch_weight(2.0, "w").ndim == 0
    assert as_batch_weight([1, 10], "w").tolist() == [1.0, 10.0]
    for bad in (-1.0, float("nan"), float("inf"), [1.0, -2.0]):
        with pytest.raises(ValueError, match="finite and >= 0"):
            as_batch_weight(bad, "w")
    with pytest.raises(ValueError, match="1-D"):
        as_batch_weight([[1.0]], "w")


# -- the objective -----------------------------------------------------------------------------------

def test_objective_gatys_weights_and_zero_at_targets(random_vgg16, content_image, style_image):
    obj = build_objective(
        random_vgg16, content_image, style_image,
        content_layers=["relu4_2"], style_layers=["relu1_1", "relu2_1", "relu3_1", "relu4_1"],
        content_weight=2.0, style_weight=1e3, tv_weight=0.5,
    )
    assert isinstance(obj, Objective) and obj.variant == "gatys"
    assert obj.layers == ("relu4_2", "relu1_1", "relu2_1", "relu3_1", "relu4_1")
    assert float(obj.content_weights["relu4_2"]) == 2.0
    assert all(float(w) == 250.0 for w in obj.style_weights.values())  # 1e3 * 1/4
    with torch.no_grad():
        total, parts = obj(random_vgg16.extract(content_image, obj.layers), content_image)
    assert set(parts) == {"content:relu4_2", "style:relu1_1", "style:relu2_1", "style:relu3_1", "style:relu4_1", "tv"}
    assert float(parts["content:relu4_2"]) == 0  # the content image reproduces its own content
    expected = 2.0 * parts["content:relu4_2"] + 250.0 * sum(parts[f"style:{n}"] for n in obj.style_targets) + 0.5 * parts["tv"]
    assert torch.allclose(total, expected)
    with torch.no_grad():
        _, parts = obj(random_vgg16.extract(style_image, obj.layers), style_image)
    assert all(float(parts[f"style:{n}"]) < 1e-12 for n in obj.style_targets)  # ... and style its style


def test_objective_normalized_weights(random_vgg16, content_image, style_image):
    obj = build_objective(
        random_vgg16, content_image, style_image, variant="normalized",
        content_layers={"relu4_2": 3.0}, style_layers={"relu1_2": 1.0, "relu2_2": 3.0},
        content_weight=0.01, style_weight=1.0, pixels=32 * 32,
    )
    # layer weights normalized to sum 1, everything times w = H * W
    assert torch.isclose(obj.content_weights["relu4_2"], torch.tensor(0.01 * 1024))
    assert torch.isclose(obj.style_weights["relu1_2"], torch.tensor(0.25 * 1024))
    assert torch.isclose(obj.style_weights["relu2_2"], torch.tensor(0.75 * 1024))
    with torch.no_grad():
        total, parts = obj(random_vgg16.extract(content_image, obj.layers), content_image)
        assert float(parts["content:relu4_2"]) == 0
        _, parts = obj(random_vgg16.extract(style_image, obj.layers), style_image)
        assert all(float(parts[f"style:{n}"]) < 1e-10 for n in obj.style_targets)
    assert "tv" not in parts


def test_objective_batch_weights(random_vgg16, content_image, style_image):
    obj = build_objective(
        random_vgg16, content_image, style_image, content_layers=["relu2_1"], style_layers=["relu1_1"],
        content_weight=[1.0, 10.0], style_weight=5.0,
    )
    assert obj.content_weights["relu2_1"].tolist() == [1.0, 10.0]
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        total, parts = obj(random_vgg16.extract(x, obj.layers), x)
    assert total.shape == (2,)
    assert torch.allclose(total, torch.tensor([1.0, 10.0]) * parts["content:relu2_1"] + 5.0 * parts["style:relu1_1"])


@pytest.mark.parametrize("variant", ["gatys", "normalized"])
def test_objective_batch_gradient_is_each_items_own(random_vgg16, content_image, style_image, variant):
    # Why a batch of Adam runs is a set of independent runs: nothing in the loss couples items.
    def grad(x, **weights):
        obj = build_objective(random_vgg16, content_image, style_image, content_layers=["relu2_1"],
                              style_layers={"relu1_1": weights.pop("w11"), "relu2_1": 1.0}, variant=variant,
                              tv_weight=1e-3, **weights)
        x = x.clone().requires_grad_(True)
        obj(random_vgg16.extract(x, obj.layers), x)[0].sum().backward()
        return x.grad

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    together = grad(x, content_weight=[1.0, 100.0], w11=[0.0, 2.0])
    first, second = grad(x[:1], content_weight=1.0, w11=0.0), grad(x[1:], content_weight=100.0, w11=2.0)
    # Equal up to float rounding (batched convolutions sum in another order), so compare norms:
    # single elements near zero differ by ~1e-3 relative, which is what Adam can amplify.
    for item, own in ((together[:1], first), (together[1:], second)):
        assert ((item - own).norm() / own.norm()).item() < 1e-5
    assert not torch.allclose(together[0], together[1])  # the two items do get different losses


def test_objective_without_images(random_vgg16, content_image):
    obj = build_objective(random_vgg16, content_image, None, content_layers=["relu2_1"], style_layers=["relu1_1"])
    assert obj.layers == ("relu2_1",) and not obj.style_targets
    obj = build_objective(random_vgg16, None, content_image, content_layers=["relu2_1"], style_layers=["relu1_1"])
    assert obj.layers == ("relu1_1",) and not obj.content_targets


def test_build_objective_bad_input(random_vgg16, content_image):
    with pytest.raises(ValueError, match="variant"):
        build_objective(random_vgg16, content_image, None, content_layers=["relu2_1"], style_layers=[], variant="johnson")
    with pytest.raises(ValueError, match="not a layer of vgg16"):
        build_objective(random_vgg16, content_image, None, content_layers=["relu4_4"], style_layers=[])
    with pytest.raises(ValueError, match="must not all be zero"):
        build_objective(random_vgg16, None, content_image, content_layers=[], style_layers={"relu1_1": 0.0}, variant="normalized")


def test_gram_gradient_is_exact():
    """The Gram's hand-written backward (symmetry: dF = (dG + dG^T) F) matches finite differences."""
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: gram_matrix(t, normalize=True), (x,))


def test_balance_ratio_is_the_photos_style_loss_over_the_paintings_content_loss():
    from nstlib import images, vgg
    from nstlib.losses import balance_ratio, build_objective
    net = vgg.load_vgg("random:vgg16:0")
    g = torch.Generator().manual_seed(0)
    photo, painting = torch.rand(1, 3, 40, 48, generator=g), torch.rand(1, 3, 32, 32, generator=g)
    layers = {"relu1_1": 0.5, "relu3_1": 2.0}
    obj = build_objective(net, photo, painting, content_layers=["relu4_2"], style_layers=layers)
    stand_in = images.resize(painting, (40, 48))
    with torch.no_grad():
        _, at_photo = obj(net.extract(photo, obj.layers), photo)
        _, at_painting = obj(net.extract(stand_in, obj.layers), stand_in)
    style = 0.5 * at_photo["style:relu1_1"] + 2.0 * at_photo["style:relu3_1"]
    expected = (style / at_painting["content:relu4_2"]).item()
    assert balance_ratio(net, photo, painting, style_layers=layers) == pytest.approx(expected, rel=1e-6)
    # Twice the style weights: the balance moves by the same factor.
    doubled = {n: 2 * w for n, w in layers.items()}
    assert balance_ratio(net, photo, painting, style_layers=doubled) == pytest.approx(2 * expected, rel=1e-5)
