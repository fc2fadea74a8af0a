"""Run modes for the notebooks: one place that says how big and how long.

A notebook asks `mode()` once and takes every image size and step count from it:

    run = course.mode()                       # prints which mode and why
    SIZE = run.pick(smoke=64, cpu=160, gpu=512)
    STEPS = run.pick(smoke=5, cpu=150, gpu=1000)

- "smoke": CI and quick checks (``NSTLIB_SMOKE=1``, set by ``make test``): a few steps on tiny
  images, so that every cell runs in seconds; pictures are not meaningful.
- "cpu": a lecture on a laptop without a GPU: sizes and steps that finish a figure in about a
  minute.
- "gpu": a lecture on a CUDA or Apple GPU: the paper's sizes and step counts.

``NSTLIB_MODE=smoke|cpu|gpu`` forces a mode (e.g. to rehearse the CPU lecture on a GPU machine).

A sentence in a notebook about a result is a claim, and the cell below its figure checks it:

    run.check("every reconstruction converged", holds=bool(last_change < 0.01),
              measured=f"last 10% of the steps changed the loss by {last_change:.2%}")

prints one line: ``✓`` (or ``✗``) the claim, and what was measured. nbval compares that cell (it is
marked ``# NBVAL_CHECK_OUTPUT``; ``notebooks/sanitize.cfg`` blanks the measured numbers, which
vary from machine to machine), so a claim that the run does not show fails the lecture run. In
smoke mode, or with random weights, the pictures mean nothing: the verdict line says the claim
was not checked, and why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from nstlib.devices import describe_device, pick_device

T = TypeVar("T")
MODES = ("smoke", "cpu", "gpu")


@dataclass(frozen=True)
class RunMode:
    """The mode a notebook runs in, and the device it uses."""

    name: str  # "smoke" | "cpu" | "gpu"
    device: torch.device
    reason: str

    def pick(self, *, smoke: T, cpu: T, gpu: T) -> T:
        """The value for this mode."""
        return {"smoke": smoke, "cpu": cpu, "gpu": gpu}[self.name]

    @property
    def smoke(self) -> bool:
        return self.name == "smoke"

    def check(self, claim: str, holds: bool, measured: str) -> bool:
        """Print a notebook's claim about a result, whether it holds and what this run measured: one line,
        "✓ claim (measured: ...)", "✗ ..." when it does not hold, "– ..." when not checked.

        claim: the sentence, as the notebook says it; holds: the measure against its threshold;
        measured: the numbers behind the verdict. Returns `holds` (True where the claim is not
        checked: smoke mode or random weights, see `unchecked_reason`).
        """
        if not isinstance(holds, (bool, np.bool_)):
            raise TypeError(f"holds must be a bool (a measure compared with a threshold), got {type(holds).__name__} "
                            f"{holds!r:.40}; write e.g. holds=bool(x < 0.1).")
        measured = " ".join(measured.split())
        why_not = self.unchecked_reason()
        if why_not:
            print(f"– {claim} (not checked {why_not}; measured: {measured})")
            return True
        print(f"{'✓' if holds else '✗'} {claim} (measured: {measured})")
        return bool(holds)

    def unchecked_reason(self) -> str | None:
        """Why this run cannot judge claims about pictures (None: it can).

        Smoke mode's images are tiny; random weights (``NSTLIB_WEIGHTS=random...``, chosen on
        purpose, never a fallback) compute features of nothing. The claims' thresholds come from
        pretrained weights.
        """
        if self.smoke:
            return "in smoke mode (tiny images, pictures not meaningful)"
        if os.environ.get("NSTLIB_WEIGHTS", "").strip().lower().startswith("random"):
            return "with random weights (NSTLIB_WEIGHTS=random: pictures not meaningful)"
        return None

    def __str__(self) -> str:
        return f"mode: {self.name} ({self.reason}); device: {describe_device(self.device)}"


def mode(device: str | torch.device | None = None, verbose: bool = True) -> RunMode:
    """Decide the run mode from NSTLIB_MODE, NSTLIB_SMOKE and the device; print it if verbose."""
    dev = pick_device(device)
    forced = os.environ.get("NSTLIB_MODE", "").strip().lower()
    if forced:
        if forced not in MODES:
            raise ValueError(f"NSTLIB_MODE must be one of {', '.join(MODES)}, got {forced!r}.")
        run = RunMode(forced, dev, "set by NSTLIB_MODE")
    elif os.environ.get("NSTLIB_SMOKE", "").strip() not in ("", "0", "false", "False"):
        run = RunMode("smoke", dev, "NSTLIB_SMOKE is set: tiny images, few steps, pictures not meaningful")
    elif dev.type in ("cuda", "mps"):
        run = RunMode("gpu", dev, "a GPU was found: the paper's sizes")
    else:
        run = RunMode("cpu", dev, "no GPU: small images so that each figure takes about a minute")
    if verbose:
        print(run)
    return run
