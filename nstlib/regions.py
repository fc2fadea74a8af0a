"""Spatial control (Gatys et al. 2017, section 4): which region of the output takes which style.

A region is a mask over the output image, one per style image: (K, H, W) weights in [0, 1].
The style loss of a layer is then computed per region with *guided* Gram matrices: the
features are multiplied by the region's mask, resized to the layer's grid, before the Gram,

    G_k = sum_p m_k(p)^2 F(p) F(p)^T / sum_p m_k(p)^2          (per position, as everywhere here)

and compared with the Gram of style image k. Each region's loss is weighted by its share of
the image, so that one region covering everything is the ordinary style loss.

The receptive-field subtlety: a position of `relu4_1` sees about 100 px of the input, so
near a border its features mix both regions whatever the mask says. Resizing the mask by area
averaging gives those border positions fractional weights in both regions: each region's
Gram takes them in, in proportion. Deep layers' Grams therefore blur the border over a
receptive field; the low layers (small fields, fine grids) keep it sharp.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from nstlib.images import ImageLike, load_image


def masks_from_labels(labels: ImageLike | torch.Tensor, n_styles: int) -> torch.Tensor:
    """A label image -> region masks (K, H, W), K = n_styles.

    labels: an image (path, PIL, array, or an RGB tensor (1, 3, H, W) / (3, H, W)) whose
    distinct colours, sorted from dark to light (by luminance), select the styles in order:
    with a black-and-white mask, black takes style 1, white style 2. Or a float tensor
    (K, H, W) of weights in [0, 1] that is returned as it is (after checks).
    """
    if isinstance(labels, torch.Tensor) and labels.ndim == 3 and labels.shape[0] == n_styles and labels.is_floating_point():
        m = labels.detach().float()
        if not torch.isfinite(m).all() or m.min() < 0 or m.max() > 1:
            raise ValueError("style_masks as a tensor (K, H, W) must hold weights in [0, 1].")
        if (m.sum(0) == 0).any():
            raise ValueError("style_masks leave some pixels in no region (all K masks are 0 there); every pixel "
                             "needs a style. Hint: masks that sum to 1, e.g. torch.stack([m, 1 - m]).")
        return m
    img = load_image(labels)                                   # (1, 3, H, W) in [0, 1]
    codes = (img[0] * 255).round().to(torch.int64)             # (3, H, W)
    keys = codes[0] * 65536 + codes[1] * 256 + codes[2]        # one integer per colour
    colours, inverse = torch.unique(keys.flatten(), return_inverse=True)
    if len(colours) != n_styles:
        raise ValueError(
            f"the mask has {len(colours)} distinct colour(s) but there are {n_styles} style image(s): it needs one "
            f"colour per style (sorted dark to light: the darkest selects style 1). A mask saved as JPEG has many "
            f"colours from compression: save it as PNG, with flat colours."
        )
    rgb = torch.stack([colours // 65536, colours // 256 % 256, colours % 256], 1).float()
    order = torch.argsort(rgb @ torch.tensor([0.299, 0.587, 0.114]), stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    label = rank[inverse].reshape(keys.shape)                  # (H, W): which style each pixel takes
    return torch.stack([(label == k).float() for k in range(n_styles)])


def resize_masks(masks: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(K, H, W) -> (K, h, w) by area averaging (a border pixel of the grid gets fractional weights)."""
    h, w = int(hw[0]), int(hw[1])
    if tuple(masks.shape[-2:]) == (h, w):
        return masks
    if h <= masks.shape[-2] and w <= masks.shape[-1]:
        return F.adaptive_avg_pool2d(masks[None], (h, w))[0]
    return F.interpolate(masks[None], size=(h, w), mode="bilinear", align_corners=False)[0].clamp(0, 1)


def guided_gram(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per-position Gram matrix of each region: features (B, C, h, w), masks (K, h, w) -> (B, K, C, C).

    G_k = sum_p m_k(p)^2 F(p) F(p)^T / sum_p m_k(p)^2; a region with no weight at this layer
    gives a zero Gram (its loss is then weighted 0, see `region_shares`).
    """
    b, c, h, w = features.shape
    if masks.shape[-2:] != (h, w):
        raise ValueError(f"guided_gram: masks {tuple(masks.shape)} must have the features' grid ({h}, {w}); "
                         f"use resize_masks(masks, ({h}, {w})) first.")
    f = features.reshape(b, 1, c, h * w) * masks.reshape(1, -1, 1, h * w).to(features.dtype)   # (B, K, C, M)
    g = f @ f.transpose(-1, -2)                                                                 # (B, K, C, C)
    norm = masks.reshape(-1, h * w).pow(2).sum(1).clamp_min(1e-12).to(g.dtype)                  # (K,)
    return g / norm.view(1, -1, 1, 1)


def region_shares(masks: torch.Tensor) -> torch.Tensor:
    """(K, h, w) -> (K,): each region's share of the image (sums to 1 for masks that sum to 1)."""
    return masks.flatten(1).mean(1)


def label_map(masks: torch.Tensor) -> np.ndarray:
    """(K, H, W) -> (H, W) int array: the region each pixel belongs to most (for figures)."""
    return masks.argmax(0).cpu().numpy()
