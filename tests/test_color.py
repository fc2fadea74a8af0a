"""nstlib.color: YIQ, luminance-only transfer's pre- and post-processing, colour histogram
matching (Gatys et al. 2017, section 5) and the chroma distance. Small random tensors, CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nstlib.color import (
    COLOR_METHODS,
    PRESERVE_COLORS,
    _affine_color_transform,
    as_grey_rgb,
    chroma_distance,
    luminance,
    match_color,
    match_luminance,
    palette_distance,
    recombine_luminance,
    rgb_to_yiq,
    yiq_to_rgb,
)

EPS = 1e-5


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def per_channel(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, 3, 1, 1)


def stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel mean (3,) and population covariance (3, 3) of one image, float64; written apart from the module's."""
    x = images[0].double().flatten(1)
    mu = x.mean(1)
    d = x - mu[:, None]
    return mu, d @ d.T / d.shape[1]


@pytest.fixture
def style() -> torch.Tensor:
    """Reddish, spread over R, narrow in G and B, channels independent."""
    return rand(1, 3, 20, 24, seed=1) * per_channel([1.0, 0.3, 0.2]) + per_channel([0.0, 0.3, 0.5])


@pytest.fixture
def content() -> torch.Tensor:
    """Other colours, correlated channels, a different size; any covariance-matched image stays in
    [0, 1] (means ~0.45, 3 standard deviations < 0.3), so clamping does not enter."""
    mix = torch.tensor([[0.2, 0.1, 0.0], [0.1, 0.2, 0.1], [0.0, 0.1, 0.3]])
    return 0.25 + torch.einsum("kc,bchw->bkhw", mix, rand(1, 3, 16, 18, seed=2))


# -- YIQ ----------------------------------------------------------------------------------------

def test_yiq_round_trip_is_exact():
    x = rand(2, 3, 7, 9)
    assert torch.allclose(yiq_to_rgb(rgb_to_yiq(x)), x, atol=1e-5, rtol=0)
    yiq = rgb_to_yiq(x)
    assert torch.allclose(rgb_to_yiq(yiq_to_rgb(yiq)), yiq, atol=1e-5, rtol=0)
    assert yiq.shape == x.shape and yiq.dtype == x.dtype


def test_luminance_of_white_black_and_greys():
    assert torch.allclose(luminance(torch.ones(1, 3, 2, 3)), torch.ones(1, 1, 2, 3), atol=1e-6)
    assert torch.allclose(luminance(torch.zeros(1, 3, 2, 3)), torch.zeros(1, 1, 2, 3), atol=1e-7)
    values = torch.linspace(0, 1, 12).view(1, 1, 3, 4)
    greys = values.repeat(1, 3, 1, 1)
    yiq = rgb_to_yiq(greys)
    assert torch.allclose(yiq[:, :1], values, atol=1e-6)
    assert yiq[:, 1:].abs().max() < 1e-6  # greys have no chroma
    assert torch.allclose(luminance(greys), yiq[:, :1])


def test_luminance_is_in_range_and_weights_green_most():
    y = luminance(rand(1, 3, 8, 8))
    assert y.shape == (1, 1, 8, 8) and float(y.min()) >= 0 and float(y.max()) <= 1
    r, g, b = (luminance(per_channel(c)).item() for c in ([1, 0, 0], [0, 1, 0], [0, 0, 1]))
    assert g > r > b  # 0.587, 0.299, 0.114


def test_as_grey_rgb_is_the_luminance_three_times():
    x = rand(2, 3, 5, 6)
    grey = as_grey_rgb(x)
    assert grey.shape == x.shape
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    assert torch.allclose(grey[:, :1], luminance(x))
    grey[:, 0] += 1  # its own memory, not a view shared across channels
    assert not torch.equal(grey[:, 0], grey[:, 1])


# -- luminance-only transfer --------------------------------------------------------------------

