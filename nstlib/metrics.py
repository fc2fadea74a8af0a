"""Numbers for pictures: how much style a result carries, how strong each layer's output is.

Style strength
--------------
Pictures cannot be tested, so the course measures "how much style" with one number:

    strength = mean over layers l of log10( E_l(content image) / E_l(result) )

where E_l is the Gatys style loss (1 / (4 N^2 M^2) sum (G - A)^2) of an image against the
style image at layer l, over a fixed set of layers (default relu1_1 ... relu5_1, which exist in
VGG-16 and VGG-19). In words: by how many orders of magnitude the result is closer to the style
than the photo was, averaged over the layers. 0 means no style moved, 1 means every layer's
style distance fell 10x. Averaging the *logarithms* per layer keeps one layer with large
activations from dominating the number (the very problem Choi & Kim point out for the loss), and
makes the measure independent of the loss variant that produced the result.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from nstlib.losses import gram_matrix, style_loss
from nstlib.regions import guided_gram, resize_masks
from nstlib.vgg import GATYS_STYLE_LAYERS, VGGFeatures

STRENGTH_LAYERS = GATYS_STYLE_LAYERS


@torch.no_grad()
def style_distances(
    extractor: VGGFeatures, images: torch.Tensor, style: torch.Tensor, layers: Sequence[str] = STRENGTH_LAYERS
) -> dict[str, torch.Tensor]:
    """Gatys E_l of each image against the style image. images (B, 3, H, W), style (1, 3, H', W') -> {layer: (B,)}."""
    dev = next(extractor.parameters()).device
    targets = extractor.extract(style.to(dev), list(layers))
    feats = extractor.extract(images.to(dev), list(layers))
    return {n: style_loss(feats[n], gram_matrix(targets[n], normalize=True)).cpu() for n in layers}


@torch.no_grad()
def style_strength(
    extractor: VGGFeatures,
    result: torch.Tensor,
    content: torch.Tensor,
    style: torch.Tensor,
    layers: Sequence[str] = STRENGTH_LAYERS,
    per_layer: bool = False,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """Style strength of results (B, 3, H, W) made from `content` (1, 3, H, W) and `style`. -> (B,)

    per_layer=True returns {layer: (B,)} of log10(E_l(content) / E_l(result)) instead of the mean.
    """
    if result.shape[-2:] != content.shape[-2:]:
        raise ValueError(
            f"style_strength compares a result with its content image, which must have the same size; "
            f"got {tuple(result.shape[-2:])} and {tuple(content.shape[-2:])}."
        )
    before = style_distances(extractor, content, style, layers)
    after = style_distances(extractor, result, style, layers)
    ratios = {n: torch.log10(before[n].clamp_min(1e-30) / after[n].clamp_min(1e-30)) for n in layers}
    if per_layer:
        return ratios
    return torch.stack(list(ratios.values())).mean(0)


@torch.no_grad()
def layer_power(extractor: VGGFeatures, image: torch.Tensor, layers: Sequence[str]) -> dict[str, float]:
    """Mean squared activation of each layer for one image (Choi & Kim's "output power", Fig. 4)."""
    dev = next(extractor.parameters()).device
    feats = extractor.extract(image.to(dev), list(layers))
    return {n: float(feats[n].pow(2).mean()) for n in layers}


def weight_for_strength(weights: Sequence[float], strengths: Sequence[float], target: float) -> float:
    """log10 of the weight at which `strengths` (measured at `weights`) first crosses `target`.

    Interpolates linearly in log10(weight); NaN if the sweep never reaches the target. Used to
    compare loss variants: how far apart (in orders of magnitude) are the weights that give
    different style images the same strength?
    """
    if len(weights) != len(strengths) or len(weights) < 2:
        raise ValueError(f"need two or more (weight, strength) pairs of equal length, got {len(weights)} and {len(strengths)}.")
    lw = [math.log10(w) for w in weights]
    for i in range(len(lw) - 1):
        a, b = float(strengths[i]), float(strengths[i + 1])
        if a != b and (a - target) * (b - target) <= 0:
            return lw[i] + (target - a) / (b - a) * (lw[i + 1] - lw[i])
    return math.nan


# -- measures of a finished picture, independent of the loss that made it -------------------
#
# The loss a run minimizes cannot judge the run: a method that changes the loss (coarse to fine,
# bfloat16, other layers) must be compared on numbers it did not optimize. These use layers the
# default losses do not read (the last ReLU of blocks 2-5 instead of the first), plain image
# statistics, or both.

#: Layers the independent measures read: in VGG-16 and VGG-19, none of them in the default losses.
MEASURE_STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
MEASURE_CONTENT_LAYERS = ("relu3_3", "relu4_3")


@torch.no_grad()
def style_distance(extractor: VGGFeatures, images: torch.Tensor, style: torch.Tensor,
                   layers: Sequence[str] = MEASURE_STYLE_LAYERS, mask: torch.Tensor | None = None) -> torch.Tensor:
    """How far each image's Gram statistics are from the style image's. -> (B,), lower is closer.

    mean over layers of log10( ||G(image) - G(style)||^2 / ||G(style)||^2 ), Grams per position,
    so images and style of different sizes compare. images (B, 3, H, W), style (1, 3, H', W').
    mask (H, W): only that region of the images counts (its guided Gram, `nstlib.regions`).
    """
    dev = next(extractor.parameters()).device
    target = extractor.extract(style.to(dev), list(layers))
    feats = extractor.extract(images.to(dev), list(layers))
    out = []
    for n in layers:
        a = gram_matrix(target[n], normalize=True)
        if mask is None:
            g = gram_matrix(feats[n], normalize=True)
        else:
            g = guided_gram(feats[n], resize_masks(mask[None].float(), feats[n].shape[-2:]).to(dev))[:, 0]
        out.append(torch.log10((g - a).pow(2).flatten(1).sum(1) / a.pow(2).flatten(1).sum(1).clamp_min(1e-30)))
    return torch.stack(out).mean(0).cpu()


@torch.no_grad()
def content_distance(extractor: VGGFeatures, images: torch.Tensor, content: torch.Tensor,
                     layers: Sequence[str] = MEASURE_CONTENT_LAYERS) -> torch.Tensor:
    """How far each image's features are from the photo's, relative to the photo's. -> (B,), lower is closer.

    mean over layers of ||F(image) - F(content)||^2 / ||F(content)||^2. images (B, 3, H, W),
    content (1, 3, H, W) of the same size.
    """
    if images.shape[-2:] != content.shape[-2:]:
        raise ValueError(f"content_distance compares images with their photo at the same size; got "
                         f"{tuple(images.shape[-2:])} and {tuple(content.shape[-2:])}.")
    dev = next(extractor.parameters()).device
    target = extractor.extract(content.to(dev), list(layers))
    feats = extractor.extract(images.to(dev), list(layers))
    out = [(feats[n] - target[n]).pow(2).flatten(1).sum(1) / target[n].pow(2).flatten(1).sum(1).clamp_min(1e-30)
           for n in layers]
    return torch.stack(out).mean(0).cpu()


def _luminance(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB [0, 1] -> (B, 1, H, W), Rec. 601 luma."""
    w = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (images * w).sum(1, keepdim=True)


def edge_agreement(images: torch.Tensor, content: torch.Tensor, blur: float = 1.0) -> torch.Tensor:
    """Does each image keep the photo's edges? -> (B,) in [-1, 1], higher keeps more.

    The correlation of the Sobel gradient magnitudes of the two luminances, after a Gaussian
    blur of `blur` px (so that brush strokes on an edge still count as the edge). No network.
    """
    if images.shape[-2:] != content.shape[-2:]:
        raise ValueError(f"edge_agreement compares images with their photo at the same size; got "
                         f"{tuple(images.shape[-2:])} and {tuple(content.shape[-2:])}.")
    a = _edges(_luminance(images.float().cpu()), blur).flatten(1)
    b = _edges(_luminance(content.float().cpu()), blur).flatten(1)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


def _edges(lum: torch.Tensor, blur: float) -> torch.Tensor:
    import torch.nn.functional as F

    r = max(1, int(3 * blur))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * blur**2))
    k = k / k.sum()
    x = F.conv2d(F.pad(lum, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    sx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]).view(1, 1, 3, 3)
    x = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return torch.sqrt(F.conv2d(x, sx) ** 2 + F.conv2d(x, sx.transpose(2, 3)) ** 2 + 1e-12)


def noise_level(images: torch.Tensor) -> torch.Tensor:
    """Pixel noise of each image, in 8-bit grey levels. -> (B,)

    Donoho's estimate: sigma = median(|HH|) / 0.6745 of the finest diagonal Haar wavelet
    coefficients of the luminance. Edges and strokes are sparse in HH, so the median sees the
    noise under them; a clean photo scores about 1-3, white-noise speckle from an unfinished
    optimization 10 or more.
    """
    lum = _luminance(images.float().cpu()) * 255.0
    h, w = lum.shape[-2] // 2 * 2, lum.shape[-1] // 2 * 2
    x = lum[..., :h, :w]
    hh = (x[..., 0::2, 0::2] - x[..., 0::2, 1::2] - x[..., 1::2, 0::2] + x[..., 1::2, 1::2]) / 2
    return hh.abs().flatten(1).median(1).values / 0.6745
