"""Keeping the photo's colours: the two methods of Gatys et al. 2017, section 5.

Gatys, Ecker, Bethge, Hertzmann, Shechtman, "Controlling Perceptual Factors in Neural Style
Transfer" (CVPR 2017, arXiv:1611.07865) give two ways to transfer a style without its colours:

* Luminance-only transfer (their 5.2, ``preserve_colors="luminance"``): run the transfer on
  luminance alone, then put the photo's colour back. `match_luminance` makes the grey style
  image (its luminance matched to the photo's mean and spread), `as_grey_rgb` the grey photo,
  and `recombine_luminance` joins the result's luminance Y with the photo's chroma I, Q (YIQ).
* Colour histogram matching (their 5.1, ``preserve_colors="histogram"``): before the transfer,
  recolour the style image so that its pixels' mean and 3x3 covariance equal the photo's
  (`match_color`, x' = A (x - mu_s) + mu_c), then transfer as usual.

Any A with A Sigma_s A^T = Sigma_c matches the covariance; the two offered differ by a rotation
in whitened colour space, so they recolour differently. "pca" (Sigma_c^1/2 Sigma_s^-1/2, with
symmetric square roots; Hertzmann's Image Analogies) treats the three channels alike: permuting
R, G, B permutes its A the same way. "cholesky" (L_c L_s^-1) is triangular, so it depends on
the channel order. Neither A is symmetric in general (PCA's only when Sigma_s and Sigma_c share
eigenvectors); the symmetric, least-displacement map is the Monge-Kantorovich one ("sym" in the
authors' code), not offered here.

Images are tensors (B, 3, H, W), RGB, float in [0, 1], as `nstlib.images.load_image` gives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

COLOR_METHODS = ("cholesky", "pca")
#: What ``stylize(preserve_colors=...)`` accepts: "luminance" is luminance-only transfer,
#: "histogram" recolours the style image with `match_color` first.
PRESERVE_COLORS = ("luminance", "histogram")

# NTSC (FCC) YIQ. The I and Q rows sum to 0, so greys have no chroma; the Y row sums to 1, so
# Y stays in [0, 1]. The authors' code uses YUV, whose chroma is YIQ's rotated and scaled: the
# same Y, and the same recombined image.
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114],
     [0.596, -0.274, -0.322],
     [0.211, -0.523, 0.312]],
    dtype=torch.float64,
)
# The exact inverse, not the rounded 3-digit one usually printed, so that a round trip is exact.
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)

# A luminance spread below this is a flat image (1/255 is one grey level): scaling it up would
# only amplify rounding noise.
_FLAT_STD = 1e-6


def rgb_to_yiq(images: torch.Tensor) -> torch.Tensor:
    """RGB (B, 3, H, W) -> YIQ (B, 3, H, W). Y in [0, 1] for RGB in [0, 1]; I = Q = 0 for greys."""
    _check_images(images, "images", "rgb_to_yiq")
    return _apply_matrix(_RGB_TO_YIQ, images)


def yiq_to_rgb(yiq: torch.Tensor) -> torch.Tensor:
    """YIQ (B, 3, H, W) -> RGB (B, 3, H, W), the exact inverse of `rgb_to_yiq` (not clamped)."""
    _check_images(yiq, "yiq", "yiq_to_rgb")
    return _apply_matrix(_YIQ_TO_RGB, yiq)


def luminance(images: torch.Tensor) -> torch.Tensor:
    """The luminance Y of RGB images (B, 3, H, W) -> (B, 1, H, W), in [0, 1]."""
    _check_images(images, "images", "luminance")
    return _apply_matrix(_RGB_TO_YIQ[:1], images)


def as_grey_rgb(images: torch.Tensor) -> torch.Tensor:
    """RGB (B, 3, H, W) -> its luminance in all three channels (B, 3, H, W).

    The photo's input in luminance-only transfer: VGG takes three channels.
    """
    # repeat, not expand: an expanded view shares memory across channels, and an in-place
    # edit of one channel would silently change all three.
    return luminance(images).repeat(1, 3, 1, 1)


def match_luminance(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The style image's luminance matched to the photo's: style (B, 3, H, W), content (B', 3, H', W') -> (B, 3, H, W) grey.

    Y_s' = (sigma_c / sigma_s) (Y_s - mu_s) + mu_c per image (mean and population standard
    deviation over pixels), copied to R, G and B. Without this, a dark style image would darken
    the result, which luminance-only transfer cannot undo. A flat style image (sigma_s = 0) gives
    a flat image at mu_c. Clamped to [0, 1]: where values would leave that range the match is only
    approximate. The sizes may differ; B' must be 1 or B.
    """
    _check_images(style, "style", "match_luminance")
    _check_images(content, "content", "match_luminance")
    _check_batches(style, content, "match_luminance")
    y_s = luminance(style)
    y_c = luminance(content).to(style.device, style.dtype)
    std_s, mean_s = torch.std_mean(y_s, dim=(1, 2, 3), correction=0, keepdim=True)
    std_c, mean_c = torch.std_mean(y_c, dim=(1, 2, 3), correction=0, keepdim=True)
    flat = std_s <= _FLAT_STD
    gain = torch.where(flat, torch.zeros_like(std_s), std_c / torch.where(flat, torch.ones_like(std_s), std_s))
    y = gain * (y_s - mean_s) + mean_c
    return y.clamp(0.0, 1.0).repeat(1, 3, 1, 1)