def test_match_luminance_has_the_contents_mean_and_std():
    style = 0.2 + 0.6 * rand(1, 3, 12, 10, seed=3)  # spread-out luminance
    content = 0.4 + 0.3 * rand(1, 3, 9, 14, seed=4)  # another size, brighter, narrower
    out = match_luminance(style, content)
    assert out.shape == style.shape
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])  # grey
    y_out, y_c, y_s = luminance(out), luminance(content), luminance(style)
    assert abs(y_out.mean() - y_c.mean()) < 1e-4
    assert abs(y_out.std(correction=0) - y_c.std(correction=0)) < 1e-4
    assert abs(y_s.std(correction=0) - y_c.std(correction=0)) > 0.01  # the test data did need matching
    # The layout is the style's: an increasing function of its luminance.
    assert np.corrcoef(y_out.flatten().numpy(), y_s.flatten().numpy())[0, 1] > 0.9999


def test_match_luminance_of_a_flat_style_is_flat_at_the_contents_mean():
    content = rand(1, 3, 6, 6, seed=5)
    out = match_luminance(torch.full((1, 3, 8, 8), 0.3), content)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, luminance(content).mean().expand_as(out), atol=1e-6)


def test_match_luminance_stays_in_range():
    # A dark style with one bright pixel, matched to a bright photo: the values would leave [0, 1].
    style = torch.full((1, 3, 6, 6), 0.1)
    style[..., 0, 0] = 1.0
    out = match_luminance(style, 0.5 + 0.5 * rand(1, 3, 6, 6, seed=6))
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_recombine_takes_luminance_from_the_result_and_chroma_from_the_photo():
    content = 0.3 + 0.4 * rand(1, 3, 10, 12, seed=7)  # mid-range: little clipping
    stylized = 0.2 + 0.6 * rand(1, 3, 10, 12, seed=8)
    out = recombine_luminance(stylized, content)
    assert out.shape == stylized.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    inside = ((out > 0) & (out < 1)).all(dim=1)  # pixels the clamp did not touch
    assert inside.float().mean() > 0.8
    yiq_out, yiq_c = rgb_to_yiq(out), rgb_to_yiq(content)
    assert torch.allclose(yiq_out[:, 1:][:, :, inside[0]], yiq_c[:, 1:][:, :, inside[0]], atol=1e-5)
    assert torch.allclose(yiq_out[:, 0][inside], luminance(stylized)[:, 0][inside], atol=1e-5)


def test_recombine_resizes_the_photo_and_pairs_batches():
    colour = per_channel([0.6, 0.4, 0.3])
    content = colour.expand(1, 3, 16, 20)  # one colour, twice the size
    stylized = 0.3 + 0.4 * rand(2, 3, 8, 10, seed=9)
    out = recombine_luminance(stylized, content)
    assert out.shape == (2, 3, 8, 10)
    assert torch.allclose(rgb_to_yiq(out)[:, 1:], rgb_to_yiq(colour)[:, 1:].expand(2, 2, 8, 10), atol=1e-5)
    assert torch.allclose(luminance(out), luminance(stylized), atol=1e-5)
    # Upsampling works too, and a random photo's chroma is its resized chroma.
    small = 0.3 + 0.4 * rand(1, 3, 4, 5, seed=10)
    assert recombine_luminance(stylized[:1], small).shape == (1, 3, 8, 10)


# -- colour histogram matching ------------------------------------------------------------------

