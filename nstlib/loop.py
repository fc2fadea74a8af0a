"""The optimization loop: steps on the pixels of one scale, the history, the best image, why a run ended.

What a "step" is: one evaluation of the loss and its gradient (one forward and one backward
pass of the network), for both optimizers, so that their budgets measure the same work. Adam
makes one update per evaluation. L-BFGS (the paper's optimizer) is `nstlib.lbfgs`: L-BFGS with
the pixels bounded to [0, 1] and a backtracking line search, in torch on the image's device, so
that every iteration lowers the loss and both precisions follow the same path. A line search
sometimes evaluates the loss twice in one iteration; each evaluation is a step.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from nstlib import lbfgs
from nstlib.images import load_image, resize
from nstlib.losses import Objective
from nstlib.precision import Precision, extract
from nstlib.vgg import VGGFeatures

#: Steps over which the loss's fall per step is measured against RunSettings.tolerance.
CONVERGENCE_WINDOW = 20
class StopOptimization(Exception):
    """Raise from a callback to end a run early; the best image so far is returned."""


class _EndScale(Exception):
    """Raised inside L-BFGS's loss function to leave `lbfgs.minimize`: the scale is over."""


class StopReason(str, Enum):
    """Why a run ended before its last step (`StyleResult.stop_reason`; None: all steps ran).

    CONVERGED is a normal end (the settings' `tolerance`): `StyleResult.stopped` stays None.
    """

    CONVERGED = "converged"  # the last scale's loss stopped falling (RunSettings.tolerance, or L-BFGS found no lower point)
    REQUEST = "request"  # the `stop` event was set (a panel's Stop button)
    CALLBACK = "callback"  # the callback returned True or raised StopOptimization
    INTERRUPTED = "interrupted"  # Ctrl-C
    NON_FINITE = "non-finite"  # the loss became NaN or inf


