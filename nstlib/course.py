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
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

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