@pytest.mark.parametrize("method", COLOR_METHODS)
def test_affine_transform_matches_mean_and_covariance(style, content, method):
    a, mu_s, mu_c = _affine_color_transform(style, content, method)
    assert a.shape == (1, 3, 3) and mu_s.shape == mu_c.shape == (1, 3) and a.dtype == torch.float64
    (ms, cs), (mc, cc) = stats(style), stats(content)
    assert torch.allclose(mu_s[0], ms, atol=1e-12) and torch.allclose(mu_c[0], mc, atol=1e-12)
    eye = EPS * torch.eye(3, dtype=torch.float64)
    assert torch.allclose(a[0] @ (cs + eye) @ a[0].T, cc + eye, atol=1e-12, rtol=0)  # A Sigma_s A^T = Sigma_c
    # Applied to the pixels, before any clamping: they land inside [0, 1] (so match_color's clamp
    # does not enter the next test) with the content's mean and covariance.
    x = a[0] @ (style[0].double().flatten(1) - mu_s[0][:, None]) + mu_c[0][:, None]
    assert float(x.min()) > 0 and float(x.max()) < 1
    mx, cx = stats(x.view(1, 3, *style.shape[-2:]))
    assert torch.allclose(mx, mc, atol=1e-10)
    assert torch.allclose(cx, cc, atol=3 * EPS, rtol=0)  # eps * I is added to both sides


@pytest.mark.parametrize("method", COLOR_METHODS)
def test_match_color_gives_the_contents_colour_statistics(style, content, method):
    out = match_color(style, content, method=method)
    assert out.shape == style.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    (mo, co), (mc, cc), (ms, cs) = stats(out), stats(content), stats(style)
    assert (ms - mc).abs().max() > 0.1 and (cs - cc).abs().max() > 0.01  # different to start with
    assert torch.allclose(mo, mc, atol=1e-3)
    assert torch.allclose(co, cc, atol=1e-4, rtol=0)  # covariances are ~0.005: 2 % of them
    assert chroma_distance(out, content) < 0.5 * chroma_distance(style, content)


def test_the_methods_differ_in_general(style, content):
    a_chol = _affine_color_transform(style, content, "cholesky")[0][0]
    a_pca = _affine_color_transform(style, content, "pca")[0][0]
    assert (a_chol - a_pca).abs().max() > 0.1
    assert torch.allclose(a_chol, a_chol.tril())  # L_c L_s^-1: lower triangular
    assert not torch.allclose(match_color(style, content, "cholesky"), match_color(style, content, "pca"), atol=1e-2)


def test_pca_treats_the_channels_alike_and_cholesky_does_not(style, content):
    """Reordering R, G, B (BGR) reorders PCA's A the same way; Cholesky's depends on the order."""
    p = torch.eye(3, dtype=torch.float64)[[2, 1, 0]]
    for method, same in (("pca", True), ("cholesky", False)):
        a = _affine_color_transform(style, content, method)[0][0]
        a_bgr = _affine_color_transform(style.flip(1), content.flip(1), method)[0][0]
        assert torch.allclose(a_bgr, p @ a @ p.T, atol=1e-10) == same, method


def test_cholesky_recovers_a_per_channel_gain(style):
    """content = D style + b with D diagonal: Cholesky's A is exactly D (with eps = 0)."""
    gain = per_channel([0.5, 1.5, 2.0])
    a, _, _ = _affine_color_transform(style, gain * style + 0.05, "cholesky", eps=0.0)
    assert torch.allclose(a[0], torch.diag(gain.flatten().double()), atol=1e-5)