@dataclass
class StepInfo:
    """What a callback sees every `callback_every` steps."""

    step: int  # steps done so far, over all scales
    steps: int  # steps asked for, over all scales
    loss: float  # total loss (sum over the batch) of `image`, the image this step evaluated
    parts: dict[str, float]  # current unweighted per-layer losses (mean over the batch)
    image: torch.Tensor  # (B, 3, h, w) the image this step evaluated, at this scale's size, detached, in [0, 1]
    elapsed: float  # seconds since the run started
    scale: int = 0  # which scale runs (0 = the first, coarsest)
    scales: int = 1  # how many scales the run has

    @property
    def size(self) -> tuple[int, int]:
        """(h, w) of the image at the current scale."""
        return tuple(self.image.shape[-2:])


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
class Loop:
    """The optimization steps of one run: its optimizers, its history, why it stopped."""

    net: VGGFeatures
    precision: Precision
    optimizer: str
    lr: float  # Adam's step; L-BFGS finds its own by a line search
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
    _best_at: dict[int, float] = field(default_factory=dict)  # steps done at this scale -> lowest loss by then

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

    def run_scale(self, scale: int, x: torch.Tensor, objective: Objective, best: BestImage, steps: int,
                  tolerance: float | None = None) -> None:
        """`steps` optimizer steps from x at one scale; best holds its lowest-loss image; sets stop_reason
        if the run must end.

        Every image evaluated stays in [0, 1] (L-BFGS's bounds; Adam's step is clamped): every
        loss recorded, and so the best image kept, is that of an image the user can get. With
        `tolerance`, the scale ends sooner once its lowest loss falls by less than `tolerance`
        (relative) per step over the last CONVERGENCE_WINDOW steps.
        """
        self._best_at = {}
        rows = len(self._totals)
        try:
            if self.optimizer == "lbfgs":
                self._run_lbfgs(scale, x, objective, best, steps, tolerance)
            else:
                self._run_adam(scale, x, objective, best, steps, tolerance)
            if len(self._totals) == rows:  # no step ran (steps=0, or a stop before the first): the start's loss
                with torch.no_grad():
                    self.record(scale, objective, x, best)
        except KeyboardInterrupt:
            self.end(StopReason.INTERRUPTED, f"interrupted (Ctrl-C) after {self.done} steps")

    def _run_lbfgs(self, scale: int, x: torch.Tensor, objective: Objective, best: BestImage, steps: int,
                   tolerance: float | None) -> None:
        """L-BFGS with bounds [0, 1] from x (`nstlib.lbfgs`); each evaluation of the loss is one step.

        The loss function leaves `lbfgs.minimize` by raising _EndScale when the steps are done or
        the run must end. When the line search finds no lower point, L-BFGS starts again from
        the best image with a fresh memory while that helps; when a start no longer lowers the
        loss, the scale is over.
        """
        done_here = 0
        # The loss that draws random directions (sliced) draws the same ones at every evaluation
        # of one L-BFGS run: a fixed function, which a line search needs
        # (with new draws every evaluation a texture ended at twice the colour distance).
        draws = objective.generator.get_state() if objective.generator is not None else None

        def loss_and_grad(pixels: torch.Tensor) -> tuple[float, torch.Tensor]:
            nonlocal done_here
            if done_here >= steps:
                raise _EndScale
            if draws is not None:
                objective.generator.set_state(draws)
            if self.stop is not None and self.stop.is_set():
                self.end(StopReason.REQUEST, "stopped by request")
                raise _EndScale
            xt = pixels.detach().requires_grad_(True)
            total = self.record(scale, objective, xt, best)
            total.sum().backward()
            done_here += 1
            self.done += 1
            self.bar.update(1)
            if self._after_step(scale, done_here, steps, xt) or self._converged(done_here, tolerance):
                raise _EndScale
            return float(total.detach().sum()), xt.grad

        start = x.detach()
        while True:
            lowest = float(best.loss.sum())
            try:
                lbfgs.minimize(loss_and_grad, start)
            except _EndScale:
                return
            if not float(best.loss.sum()) < lowest:
                break
            start = best.image
            if draws is not None:  # and new draws
                draws = objective.generator.get_state()
        if scale == self.n_scales - 1 and self.stop_reason is None:
            self.stop_reason = StopReason.CONVERGED

    def _run_adam(self, scale: int, x: torch.Tensor, objective: Objective, best: BestImage, steps: int,
                  tolerance: float | None) -> None:
        """Adam on x in place, each step clamped to [0, 1]; its moments carry over to the next scale."""
        opt = self._adam(x)

        def closure() -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            loss = self.record(scale, objective, x, best).sum()
            loss.backward()
            return loss

        done_here = 0
        while done_here < steps:
            if self.stop is not None and self.stop.is_set():
                self.end(StopReason.REQUEST, "stopped by request")
                break
            opt.step(closure)
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
            done_here += 1
            self.done += 1
            self.bar.update(1)
            if self._after_step(scale, done_here, steps, x) or self._converged(done_here, tolerance):
                break
        st = opt.state.get(x)
        if st:
            self._adam_state = {k: st[k] for k in ("step", "exp_avg", "exp_avg_sq")}
        if self.stop_reason is not StopReason.NON_FINITE:  # the last update's image has not been evaluated yet
            with torch.no_grad():
                self.record(scale, objective, x, best)

    def _adam(self, x: torch.Tensor) -> torch.optim.Adam:
        opt = torch.optim.Adam([x], lr=self.lr)
        if self._adam_state is not None:  # carried over from the coarser scale, resized
            s = self._adam_state
            opt.state[x] = {
                "step": s["step"],
                "exp_avg": F.interpolate(s["exp_avg"], size=x.shape[-2:], mode="bicubic", align_corners=False),
                "exp_avg_sq": F.interpolate(s["exp_avg_sq"], size=x.shape[-2:], mode="bilinear", align_corners=False).clamp_min(0),
            }
        return opt

    def _converged(self, done_here: int, tolerance: float | None) -> bool:
        """Has the lowest loss of this scale fallen by less than `tolerance` per step over the window?"""
        if tolerance is None or self.stop_reason is not None:
            return False
        check_every = 1 if self.optimizer == "lbfgs" else 10
        if done_here % check_every:
            return False
        last = float(self._totals[-1].sum())  # the loss before this step's update
        self._best_at[done_here] = min(last, self._best_at.get(done_here - check_every, math.inf))
        then = self._best_at.get(done_here - CONVERGENCE_WINDOW)
        now = self._best_at[done_here]
        if then is None or not math.isfinite(then) or now <= 0:
            return False
        if (then - now) / (CONVERGENCE_WINDOW * now) < tolerance:
            self.stop_reason = StopReason.CONVERGED
            return True
        return False

    def _after_step(self, scale: int, done_here: int, steps: int, x: torch.Tensor) -> bool:
        """Checks, the progress bar and the callback after a step; True if the run must end."""
        # L-BFGS reads the loss every step anyway; Adam need not, so it checks every 10 steps.
        check_every = 1 if self.optimizer == "lbfgs" else 10
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
                self.end(StopReason.NON_FINITE, f"non-finite loss ({last}) at step {self.done}")
                return True
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
                self.end(StopReason.CALLBACK, "stopped by callback")
                return True
        return False

    def end(self, reason: StopReason, text: str) -> None:
        """End the run: why (a StopReason) and the reason as text."""
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



# -- the image at the start of a scale ---------------------------------------------------------

def initial_image(init, content, style, out_hw, batch, seed, noise_level: float = 1.0) -> torch.Tensor:
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


def upsample(image: torch.Tensor, hw: tuple[int, int], photo: torch.Tensor | None,
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
