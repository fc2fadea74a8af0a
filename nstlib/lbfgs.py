"""L-BFGS with bounds, in torch on the image's device: a projected quasi-Newton step and a
backtracking line search (Armijo's sufficient decrease along the projected path).

The direction is L-BFGS's two-loop recursion (Nocedal & Wright, Algorithm 7.4) on the free
pixels: a pixel at a bound whose gradient pushes it further out is held there, as in the
projected quasi-Newton methods of Bertsekas (1982) and Kim, Sra & Dhillon (2010). The trial
point x + t d is clamped to [lower, upper]; it is taken when the loss fell by at least
C1 * t * (the fall the gradient predicts), else t shrinks (a quadratic fit, kept within
[0.1 t, 0.5 t]). A step of length 1 is almost always taken, so an iteration costs one
evaluation of the loss and its gradient; when the arithmetic (bfloat16) or the curvature
misleads, the line search holds the loss down.

Why not SciPy's L-BFGS-B (the library's optimizer before this one): it works on a float64 copy
on the host (two copies and its algebra there at every step), and its Wolfe line search spends
evaluations on a curvature condition; this one reaches a given loss sooner on the same machine
(docs/speed.md, round 8, has the measurements).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

#: Sufficient decrease: the loss must fall by at least C1 times the fall the gradient predicts.
C1 = 1e-4
#: Backtracking steps tried before the line search gives up (no lower point along d).
MAX_BACKTRACKS = 10
#: A start has no curvature yet: its first trial moves no pixel by more than FIRST_STEP.
FIRST_STEP = 0.3
#: How many of the last (step, gradient change) pairs shape the curvature estimate: 50 ended the
#: fast preset lower than 20, for a two-loop recursion that stays a small part of a step
#: (docs/speed.md, round 8).
MEMORY = 50

LossAndGrad = Callable[[torch.Tensor], "tuple[float, torch.Tensor]"]


class History:
    """The last `memory` (step, gradient change) pairs and L-BFGS's product with them.

    Vectors are flat (n,); the products stay 0-dim tensors on the device (no host sync on a GPU).
    """

    def __init__(self, memory: int) -> None:
        self.memory = memory
        self.pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (s, y, 1 / y.s)
        self.gamma = torch.ones(())  # s.y / y.y of the newest pair: H0 = gamma I

    def add(self, s: torch.Tensor, y: torch.Tensor) -> None:
        """Keep (s, y) (n,) if it shows positive curvature (else L-BFGS's matrix would not stay positive)."""
        sy, yy = torch.dot(s, y), torch.dot(y, y)
        if float(sy) > 1e-10 * float(yy):
            self.pairs.append((s, y, 1.0 / sy))
            self.gamma = sy / yy
            del self.pairs[:-self.memory]

    def times(self, g: torch.Tensor) -> torch.Tensor:
        """H g (n,), H the inverse-Hessian estimate: the two-loop recursion (Nocedal & Wright, Alg. 7.4)."""
        q = g.clone()
        alphas = []
        for s, y, rho in reversed(self.pairs):
            a = rho * torch.dot(s, q)
            q.addcmul_(y, a, value=-1)
            alphas.append(a)
        q.mul_(self.gamma)
        for (s, y, rho), a in zip(self.pairs, reversed(alphas)):
            q.addcmul_(s, a - rho * torch.dot(y, q))
        return q


def minimize(loss_and_grad: LossAndGrad, x: torch.Tensor, *, steps: int | None = None, memory: int = MEMORY,
             lower: float = 0.0, upper: float = 1.0) -> torch.Tensor:
    """Lower loss_and_grad from x (any shape, inside [lower, upper]); returns the last point the
    line search took (every step it takes lowers the loss), shaped as x. x itself is not changed.

    loss_and_grad(x) -> (loss as a float, its gradient, a tensor of x's shape). Every call is one
    evaluation (one step). The run ends after `steps` evaluations (None: no limit), when the
    line search finds no lower point, or when loss_and_grad raises (how `nstlib.loop` stops it).
    """
    shape = x.shape
    evals = 0

    def fun(flat: torch.Tensor) -> tuple[float, torch.Tensor]:
        nonlocal evals
        evals += 1
        f, g = loss_and_grad(flat.view(shape))
        return f, g.reshape(-1)

    x = x.detach().reshape(-1).clone()  # (n,): every vector below is flat
    f, g = fun(x)
    history = History(memory)
    while steps is None or evals < steps:
        # pixels at a bound that the gradient pushes further out are held there
        free = ~(((x <= lower) & (g > 0)) | ((x >= upper) & (g < 0)))
        g_free = torch.where(free, g, 0.0)
        d = torch.where(free, -history.times(g_free), 0.0) if history.pairs else None
        if d is None or not float(torch.dot(g, d)) < 0:  # no curvature yet, or not a descent direction
            largest = float(g_free.abs().max())
            if largest == 0:
                break  # a stationary point in the box
            d = g_free * (-FIRST_STEP / largest)
            history.pairs.clear()
        t = 1.0
        for _ in range(MAX_BACKTRACKS):
            step = (x + t * d).clamp_(lower, upper).sub_(x)
            predicted = float(torch.dot(g, step))  # the fall the gradient predicts (< 0)
            if not predicted < 0 or (steps is not None and evals >= steps):
                return x.view(shape)
            x_new = x + step
            f_new, g_new = fun(x_new)
            if f_new <= f + C1 * predicted:  # Armijo: enough of the predicted fall
                break
            # the minimum of the parabola through f, its slope and f_new, within [0.1 t, 0.5 t]
            fit = -predicted * t / (2.0 * (f_new - f - predicted)) if math.isfinite(f_new) else 0.0
            t = min(max(fit, 0.1 * t), 0.5 * t)
        else:
            break  # no lower point along d
        history.add(step, g_new - g)
        x, f, g = x_new, f_new, g_new
    return x.view(shape)
