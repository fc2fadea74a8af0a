"""nstlib.style_losses: the four other style losses against direct formulas, their gradients, what each
is blind to, and their way through build_objective, RunSettings, stylize, the command line and the panel."""

from __future__ import annotations

import json

import pytest
import torch

from nstlib import style_losses as S
from nstlib.losses import build_objective, gram_energy, gram_matrix, normalized_style_loss, style_loss
from nstlib.panel_settings import PanelSettings
from nstlib.settings import RunSettings
from nstlib.stylize import stylize

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest
OTHERS = ("mean-std", "mmd-gaussian", "w2", "sliced")


def feats(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def loss_of(kind: str, x: torch.Tensor, target: S.StyleTarget, seed: int = 1) -> torch.Tensor:
    return target.loss(x, torch.Generator().manual_seed(seed))


# -- each loss against its formula ---------------------------------------------------------------

def test_mean_std_is_the_per_channel_mean_and_std():
    x, y = feats(2, 4, 5, 6), feats(1, 4, 7, 3, seed=1)
    t = S.style_target("mean-std", y)
    sd_x, mu_x = torch.std_mean(x.flatten(2), dim=2, unbiased=False)
    sd_y, mu_y = torch.std_mean(y.flatten(2), dim=2, unbiased=False)
    expected = ((mu_x - mu_y) ** 2 + (sd_x - sd_y) ** 2).mean(1)
    assert torch.allclose(loss_of("mean-std", x, t), expected, atol=1e-5)


def test_newton_schulz_square_root_and_inverse():
    a = feats(2, 6, 6)
    a = a @ a.transpose(1, 2) + 0.5 * torch.eye(6, dtype=torch.float64)
    root, inv = S.sqrtm_newton_schulz(a, iters=30)
    assert torch.allclose(root @ root, a, atol=1e-10)
    assert torch.allclose(root @ inv, torch.eye(6, dtype=torch.float64).expand(2, 6, 6), atol=1e-10)


def _sqrtm_eigh(a: torch.Tensor) -> torch.Tensor:
    e, v = torch.linalg.eigh(a)
    return (v * e.clamp_min(0).sqrt()[..., None, :]) @ v.transpose(-1, -2)


def test_w2_is_the_wasserstein_distance_of_the_gaussian_fits():
    x, y = feats(1, 5, 6, 6) * 2 + 1, feats(1, 5, 8, 4, seed=1)
    t = S.style_target("w2", y)
    xm, ym = x.flatten(2)[0], y.flatten(2)[0]
    cx, cy = torch.cov(xm, correction=0), torch.cov(ym, correction=0)
    eps = float(t.stats["eps"])
    cx, cy = cx + eps * torch.eye(5, dtype=torch.float64), cy + eps * torch.eye(5, dtype=torch.float64)
    r = _sqrtm_eigh(cy)
    w2 = (xm.mean(1) - ym.mean(1)).pow(2).sum() + torch.trace(cx + cy - 2 * _sqrtm_eigh(r @ cx @ r))
    assert torch.allclose(loss_of("w2", x, t), w2[None] / 5, rtol=1e-6)


def test_gaussian_mmd2_against_kernel_matrices():
    x, y = feats(1, 3, 4, 5), feats(1, 3, 4, 5, seed=1)
    xs, ys = x.flatten(2)[0].T, y.flatten(2)[0].T
    bw = S.mmd_bandwidth2(y.flatten(2))
    assert torch.allclose(bw, torch.cdist(ys, ys).pow(2).mean())  # the mean squared distance over all pairs of style vectors
    k = lambda a, b: torch.exp(-torch.cdist(a, b).pow(2) / (2 * bw))  # noqa: E731
    expected = k(xs, xs).mean() + k(ys, ys).mean() - 2 * k(xs, ys).mean()  # over all pairs, as notebook 8 writes it
    assert torch.allclose(S.gaussian_mmd2(xs[None], ys[None], bw), expected[None], atol=1e-12)


def test_gaussian_mmd_loss_is_the_distance_between_mean_fourier_features():
    x, y = feats(2, 3, 4, 5), feats(1, 3, 6, 5, seed=1)
    t = S.style_target("mmd-gaussian", y)
    w, b = t.stats["freqs"], t.stats["phases"]
    assert w.shape == (3, S.MMD_MIN_FEATURES) and b.shape == (S.MMD_MIN_FEATURES,)   # 4 C = 12 < the least
    assert S.fourier_features(256, 1.0)[0].shape == (256, S.MMD_FEATURES * 256)
    phi = lambda f: (2 / w.shape[1]) ** 0.5 * torch.cos(w.T @ f.flatten(2) + b[:, None])  # noqa: E731  (B, D, M)
    expected = (phi(x).mean(2) - phi(y).mean(2)).pow(2).sum(1)
    assert torch.allclose(loss_of("mmd-gaussian", x, t), expected, atol=1e-12)
    at_zero = ((2 / w.shape[1]) ** 0.5 * torch.cos(b) - phi(y).mean(2)).pow(2).sum(1)
    assert torch.allclose(t.energy(), at_zero, atol=1e-12)
    assert torch.equal(loss_of("mmd-gaussian", x, t, seed=1), loss_of("mmd-gaussian", x, t, seed=2)), "no random draws"


def test_fourier_features_estimate_the_kernel_and_the_mmd():
    """E[phi(x) . phi(y)] = k(x, y) (Rahimi & Recht): with many features the estimate is close."""
    x, y = feats(1, 4, 6, 6) * 0.7, feats(1, 4, 5, 5, seed=1)
    bw = S.mmd_bandwidth2(y.flatten(2))
    w, b = S.fourier_features(4, bw, d=50_000, seed=3)
    pairs = S.mean_fourier_features(x.flatten(2)[0, :, :1, None].permute(2, 0, 1), w, b), \
        S.mean_fourier_features(y.flatten(2)[0, :, :1, None].permute(2, 0, 1), w, b)
    k = torch.exp(-(x.flatten(2)[0, :, 0] - y.flatten(2)[0, :, 0]).pow(2).sum() / (2 * bw))
    assert float((pairs[0] * pairs[1]).sum()) == pytest.approx(float(k), abs=0.02)
    exact = S.gaussian_mmd2(x.flatten(2).transpose(1, 2), y.flatten(2).transpose(1, 2), bw)
    estimate = (S.mean_fourier_features(x.flatten(2), w, b) - S.mean_fourier_features(y.flatten(2), w, b)).pow(2).sum(1)
    assert float(estimate) == pytest.approx(float(exact), rel=0.1)


def test_gaussian_mmd_bandwidth_is_a_choice_and_checked():
    y = feats(1, 3, 4, 5, seed=1)
    wide, narrow = S.style_target("mmd-gaussian", y), S.style_target("mmd-gaussian", y, bandwidth2=0.5)
    assert torch.allclose(narrow.stats["freqs"] * 0.5 ** 0.5, wide.stats["freqs"] * S.mmd_bandwidth2(y.flatten(2)).sqrt())
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="a positive number"):
            S.style_target("mmd-gaussian", y, bandwidth2=bad)
    with pytest.raises(ValueError, match="s\\^2 of 'mmd-gaussian'.*for 'w2'"):
        S.style_target("w2", y, bandwidth2=1.0)


