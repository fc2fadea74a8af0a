"""The optimization: change the pixels of an image until its VGG features match the targets.

One function, `stylize`, runs every experiment of the course: content reconstruction (no style
image, or style weight 0), texture synthesis (no content image), the full Gatys transfer and
the normalized variant of Choi & Kim. It reads as the recipe:

    settings (`nstlib.settings.RunSettings`: every choice of the run, checked once)
    -> the plan (`nstlib.plan.prepare`: images loaded and sized, scales, layers, memory check,
       colour transforms)
    -> the loop, scale by scale (`nstlib.loop.Loop`: steps, history, the best image so far)
    -> the result (`nstlib.result.StyleResult`: image, history, settings; `save` writes PNG + JSON).

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

import threading
import time
import warnings
from typing import Any, Callable, Sequence

import torch

from nstlib.devices import pick_device, synchronize
from nstlib.images import ImageLike, resize
from nstlib.loop import BestImage, Loop, StepInfo, StopOptimization, StopReason, initial_image, upsample
from nstlib.plan import Plan, ScaleStep, check_memory, plan_scales, prepare, scale_sizes
from nstlib.precision import resolve_precision
from nstlib.result import StyleResult
from nstlib.settings import DEFAULT_LR, OPTIMIZERS, RunSettings
from nstlib.vgg import VGGFeatures, load_vgg

__all__ = ["stylize", "StyleResult", "StepInfo", "StopOptimization", "StopReason", "RunSettings", "plan_scales",
           "scale_sizes", "ScaleStep", "check_memory", "DEFAULT_LR", "OPTIMIZERS"]


def stylize(
    content: ImageLike | None,
    style: ImageLike | Sequence[ImageLike] | None,
    settings: RunSettings | None = None,
    *,
    style_masks: ImageLike | torch.Tensor | None = None,
    extractor: VGGFeatures | None = None,
    callback: Callable[[StepInfo], bool | None] | None = None,
    callback_every: int = 10,
    stop: threading.Event | None = None,
    progress: bool = True,
    **changes: Any,
) -> StyleResult:
    """Optimize an image so that its content matches `content` and its style matches `style`.

    content, style: anything `load_image` takes, or None to drop that term (texture synthesis
        needs `size` then). `style` may be a list of images: their styles are blended
        (`style_weights`: the blend of their Gram matrices) or placed by `style_masks`.
    settings: a `RunSettings` (default: the paper's run, `RunSettings()`); `changes` are
        settings given by name over it: `stylize(c, s, size=256, steps=200)`, or
        `stylize(c, s, RunSettings.preset("fast", 256))`. `RunSettings` documents each one.
    style_masks: spatial control (Gatys et al. 2017): a label image whose distinct colours,
        sorted dark to light, select the style images in order, or a float tensor (K, H, W) of
        region weights in [0, 1]; resized to the output (`nstlib.regions`, guided Grams).
    extractor: the network (`nstlib.vgg.load_vgg`); None loads the one `settings.weights` names.
    callback(info) every `callback_every` steps; return True (or raise StopOptimization) to stop.
    stop: a threading.Event another thread can set to end the run.
    Ctrl-C, a stop, or a NaN/inf loss end the run early and return the best image so far.

    With a batch of weights (a sequence as alpha, beta, lambda_os or a layer's weight), one image
    per value runs as one batch: with Adam exactly independent runs; L-BFGS shares one curvature
    history across the batch, so a batched L-BFGS run is close to, not the same as, separate runs.
    """
    t_start = time.perf_counter()
    s = (settings if settings is not None else RunSettings()).replace(**changes)
    if not isinstance(callback_every, int) or isinstance(callback_every, bool) or callback_every < 1:
        raise ValueError(f"callback_every must be an int >= 1, got {callback_every!r}.")
    if extractor is not None and not isinstance(extractor, VGGFeatures):
        raise TypeError(f"extractor must be a network from nstlib.vgg.load_vgg(...), got {type(extractor).__name__} "
                        f"{extractor!r:.60}; to name weights, use extractor=load_vgg({extractor!r:.40}).")
    dev = pick_device(s.device)
    net = extractor if extractor is not None else load_vgg(s.weights, pooling=s.pooling or "avg")
    if s.pooling is not None and net.pooling != s.pooling:
        raise ValueError(f"the settings ask for pooling={s.pooling!r} but the network given as extractor uses "
                         f"{net.pooling!r}; pass extractor=load_vgg(..., pooling={s.pooling!r}) or drop pooling.")
    net.to(dev)
    precision = resolve_precision(s.precision, dev)

    plan = prepare(content, style, style_masks, s, net, dev, precision)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    _warn_if_slow(plan.out_hw, dev)
    loop = Loop(net=net, precision=precision, optimizer=s.optimizer, lr=s.learning_rate, callback=callback,
                callback_every=callback_every, stop=stop, t_start=t_start, n_scales=len(plan.scales),
                total_steps=plan.total_steps)
    best = _optimize(plan, net, loop, dev, progress)
    return _result(plan, net, loop, best, dev, t_start)


def _optimize(plan: Plan, net: VGGFeatures, loop: Loop, dev: torch.device, progress: bool) -> BestImage:
    """The loop, scale by scale: each scale starts from the previous one's best image, upsampled."""
    from tqdm.auto import tqdm

    s = plan.settings
    from_photo = isinstance(s.init, str) and s.init == "content"
    loop.bar = tqdm(total=loop.total_steps, disable=not progress, unit="step")
    best: BestImage | None = None
    try:
        for k, sc in enumerate(plan.scales):
            objective = plan.objective(k, net)
            if best is None:
                content = _resize_or_none(plan.content, sc.hw)
                x = initial_image(s.init, content, plan.styles[0] if plan.styles else None, sc.hw, plan.batch, s.seed,
                                  s.noise_level)
            else:
                x = upsample(best.image, sc.hw, plan.content if from_photo else None, plan.scales[k - 1].hw)
            x = x.to(dev).contiguous().requires_grad_(True)
            best = BestImage(x)
            loop.bar.set_description(f"{plan.weights.variant}/{s.optimizer} {sc.hw[0]}x{sc.hw[1]}"
                                     + (f" (scale {k + 1}/{len(plan.scales)})" if len(plan.scales) > 1 else ""))
            last = k == len(plan.scales) - 1
            loop.run_scale(k, x, objective, best, sc.steps, s.tolerance if last else None)
            if loop.stop_reason not in (None, StopReason.CONVERGED):
                break
    finally:
        loop.bar.close()
    # A run stopped at a coarser scale returns that scale's best image at the output size,
    # with its loss there (so that `loss` always means the returned image's loss).
    if best.image.shape[-2:] != plan.out_hw:
        best = BestImage(upsample(best.image, plan.out_hw, None, None))
        try:
            with torch.no_grad():
                loop.record(len(plan.scales) - 1, plan.objective(len(plan.scales) - 1, net), best.image, best)
        except KeyboardInterrupt:  # another Ctrl-C: return the image without its loss at the output size
            loop.end(StopReason.INTERRUPTED, f"interrupted (Ctrl-C) after {loop.done} steps")
    return best


def _result(plan: Plan, net: VGGFeatures, loop: Loop, best: BestImage, dev: torch.device, t_start: float) -> StyleResult:
    """The best image on the CPU (with the photo's colours for a luminance-only run), its history and record."""
    if loop.stop_reason is StopReason.NON_FINITE:
        lbfgs = plan.settings.optimizer == "lbfgs"
        warnings.warn(
            f"stylize: {loop.stopped}. Returned the best finite image so far. "
            f"{'Lower the weights (alpha, beta, tv_weight)' if lbfgs else 'Lower lr or the weights, or use L-BFGS'}.",
            RuntimeWarning, stacklevel=3,
        )
    synchronize(dev)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    image = best.image.detach().clamp(0, 1).cpu()
    if plan.settings.preserve_colors == "luminance":  # the optimized luminance with the photo's chroma
        from nstlib import color

        image = color.recombine_luminance(image, plan.photo.cpu())
    return StyleResult(
        image=image, history=loop.history(multi_scale=len(plan.scales) > 1), settings=plan.record,
        wall_time=time.perf_counter() - t_start, steps_done=loop.done, stopped=loop.stopped,
        weights=net.describe(), device=str(dev), stop_reason=loop.stop_reason, peak_memory_mib=peak
    )


def _resize_or_none(image: torch.Tensor | None, hw: tuple[int, int]) -> torch.Tensor | None:
    return resize(image, hw) if image is not None else None


def _warn_if_slow(out_hw: tuple[int, int], dev: torch.device) -> None:
    if dev.type == "cpu" and out_hw[0] * out_hw[1] > 400 * 400:
        warnings.warn(
            f"{out_hw[0]}x{out_hw[1]} px on the CPU: each step runs the network forward and backward at this "
            f"size, so a run takes long; size=256 or less is interactive.",
            RuntimeWarning, stacklevel=3,
        )