def recombine_luminance(stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The result's luminance with the photo's colour: stylized (B, 3, H, W), content (B', 3, H', W') -> (B, 3, H, W).

    Y from `stylized` (the transfer run on luminance), I and Q from `content`, resized to H x W
    if it differs (bilinear, antialiased when shrinking), back to RGB and clamped to [0, 1]. A
    bright Y with a saturated chroma can fall outside the RGB cube; there the clamp changes
    the chroma a little. B' must be 1 or B.
    """
    _check_images(stylized, "stylized", "recombine_luminance")
    _check_images(content, "content", "recombine_luminance")
    _check_batches(stylized, content, "recombine_luminance")
    content = _resize_to(content.to(stylized.device, stylized.dtype), stylized.shape[-2:])
    iq = rgb_to_yiq(content)[:, 1:].expand(stylized.shape[0], -1, -1, -1)
    yiq = torch.cat([luminance(stylized), iq], dim=1)
    return yiq_to_rgb(yiq).clamp(0.0, 1.0)


def match_color(style: torch.Tensor, content: torch.Tensor, method: str = "cholesky", eps: float = 1e-5) -> torch.Tensor:
    """The style image recoloured to the photo's colour statistics: style (B, 3, H, W), content (B', 3, H', W') -> (B, 3, H, W).

    Each style pixel x (an RGB 3-vector) becomes x' = A (x - mu_s) + mu_c, so that the pixels'
    mean and 3x3 covariance equal the photo's (Gatys et al. 2017, 5.1); `method` picks A
    ("cholesky" or "pca", see the module docstring), eps * I is added to both covariances.
    The result is clamped to [0, 1], so where x' would leave that range the match is only
    approximate. The sizes may differ; B' must be 1 or B. Same dtype and device as `style`.
    """
    a, mu_s, mu_c = _affine_color_transform(style, content, method, eps)
    b, _, h, w = style.shape
    # float64 on the CPU: MPS has no float64, and a style image is recoloured once per run.
    x = style.detach().to("cpu", torch.float64).reshape(b, 3, h * w)
    out = a @ (x - mu_s[..., None]) + mu_c[..., None]
    return out.reshape(b, 3, h, w).clamp(0.0, 1.0).to(style.device, style.dtype)


def chroma_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """How different two images' colours are: a (B, 3, H, W), b (B', 3, H', W') -> (B,).

    The mean over pixels of the Euclidean distance between a's and b's chroma (I, Q of YIQ),
    times 255 to read in 8-bit grey levels. 0 means the same chroma at every pixel; brightness
    alone does not count (a grey image and a darker grey are 0 apart). b is resized to a's size
    if it differs; B' must be 1 or B.
    """
    _check_images(a, "a", "chroma_distance")
    _check_images(b, "b", "chroma_distance")
    _check_batches(a, b, "chroma_distance")
    b = _resize_to(b.to(a.device, a.dtype), a.shape[-2:])
    diff = rgb_to_yiq(a)[:, 1:] - rgb_to_yiq(b)[:, 1:]
    return torch.linalg.vector_norm(diff, dim=1).mean(dim=(1, 2)) * 255.0


def palette_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """How different two images' colour palettes are, wherever the colours sit: -> (B,).

    a (B, 3, H, W), b (B', 3, H', W'), B' = 1 or B. The 2-Wasserstein distance between Gaussian
    fits of the two images' chroma (I, Q of YIQ) over all pixels,
    sqrt(|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)), times 255 (grey levels).
    Unlike `chroma_distance` it ignores where a colour is: colour histogram matching makes
    the result's palette the photo's, not each pixel's colour.
    """
    _check_images(a, "a", "palette_distance")
    _check_images(b, "b", "palette_distance")
    _check_batches(a, b, "palette_distance")

    def fit(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        iq = rgb_to_yiq(x.detach().to("cpu", torch.float64))[:, 1:].flatten(2)  # (B, 2, N)
        mu = iq.mean(2)
        d = iq - mu[..., None]
        return mu, d @ d.transpose(1, 2) / d.shape[2]

    (mu_a, s_a), (mu_b, s_b) = fit(a), fit(b)
    root_a = _sym_power(s_a, 0.5, 0.0)
    cross = _sym_power(root_a @ s_b @ root_a, 0.5, 0.0)
    trace = torch.diagonal(s_a + s_b - 2 * cross, dim1=-2, dim2=-1).sum(-1)
    w2 = (mu_a - mu_b).pow(2).sum(-1) + trace.clamp_min(0)
    return (w2.sqrt() * 255.0).to(torch.float32)


# -- helpers -------------------------------------------------------------------------------

def _affine_color_transform(
    style: torch.Tensor, content: torch.Tensor, method: str = "cholesky", eps: float = 1e-5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The transform `match_color` applies, before clamping: -> A (N, 3, 3), mu_s (N, 3), mu_c (N, 3).

    float64 on the CPU; N = B, the style batch (1 for single images, so A[0] is the 3x3 matrix), and
    x' = A (x - mu_s) + mu_c maps the style pixels to the content's mean and covariance (each
    plus eps * I): A (Sigma_s + eps I) A^T = Sigma_c + eps I.
    """
    if method not in COLOR_METHODS:
        raise ValueError(f"match_color method must be one of {', '.join(map(repr, COLOR_METHODS))}, got {method!r}.")
    _check_images(style, "style", "match_color")
    _check_images(content, "content", "match_color")
    _check_batches(style, content, "match_color")
    mu_s, cov_s = _color_stats(style, eps)
    mu_c, cov_c = _color_stats(content, eps)
    if method == "cholesky":
        l_s = torch.linalg.cholesky(cov_s)
        l_c = torch.linalg.cholesky(cov_c)
        # A = L_c L_s^-1, as the solution of A L_s = L_c: no explicit inverse.
        a = torch.linalg.solve_triangular(l_s, l_c.expand(torch.broadcast_shapes(l_s.shape, l_c.shape)),
                                          upper=False, left=False)
    else:
        a = _sym_power(cov_c, 0.5, eps) @ _sym_power(cov_s, -0.5, eps)
    n = style.shape[0]
    return a.expand(n, 3, 3), mu_s, mu_c.expand(n, 3)


