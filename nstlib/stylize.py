"""The optimization: change the pixels of an image until its VGG features match the targets.

One function, `stylize`, runs every experiment of the course: content reconstruction (no style
image, or style weight 0), texture synthesis (no content image), the full Gatys transfer and
the normalized variant of Choi & Kim.

What a "step" is: for Adam, one update. For L-BFGS, one iteration, which here is exactly one
evaluation of the loss and its gradient (torch's LBFGS with ``max_iter=1`` and no line search,
as in Gatys' and Johnson's implementations), so both optimizers' step counts measure the same
work: one forward and one backward pass of the network.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from nstlib import __version__
from nstlib._io import atomic_write
from nstlib.devices import pick_device, synchronize
from nstlib.images import ImageLike, Size, load_image, resize, save_image, to_pil
from nstlib.losses import LayerWeights, Weight, build_objective, layer_weight_dict
from nstlib.vgg import GATYS_CONTENT_LAYERS, GATYS_STYLE_LAYERS, VGGFeatures, load_vgg

DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02}
LBFGS_LOSS_SCALE = 1e3  # L-BFGS sees the loss scaled to this value at the start (see stylize)


class StopOptimization(Exception):
    """Raise from a callback to end a run early; the best image so far is returned."""


@dataclass
class StepInfo:
    """What a callback sees every `callback_every` steps."""

    step: int  # steps done so far
    steps: int  # steps asked for
    loss: float  # total loss (sum over the batch) of the image *before* this step's update
    parts: dict[str, float]  # current unweighted per-layer losses (mean over the batch)
    image: torch.Tensor  # (B, 3, H, W) current image, detached, clamped to [0, 1], on the device
    elapsed: float  # seconds since the run started


@dataclass
class StyleResult:
    """What `stylize` returns.

    image: (B, 3, H, W) on the CPU, the lowest-loss image of the run (per batch item).
    history: name -> array (steps + 1, B); row k is the loss after k steps (row 0: the start).
        "total" is the weighted total; "content:<layer>", "style:<layer>", "tv" are unweighted.
    stopped: None if all steps ran, else why it ended early.
    """

    image: torch.Tensor
    history: dict[str, np.ndarray]
    settings: dict[str, Any]
    wall_time: float
    steps_done: int
    stopped: str | None = None
    weights: str = ""
    device: str = "cpu"

    @property
    def loss(self) -> np.ndarray:
        """(B,) total loss of the returned images."""
        return np.nanmin(self.history["total"], axis=0)

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
            "final_loss": float(self.loss[index]),
            "batch_index": index,
        }
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


def stylize(
    content: ImageLike | None,
    style: ImageLike | None,
    *,
    size: Size = None,
    style_size: Size = None,
    variant: str = "gatys",
    content_layers: LayerWeights = GATYS_CONTENT_LAYERS,
    style_layers: LayerWeights = GATYS_STYLE_LAYERS,
    alpha: Weight | None = None,
    beta: Weight | None = None,
    lambda_os: Weight | None = None,
    tv_weight: float = 0.0,
    init: str | ImageLike = "noise",
    seed: int = 0,
    optimizer: str = "lbfgs",
    steps: int = 300,
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
        needs `size` then). The output has the content image's size after `size`.
    size: longest side (int) or (H, W) of the output; None keeps the content image's size.
    style_size: the style image's longest side or (H, W); None: the output's longest side.
    variant: "gatys" (L = alpha L_content + beta L_style) or "normalized" (Choi & Kim:
        L = w (lambda_os L_o + L_s), every partial loss divided by its target's energy).
    content_layers, style_layers: layer names (equal weights summing to 1) or {name: weight}.
    alpha, beta: the Gatys weights (defaults 1 and 1e3); lambda_os: the normalized variant's
        content weight (default 1e-2). A sequence instead of a number runs one image per value
        as one batch (likewise a sequence as a layer's weight). With Adam the batch items are
        independent runs (each item's gradient is its own, Adam is elementwise); only float
        rounding differs, which Adam can grow over many steps in pixels with near-zero
        gradients (same picture, not the same bits). L-BFGS shares one curvature history and
        step size across the batch, so a batched L-BFGS run is a joint optimization, close to
        but not the same as separate runs.
    init: "noise" (seeded white noise), "content", "style", or an image.
    optimizer: "lbfgs" or "adam"; steps: see the module docstring; lr: None for the default.
    callback(info) every `callback_every` steps; return True (or raise StopOptimization) to stop.
    stop: a threading.Event another thread can set to end the run.
    Ctrl-C, a stop, or a NaN/inf loss end the run early and return the best image so far.
    """
    t_start = time.perf_counter()
    variant, optimizer = _check_choice(variant, ("gatys", "normalized"), "variant"), _check_choice(
        optimizer, ("lbfgs", "adam"), "optimizer"
    )
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps must be a whole number >= 0, got {steps!r}.")
    if not isinstance(callback_every, int) or callback_every < 1:
        raise ValueError(f"callback_every must be an int >= 1, got {callback_every!r}.")
    if content is None and style is None:
        raise ValueError("stylize needs a content image, a style image, or both; got neither.")
    if variant == "gatys":
        if lambda_os is not None:
            raise ValueError("lambda_os weights the normalized variant; for variant='gatys' set alpha and beta.")
        content_weight = 1.0 if alpha is None else alpha
        style_weight = 1e3 if beta is None else beta
    else:
        if alpha is not None or beta is not None:
            raise ValueError(
                "alpha and beta weight the gatys variant; the normalized variant is weighted by lambda_os "
                "(content weight; the style weight is 1)."
            )
        content_weight, style_weight = (1e-2 if lambda_os is None else lambda_os), 1.0

    dev = pick_device(device)
    net = extractor if extractor is not None else load_vgg()
    net.to(dev)

    # -- images --------------------------------------------------------------------------
    content_img = load_image(content, size) if content is not None else None
    if content_img is None:
        if size is None:
            raise ValueError("without a content image, pass size= (an int or (H, W)) for the output.")
        out_hw = (size, size) if isinstance(size, int) else tuple(size)
    else:
        out_hw = tuple(content_img.shape[-2:])
    if style_size is None:
        style_size = max(out_hw)
    style_full = load_image(style, style_size) if style is not None else None
    style_img = None if _all_zero(style_weight) else style_full
    if _all_zero(content_weight):
        content_img_for_loss = None
    else:
        content_img_for_loss = content_img
    c_layers = layer_weight_dict(content_layers, "content_layers") if content_img_for_loss is not None else {}
    s_layers = layer_weight_dict(style_layers, "style_layers") if style_img is not None else {}
    needed = [*c_layers, *s_layers]
    if not needed and not tv_weight:
        raise ValueError("nothing to optimize: no content or style term is left (check the images and weights).")
    net.check_input_size(*out_hw, needed, what="the output image")
    if style_img is not None:
        net.check_input_size(*style_img.shape[-2:], list(s_layers), what="the style image")

    objective = build_objective(
        net, content_img_for_loss, style_img,
        content_layers=c_layers, style_layers=s_layers, variant=variant,
        content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight,
        pixels=out_hw[0] * out_hw[1],
    )
    batch = _batch_size([*objective.content_weights.values(), *objective.style_weights.values()])
    x = _initial_image(init, content_img, style_full, out_hw, batch, seed)
    x = x.to(dev).requires_grad_(True)
    _warn_if_slow(out_hw, dev)

    lr = DEFAULT_LR[optimizer] if lr is None else float(lr)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}.")
    if optimizer == "lbfgs":
        # max_iter=1: one iteration = one loss evaluation per step() call, so the loop below
        # can report progress, call back and stop between iterations; tolerance_grad=0 so a
        # tiny (but non-zero) gradient does not end the run silently.
        opt: torch.optim.Optimizer = torch.optim.LBFGS([x], lr=lr, max_iter=1, history_size=100, tolerance_grad=0.0, tolerance_change=0.0)
    else:
        opt = torch.optim.Adam([x], lr=lr)

    layers = objective.layers
    totals: list[torch.Tensor] = []
    part_rows: list[torch.Tensor] = []
    part_names: list[str] = []
    best_loss = torch.full((batch,), math.inf, device=dev)
    best_x = x.detach().clone()

    def record(total: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
        nonlocal best_loss, best_x
        total = total.detach()
        totals.append(total)
        if not part_names:
            part_names.extend(parts)
        part_rows.append(torch.stack([p.detach().expand(batch) for p in parts.values()]) if parts else total.new_zeros(0, batch))
        # Kept on the device without a sync: NaN compares False, so best_x stays finite.
        better = total < best_loss
        best_loss = torch.where(better, total, best_loss)
        best_x = torch.where(better.view(-1, 1, 1, 1), x.detach(), best_x)

    # L-BFGS runs on 1000 * L / L(x0) per image: the same minimum, with moderate numbers. Raw
    # Gatys losses reach 1e11 with Caffe weights, and torch's LBFGS (no line search) then
    # overshoots into inf within a few iterations. Scaling to 1 instead of 1000 converges too,
    # but near convergence the curvature products underflow into denormal floats, which made
    # CPU steps 3-4x slower; 1e6 stalls the first steps. Adam is scale-invariant anyway.
    loss_scale: torch.Tensor | None = None

    def closure() -> torch.Tensor:
        nonlocal loss_scale
        opt.zero_grad(set_to_none=True)
        total, parts = objective(net.extract(x, layers), x)
        if optimizer == "lbfgs":
            if loss_scale is None:
                loss_scale = LBFGS_LOSS_SCALE / total.detach().clamp_min(1e-30)
            loss = (total * loss_scale).sum()
        else:
            loss = total.sum()
        loss.backward()
        record(total, parts)
        return loss

    settings = _settings(
        content, style, out_hw, style_img, variant, c_layers, s_layers, alpha, beta, lambda_os,
        content_weight, style_weight, tv_weight, init, seed, optimizer, steps, lr, dev, net,
    )
    stopped: str | None = None
    done = 0
    from tqdm.auto import tqdm

    bar = tqdm(total=steps, disable=not progress, desc=f"{variant}/{optimizer} {out_hw[0]}x{out_hw[1]}", unit="step")
    # L-BFGS syncs on the loss every step anyway; Adam need not, so it checks every 10 steps.
    check_every = 1 if optimizer == "lbfgs" else 10
    try:
        while done < steps:
            if stop is not None and stop.is_set():
                stopped = "stopped by request"
                break
            opt.step(closure)
            if optimizer == "adam":
                with torch.no_grad():
                    x.clamp_(0.0, 1.0)
            done += 1
            bar.update(1)
            if done % check_every == 0 or done == steps:
                last = float(totals[-1].sum())
                if not math.isfinite(last):
                    stopped = f"non-finite loss ({last}) at step {done}"
                    break
                bar.set_postfix(loss=f"{last:.4g}", refresh=False)
            if callback is not None and done % callback_every == 0:
                info = StepInfo(done, steps, float(totals[-1].sum()), _mean_parts(part_names, part_rows[-1]),
                                x.detach().clamp(0, 1), time.perf_counter() - t_start)
                try:
                    if callback(info):
                        stopped = "stopped by callback"
                except StopOptimization:
                    stopped = "stopped by callback"
                if stopped:
                    break
    except KeyboardInterrupt:
        stopped = f"interrupted (Ctrl-C) after {done} steps"
    finally:
        bar.close()

    if stopped is None or not stopped.startswith("non-finite"):
        with torch.no_grad():
            total, parts = objective(net.extract(x, layers), x)
            record(total, parts)
    if stopped and stopped.startswith("non-finite"):
        warnings.warn(
            f"stylize: {stopped}. Returned the best finite image so far. Lower lr"
            f"{' (L-BFGS: try lr=0.5)' if optimizer == 'lbfgs' else ' or use L-BFGS'}, or the weights.",
            RuntimeWarning, stacklevel=2,
        )
    synchronize(dev)
    history = _history(totals, part_names, part_rows)
    image = best_x.detach().clamp(0, 1).cpu()
    return StyleResult(
        image=image, history=history, settings=settings, wall_time=time.perf_counter() - t_start,
        steps_done=done, stopped=stopped, weights=net.describe(), device=str(dev),
    )


# -- helpers ---------------------------------------------------------------------------

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


def _initial_image(init, content, style, out_hw, batch, seed) -> torch.Tensor:
    if isinstance(init, str):
        if init == "noise":
            g = torch.Generator().manual_seed(seed)
            return torch.rand(batch, 3, *out_hw, generator=g)
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


def _mean_parts(names: list[str], row: torch.Tensor) -> dict[str, float]:
    return dict(zip(names, row.mean(1).tolist())) if names else {}


def _history(totals: list[torch.Tensor], names: list[str], rows: list[torch.Tensor]) -> dict[str, np.ndarray]:
    hist = {"total": torch.stack(totals).cpu().numpy()} if totals else {"total": np.zeros((0, 1))}
    if names and rows:
        stacked = torch.stack(rows).cpu().numpy()  # (steps + 1, parts, B)
        for i, n in enumerate(names):
            hist[n] = stacked[:, i, :]
    return hist


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


def _settings(content, style, out_hw, style_img, variant, c_layers, s_layers, alpha, beta, lambda_os,
              cw, sw, tv_weight, init, seed, optimizer, steps, lr, dev, net) -> dict[str, Any]:
    return _jsonable({
        "content": _describe_source(content),
        "style": _describe_source(style),
        "size": list(out_hw),
        "style_size": list(style_img.shape[-2:]) if style_img is not None else None,
        "variant": variant,
        "content_layers": c_layers,
        "style_layers": s_layers,
        "alpha": cw if variant == "gatys" else None,
        "beta": sw if variant == "gatys" else None,
        "lambda_os": cw if variant == "normalized" else None,
        "tv_weight": tv_weight,
        "init": init if isinstance(init, str) else _describe_source(init),
        "seed": seed,
        "optimizer": optimizer,
        "steps": steps,
        "lr": lr,
        "device": str(dev),
        "pooling": net.pooling,
        "arch": net.arch,
        "nstlib": __version__,
        "torch": torch.__version__,
    })
