"""Figures the notebooks draw again and again: image grids, feature maps, Gram matrices, losses.

Every function returns a matplotlib Figure and closes nothing. The figures are *not*
registered with pyplot: a notebook shows one when it is the value of a cell (or through
``display(fig)``), exactly once. (A pyplot figure returned as a cell's value is shown twice,
once by the inline backend and once as the value, and pyplot keeps every figure made in a
loop alive.) So ``plt.show()`` and ``plt.savefig()`` do not see them: use `save_figure`.
Functions that take ``ax=`` draw into that Axes instead and return its figure.

Images are anything `show_images` accepts: tensors (3, H, W), (1, 3, H, W) or batches
(B, 3, H, W) in [0, 1] (1 channel for grayscale), PIL images, NumPy arrays (H, W[, 3]), or
a `StyleResult`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping, Sequence, Union

import numpy as np
import torch
from matplotlib import colors
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

from nstlib.figure import new_figure, root_figure, save_figure  # noqa: F401 (viz.save_figure: the documented name)
from nstlib.stylize import StyleResult

ImageItem = Union[torch.Tensor, np.ndarray, Image.Image, StyleResult]

_IMAGE_SHAPES = (
    "a tensor (3, H, W), (1, 3, H, W) or a batch (B, 3, H, W) (1 channel instead of 3 for "
    "grayscale), a PIL image, a NumPy array (H, W) or (H, W, 3), or a StyleResult"
)


# -- image grids ------------------------------------------------------------------------------

def show_images(
    images: ImageItem | Sequence[ImageItem] | Mapping[str, ImageItem],
    titles: Sequence[str | None] | None = None,
    ncols: int | None = None,
    size: float = 3.0,
    suptitle: str | None = None,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
) -> Figure:
    """A grid of images, filled row by row; a batch (B, 3, H, W) counts as B images.

    images: one image, a list of them, or a dict title -> image (the keys become the titles).
    titles: one per image (after batches are expanded; None entries leave one out). They go
        over each image, or under it when col_labels take the top row.
    ncols: images per row (default: len(col_labels), else as many as fit len(row_labels)
        rows, else up to 6). size: width of one image in inches.
    row_labels / col_labels: labels left of each row and over each column, e.g. the paper's
        Fig. 4 (rows: style layer sets, columns: alpha/beta). row_labels fixes the number of rows.
    """
    arrays, auto_titles = _collect_images(images)
    n = len(arrays)
    if n == 0:
        raise ValueError("show_images got no images (an empty list or an empty batch).")
    if titles is None:
        titles = auto_titles
    else:
        if isinstance(titles, str):
            raise TypeError(f"titles must be a list with one title per image, got the string {titles!r}; write [{titles!r}].")
        titles = list(titles)
        if len(titles) != n:
            raise ValueError(
                f"show_images got {n} image{'s' if n != 1 else ''} (batches count one per item) but "
                f"{len(titles)} title{'s' if len(titles) != 1 else ''}; pass one title per image (None to leave one out)."
            )
    if not isinstance(size, (int, float)) or isinstance(size, bool) or not size > 0:
        raise ValueError(f"size is the width of one image in inches, a number > 0; got {size!r}.")
    row_labels = _labels(row_labels, "row_labels")
    col_labels = _labels(col_labels, "col_labels")
    nrows, ncols = _grid(n, ncols, row_labels, col_labels)

    # Each row as tall as its tallest image: a landscape row beside a portrait row leaves no gap.
    aspects = [a.shape[0] / a.shape[1] for a in arrays]
    row_aspect = [float(np.clip(max(aspects[r * ncols:(r + 1) * ncols], default=1.0), 0.25, 4.0)) for r in range(nrows)]
    extra = 0.35 * (titles is not None and any(t for t in titles)) + 0.3 * bool(col_labels)
    heights = [size * a + extra for a in row_aspect]
    fig = new_figure((ncols * size + 0.4 * bool(row_labels), sum(heights) + 0.4 * bool(suptitle)))
    axes = fig.subplots(nrows, ncols, squeeze=False, gridspec_kw={"height_ratios": heights})
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if i >= n:
            continue
        a = arrays[i]
        if a.ndim == 2:
            ax.imshow(a, cmap="gray", vmin=0.0, vmax=1.0)
        else:
            ax.imshow(a)
        if titles is not None and titles[i]:
            if col_labels:
                ax.set_xlabel(str(titles[i]), fontsize="medium")
            else:
                ax.set_title(str(titles[i]), fontsize="medium")
    for c, label in enumerate(col_labels or []):
        axes[0, c].set_title(label, fontweight="bold")
    for r, label in enumerate(row_labels or []):
        axes[r, 0].set_ylabel(label, fontweight="bold")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def _labels(labels: Sequence[str] | None, name: str) -> list[str] | None:
    if labels is None:
        return None
    if isinstance(labels, str):
        raise TypeError(f"{name} must be a list of strings, got the string {labels!r}; write [{labels!r}].")
    labels = [str(x) for x in labels]
    if not labels:
        raise ValueError(f"{name} is empty; pass None for no labels.")
    return labels


def _grid(n: int, ncols: int | None, rows: list[str] | None, cols: list[str] | None) -> tuple[int, int]:
    if ncols is not None and (not isinstance(ncols, int) or isinstance(ncols, bool) or ncols < 1):
        raise ValueError(f"ncols must be a whole number >= 1 or None, got {ncols!r}.")
    if cols is not None:
        if ncols is not None and ncols != len(cols):
            raise ValueError(f"ncols={ncols} but {len(cols)} col_labels; leave ncols out, it follows the labels.")
        ncols = len(cols)
    elif ncols is None:
        ncols = math.ceil(n / len(rows)) if rows else min(n, 6)
    nrows = len(rows) if rows else math.ceil(n / ncols)
    if n > nrows * ncols:
        raise ValueError(
            f"{n} images do not fit a grid of {nrows} row label{'s' if nrows != 1 else ''} x {ncols} "
            f"column{'s' if ncols != 1 else ''}; pass as many labels as rows/columns of images."
        )
    return nrows, ncols


def _collect_images(images: Any) -> tuple[list[np.ndarray], list[str] | None]:
    """-> (arrays (H, W, 3) or (H, W) float in [0, 1], titles from dict keys or None)."""
    if isinstance(images, Mapping):
        arrays, titles = [], []
        for key, item in images.items():
            got = _to_arrays(item, f"image {key!r}")
            arrays += got
            titles += [str(key)] if len(got) == 1 else [f"{key} [{b}]" for b in range(len(got))]
        return arrays, titles
    if isinstance(images, (torch.Tensor, np.ndarray, Image.Image, StyleResult)):
        images = [images]
    elif not isinstance(images, (list, tuple)):
        raise TypeError(f"show_images expected {_IMAGE_SHAPES}, or a list or dict of them; got {type(images).__name__}.")
    arrays = []
    for i, item in enumerate(images):
        arrays += _to_arrays(item, f"image {i}")
    return arrays, None


def _to_arrays(item: Any, name: str) -> list[np.ndarray]:
    if isinstance(item, StyleResult):
        item = item.image
    if isinstance(item, Image.Image):
        gray = item.mode in ("1", "L", "I", "I;16", "F")
        arr = np.asarray(item.convert("L" if gray else "RGB"), dtype=np.float32) / 255.0
        return [arr]
    if isinstance(item, np.ndarray):
        if not (item.ndim == 2 or (item.ndim == 3 and item.shape[2] == 3)) or item.size == 0:
            raise ValueError(f"show_images: {name} is an array of shape {item.shape}; expected {_IMAGE_SHAPES}.")
        return [_unit_range(item, name)]
    if isinstance(item, torch.Tensor):
        t = item.detach().cpu()
        if t.ndim == 3:
            t = t.unsqueeze(0)
        if t.ndim != 4 or t.shape[1] not in (1, 3) or t.shape[2] == 0 or t.shape[3] == 0:
            raise ValueError(f"show_images: {name} is a tensor of shape {tuple(item.shape)}; expected {_IMAGE_SHAPES}.")
        arr = t.permute(0, 2, 3, 1).numpy()
        return [_unit_range(a[..., 0] if a.shape[2] == 1 else a, f"{name}[{b}]" if len(arr) > 1 else name)
                for b, a in enumerate(arr)]
    raise TypeError(f"show_images: {name} is a {type(item).__name__}; expected {_IMAGE_SHAPES}.")


def _unit_range(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"show_images: {name} has dtype {arr.dtype}; expected float in [0, 1] or uint8.")
    arr = np.nan_to_num(arr.astype(np.float32), nan=0.0)
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        hint = " (0..255 values? divide by 255)" if hi > 1.5 and lo >= 0 else ""
        warnings.warn(f"show_images: {name} has values {lo:.3g}..{hi:.3g}, outside [0, 1]; shown clipped{hint}.",
                      UserWarning, stacklevel=4)
    return np.clip(arr, 0.0, 1.0)


# -- feature maps and Gram matrices -------------------------------------------------------------

def feature_montage(
    features: torch.Tensor,
    n: int = 16,
    ncols: int = 8,
    title: str | None = None,
    normalize: str = "per_map",
    order: str = "index",
    index: int = 0,
    cmap: str = "viridis",
    size: float = 1.5,
) -> Figure:
    """Feature maps of one layer, (1, C, H, W) or (C, H, W), as a grid of n channels.

    order: "index" shows channels 0..n-1; "activation" the n with the highest mean activation.
    normalize: "per_map" scales each map to its own min..max (shapes visible, brightness not
        comparable between maps); "shared" uses one colour scale and a colorbar.
    Each map is titled with its channel index. index picks the item of a batch (B, C, H, W).
    """
    f = _pick(features, 3, index, "feature_montage", "features (1, C, H, W) or (C, H, W)")
    if normalize not in ("per_map", "shared"):
        raise ValueError(f"normalize must be 'per_map' or 'shared', got {normalize!r}.")
    if order not in ("index", "activation"):
        raise ValueError(f"order must be 'index' or 'activation' (the most active channels first), got {order!r}.")
    for value, what in ((n, "n"), (ncols, "ncols")):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{what} must be a whole number >= 1, got {value!r}.")
    c, h, w = f.shape
    n = min(n, c)
    if order == "index":
        channels = list(range(n))
    else:
        channels = np.argsort(-f.reshape(c, -1).mean(1), kind="stable")[:n].tolist()
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    aspect = float(np.clip(h / w, 0.25, 4.0))
    fig = new_figure((ncols * size + 0.8 * (normalize == "shared"), nrows * (size * aspect + 0.25) + 0.5))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    shown = f[channels]
    vmin, vmax = float(shown.min()), float(shown.max())
    im = None
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, ch in zip(axes.flat, channels):
        ax.set_axis_on()
        ax.set_xticks([])
        ax.set_yticks([])
        m = f[ch]
        lo, hi = (float(m.min()), float(m.max())) if normalize == "per_map" else (vmin, vmax)
        if hi <= lo:  # a constant map (a dead ReLU channel): avoid a zero-width colour range
            hi = lo + 1.0
        im = ax.imshow(m, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(f"ch {ch}", fontsize="small")
    which = f"the {n} most active" if order == "activation" else f"channels 0-{n - 1}"
    fig.suptitle(title if title is not None else f"feature maps: {which} of {c} ({h}x{w})")
    if normalize == "shared":
        fig.colorbar(im, ax=axes, shrink=0.8, label="activation")
    else:
        fig.supxlabel("each map scaled to its own min..max (brightness not comparable between maps)", fontsize="small")
    return fig


def gram_heatmap(
    gram: torch.Tensor | np.ndarray,
    title: str | None = None,
    max_channels: int | None = 64,
    ax: Axes | None = None,
    log: bool = False,
    index: int = 0,
    cmap: str | None = None,
    limits: tuple[float, float] | None = None,
) -> Figure:
    """A Gram matrix (1, C, C) or (C, C) as a heatmap with a colorbar.

    max_channels: show only the first channels (a 512x512 Gram is unreadable); None: all.
    limits: (low, high) of the colour scale, e.g. the range of every matrix compared, so that
    one colour means one value in each of them (default: this matrix's own range).
    log: logarithmic colours; symmetric log (linear near 0) if there are values <= 0.
    Signed matrices get a diverging colormap centred on 0. index picks the item of a batch.
    """
    g = _pick(gram, 2, index, "gram_heatmap", "a Gram matrix (1, C, C) or (C, C)")
    if g.shape[0] != g.shape[1]:
        raise ValueError(f"gram_heatmap expects a square Gram matrix (C, C), got {g.shape}.")
    c = g.shape[0]
    if max_channels is not None:
        if not isinstance(max_channels, int) or isinstance(max_channels, bool) or max_channels < 1:
            raise ValueError(f"max_channels must be a whole number >= 1 or None, got {max_channels!r}.")
        g = g[:max_channels, :max_channels]
    finite = g[np.isfinite(g)]
    if finite.size == 0:
        raise ValueError("gram_heatmap: the Gram matrix has no finite values (NaN or inf everywhere).")
    lo, hi = float(finite.min()), float(finite.max())
    if limits is not None:
        if len(limits) != 2 or not all(np.isfinite(limits)) or not limits[0] < limits[1]:
            raise ValueError(f"limits must be (low, high) with low < high, both finite, got {limits!r}.")
        lo, hi = float(limits[0]), float(limits[1])
    signed = lo < 0
    big = max(abs(lo), abs(hi)) or 1.0
    if log and lo > 0:
        norm: colors.Normalize = colors.LogNorm(vmin=lo, vmax=hi)
    elif log:
        # linear within 1e-3 of the largest magnitude: zeros (dead channels) stay drawable
        norm = colors.SymLogNorm(linthresh=big * 1e-3, vmin=-big if signed else 0.0, vmax=big)
    elif signed:
        norm = colors.Normalize(vmin=-big, vmax=big)
    else:
        norm = colors.Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1.0)
    if ax is None:
        fig = new_figure((5.2, 4.4))
        ax = fig.add_subplot()
    else:
        fig = root_figure(ax)
    im = ax.imshow(g, cmap=cmap or ("RdBu_r" if signed else "viridis"), norm=norm, interpolation="nearest")
    ax.set_xlabel("channel j")
    ax.set_ylabel("channel i")
    shown = f"first {g.shape[0]} of {c} channels" if g.shape[0] < c else f"{c} channels"
    ax.set_title(title if title is not None else f"Gram matrix ({shown})")
    fig.colorbar(im, ax=ax, label="G_ij" + (" (log scale)" if log else ""))
    return fig


def _pick(x: Any, ndim: int, index: int, fn: str, expected: str) -> np.ndarray:
    """A tensor/array with `ndim` dims, or a batch of them (pick `index`) -> float64 array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    elif isinstance(x, np.ndarray):
        x = x.astype(np.float64)
    else:
        raise TypeError(f"{fn} expects {expected} as a tensor or array, got {type(x).__name__}.")
    if x.ndim == ndim + 1:
        if not -x.shape[0] <= index < x.shape[0]:
            raise IndexError(f"{fn}: index {index} is outside the batch of {x.shape[0]}.")
        x = x[index]
    if x.ndim != ndim or x.size == 0:
        raise ValueError(f"{fn} expects {expected}, got shape {tuple(x.shape)}.")
    return x


# -- curves and bars ------------------------------------------------------------------------------

def plot_losses(
    history: Mapping[str, Any] | StyleResult,
    parts: bool | Sequence[str] = True,
    normalize: bool = False,
    ax: Axes | None = None,
    title: str | None = None,
    logy: bool = True,
    index: int = 0,
    label: str | None = None,
) -> Figure:
    """Loss curves from `StyleResult.history` (name -> array (steps + 1, B)) or the result itself.

    parts: True plots "total" and every part ("content:relu4_2", "style:relu1_1", "tv"; these
        are unweighted, "total" is weighted); False only "total"; a list: exactly those names.
    A run with several scales gets a vertical line where each finer scale starts.
    normalize: divide each curve by its value at step 0 (Choi & Kim's Fig. 3: how fast each
        layer converges relative to where it started); curves that start at 0 are left out.
    index: the batch item to plot. label: a prefix for the legend, to overlay runs with ax=.
    """
    hist = history.history if isinstance(history, StyleResult) else history
    if not isinstance(hist, Mapping):
        raise TypeError(f"plot_losses expects StyleResult.history (a dict name -> array) or a StyleResult, got {type(history).__name__}.")
    scale = hist.get("scale")  # multi-scale runs: which scale each row belongs to; not a curve
    hist = {k: v for k, v in hist.items() if k != "scale"}
    if parts is True:
        names = ["total", *[k for k in hist if k != "total"]] if "total" in hist else list(hist)
    elif parts is False:
        names = ["total"]
    elif isinstance(parts, str):
        raise TypeError(f"parts must be True, False or a list of names, got the string {parts!r}; write [{parts!r}].")
    else:
        names = list(parts)
    missing = [n for n in names if n not in hist]
    if missing or not names:
        raise ValueError(f"plot_losses: no curve named {', '.join(map(repr, missing)) or '(none asked)'}; the history has {', '.join(map(repr, hist)) or 'nothing'}.")

    if ax is None:
        fig = new_figure((7.0, 4.2))
        ax = fig.add_subplot()
        own = True
    else:
        fig, own = root_figure(ax), False
    skipped = []
    for name in names:
        y = _curve(hist[name], name, index)
        if normalize:
            if not (np.isfinite(y[0]) and y[0] != 0):
                skipped.append(name)
                continue
            y = y / y[0]
        style = {"color": "black", "linewidth": 2.0, "zorder": 3} if name == "total" else {"linewidth": 1.2}
        if name.startswith("content:"):
            style["linestyle"] = "--"
        elif name == "tv":
            style["linestyle"] = ":"
        ax.plot(np.arange(len(y)), y, label=f"{label}: {name}" if label else name, **style)
    if scale is not None:  # losses of different sizes are not comparable: mark where each scale starts
        col = np.asarray(scale)[:, 0] if np.ndim(scale) == 2 else np.asarray(scale)
        for row in np.flatnonzero(np.diff(col)) + 1:
            ax.axvline(row - 0.5, color="grey", linewidth=0.8, linestyle="-.", zorder=1)
    if skipped:
        warnings.warn(f"plot_losses: left out {', '.join(skipped)}: it is 0 (or not finite) at step 0, so it cannot be "
                      f"divided by its start (e.g. the content loss when starting from the content image).",
                      UserWarning, stacklevel=2)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss / loss at step 0" if normalize else "loss")
    if title is not None or own:
        ax.set_title(title if title is not None else ("losses relative to step 0" if normalize else "losses"))
    ax.grid(True, which="major", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", ncols=2 if len(ax.get_lines()) > 6 else 1)
    return fig


def _curve(values: Any, name: str, index: int) -> np.ndarray:
    y = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
    if y.ndim == 2:
        if not -y.shape[1] <= index < y.shape[1]:
            raise IndexError(f"plot_losses: index {index} is outside the batch of {y.shape[1]} (curve {name!r}).")
        y = y[:, index]
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"plot_losses: curve {name!r} must be an array (steps + 1, B) or (steps + 1,), got shape {y.shape}.")
    return y


def layer_power_bar(
    powers: Mapping[str, float] | Mapping[str, Mapping[str, float]],
    title: str | None = None,
    logy: bool = True,
    ylabel: str = "mean output power",
    ax: Axes | None = None,
) -> Figure:
    """A bar per layer (Choi & Kim's Fig. 4: the output power of each layer).

    powers: {layer: value}, or {series: {layer: value}} for grouped bars (e.g. one series per
    style image). Single series get their values written over the bars.
    """
    if not isinstance(powers, Mapping) or not powers:
        raise ValueError(f"layer_power_bar expects a non-empty dict layer -> value (or series -> {{layer: value}}), got {powers!r}.")
    grouped = all(isinstance(v, Mapping) for v in powers.values())
    series: dict[str, dict[str, float]] = {}
    for s, layer_values in (powers.items() if grouped else [("", powers)]):
        series[s] = {}
        for layer, v in layer_values.items():
            try:
                value = float(v)
            except (TypeError, ValueError):
                raise TypeError(f"layer_power_bar: the value of {layer!r} must be a number, got {type(v).__name__}.") from None
            if not math.isfinite(value) or (logy and value < 0):
                raise ValueError(f"layer_power_bar: the value of {layer!r} is {value}; expected a finite number"
                                 f"{' >= 0 (log scale)' if logy else ''}.")
            series[s][str(layer)] = value
    layers = list(dict.fromkeys(layer for vals in series.values() for layer in vals))
    if ax is None:
        fig = new_figure((max(5.0, 0.7 * len(layers) * max(1, len(series) ** 0.5) + 1.5), 4.0))
        ax = fig.add_subplot()
    else:
        fig = root_figure(ax)
    x = np.arange(len(layers))
    width = 0.8 / len(series)
    for k, (s, vals) in enumerate(series.items()):
        heights = [vals.get(layer, np.nan) for layer in layers]
        bars = ax.bar(x + (k - (len(series) - 1) / 2) * width, heights, width, label=s or None)
        if not grouped:
            ax.bar_label(bars, fmt="%.3g", fontsize="small")
    ax.set_xticks(x, layers, rotation=45 if len(layers) > 6 else 0, ha="right" if len(layers) > 6 else "center")
    if logy:
        ax.set_yscale("log")
    ax.margins(y=0.12)  # room for the value labels over the highest bar
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title if title is not None else "layer output power")
    if grouped:
        ax.legend(fontsize="small")
    return fig
