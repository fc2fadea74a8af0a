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
