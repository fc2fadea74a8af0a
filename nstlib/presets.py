"""Named settings for a whole run: where the command line starts, and `stylize(**preset(...))`.

- "fast" (the command line's default): start from the photo, coarse to fine from 128 px by
  factors of 2, the network in bfloat16 where that is native and faster. Chosen by measurement
  on photo x painting pairs (README, "Speed"): at 256 px on a 2-core CPU it matches the plain
  loop's picture (150 float32 L-BFGS steps from the photo) by independent style and content
  measures in a fraction of its time.
- "paper": Gatys et al. 2016 as published: white-noise start, one scale, 300 L-BFGS steps.

`stylize` itself keeps the paper's defaults (noise start, one scale), so that the notebooks,
which rebuild the paper, say what they use; only its precision defaults to "auto".
Every preset uses the paper's layers (content relu4_2, style relu1_1 ... relu5_1) and weights
(alpha 1, beta 1e3).
"""

from __future__ import annotations

from typing import Any

PRESETS = ("fast", "paper")
#: fast: the coarsest scale's longest side, and the steps at it and at each finer scale.
FAST_START = 128
FAST_STEPS = (80, 30)


def coarse_to_fine(size: int, start: int = FAST_START, factor: int = 2) -> list[int]:
    """Longest sides from `start` up to `size`, each `factor` times the one before, `size` last.

    coarse_to_fine(256) -> [128, 256]; coarse_to_fine(512) -> [128, 256, 512];
    coarse_to_fine(160) -> [160] (no coarser scale worth running).
    """
    sizes = [size]
    while sizes[0] / factor >= start:
        sizes.insert(0, round(sizes[0] / factor))
    return sizes


def preset(name: str, size: int | tuple[int, int] = 256) -> dict[str, Any]:
    """The `stylize` keyword arguments of preset `name` for an output of `size` (longest side or (H, W))."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; the presets are {', '.join(PRESETS)}.")
    common: dict[str, Any] = dict(size=size, variant="gatys", style_layers="gatys", optimizer="lbfgs", precision="auto")
    if name == "paper":
        return {**common, "init": "noise", "scales": None, "steps": 300}
    longest = size if isinstance(size, int) else max(size)
    scales = coarse_to_fine(longest)
    steps = [FAST_STEPS[0]] + [FAST_STEPS[1]] * (len(scales) - 1)
    return {**common, "init": "content", "scales": scales if len(scales) > 1 else None,
            "steps": steps if len(scales) > 1 else FAST_STEPS[0]}
