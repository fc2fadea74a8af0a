"""What a run returns: the image, its loss history, the settings it ran with; saved as PNG + JSON."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nstlib._io import atomic_group, atomic_write
from nstlib.images import save_image, to_pil
from nstlib.loop import StopReason


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

    def save(self, path: str | os.PathLike, index: int = 0, *, extra: dict[str, Any] | None = None) -> Path:
        """Write the image and its settings as JSON beside it (same name, .json), both or neither.

        extra: keys written first in the JSON (the tuning panel's "panel"). The two files are one
        `atomic_group`: a full disk or a Ctrl-C leaves the previous image and JSON as they were,
        and raises a WriteError that names the file and the cause.
        """
        meta = dict(extra or {})
        meta.update({
            "settings": self.settings,
            "weights": self.weights,
            "device": self.device,
            "wall_time_s": round(self.wall_time, 3),
            "steps_done": self.steps_done,
            "stopped": self.stopped,
            "stop_reason": self.stop_reason.value if self.stop_reason else None,
            "final_loss": _finite_or_none(float(self.loss[index])),  # JSON has no NaN
            "batch_index": index,
        })
        if self.peak_memory_mib is not None:
            meta["peak_memory_mib"] = round(self.peak_memory_mib, 1)
        with atomic_group():
            path = save_image(self.image, path, index)
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


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