def test_gaussian_mmd_is_never_negative():
    """The loss is a squared distance between mean embeddings: no set of samples scores below the
    style's own (the unbiased estimate of MMD^2, pairs i != j, does, and an optimizer finds such sets)."""
    y = feats(1, 3, 6, 6, seed=1)
    t = S.style_target("mmd-gaussian", y)
    assert float(loss_of("mmd-gaussian", y, t)) == pytest.approx(0.0, abs=1e-12)
    x = (y + 0.5 * feats(1, 3, 6, 6, seed=2)).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.05)
    lowest = float("inf")
    for _ in range(100):  # minimize it from near the style (the unbiased estimate fell far below 0)
        opt.zero_grad()
        loss = loss_of("mmd-gaussian", x, t).sum()
        loss.backward()
        opt.step()
        lowest = min(lowest, loss.item())
    assert 0.0 <= lowest < 0.01 * float(t.energy())


def test_sliced_compares_sorted_projections():
    x, y = feats(1, 4, 3, 5), feats(1, 4, 5, 3, seed=1)
    t = S.style_target("sliced", y)
    d = S.random_directions(4, torch.Generator().manual_seed(1), torch.float64)
    px, py = (d.T @ x.flatten(2)[0]).sort(1).values, (d.T @ y.flatten(2)[0]).sort(1).values
    assert torch.allclose(loss_of("sliced", x, t), ((px - py) ** 2).mean()[None])
    other = S.style_target("sliced", feats(1, 4, 2, 3, seed=2))   # 6 positions: its quantiles interpolated to 15
    assert torch.isfinite(loss_of("sliced", x, other)).all()


