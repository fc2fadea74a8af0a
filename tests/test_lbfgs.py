"""nstlib.lbfgs: L-BFGS with bounds and a backtracking line search, on functions whose answer is known."""

from __future__ import annotations

import math

import pytest
import torch

from nstlib import lbfgs


def _quadratic(center: torch.Tensor, weights: torch.Tensor, seen: list | None = None):
    """1/2 sum w (x - c)^2: its minimum over the box [lo, hi] is clamp(c, lo, hi)."""

    def loss_and_grad(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        if seen is not None:
            seen.append((x.clone(), float(0.5 * (weights * (x - center) ** 2).sum())))
        return float(0.5 * (weights * (x - center) ** 2).sum()), weights * (x - center)

    return loss_and_grad


def test_it_finds_the_minimum_inside_the_box_and_never_leaves_it():
    # float64: in float32 the loss stops resolving the last 1e-3 of the flattest axes
    g = torch.Generator().manual_seed(0)
    center = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64) * 1.6 - 0.3  # a third of it outside [0, 1]
    weights = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64) * 99 + 1  # curvatures 1 ... 100
    seen: list = []
    x = lbfgs.minimize(_quadratic(center, weights, seen), torch.full_like(center, 0.5), steps=200)
    assert x.shape == center.shape
    assert torch.allclose(x, center.clamp(0, 1), atol=1e-6), float((x - center.clamp(0, 1)).abs().max())
    assert all(float(p.min()) >= 0 and float(p.max()) <= 1 for p, _ in seen), "an evaluation outside [0, 1]"


def test_steps_count_evaluations_and_every_step_taken_lowers_the_loss():
    g = torch.Generator().manual_seed(1)
    center, weights = torch.rand(50, generator=g), torch.rand(50, generator=g) * 1e6  # large losses, as the pixels'
    seen: list = []
    start = torch.zeros(50)
    x = lbfgs.minimize(_quadratic(center, weights, seen), start, steps=12)
    assert len(seen) == 12
    assert torch.equal(start, torch.zeros(50)), "the start is not changed"
    returned = float(0.5 * (weights * (x - center) ** 2).sum())
    assert returned < seen[0][1] * 1e-2 and returned == min(v for _, v in seen)


def test_the_first_trial_moves_nothing_by_more_than_first_step():
    seen: list = []
    center = torch.tensor([1.0, 0.2, 0.9])
    lbfgs.minimize(_quadratic(center, torch.tensor([1e9, 1.0, 5e8]), seen), torch.zeros(3), steps=2)
    moved = (seen[1][0] - seen[0][0]).abs()
    assert float(moved.max()) == pytest.approx(lbfgs.FIRST_STEP)


def test_a_non_finite_trial_is_backtracked_not_taken():
    # The loss is NaN beyond x = 0.6: the line search shortens the step and goes on from below it.
    def loss_and_grad(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        if float(x.max()) > 0.6:
            return math.nan, torch.full_like(x, math.nan)
        return float(((x - 1) ** 2).sum()), 2 * (x - 1)

    x = lbfgs.minimize(loss_and_grad, torch.zeros(4), steps=40)
    assert torch.isfinite(x).all() and 0.5 < float(x.min()) <= 0.6


def test_it_returns_when_no_lower_point_is_found():
    # A gradient of the wrong sign: no step along it lowers the loss; the run ends at the start.
    calls = []

    def loss_and_grad(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        calls.append(1)
        return float(((x - 0.5) ** 2).sum()), -2 * (x - 0.5)

    x = lbfgs.minimize(loss_and_grad, torch.full((5,), 0.2))
    assert torch.equal(x, torch.full((5,), 0.2)) and len(calls) == 1 + lbfgs.MAX_BACKTRACKS


def test_a_stationary_point_at_the_bounds_ends_the_run():
    # The minimum lies beyond the box on every axis: once every variable sits at its bound,
    # no free direction is left and the run ends without being stopped.
    center = torch.tensor([-1.0, 2.0, 3.0])
    x = lbfgs.minimize(_quadratic(center, torch.ones(3)), torch.full((3,), 0.5))
    assert torch.equal(x, torch.tensor([0.0, 1.0, 1.0]))


def test_no_bounds_on_the_rosenbrock_valley():
    # A curved valley, the textbook test for a quasi-Newton method: L-BFGS reaches (1, 1).
    def loss_and_grad(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        a, b = x[0].item(), x[1].item()
        f = (1 - a) ** 2 + 100 * (b - a * a) ** 2
        return f, torch.tensor([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)], dtype=x.dtype)

    x = lbfgs.minimize(loss_and_grad, torch.tensor([-1.2, 1.0], dtype=torch.float64), steps=200,
                       lower=-math.inf, upper=math.inf)
    assert torch.allclose(x, torch.ones(2, dtype=torch.float64), atol=1e-4), x
