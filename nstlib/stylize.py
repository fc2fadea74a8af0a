"""The optimization: change the pixels of an image until its VGG features match the targets.

One function, `stylize`, runs every experiment of the course: content reconstruction (no style
image, or style weight 0), texture synthesis (no content image), the full Gatys transfer and
the normalized variant of Choi & Kim.

What a "step" is: for Adam, one update. For L-BFGS, one iteration, which here is exactly one
evaluation of the loss and its gradient (torch's LBFGS with ``max_iter=1`` and no line search,
as in Gatys' and Johnson's implementations), so both optimizers' step counts measure the same
work: one forward and one backward pass of the network.

Two things make a run fast without changing what it optimizes:

- precision: the network can run in bfloat16 under autocast (`nstlib.precision`); Grams,
  losses, the image and the optimizer state stay float32.
- scales (coarse to fine, as in Gatys et al. 2017 and Crowson's style-transfer-pytorch): the
  image is first optimized small, where a step is cheap and the large structures form, then
  upsampled and refined at the next size. The style image keeps its size relative to the
  output at every scale. With the Gatys loss the content weight is multiplied by
  (output positions / positions at this scale), because the content loss sums over positions
  and the per-position style loss does not: every scale then optimizes the balance that
  alpha / beta set for the output size (the normalized loss is size-invariant already).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from nstlib import __version__
from nstlib import color, regions
from nstlib._io import atomic_write
from nstlib.devices import pick_device, synchronize
from nstlib.images import ImageLike, Size, load_image, resize, save_image, target_size, to_pil
from nstlib.losses import LayerWeights, Objective, Weight, as_batch_weight, build_objective, layer_weight_dict, resolve_weights
from nstlib.memory import estimate_bytes, free_bytes, human, largest_fitting_side
from nstlib.precision import Precision, extract, resolve_precision
from nstlib.vgg import GATYS_CONTENT_LAYERS, GATYS_STYLE_LAYERS, VGGFeatures, load_vgg, preset_name, style_layer_preset

DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02}
LBFGS_LOSS_SCALE = 1e3  # L-BFGS sees the loss scaled to this value at the start of each scale (see _Loop.run_scale)
OPTIMIZERS = ("lbfgs", "adam")


class StopOptimization(Exception):
    """Raise from a callback to end a run early; the best image so far is returned."""


class StopReason(str, Enum):
    """Why a run ended before its last step (`StyleResult.stop_reason`; None: all steps ran)."""

    REQUEST = "request"  # the `stop` event was set (a panel's Stop button)
    CALLBACK = "callback"  # the callback returned True or raised StopOptimization
    INTERRUPTED = "interrupted"  # Ctrl-C
    NON_FINITE = "non-finite"  # the loss became NaN or inf


@dataclass
class StepInfo:
    """What a callback sees every `callback_every` steps."""

    step: int  # steps done so far, over all scales
    steps: int  # steps asked for, over all scales
    loss: float  # total loss (sum over the batch) of the image *before* this step's update
    parts: dict[str, float]  # current unweighted per-layer losses (mean over the batch)
    image: torch.Tensor  # (B, 3, h, w) current image at this scale's size, detached, clamped to [0, 1]
    elapsed: float  # seconds since the run started
    scale: int = 0  # which scale runs (0 = the first, coarsest)
    scales: int = 1  # how many scales the run has

    @property
    def size(self) -> tuple[int, int]:
        """(h, w) of the image at the current scale."""
        return tuple(self.image.shape[-2:])


@dataclass
class StyleResult:
    """What `stylize` returns.

    image: (B, 3, H, W) on the CPU, the lowest-loss image of the run (per batch item), at the
        output size (a run stopped during a coarser scale returns that scale's best, upsampled).
    history: name -> array (rows, B); row k is the loss after k steps (row 0: the start).
        "total" is the weighted total; "content:<layer>", "style:<layer>", "tv" are unweighted.
        A run with several scales has one block of (steps + 1) rows per scale, and "scale" says
        which scale each row belongs to (losses of different sizes are not comparable).
    stopped: None if all steps ran, else why it ended early (text); stop_reason: the same as a
        `StopReason`.
    """

    image: torch.Tensor
    history: dict[str, np.ndarray]
    settings: dict[str, Any]
    wall_time: float
    steps_done: int
    stopped: str | None = None
    weights: str = ""
    device: str = "cpu"
    stop_reason: StopReason | None = None
    peak_memory_mib: float | None = None  # peak GPU memory allocated by torch (CUDA only)

    @property
    def loss(self) -> np.ndarray:
        """(B,) total loss of the returned images (at the output size)."""
        total = self.history["total"]
        if total.shape[0] == 0:  # stopped before the first evaluation
            return np.full(self.image.shape[0], np.nan)
        if "scale" in self.history:
            total = total[self.history["scale"][:, 0] == self.history["scale"].max()]
        return np.nanmin(total, axis=0)

    def to_pil(self, index: int = 0):
        """The result as a PIL image (item `index` of a batch)."""
        return to_pil(self.image, index)

    def save(self, path: str | os.PathLike, index: int = 0) -> Path:
        """Write the image (atomically) and its settings as JSON beside it (same name, .json)."""
        path = save_image(self.image, path, index)
        meta = {
            "settings": self.settings,
            "weights": self.weights,
            "device": self.device,
            "wall_time_s": round(self.wall_time, 3),
            "steps_done": self.steps_done,
            "stopped": self.stopped,
            "stop_reason": self.stop_reason.value if self.stop_reason else None,
            "final_loss": _finite_or_none(float(self.loss[index])),  # JSON has no NaN
            "batch_index": index,
        }
        if self.peak_memory_mib is not None:
            meta["peak_memory_mib"] = round(self.peak_memory_mib, 1)
        with atomic_write(path.with_suffix(".json"), "w") as f:
            json.dump(meta, f, indent=2)
        return path

    def __repr__(self) -> str:
        b, _, h, w = self.image.shape
        end = f", stopped: {self.stopped}" if self.stopped else ""
        return (
            f"StyleResult({b} image{'s' if b > 1 else ''} {h}x{w}, {self.steps_done} steps in "
            f"{self.wall_time:.1f} s on {self.device}, final loss {float(self.loss.sum()):.4g}{end})"
        )


def scale_sizes(start: int, end: int, factor: float = 2 ** 0.5) -> list[int]:
    """Sizes (longest sides) from `start` to `end`, each `factor` times the previous, ending at `end`.

    scale_sizes(128, 512) -> [128, 181, 256, 362, 512] (x sqrt(2), as style-transfer-pytorch);
    scale_sizes(128, 512, 2) -> [128, 256, 512]. Counted down from `end`, so `end` is exact.
    """
    if not (isinstance(start, int) and isinstance(end, int)) or start < 1 or end < start:
        raise ValueError(f"scale_sizes needs whole numbers 1 <= start <= end, got start={start!r}, end={end!r}.")
    if not factor > 1:
        raise ValueError(f"factor must be > 1 (each scale larger than the one before), got {factor!r}.")
    sizes, i = [], 0
    while True:
        s = round(end / factor ** i)
        if s < start:
            break
        if not sizes or s < sizes[-1]:
            sizes.append(s)
        i += 1
    return sizes[::-1]


def stylize(
    content: ImageLike | None,
    style: ImageLike | Sequence[ImageLike] | None,
    *,
    size: Size = None,
    style_size: Size = None,
    style_weights: Sequence[float] | None = None,
    style_masks: ImageLike | torch.Tensor | None = None,
    preserve_colors: str | None = None,
    color_method: str = "cholesky",
    variant: str = "gatys",
    content_layers: LayerWeights = GATYS_CONTENT_LAYERS,
    style_layers: LayerWeights | str = GATYS_STYLE_LAYERS,
    alpha: Weight | None = None,
    beta: Weight | None = None,
    lambda_os: Weight | None = None,
    tv_weight: float = 0.0,
    init: str | ImageLike = "noise",
    noise_level: float = 1.0,
    seed: int = 0,
    optimizer: str = "lbfgs",
    steps: int | Sequence[int] = 300,
    scales: Sequence[int] | None = None,
    precision: str | Precision = "auto",
    lr: float | None = None,
    extractor: VGGFeatures | None = None,
    device: str | torch.device | None = None,
    callback: Callable[[StepInfo], bool | None] | None = None,
    callback_every: int = 10,
    stop: threading.Event | None = None,
    progress: bool = True,
) -> StyleResult:
    """Optimize an image so that its content matches `content` and its style matches `style`.

    content, style: anything `load_image` takes, or None to drop that term (texture synthesis
        needs `size` then). The output has the content image's size after `size`. `style`
        may be a list of images: their styles are blended (see style_weights).
    style_weights: with several style images, how much of each (>= 0, normalized to sum 1;
        default equal). The style target of each layer is the blend of the images' Gram
        matrices, sum_k w_k A_k: for the Gatys loss this has the same minimum as the weighted
        sum of the single-style losses; the normalized loss divides by the blend's energy, so
        the weights keep their meaning as fractions of each Gram (dividing each style's loss
        by its own energy would favour the style with the weaker activations).
    style_masks: spatial control (Gatys et al. 2017): which region of the output takes which
        style image. A label image whose distinct colours, sorted dark to light, select the
        style images in order (black-and-white: black takes style 1), or a float tensor
        (K, H, W) of region weights in [0, 1]; resized to the output. Excludes style_weights.
        See `nstlib.regions` (guided Gram matrices).
    preserve_colors: None, "luminance" (Gatys et al. 2017: the transfer runs on luminance, the
        style's luminance matched to the photo's mean and spread, and the result takes the
        photo's colours, I and Q of YIQ) or "histogram" (the style images are recoloured to the
        photo's colour mean and covariance before the transfer; `color_method` "cholesky" or
        "pca" chooses the matrix, see `nstlib.color`). Needs a content image. With
        "luminance" the callback's previews are the grey image being optimized.
    size: longest side (int) or (H, W) of the output; None keeps the content image's size.
    style_size: the style image's longest side or (H, W) at the output size; None: the output's
        longest side. At a coarser scale the style image shrinks by the same factor.
    variant: "gatys" (L = alpha L_content + beta L_style) or "normalized" (Choi & Kim:
        L = w (lambda_os L_o + L_s), every partial loss divided by its target's energy).
    content_layers, style_layers: layer names (equal weights summing to 1) or {name: weight};
        style_layers may also name a preset, "gatys" or "choi-kim".
    alpha, beta: the Gatys weights (defaults 1 and 1e3); lambda_os: the normalized variant's
        content weight (default 1e-2). A sequence instead of a number runs one image per value
        as one batch (likewise a sequence as a layer's weight). With Adam the batch items are
        independent runs (each item's gradient is its own, Adam is elementwise); only float
        rounding differs, which Adam can grow over many steps in pixels with near-zero
        gradients (same picture, not the same bits). L-BFGS shares one curvature history and
        step size across the batch, so a batched L-BFGS run is a joint optimization, close to
        but not the same as separate runs.
    init: "noise" (seeded white noise), "content", "style", or an image.
    noise_level: amplitude of the "noise" start around mid-grey: pixels uniform in
        0.5 +- noise_level / 2 (1: uniform in [0, 1]). The optimizer removes only what the loss
        sees, so the part of the noise a layer is blind to (fine, high-frequency patterns for
        deep layers) stays in the result: 0.02 gives a nearly flat start whose noise only
        breaks the symmetry, and cleaner content reconstructions (notebook 2).
    optimizer: "lbfgs" or "adam"; lr: None for the default.
    steps: steps per scale (see the module docstring), or one number per scale.
    scales: None for one scale (the output size), or the longest sides to run at, increasing,
        e.g. (128, 256) or `scale_sizes(128, 512)`; the output size is added as the last scale
        if it is not there. The image is upsampled from one scale to the next; L-BFGS starts
        afresh at each scale, Adam carries its moments over (resized), as style-transfer-pytorch.
    precision: "auto" (bfloat16 for the network where it is native and measured faster, see
        `nstlib.precision`), "float32" or "bfloat16".
    callback(info) every `callback_every` steps; return True (or raise StopOptimization) to stop.
    stop: a threading.Event another thread can set to end the run.
    Ctrl-C, a stop, or a NaN/inf loss end the run early and return the best image so far.
    """
    t_start = time.perf_counter()
    optimizer = _check_choice(optimizer, OPTIMIZERS, "optimizer")
    weights = resolve_weights(variant, alpha, beta, lambda_os)
    if preserve_colors is not None:
        _check_choice(preserve_colors, color.PRESERVE_COLORS, "preserve_colors")
        if content is None:
            raise ValueError(f"preserve_colors={preserve_colors!r} keeps the colours of the content image, and there is none; "
                             f"pass a content image or preserve_colors=None.")
    _check_choice(color_method, color.COLOR_METHODS, "color_method")
    if not isinstance(callback_every, int) or isinstance(callback_every, bool) or callback_every < 1:
        raise ValueError(f"callback_every must be an int >= 1, got {callback_every!r}.")
    if content is None and style is None:
        raise ValueError("stylize needs a content image, a style image, or both; got neither.")
    lr = DEFAULT_LR[optimizer] if lr is None else float(lr)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}.")
    if isinstance(noise_level, bool) or not isinstance(noise_level, (int, float)) or not 0 < noise_level <= 1:
        raise ValueError(f"noise_level must be a number in (0, 1] (the amplitude of the noise start around mid-grey), "
                         f"got {noise_level!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be a whole number from 0 to 2**63 - 1, got {seed!r}.")
    if extractor is not None and not isinstance(extractor, VGGFeatures):
        raise TypeError(f"extractor must be a network from nstlib.vgg.load_vgg(...), got {type(extractor).__name__} "
                        f"{extractor!r:.60}; to name weights, use extractor=load_vgg({extractor!r:.40}).")

    dev = pick_device(device)
    net = extractor if extractor is not None else load_vgg()
    net.to(dev)
    prec = resolve_precision(precision, dev)

    # -- images and the plan: which sizes, how many steps each ------------------------------
    # Loaded at their own size first: a typo like size=100000 must be refused before anything
    # is upsampled to it (see the memory check below).
    content_raw = load_image(content) if content is not None else None
    if content_raw is None:
        if size is None:
            raise ValueError("without a content image, pass size= (an int or (H, W)) for the output.")
        out_hw = target_size((size, size) if isinstance(size, int) else tuple(size), size)
    else:
        out_hw = target_size(tuple(content_raw.shape[-2:]), size)
    style_list = _style_list(style)
    if style_masks is not None and style_weights is not None:
        raise ValueError("style_masks and style_weights exclude each other: with masks each region takes one style "
                         "image whole; to blend two styles in a region, blend them in the mask's weights instead.")
    blend = _blend_weights(style_weights, len(style_list))
    if style_masks is not None:
        if not style_list:
            raise ValueError("style_masks says which region takes which style image, and there is no style image.")
        masks = regions.resize_masks(regions.masks_from_labels(style_masks, len(style_list)), out_hw)
        blend = None
    style_raws = [load_image(s) for s in style_list]
    style_hws = [target_size(tuple(r.shape[-2:]), max(out_hw) if style_size is None else style_size) for r in style_raws]
    style_hw = style_hws[0] if style_hws else None
    use_content = content_raw is not None and not _all_zero(weights.content)
    use_style = bool(style_raws) and not _all_zero(weights.style)
    c_layers = layer_weight_dict(content_layers, "content_layers") if use_content else {}
    if isinstance(style_layers, str) and preset_name(style_layers):
        style_layers = style_layer_preset(style_layers, net.arch)
    s_layers = layer_weight_dict(style_layers, "style_layers") if use_style else {}
    use_content, use_style = bool(c_layers), bool(s_layers)  # no layers drops the term
    if not c_layers and not s_layers and not tv_weight:
        raise ValueError("nothing to optimize: no content or style term is left (check the images and weights).")
    plan = plan_scales(out_hw, scales, steps, style_hw)
    first = plan[0]
    where = f" at the first scale ({first.hw[0]}x{first.hw[1]})" if len(plan) > 1 else ""
    net.check_input_size(*first.hw, [*c_layers, *s_layers], what=f"the output image{where}")
    for i, hw in enumerate(style_hws if s_layers else []):
        which = f"the style image{f' {i + 1}' if len(style_hws) > 1 else ''}"
        net.check_input_size(*_at_scale(hw, max(first.hw), max(out_hw)), list(s_layers), what=f"{which}{where}")
    batch = _batch_size([as_batch_weight(w, "weight") for w in (weights.content, weights.style, *c_layers.values(), *s_layers.values())])
    needed = check_memory(net, dev, out_hw, [*c_layers, *s_layers], batch, prec.name, optimizer)
    for hw in style_hws if s_layers else []:  # the style images are upsampled and run through the network too
        check_memory(net, dev, hw, list(s_layers), 1, prec.name, "adam", what="style image", option="style_size")
    content_img = resize(content_raw, out_hw) if content_raw is not None else None
    style_imgs = [resize(r, hw) for r, hw in zip(style_raws, style_hws)]
    photo_rgb = content_img  # the colours a preserve_colors run gives back
    if preserve_colors == "histogram":
        style_imgs = [color.match_color(s, content_img, color_method) for s in style_imgs]
    elif preserve_colors == "luminance":
        style_imgs = [color.match_luminance(s, content_img) for s in style_imgs]
        content_img = color.as_grey_rgb(content_img)
    style_img = style_imgs[0] if style_imgs else None

    settings = _settings(
        content=content, style=style_list if len(style_list) > 1 else style,
        size=out_hw, style_size=(None if not use_style else list(style_img.shape[-2:]) if len(style_imgs) == 1
                                 else [list(s.shape[-2:]) for s in style_imgs]),
        style_weights=blend if len(style_list) > 1 and style_masks is None else None,
        style_masks=None if style_masks is None else (
            _describe_source(style_masks) if not isinstance(style_masks, torch.Tensor) else "<Tensor>"),
        preserve_colors=preserve_colors, color_method=color_method if preserve_colors == "histogram" else None,
        variant=weights.variant, content_layers=c_layers, style_layers=s_layers,
        alpha=weights.content if weights.variant == "gatys" else None,
        beta=weights.style if weights.variant == "gatys" else None,
        lambda_os=weights.content if weights.variant == "normalized" else None,
        tv_weight=tv_weight, init=init if isinstance(init, str) else _describe_source(init),
        noise_level=float(noise_level) if isinstance(init, str) and init == "noise" else None, seed=seed,
        optimizer=optimizer, steps=steps if isinstance(steps, int) else list(steps),
        scales=[max(p.hw) for p in plan] if len(plan) > 1 else None, precision=prec.name,
        precision_reason=prec.reason, lr=lr, device=str(dev), pooling=net.pooling, arch=net.arch,
        memory_estimate_mb=round(needed / 2**20),
    )
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    _warn_if_slow(out_hw, dev)

    loop = _Loop(net=net, precision=prec, optimizer=optimizer, lr=lr, callback=callback,
                 callback_every=callback_every, stop=stop, t_start=t_start, n_scales=len(plan),
                 total_steps=sum(p.steps for p in plan))
    from tqdm.auto import tqdm

    loop.bar = tqdm(total=loop.total_steps, disable=not progress, unit="step")
    def objective_at(k: int) -> Objective:
        """The targets at scale k. The Gatys content loss sums over positions and the style loss
        is per position, so the content weight is scaled to keep the output size's balance."""
        hw = plan[k].hw
        c_factor = (out_hw[0] * out_hw[1]) / (hw[0] * hw[1]) if weights.variant == "gatys" else 1.0
        return build_objective(
            net, resize(content_img, hw) if use_content else None,
            [resize(s, _at_scale(tuple(s.shape[-2:]), max(hw), max(out_hw))) for s in style_imgs] if use_style else None,
            content_layers=c_layers, style_layers=s_layers, variant=weights.variant,
            content_weight=_times(weights.content, c_factor), style_weight=weights.style, tv_weight=tv_weight,
            pixels=hw[0] * hw[1], precision=prec, style_blend=blend,
            style_masks=masks if style_masks is not None and use_style else None,
        )

    best: BestImage | None = None
    try:
        for k, sc in enumerate(plan):
            objective = objective_at(k)
            if best is None:
                x = _initial_image(init, resize(content_img, sc.hw) if content_img is not None else None, style_img, sc.hw, batch,
                                   seed, noise_level)
            else:
                x = _upsample(best.image, sc.hw, content_img if init == "content" else None, plan[k - 1].hw)
            x = x.to(dev).contiguous().requires_grad_(True)
            best = BestImage(x)
            loop.bar.set_description(f"{weights.variant}/{optimizer} {sc.hw[0]}x{sc.hw[1]}"
                                     + (f" (scale {k + 1}/{len(plan)})" if len(plan) > 1 else ""))
            loop.run_scale(k, x, objective, best, sc.steps)
            if loop.stop_reason is not None:
                break
    finally:
        loop.bar.close()

    # A run stopped at a coarser scale returns that scale's best image at the output size,
    # with its loss there (so that `loss` always means the returned image's loss).
    if best.image.shape[-2:] != out_hw:
        best = BestImage(_upsample(best.image, out_hw, None, None))
        try:
            with torch.no_grad():
                loop.record(len(plan) - 1, objective_at(len(plan) - 1), best.image, best)
        except KeyboardInterrupt:  # another Ctrl-C: return the image without its loss at the output size
            loop._end(StopReason.INTERRUPTED, f"interrupted (Ctrl-C) after {loop.done} steps")
    if loop.stop_reason is StopReason.NON_FINITE:
        warnings.warn(
            f"stylize: {loop.stopped}. Returned the best finite image so far. Lower lr"
            f"{' (L-BFGS: try lr=0.5)' if optimizer == 'lbfgs' else ' or use L-BFGS'}, or the weights.",
            RuntimeWarning, stacklevel=2,
        )
    synchronize(dev)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    history = loop.history(multi_scale=len(plan) > 1)
    image = best.image.detach().clamp(0, 1).cpu()
    if preserve_colors == "luminance":  # the optimized luminance with the photo's chroma
        image = color.recombine_luminance(image, photo_rgb.cpu())
    return StyleResult(
        image=image, history=history, settings=settings,
        wall_time=time.perf_counter() - t_start, steps_done=loop.done, stopped=loop.stopped,
        weights=net.describe(), device=str(dev), stop_reason=loop.stop_reason, peak_memory_mib=peak,
    )


@dataclass(frozen=True)
class ScaleStep:
    """One scale of a run: image size (h, w), style image size, steps."""

    hw: tuple[int, int]
    style_hw: tuple[int, int] | None
    steps: int


def plan_scales(out_hw: tuple[int, int], scales: Sequence[int] | None, steps: int | Sequence[int],
                style_hw: tuple[int, int] | None = None) -> list[ScaleStep]:
    """The sizes a run optimizes at, coarse to fine, with the steps of each.

    out_hw: the output (H, W); scales: longest sides, increasing, <= max(out_hw) (the output is
    appended if it is not the last), or None for one scale; steps: per scale, or one per scale;
    style_hw: the style image's size at the output scale (it shrinks with the output).
    """
    longest = max(out_hw)
    if scales is None:
        sizes = [longest]
    else:
        if isinstance(scales, (str, bytes)) or not isinstance(scales, Sequence):
            raise TypeError(f"scales must be a list of sizes such as [128, 256] (longest sides, increasing), got {scales!r}.")
        sizes = list(scales)
        if not sizes or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes):
            raise ValueError(f"scales must be whole numbers >= 1 (longest sides in px), got {list(scales)!r}.")
        if any(b <= a for a, b in zip(sizes, sizes[1:])):
            raise ValueError(f"scales must increase from coarse to fine, got {sizes}; e.g. [128, 181, 256].")
        if sizes[-1] > longest:
            raise ValueError(f"scales go up to the output size ({longest} px, the longest side), got {sizes}; "
                             f"raise size= or drop the larger scales.")
        if sizes[-1] < longest:
            sizes.append(longest)
    if isinstance(steps, int) and not isinstance(steps, bool):
        per_scale = [steps] * len(sizes)
    elif isinstance(steps, Sequence) and not isinstance(steps, (str, bytes)):
        per_scale = list(steps)
        if len(per_scale) != len(sizes):
            raise ValueError(f"steps has {len(per_scale)} entries but the run has {len(sizes)} scale(s) {sizes} "
                             f"(the output size is always the last): give one number per scale, or one number for all.")
    else:
        raise ValueError(f"steps must be a whole number >= 0, or one per scale, got {steps!r}.")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in per_scale):
        raise ValueError(f"steps must be whole numbers >= 0, got {steps!r}.")
    plan = []
    for s, n in zip(sizes, per_scale):
        f = s / longest
        hw = out_hw if s == longest else (max(1, round(out_hw[0] * f)), max(1, round(out_hw[1] * f)))
        shw = None if style_hw is None else (
            tuple(style_hw) if s == longest else (max(1, round(style_hw[0] * f)), max(1, round(style_hw[1] * f))))
        plan.append(ScaleStep(tuple(hw), shw, n))
    return plan


class BestImage:
    """The lowest-loss image so far, per batch item; updated on the device without a host sync."""

    def __init__(self, x: torch.Tensor) -> None:
        self.loss = torch.full((x.shape[0],), math.inf, device=x.device)
        self.image = x.detach().clone()  # (B, 3, H, W)

    def update(self, total: torch.Tensor, x: torch.Tensor) -> None:
        """total (B,) is the loss of x (B, 3, H, W). NaN compares False, so the image stays finite."""
        better = total < self.loss
        self.loss = torch.where(better, total, self.loss)
        self.image = torch.where(better.view(-1, 1, 1, 1), x.detach(), self.image)


@dataclass
class _Loop:
    """The optimization steps of one run: its optimizers, its history, why it stopped."""

    net: VGGFeatures
    precision: Precision
    optimizer: str
    lr: float
    callback: Callable[[StepInfo], bool | None] | None
    callback_every: int
    stop: threading.Event | None
    t_start: float
    n_scales: int
    total_steps: int
    bar: Any = None
    done: int = 0
    stop_reason: StopReason | None = None
    stopped: str | None = None  # the reason as text, with its detail
    _totals: list[torch.Tensor] = field(default_factory=list)
    _rows: list[torch.Tensor] = field(default_factory=list)
    _scale_of_row: list[int] = field(default_factory=list)
    _names: list[str] = field(default_factory=list)
    _adam_state: dict[str, torch.Tensor] | None = None

    def record(self, scale: int, objective: Objective, x: torch.Tensor, best: BestImage) -> torch.Tensor:
        """Evaluate the objective at x, append a history row, update the best image; returns total (B,)."""
        total, parts = objective(extract(self.net, x, objective.layers, self.precision), x)
        t = total.detach()
        self._totals.append(t)
        self._scale_of_row.append(scale)
        if not self._names:
            self._names.extend(parts)
        self._rows.append(torch.stack([p.detach().expand(t.shape[0]) for p in parts.values()]) if parts else t.new_zeros(0, t.shape[0]))
        best.update(t, x)
        return total

    def run_scale(self, scale: int, x: torch.Tensor, objective: Objective, best: BestImage, steps: int) -> None:
        """`steps` optimizer steps on x at one scale; sets stop_reason if the run must end."""
        if self.optimizer == "lbfgs":
            # max_iter=1: one iteration = one loss evaluation per step() call, so the loop can
            # report progress, call back and stop between iterations; tolerance_grad=0 so a
            # tiny (but non-zero) gradient does not end the run silently.
            opt: torch.optim.Optimizer = torch.optim.LBFGS([x], lr=self.lr, max_iter=1, history_size=100,
                                                           tolerance_grad=0.0, tolerance_change=0.0)
        else:
            opt = torch.optim.Adam([x], lr=self.lr)
            if self._adam_state is not None:  # carried over from the coarser scale, resized
                s = self._adam_state
                opt.state[x] = {
                    "step": s["step"],
                    "exp_avg": F.interpolate(s["exp_avg"], size=x.shape[-2:], mode="bicubic", align_corners=False),
                    "exp_avg_sq": F.interpolate(s["exp_avg_sq"], size=x.shape[-2:], mode="bilinear", align_corners=False).clamp_min(0),
                }

        # L-BFGS runs on 1000 * L / L(x0) per image: the same minimum, with moderate numbers.
        # Raw Gatys losses reach 1e11 with Caffe weights, and torch's LBFGS (no line search) then
        # overshoots into inf within a few iterations. Scaling to 1 instead of 1000 converges
        # too, but near convergence the curvature products underflow into denormal floats,
        # which made CPU steps 3-4x slower; 1e6 stalls the first steps. Adam is scale-invariant.
        loss_scale: torch.Tensor | None = None

        def closure() -> torch.Tensor:
            nonlocal loss_scale
            opt.zero_grad(set_to_none=True)
            total = self.record(scale, objective, x, best)
            if self.optimizer == "lbfgs":
                if loss_scale is None:
                    loss_scale = LBFGS_LOSS_SCALE / total.detach().clamp_min(1e-30)
                loss = (total * loss_scale).sum()
            else:
                loss = total.sum()
            loss.backward()
            return loss

        # L-BFGS syncs on the loss every step anyway; Adam need not, so it checks every 10 steps.
        check_every = 1 if self.optimizer == "lbfgs" else 10
        done_here = 0
        try:
            while done_here < steps:
                if self.stop is not None and self.stop.is_set():
                    self._end(StopReason.REQUEST, "stopped by request")
                    break
                opt.step(closure)
                if self.optimizer == "adam":
                    with torch.no_grad():
                        x.clamp_(0.0, 1.0)
                done_here += 1
                self.done += 1
                self.bar.update(1)
                if scale == 0 and done_here == 1:
                    start = float(self._totals[0].sum())
                    if not math.isfinite(start):
                        raise ValueError(
                            f"the loss is {start} at the start, before any step: the network or the images give "
                            f"non-finite features (NaN or inf weights, or an image with NaN). Check the weights "
                            f"file and the images.")
                if done_here % check_every == 0 or done_here == steps:
                    last = float(self._totals[-1].sum())
                    if not math.isfinite(last):
                        self._end(StopReason.NON_FINITE, f"non-finite loss ({last}) at step {self.done}")
                        break
                    self.bar.set_postfix(loss=f"{last:.4g}", refresh=False)
                if self.callback is not None and self.done % self.callback_every == 0:
                    info = StepInfo(self.done, self.total_steps, float(self._totals[-1].sum()),
                                    dict(zip(self._names, self._rows[-1].mean(1).tolist())) if self._names else {},
                                    x.detach().clamp(0, 1), time.perf_counter() - self.t_start, scale, self.n_scales)
                    try:
                        stop_now = self.callback(info)
                    except StopOptimization:
                        stop_now = True
                    if stop_now:
                        self._end(StopReason.CALLBACK, "stopped by callback")
                        break
        except KeyboardInterrupt:
            self._end(StopReason.INTERRUPTED, f"interrupted (Ctrl-C) after {self.done} steps")
        if self.stop_reason is not StopReason.NON_FINITE:
            try:
                with torch.no_grad():
                    self.record(scale, objective, x, best)
            except KeyboardInterrupt:  # a second Ctrl-C: skip the last evaluation, keep the best image
                self._end(StopReason.INTERRUPTED, f"interrupted (Ctrl-C) after {self.done} steps")
        if self.optimizer == "adam" and x in opt.state:
            st = opt.state[x]
            self._adam_state = {k: st[k] for k in ("step", "exp_avg", "exp_avg_sq")}

    def _end(self, reason: StopReason, text: str) -> None:
        self.stop_reason, self.stopped = reason, text

    def history(self, multi_scale: bool) -> dict[str, np.ndarray]:
        """name -> (rows, B) on the CPU; with several scales also "scale" (rows, B), the scale of each row."""
        if not self._totals:
            return {"total": np.zeros((0, 1))}
        hist = {"total": torch.stack(self._totals).cpu().numpy()}
        if self._names:
            stacked = torch.stack(self._rows).cpu().numpy()  # (rows, parts, B)
            for i, n in enumerate(self._names):
                hist[n] = stacked[:, i, :]
        if multi_scale:
            hist["scale"] = np.repeat(np.asarray(self._scale_of_row)[:, None], hist["total"].shape[1], axis=1)
        return hist


# -- helpers ---------------------------------------------------------------------------

def _style_list(style: ImageLike | Sequence[ImageLike] | None) -> list[ImageLike]:
    """One style image, a list of them, or None -> a list (a tuple or list means several)."""
    if style is None:
        return []
    if isinstance(style, (list, tuple)):
        if not style:
            raise ValueError("style is an empty list; pass one or more images, or None for no style term.")
        if any(s is None for s in style):
            raise ValueError("style lists an image as None; pass only images (or style=None for no style term).")
        return list(style)
    return [style]


def _blend_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """The style images' blend weights, >= 0 and normalized to sum 1 (equal when None)."""
    if weights is None:
        return [1.0 / n] * n if n else []
    if isinstance(weights, (str, bytes)) or not isinstance(weights, (Sequence, np.ndarray, torch.Tensor)):
        raise TypeError(f"style_weights must be a list of numbers, one per style image, got {weights!r}.")
    w = [float(x) for x in weights]
    if len(w) != n:
        raise ValueError(f"style_weights has {len(w)} value(s) but there {'is' if n == 1 else 'are'} {n} style image(s); "
                         f"give one weight per style image, e.g. {[round(1 / max(n, 1), 2)] * max(n, 1)}.")
    if not all(math.isfinite(x) and x >= 0 for x in w) or sum(w) <= 0:
        raise ValueError(f"style_weights must be finite, >= 0 and not all 0, got {list(weights)!r}.")
    return [x / sum(w) for x in w]


def _at_scale(hw: tuple[int, int], longest_now: int, longest_out: int) -> tuple[int, int]:
    """An image size at the output scale -> its size at a scale whose longest side is longest_now."""
    if longest_now == longest_out:
        return tuple(hw)
    f = longest_now / longest_out
    return max(1, round(hw[0] * f)), max(1, round(hw[1] * f))


def _check_choice(value: str, choices: Sequence[str], name: str) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}.")
    return value


def _all_zero(w: Weight) -> bool:
    return bool((torch.as_tensor(w, dtype=torch.float32) == 0).all())


def _batch_size(weights: list[torch.Tensor]) -> int:
    sizes = {int(w.shape[0]) for w in weights if w.ndim == 1}
    if len(sizes) > 1:
        raise ValueError(f"weights given as sequences must all have the same length (one per image); got lengths {sorted(sizes)}.")
    return sizes.pop() if sizes else 1


def _initial_image(init, content, style, out_hw, batch, seed, noise_level: float = 1.0) -> torch.Tensor:
    if isinstance(init, str):
        if init == "noise":
            g = torch.Generator().manual_seed(seed)
            noise = torch.rand(batch, 3, *out_hw, generator=g)
            # noise_level 1 keeps the historical start (and its seeds' images) bit for bit
            return noise if noise_level == 1 else 0.5 + noise_level * (noise - 0.5)
        if init == "content":
            if content is None:
                raise ValueError("init='content' needs a content image.")
            return content.expand(batch, -1, -1, -1).clone()
        if init == "style":
            if style is None:
                raise ValueError("init='style' needs a style image.")
            return resize(style, out_hw).expand(batch, -1, -1, -1).clone()
        if not os.path.exists(init):
            raise ValueError(f"init must be 'noise', 'content', 'style' or an image, got {init!r}.")
    return resize(load_image(init), out_hw).expand(batch, -1, -1, -1).clone()


def _warn_if_slow(out_hw: tuple[int, int], dev: torch.device) -> None:
    if dev.type == "cpu" and out_hw[0] * out_hw[1] > 400 * 400:
        warnings.warn(
            f"{out_hw[0]}x{out_hw[1]} px on the CPU will be slow (seconds per step); try size=256 or less.",
            RuntimeWarning, stacklevel=3,
        )


def check_memory(net: VGGFeatures, device: torch.device, hw: tuple[int, int], layers: Sequence[str], batch: int,
                 precision: str, optimizer: str, what: str = "output", option: str = "size") -> int:
    """Bytes a run at (H, W) needs (`nstlib.memory`); MemoryError if that is more than 90 % of what is free."""
    needed = estimate_bytes(net, hw, layers, batch=batch, precision=precision, optimizer=optimizer)
    free = free_bytes(device)
    if free is not None and needed > 0.9 * free:
        side = largest_fitting_side(net, hw, layers, int(0.9 * free), batch=batch, precision=precision, optimizer=optimizer)
        where = "the GPU" if device.type == "cuda" else "this machine"
        flag = "--" + option.replace("_", "-")
        fix = (f"use {option}={side} or smaller ({flag} {side})" if side >= 16 else
               "close other programs, or use fewer or shallower layers")
        raise MemoryError(
            f"a {hw[0]}x{hw[1]} {what}{f' (batch of {batch})' if batch > 1 else ''} needs about {human(needed)} "
            f"(the network's activations up to its deepest layer and the optimizer's state), but {where} has "
            f"{human(free)} free. The largest size that fits is about {side} px: {fix}."
        )
    return needed


def _upsample(image: torch.Tensor, hw: tuple[int, int], photo: torch.Tensor | None,
              coarse_hw: tuple[int, int] | None) -> torch.Tensor:
    """A coarser scale's result (B, 3, h, w) -> (B, 3, *hw), clamped to [0, 1].

    With `photo` (a run that starts from the photo), the band of the photo's detail that the
    coarser scale (`coarse_hw`) was too small to hold is added back: one Laplacian-pyramid
    step, so that edges lost to the small size do not have to be found again by the optimizer.
    """
    x = F.interpolate(image, size=hw, mode="bicubic", align_corners=False)
    if photo is not None:
        detail = resize(photo, hw) - F.interpolate(resize(photo, coarse_hw), size=hw, mode="bicubic", align_corners=False)
        x = x + detail.to(x.device)
    return x.clamp(0, 1)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _times(weight: Weight, factor: float) -> Weight:
    """A weight (number, sequence or tensor) times a factor."""
    if factor == 1.0:
        return weight
    if isinstance(weight, (int, float)):
        return weight * factor
    return torch.as_tensor(weight, dtype=torch.float32) * factor


def _describe_source(src: object) -> str | None:
    if src is None:
        return None
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    return f"<{type(src).__name__}>"


def _jsonable(v: Any) -> Any:
    if isinstance(v, (torch.Tensor, np.ndarray, np.generic)):
        return v.tolist()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _settings(**fields: Any) -> dict[str, Any]:
    """The run's settings as JSON-ready values (what `StyleResult.save` writes), in this order."""
    fields["content"] = _describe_source(fields["content"])
    style = fields["style"]
    fields["style"] = [_describe_source(x) for x in style] if isinstance(style, list) else _describe_source(style)
    return _jsonable({**fields, "nstlib": __version__, "torch": torch.__version__})
