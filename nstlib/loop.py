"""The optimization loop: steps on the pixels of one scale, the history, the best image, why a run ended.

What a "step" is: for Adam, one update. For L-BFGS, one iteration, which here is exactly one
evaluation of the loss and its gradient (torch's LBFGS with ``max_iter=1`` and no line search,
as in Gatys' and Johnson's implementations), so both optimizers' step counts measure the same
work: one forward and one backward pass of the network.
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

from nstlib.images import load_image, resize
from nstlib.losses import Objective
from nstlib.precision import Precision, extract
from nstlib.vgg import VGGFeatures

#: Steps over which the loss's fall per step is measured against RunSettings.tolerance.
CONVERGENCE_WINDOW = 20
#: An L-BFGS step whose image has more than BLOWUP times the scale's lowest loss is undone (Loop._guard).
BLOWUP = 10.0
CALM_STEPS = 10  # a second overshoot within this many steps halves the step length (Loop._guard)
LBFGS_LOSS_SCALE = 1e3  # L-BFGS sees the loss scaled to this value at the start of each scale (see Loop.run_scale)


class StopOptimization(Exception):
    """Raise from a callback to end a run early; the best image so far is returned."""


class StopReason(str, Enum):
    """Why a run ended before its last step (`StyleResult.stop_reason`; None: all steps ran).

    CONVERGED is a normal end (the settings' `tolerance`): `StyleResult.stopped` stays None.
    """

    CONVERGED = "converged"  # the last scale's loss stopped falling (RunSettings.tolerance)
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
    undone: int = 0  # L-BFGS overshoots undone (Loop._guard)
    _calm: int = 0  # steps since the last undone overshoot
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
        """`steps` optimizer steps on x at one scale; sets stop_reason if the run must end.

        Both optimizers keep the pixels in [0, 1] (a projected step): every loss recorded, and
        so the best image kept, is that of an image the user can get. With `tolerance`, the scale
        ends sooner once its lowest loss falls by less than `tolerance` (relative) per step over
        the last CONVERGENCE_WINDOW steps.
        """
        self._best_at, self._calm = {}, CALM_STEPS
        opt = self._optimizer(x)
        closure = self._closure(opt, scale, x, objective, best)
        done_here = 0
        try:
            while done_here < steps:
                if self.stop is not None and self.stop.is_set():
                    self.end(StopReason.REQUEST, "stopped by request")
                    break
                before = x.detach().clone() if self.optimizer == "lbfgs" else None
                opt.step(closure)
                self._project(opt, x, before)
                if before is not None:
                    self._guard(opt, x, before, best)
                done_here += 1
                self.done += 1
                self.bar.update(1)
                if self._after_step(scale, done_here, steps, x) or self._converged(done_here, tolerance):
                    break
        except KeyboardInterrupt:
            self.end(StopReason.INTERRUPTED, f"interrupted (Ctrl-C) after {self.done} steps")
        if self.stop_reason is not StopReason.NON_FINITE:
            try:
                with torch.no_grad():
                    self.record(scale, objective, x, best)
            except KeyboardInterrupt:  # a second Ctrl-C: skip the last evaluation, keep the best image
                self.end(StopReason.INTERRUPTED, f"interrupted (Ctrl-C) after {self.done} steps")
        if self.optimizer == "adam" and x in opt.state:
            st = opt.state[x]
            self._adam_state = {k: st[k] for k in ("step", "exp_avg", "exp_avg_sq")}

    def _optimizer(self, x: torch.Tensor) -> torch.optim.Optimizer:
        if self.optimizer == "lbfgs":
            # max_iter=1: one iteration = one loss evaluation per step() call, so the loop can
            # report progress, call back and stop between iterations; tolerance_grad=0 so a
            # tiny (but non-zero) gradient does not end the run silently.
            return torch.optim.LBFGS([x], lr=self.lr, max_iter=1, history_size=100, tolerance_grad=0.0,
                                     tolerance_change=0.0)
        opt = torch.optim.Adam([x], lr=self.lr)
        if self._adam_state is not None:  # carried over from the coarser scale, resized
            s = self._adam_state
            opt.state[x] = {
                "step": s["step"],
                "exp_avg": F.interpolate(s["exp_avg"], size=x.shape[-2:], mode="bicubic", align_corners=False),
                "exp_avg_sq": F.interpolate(s["exp_avg_sq"], size=x.shape[-2:], mode="bilinear", align_corners=False).clamp_min(0),
            }
        return opt

    def _closure(self, opt: torch.optim.Optimizer, scale: int, x: torch.Tensor, objective: Objective,
                 best: BestImage) -> Callable[[], torch.Tensor]:
        """The loss and its gradient at x, recorded in the history.

        L-BFGS runs on 1000 * L / L(x0) per image: the same minimum, with moderate numbers. Raw
        Gatys losses reach 1e11 with Caffe weights; scaled to 1 instead, near convergence the
        curvature products underflow into denormal floats, which made CPU steps 3-4x slower;
        1e6 stalls the first steps. Adam is scale-invariant.
        """
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

        return closure

    def _project(self, opt: torch.optim.Optimizer, x: torch.Tensor, before: torch.Tensor | None) -> None:
        """Pixels back into [0, 1] after a step: a projected step, as L-BFGS-B's bounds.

        Unprojected, L-BFGS drifts out of [0, 1]: the loss of its iterate keeps falling while the
        clamped picture gets worse (128 px, Tübingen x Starry Night, 300 steps from the photo:
        reported 5.71e8, returned 6.87e8). For L-BFGS the last direction is then replaced by the
        step actually taken (d = (x_new - x_old) / t), so that its next curvature pair describes
        the real move: returned 5.57e8, against 5.66e8 with the clamp alone.
        """
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
        if before is not None:
            _tell_lbfgs_the_move(opt, x, before)

    def _guard(self, opt: torch.optim.Optimizer, x: torch.Tensor, before: torch.Tensor, best: BestImage) -> None:
        """Undo an L-BFGS overshoot: back to the best image, keeping what the overshoot taught.

        Without a line search, L-BFGS takes whatever step its curvature pairs suggest. Early in a
        scale they are few and can be far off: at 1024 px the loss jumped 37x and then 80x within
        five steps, and 30 steps did not recover from it. When the image just evaluated (`before`)
        has more than BLOWUP times the scale's lowest loss, the next step starts from the best
        image instead, and L-BFGS is told that move (d = (best - before) / t), so that its next
        curvature pair describes the overshoot's direction from both ends. A second overshoot
        within CALM_STEPS steps halves the step length until CALM_STEPS steps pass without one.
        """
        group = opt.param_groups[0]
        self._calm += 1
        if not bool(self._totals[-1].sum() > BLOWUP * best.loss.sum()):
            if self._calm >= CALM_STEPS and group["lr"] < self.lr:
                group["lr"] = min(self.lr, 2 * group["lr"])
                self._calm = 0
            return
        with torch.no_grad():
            x.copy_(best.image)
        _tell_lbfgs_the_move(opt, x, before)
        if self.undone and self._calm < CALM_STEPS:
            group["lr"] *= 0.5
        self._calm = 0
        self.undone += 1

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
        # L-BFGS syncs on the loss every step anyway; Adam need not, so it checks every 10 steps.
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



def _tell_lbfgs_the_move(opt: torch.optim.Optimizer, x: torch.Tensor, before: torch.Tensor) -> None:
    """After x was moved by hand from `before`: L-BFGS's last direction becomes that move,
    d = (x - before) / t, so its next curvature pair describes where x really went."""
    st = opt.state[x]
    t = st.get("t")
    if "d" in st and t:
        with torch.no_grad():
            st["d"] = (x - before).flatten() / t


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
