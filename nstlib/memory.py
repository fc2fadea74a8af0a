"""How much memory a run needs, estimated before anything is allocated.

Out of memory at a large size is the complaint users of style-transfer tools file most: a
crash after minutes of loading, or a frozen laptop. `stylize` estimates what a run keeps
alive at its largest scale (the network's activations for the backward pass, the feature
copies the losses read, the image and the optimizer's state) and refuses a size that does not
fit the free memory, naming the largest size that does.

The estimate counts, for a batch of B images of H x W up to the deepest layer used:
- every module's output up to that layer, twice (the output and the copy autograd saves:
  a conv keeps its input, a ReLU its output), in the network's precision (2 bytes in
  bfloat16, 4 in float32), and max pooling's indices (8 bytes per output);
- the layers the losses read, as float32 copies, twice (the features and the Gram's input);
- the image, its gradient and the optimizer state: L-BFGS keeps 2 x its memory
  (`lbfgs.MEMORY`) vectors of the image's size and a few more, in float32 on the image's
  device; Adam two;
- the largest activation three more times, for the backward pass's temporaries;
- 150 MiB that does not grow with the image.
Measured on the CPU (peak RSS over the process before the run, VGG-16, Gatys loss, L-BFGS, 110
steps): 256 px float32 652 MB (estimate 726), 256 px bfloat16 616 MB (640), 512 px bfloat16
1725 MB (2130): on the safe side by up to a quarter.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch

from nstlib import lbfgs

#: What a run holds besides what scales with the image: targets, autocast's weight copies, allocator slack.
FIXED_BYTES = 150 * 2**20
#: Bytes per activation element: bfloat16 halves the network's outputs, but autocast keeps float32
#: copies around the casts; measured peaks sit between 2 and 4 bytes.
ELEMENT_BYTES = {"float32": 4, "bfloat16": 3}


def estimate_bytes(net, hw: tuple[int, int], layers: Sequence[str], *, batch: int = 1, precision: str = "float32",
                   optimizer: str = "lbfgs") -> int:
    """Bytes a run at (H, W) keeps alive while it steps. net: a VGGFeatures; layers: those the losses read."""
    h, w = hw
    elt = ELEMENT_BYTES.get(precision, 4)
    image = batch * 3 * h * w
    total = 0
    largest = 0
    if layers:
        deepest = max(net.names.index(n) for n in layers)
        for row in net.layer_table((h, w))[: deepest + 1]:
            c, lh, lw = row.shape
            n = batch * c * max(lh, 0) * max(lw, 0)
            largest = max(largest, n)
            total += 2 * n * elt
            if row.name.startswith("pool") and net.pooling == "max":
                total += 8 * n
            if row.name in layers:
                total += 2 * 4 * n
    total += 3 * largest * elt
    if optimizer == "lbfgs":  # 2m pairs, and x, g, the direction, the trial and its gradient, the masks
        total += (2 * lbfgs.MEMORY + 12) * 4 * image
    else:
        total += (4 + 3) * 4 * image
    return int(total + FIXED_BYTES)


def free_bytes(device: torch.device) -> int | None:
    """Free memory where the run will live: the GPU's free memory, or the machine's available RAM. None: unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def largest_fitting_side(net, hw: tuple[int, int], layers: Sequence[str], budget: int, **kw) -> int:
    """The largest longest side (keeping the aspect of hw) whose estimate fits in `budget` bytes; 0 if none."""
    h, w = hw
    longest = max(h, w)

    def fits(side: int) -> bool:
        f = side / longest
        return estimate_bytes(net, (max(1, round(h * f)), max(1, round(w * f))), layers, **kw) <= budget

    lo, hi = 0, longest
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def human(n: float) -> str:
    """Bytes for a person: 1.5 GB, 240 MB."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 1e3:.0f} kB"