@pytest.mark.parametrize("method", COLOR_METHODS)
def test_matching_an_image_to_itself_changes_nothing(style, method):
    a, mu_s, mu_c = _affine_color_transform(style, style, method)
    assert torch.allclose(a[0], torch.eye(3, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(mu_s, mu_c)
    assert torch.allclose(match_color(style, style, method), style, atol=1e-6)


def test_match_color_pairs_batches(style, content):
    styles = torch.cat([style, style.flip(1)])
    out = match_color(styles, content, "pca")
    assert out.shape == styles.shape
    assert torch.allclose(out[1:], match_color(style.flip(1), content, "pca"))
    with pytest.raises(ValueError, match="batch of 2"):
        match_color(styles, torch.cat([content] * 3))


def test_match_color_of_a_flat_style_has_no_nan(content):
    out = match_color(torch.full((1, 3, 5, 5), 0.4), content, "pca")
    assert torch.isfinite(out).all()
    assert torch.allclose(out, stats(content)[0].float().view(1, 3, 1, 1).expand_as(out), atol=1e-4)


def test_bad_method_says_what_is_allowed(style, content):
    with pytest.raises(ValueError) as e:
        match_color(style, content, method="chol")
    assert "'cholesky'" in str(e.value) and "'pca'" in str(e.value) and "'chol'" in str(e.value)


@pytest.mark.parametrize(
    "bad, error, words",
    [
        (torch.rand(3, 8, 8), ValueError, ["(B, 3, H, W)", "(3, 8, 8)", "unsqueeze(0)", "load_image"]),
        (torch.rand(1, 4, 8, 8), ValueError, ["(1, 4, 8, 8)", "load_image"]),
        (torch.rand(1, 3, 0, 8), ValueError, ["(1, 3, 0, 8)"]),
        (np.zeros((8, 8, 3)), TypeError, ["ndarray", "load_image"]),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), TypeError, ["uint8", "load_image"]),
    ],
)
def test_bad_images_say_what_was_expected(style, bad, error, words):
    for call in (lambda: match_color(bad, style), lambda: match_color(style, bad),
                 lambda: match_luminance(bad, style), lambda: recombine_luminance(style, bad),
                 lambda: chroma_distance(bad, style), lambda: rgb_to_yiq(bad)):
        with pytest.raises(error) as e:
            call()
        for w in words:
            assert w in str(e.value), (w, str(e.value))


def test_constants():
    assert COLOR_METHODS == ("cholesky", "pca")
    assert PRESERVE_COLORS == ("luminance", "histogram")


# -- chroma distance ----------------------------------------------------------------------------

def test_chroma_distance():
    a = 0.2 + 0.6 * rand(2, 3, 6, 7, seed=11)
    assert torch.equal(chroma_distance(a, a), torch.zeros(2))
    # +0.1 on R moves (I, Q) by 0.1 (0.596, 0.211): 16.1 grey levels at every pixel.
    redder = a + per_channel([0.1, 0.0, 0.0])
    expected = 0.1 * (0.596 ** 2 + 0.211 ** 2) ** 0.5 * 255
    assert torch.allclose(chroma_distance(a, redder), torch.full((2,), expected), atol=1e-3)
    assert torch.allclose(chroma_distance(redder, a), chroma_distance(a, redder))
    # Brightness is not chroma: the same image 0.1 brighter is 0 apart.
    assert chroma_distance(a, a + 0.1).max() < 1e-4
    # Another size: b is resized to a's; one b serves a batch.
    flat = per_channel([0.5, 0.4, 0.3])
    d = chroma_distance(flat.expand(2, 3, 4, 4), flat.expand(1, 3, 9, 9) + per_channel([0.1, 0.0, 0.0]))
    assert d.shape == (2,) and torch.allclose(d, torch.full((2,), expected), atol=1e-3)


def test_palette_distance_ignores_where_colours_are():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 16, 16, generator=g) * 0.5 + 0.25
    shuffled = x.flatten(2)[..., torch.randperm(256, generator=g)].reshape(1, 3, 16, 16)
    assert palette_distance(x, x).item() < 1e-3
    assert palette_distance(x, shuffled).item() < 1e-3          # same pixels, other places
    assert chroma_distance(x, shuffled).item() > 5                # per pixel they differ
    redder = (x + torch.tensor([0.1, 0.0, 0.0]).view(1, 3, 1, 1)).clamp(0, 1)
    # a shift of the mean alone: the distance is the shift's length in I/Q, in grey levels
    expected = 0.1 * (0.596 ** 2 + 0.211 ** 2) ** 0.5 * 255
    assert abs(palette_distance(x, redder).item() - expected) < 0.5
    assert torch.allclose(palette_distance(x, redder), palette_distance(redder, x), atol=1e-3)
