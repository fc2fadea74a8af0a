"""The pipeline of a style transfer, drawn once (notebook 1), with the names the notebooks use.

    fig = diagrams.pipeline(photo, painting)     # thumbnails of the two images in the picture

Three rows meet in the losses: the photo's features (the content target), the generated image's
features, the painting's Gram matrices (the style target). The targets are computed once; only
the generated image's row runs at every step, and the gradient flows back to its pixels.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

_BOX = dict(boxstyle="round,pad=0.02,rounding_size=0.02", linewidth=1.2)
_COLOURS = {"image": "#e8eef7", "net": "#f3e6d8", "feature": "#e6f2e6", "loss": "#f7e1e1"}


def _box(ax: plt.Axes, xy: tuple[float, float], wh: tuple[float, float], text: str, kind: str,
         fontsize: float = 9) -> None:
    x, y = xy
    w, h = wh
    ax.add_patch(FancyBboxPatch((x, y), w, h, facecolor=_COLOURS[kind], edgecolor="0.35", **_BOX))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize, linespacing=1.35)


def _arrow(ax: plt.Axes, start: tuple[float, float], end: tuple[float, float], *, dashed: bool = False,
           colour: str = "0.25", rad: float = 0.0) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color=colour, lw=1.3,
                                 linestyle="--" if dashed else "-", connectionstyle=f"arc3,rad={rad}"))


def _thumb(ax: plt.Axes, image: torch.Tensor | None, xy: tuple[float, float], wh: tuple[float, float],
           label: str) -> None:
    x, y = xy
    w, h = wh
    if image is not None:
        ax.imshow(image[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy(), extent=(x, x + w, y, y + h),
                  aspect="auto", zorder=2)
        ax.text(x + w / 2, y + h + 0.012, label, ha="center", va="bottom", fontsize=8.5)
    else:
        _box(ax, xy, wh, label, "image", fontsize=8.5)


def pipeline(photo: torch.Tensor | None = None, painting: torch.Tensor | None = None,
             result: torch.Tensor | None = None) -> Figure:
    """The style-transfer pipeline as a figure: images -> frozen VGG -> features -> losses -> gradient -> pixels.

    photo, painting, result: (1, 3, H, W) in [0, 1], drawn as thumbnails (None: a labelled box).
    """
    fig, ax = plt.subplots(figsize=(12, 5.4))
    ax.set(xlim=(-0.01, 1.29), ylim=(0.0, 1.0))
    ax.axis("off")
    rows = {"photo": 0.74, "x": 0.42, "painting": 0.10}        # bottom of each row's boxes
    h = 0.16
    _thumb(ax, photo, (0.0, rows["photo"]), (0.13, h), "photo $\\vec p$ (content)")
    _thumb(ax, result, (0.0, rows["x"]), (0.13, h), "image $\\vec x$: its pixels are optimized")
    _thumb(ax, painting, (0.0, rows["painting"]), (0.13, h), "painting $\\vec a$ (style)")
    for name, y in rows.items():
        _box(ax, (0.2, y), (0.19, h), "frozen VGG\nnet.extract(image, layers)\n(its weights never change)", "net", 8.5)
        _arrow(ax, (0.135, y + h / 2), (0.195, y + h / 2), dashed=name != "x")
    _box(ax, (0.46, rows["photo"]), (0.2, h), "$P^l$: the photo's features\non relu4_2\n(content target, once)", "feature", 8.5)
    _box(ax, (0.46, rows["x"]), (0.2, h), "$F^l$: the features of $\\vec x$\nand their Grams $G^l = F^l F^{l\\top}$\n(at every step)", "feature", 8.5)
    _box(ax, (0.46, rows["painting"]), (0.2, h), "$A^l$: the painting's Grams\non relu1_1 ... relu5_1\n(style target, once)", "feature", 8.5)
    for name, y in rows.items():
        _arrow(ax, (0.395, y + h / 2), (0.455, y + h / 2), dashed=name != "x")
    _box(ax, (0.74, 0.64), (0.22, 0.16), "$L_\\mathrm{content} = \\frac{1}{2}\\sum (F^l - P^l)^2$\n(notebook 2)", "loss", 8.5)
    _box(ax, (0.74, 0.15), (0.22, 0.16), "$L_\\mathrm{style} = \\sum_l w_l E_l(G^l, A^l)$\n(notebook 3)", "loss", 8.5)
    _arrow(ax, (0.665, rows["photo"] + h / 2), (0.735, 0.74))
    _arrow(ax, (0.665, rows["x"] + h * 0.7), (0.735, 0.68))
    _arrow(ax, (0.665, rows["x"] + h * 0.3), (0.735, 0.27))
    _arrow(ax, (0.665, rows["painting"] + h / 2), (0.735, 0.21))
    _box(ax, (1.03, 0.44), (0.22, 0.18), "$L = \\alpha L_\\mathrm{content} + \\beta L_\\mathrm{style}$\n(notebook 4; normalized:\nnotebook 5)", "loss", 8.5)
    _arrow(ax, (0.965, 0.72), (1.07, 0.625))
    _arrow(ax, (0.965, 0.23), (1.07, 0.435))
    # The way back, in the free band between the middle and the bottom row: the gradient reaches the pixels.
    red, band = "#b03030", 0.37
    ax.plot([1.14, 1.14, 0.065], [0.435, band, band], color=red, lw=1.6, zorder=1)
    _arrow(ax, (0.065, band), (0.065, rows["x"] - 0.005), colour=red)
    ax.text(0.62, 0.025, "red: loss.backward() gives $\\partial L / \\partial \\vec x$ through the frozen VGG, "
            "then optimizer.step() (L-BFGS) changes the pixels; repeat", ha="center", va="bottom", fontsize=9,
            color=red)
    ax.text(-0.005, 0.985, "dashed: computed once, before the loop;  solid: at every step", fontsize=8.5,
            va="top", color="0.3")
    fig.tight_layout()
    return fig