# -- gradients, zeros, invariances ---------------------------------------------------------------

@pytest.mark.parametrize("kind", OTHERS)
def test_gradients_in_float64(kind):
    y = feats(1, 4, 3, 3, seed=1)
    t = S.style_target(kind, y)
    x = feats(2, 4, 3, 3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f: loss_of(kind, f, t), (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("kind", OTHERS)
def test_zero_for_identical_features(kind):
    y = feats(1, 6, 5, 5)
    t = S.style_target(kind, y)
    value = float(loss_of(kind, y, t))
    assert abs(value) < 1e-8 * float(t.energy()), value


@pytest.mark.parametrize("kind", OTHERS)
def test_positions_permuted(kind):
    x, y = feats(1, 5, 16, 16), feats(1, 5, 16, 16, seed=1)
    t = S.style_target(kind, y)
    perm = torch.randperm(256, generator=torch.Generator().manual_seed(3))
    shuffled = x.flatten(2)[:, :, perm].reshape(x.shape)
    a, b = float(loss_of(kind, x, t)), float(loss_of(kind, shuffled, t))
    assert b == pytest.approx(a, rel=1e-9)
    both = S.style_target(kind, y.flatten(2)[:, :, perm].reshape(y.shape))
    assert float(loss_of(kind, shuffled, both)) == pytest.approx(a, rel=1e-9)


def test_mean_std_ignores_channel_correlations_and_gram_does_not():
    y = feats(1, 4, 8, 8)
    y[:, 1] = y[:, 0] + 0.1 * y[:, 1]      # channels 0 and 1 strongly correlated
    g = torch.Generator().manual_seed(5)   # each channel's values shuffled on its own: same marginals, no correlation
    x = torch.stack([y[0, c].flatten()[torch.randperm(64, generator=g)] for c in range(4)]).reshape(1, 4, 8, 8)
    assert float(loss_of("mean-std", x, S.style_target("mean-std", y))) < 1e-12
    assert float(normalized_style_loss(x, gram_matrix(y, normalize=True))) > 0.01
    assert float(loss_of("w2", x, S.style_target("w2", y))) > 0.01
    assert float(loss_of("sliced", x, S.style_target("sliced", y))) > 0.01


def test_w2_and_gram_see_two_moments_only_sliced_sees_more():
    g = torch.Generator().manual_seed(0)
    gauss = torch.randn(3, 4096, generator=g, dtype=torch.float64)
    binary = (torch.randint(0, 2, (3, 4096), generator=g) * 2 - 1).double()   # +-1: a very different shape

    def whiten(z):  # exactly mean 0 and covariance I over the positions
        z = z - z.mean(1, keepdim=True)
        return torch.linalg.solve(torch.linalg.cholesky(torch.cov(z, correction=0)), z)

    x, y = whiten(gauss).reshape(1, 3, 64, 64), whiten(binary).reshape(1, 3, 64, 64)
    assert float(loss_of("w2", x, S.style_target("w2", y))) < 1e-6
    assert float(normalized_style_loss(x, gram_matrix(y, normalize=True))) < 1e-12
    assert float(loss_of("mean-std", x, S.style_target("mean-std", y))) < 1e-12
    t = S.style_target("sliced", y)
    assert float(loss_of("sliced", x, t)) / float(t.energy()) > 0.02
    # The Gaussian MMD sees every moment in principle, but with its wide bandwidth (s^2 = 2 tr Cov)
    # the kernel is nearly quadratic over the data, and the moments beyond the second weigh little;
    # a narrower kernel tells the two apart several times more clearly.
    wide = S.style_target("mmd-gaussian", y)
    narrow = S.style_target("mmd-gaussian", y, bandwidth2=float(S.mmd_bandwidth2(y.flatten(2))) / 10)
    seen_wide, seen_narrow = (float(loss_of("mmd-gaussian", x, t)) / float(t.energy()) for t in (wide, narrow))
    assert seen_wide < 0.02 and seen_narrow > 3 * seen_wide, (seen_wide, seen_narrow)


@pytest.mark.parametrize("kind", OTHERS)
def test_normalized_by_the_energy_is_scale_free(kind):
    x, y = feats(1, 4, 5, 5), feats(1, 4, 5, 5, seed=1)
    t, t10 = S.style_target(kind, y), S.style_target(kind, 10 * y)
    ratio = float(loss_of(kind, x, t) / t.energy())
    assert float(loss_of(kind, 10 * x, t10) / t10.energy()) == pytest.approx(ratio, rel=1e-3)
    zero = float(loss_of(kind, torch.zeros_like(x), t) / t.energy())
    assert zero == pytest.approx(1.0, rel=0.35)  # the energy is the loss of an all-zero map (sliced: its expectation)


# -- in the objective, the settings and the run --------------------------------------------------

def _image(seed: int, hw=(32, 32)) -> torch.Tensor:
    return torch.rand(1, 3, *hw, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", OTHERS)
def test_objective_parts_targets_and_seeded_draws(kind, random_vgg16):
    layers = ["relu1_1", "relu2_1"]
    make = lambda: build_objective(random_vgg16, _image(0), _image(1), content_layers=["relu2_2"], style_layers=layers,  # noqa: E731
                                   variant="normalized", style_loss=kind, seed=7)
    obj = make()
    assert set(obj.style_stats) == set(layers) and not obj.style_targets
    assert obj.layers == ("relu2_2", "relu1_1", "relu2_1")
    f = random_vgg16.extract(_image(2), list(obj.layers))
    total, parts = obj(f, _image(2))
    assert set(parts) == {"content:relu2_2", "style:relu1_1", "style:relu2_1"}
    expected = obj.style_stats["relu1_1"].loss(f["relu1_1"], torch.Generator().manual_seed(7)) / obj.style_energy["relu1_1"]
    assert torch.allclose(parts["style:relu1_1"], expected)
    again = make()
    assert torch.equal(again(f, _image(2))[0], total), "the same seed repeats the same draws"
    if kind == "sliced":
        assert not torch.equal(obj(f, _image(2))[0], total), "each evaluation draws afresh"
    else:
        assert torch.equal(obj(f, _image(2))[0], total), "nothing drawn: the same loss every evaluation"


@pytest.mark.parametrize("kind", OTHERS)
def test_gatys_variant_puts_every_loss_on_the_gram_scale(kind, random_vgg16):
    # one alpha/beta for every loss: at an all-zero feature map each layer's loss is the Gram E_l there,
    # times the loss's gain where it has one
    layers = ["relu1_1", "relu2_1"]
    style = _image(1)
    obj = build_objective(random_vgg16, None, style, content_layers=[], style_layers=layers, style_loss=kind, seed=7)
    f_style = random_vgg16.extract(style, layers)
    zeros = {n: torch.zeros_like(f_style[n]) for n in layers}
    _, parts = obj(zeros, _image(2))
    for n in layers:
        gram_at_zero = style_loss(zeros[n], gram_matrix(f_style[n], normalize=True))
        assert torch.allclose(gram_energy(f_style[n]), gram_at_zero)
        # near, not equal: sliced's energy is the expectation over directions, mean-std and w2 add an
        # eps to the variances
        rel = 0.35 if kind == "sliced" else 0.05
        gain = S.GATYS_GAIN.get(kind, 1.0)
        assert float(parts[f"style:{n}"]) == pytest.approx(gain * float(gram_at_zero), rel=rel), n
    # and the normalized variant is unchanged: the loss over its own energy
    norm = build_objective(random_vgg16, None, style, content_layers=[], style_layers=layers, style_loss=kind,
                           variant="normalized", seed=7)
    assert torch.allclose(norm.style_scale["relu1_1"], 1 / norm.style_energy["relu1_1"])


def test_gram_is_the_default_and_unchanged(random_vgg16):
    kw = dict(content_layers=["relu2_2"], style_layers=["relu1_1", "relu2_1"])
    a = build_objective(random_vgg16, _image(0), _image(1), **kw)
    b = build_objective(random_vgg16, _image(0), _image(1), style_loss="gram", seed=3, **kw)
    f = random_vgg16.extract(_image(2), list(a.layers))
    assert torch.equal(a(f, _image(2))[0], b(f, _image(2))[0]) and not a.style_stats
    assert torch.equal(a(f, _image(2))[1]["style:relu1_1"], style_loss(f["relu1_1"], a.style_targets["relu1_1"]))


def test_blends_masks_and_unknown_losses_are_refused(random_vgg16):
    kw = dict(content_layers=[], style_layers=["relu1_1"], style_loss="w2")
    with pytest.raises(ValueError, match="takes one style image, without style_masks"):
        build_objective(random_vgg16, None, [_image(1), _image(2)], **kw)
    with pytest.raises(ValueError, match="and masks"):
        build_objective(random_vgg16, None, [_image(1)], style_masks=torch.ones(1, 32, 32), **kw)
    with pytest.raises(ValueError, match=r"style_loss must be one of 'gram', 'mean-std', 'mmd-gaussian', 'w2', 'sliced', got 'wasserstein'"):
        build_objective(random_vgg16, None, _image(1), content_layers=[], style_layers=["relu1_1"], style_loss="wasserstein")


def test_run_settings_check_style_loss():
    assert RunSettings().style_loss == "gram" and RunSettings(style_loss="sliced").style_loss == "sliced"
    with pytest.raises(ValueError, match=r"style_loss must be one of 'gram', 'mean-std', 'mmd-gaussian', 'w2', 'sliced', got 'Gram'"):
        RunSettings(style_loss="Gram")
    with pytest.raises(ValueError, match="only style_loss='gram' does"):
        RunSettings(style_loss="w2", style_weights=(0.5, 0.5))
    s = RunSettings(style_loss="mmd-gaussian", variant="normalized")
    assert RunSettings.from_json(s.to_json()) == s


@pytest.mark.parametrize("kind", ("mean-std", "mmd-gaussian", "w2", "sliced"))
def test_stylize_with_each_loss_is_reproducible(kind, random_vgg16):
    kw = dict(size=32, steps=4, style_layers=["relu1_1", "relu2_1"], style_loss=kind, extractor=random_vgg16,
              progress=False, precision="float32")
    a, b = stylize(_image(0), _image(1), **kw), stylize(_image(0), _image(1), **kw)
    assert a.steps_done == 4 and torch.isfinite(torch.as_tensor(a.loss)).all()
    assert torch.equal(a.image, b.image) and a.settings["style_loss"] == kind
    assert any(k.startswith("style:") for k in a.history)


def test_stylize_gram_explicit_is_bit_identical(random_vgg16):
    kw = dict(size=32, steps=3, extractor=random_vgg16, progress=False, precision="float32")
    assert torch.equal(stylize(_image(0), _image(1), **kw).image, stylize(_image(0), _image(1), style_loss="gram", **kw).image)


def test_command_line_style_loss(tmp_path, capsys):
    from nstlib import cli_options
    from nstlib.cli import main

    assert cli_options.STYLE_LOSSES == S.STYLE_LOSSES
    torch.manual_seed(0)
    for name, seed in (("content.png", 0), ("style.png", 1)):
        from nstlib.images import save_image
        save_image(_image(seed, (32, 40)), tmp_path / name)
    out = tmp_path / "out.png"
    code = main(["stylize", str(tmp_path / "content.png"), str(tmp_path / "style.png"), "-o", str(out), "--size", "40",
                 "--steps", "3", "--no-progress", "--weights", "random:vgg16:0", "--style-loss", "sliced"])
    assert code == 0, capsys.readouterr().err
    assert json.loads(out.with_suffix(".json").read_text())["settings"]["style_loss"] == "sliced"
    assert RunSettings.from_json(out).style_loss == "sliced"


def test_panel_style_loss_and_old_saved_json():
    assert PanelSettings(style_loss="w2").run_settings().style_loss == "w2"
    assert PanelSettings().run_settings().style_loss == "gram"
    old = {k: v for k, v in PanelSettings(seed=4).to_dict().items() if k != "style_loss"}
    s = PanelSettings.from_json(json.dumps({"panel": old}))
    assert s.style_loss == "gram" and s.seed == 4