def _color_stats(images: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, H, W) -> mean (B, 3) and covariance + eps * I (B, 3, 3) of the pixels, float64 on the CPU."""
    x = images.detach().to("cpu", torch.float64).flatten(2)
    mu = x.mean(dim=2)
    d = x - mu[..., None]
    # Population covariance (divide by the pixel count), as in the authors' code.
    cov = d @ d.transpose(1, 2) / d.shape[2]
    return mu, cov + eps * torch.eye(3, dtype=torch.float64)


def _sym_power(cov: torch.Tensor, power: float, eps: float) -> torch.Tensor:
    """Symmetric matrix power of covariances (B, 3, 3) from their eigendecomposition."""
    evals, evecs = torch.linalg.eigh(cov)
    # eigh of a nearly singular matrix can return tiny negative eigenvalues: their root is NaN.
    evals = evals.clamp_min(eps) ** power
    return evecs @ torch.diag_embed(evals) @ evecs.transpose(-1, -2)


def _apply_matrix(m: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """A (k, 3) colour matrix applied to every pixel of (B, 3, H, W) -> (B, k, H, W)."""
    return torch.einsum("kc,bchw->bkhw", m.to(images.device, images.dtype), images)


def _resize_to(images: torch.Tensor, hw: tuple[int, int] | torch.Size) -> torch.Tensor:
    """(B, 3, h, w) -> (B, 3, *hw), bilinear, antialiased when shrinking; unchanged if already that size."""
    h, w = images.shape[-2:]
    new = (int(hw[0]), int(hw[1]))
    if new == (h, w):
        return images
    antialias = new[0] < h or new[1] < w
    return F.interpolate(images, size=new, mode="bilinear", align_corners=False, antialias=antialias)


def _check_images(x: object, name: str, fn: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{fn} expected {name} as a torch tensor (B, 3, H, W), got {type(x).__name__}; "
            f"use nstlib.images.load_image first."
        )
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[0] < 1 or x.shape[2] < 1 or x.shape[3] < 1:
        hint = " (add the batch dimension with .unsqueeze(0))" if x.ndim == 3 and x.shape[0] == 3 else ""
        raise ValueError(
            f"{fn} expected {name} as a tensor (B, 3, H, W) of RGB images, got shape {tuple(x.shape)}{hint}; "
            f"use nstlib.images.load_image first, which gives (1, 3, H, W)."
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{fn} expected {name} as float values in [0, 1], got dtype {x.dtype}; "
            f"use nstlib.images.load_image first (it turns uint8 into float)."
        )


def _check_batches(x: torch.Tensor, ref: torch.Tensor, fn: str) -> None:
    """The second image must be one image or one per image of the first."""
    if ref.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"{fn}: a batch of {x.shape[0]} images cannot pair with a batch of {ref.shape[0]}; "
            f"pass one second image for all, or one per image ({x.shape[0]})."
        )
