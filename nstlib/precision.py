"""Which number format runs the network: float32, or bfloat16 under autocast.

Style transfer spends nearly all of its time in the VGG convolutions, forward and backward.
On hardware with native bfloat16 (CPUs with AVX-512 BF16 or AMX, NVIDIA GPUs from Ampere on)
autocast runs them about twice as fast. Only the network runs in bfloat16: the features come
out as float32, so Gram matrices, losses, the image and the optimizer state stay float32.

"auto" picks bfloat16 only where it is supported *and* measured faster on this machine: a CPU
without native bfloat16 emulates it and can be several times slower, so on a CPU auto times a
small convolution stack in both formats once per process (about half a second) instead of
guessing from the CPU's name.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

PRECISIONS = ("auto", "float32", "bfloat16")
#: bfloat16 must be at least this much faster than float32 on the CPU for auto to choose it.
MIN_SPEEDUP = 1.2

_measured: dict[tuple[str, int], float] = {}  # (device type, threads) -> float32 time / bfloat16 time


@dataclass(frozen=True)
class Precision:
    """The resolved precision: name "float32" or "bfloat16", and why it was chosen."""

    name: str
    reason: str

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.name == "bfloat16" else None

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


def resolve_precision(precision: str | Precision, device: torch.device) -> Precision:
    """"auto" | "float32" | "bfloat16" on `device` -> a Precision with the reason for the choice."""
    if isinstance(precision, Precision):
        return precision
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}.")
    if precision == "float32":
        return Precision("float32", "as asked")
    if precision == "bfloat16":
        if device.type == "mps":
            raise ValueError("precision='bfloat16' is not supported on Apple MPS here; use 'float32' or 'auto'.")
        note = "as asked" if native_bfloat16(device) else "as asked; no native bfloat16 here, so it may be slower"
        return Precision("bfloat16", note)
    if device.type == "cuda":
        if native_bfloat16(device):
            return Precision("bfloat16", "auto: the GPU supports bfloat16")
        return Precision("float32", "auto: this GPU has no bfloat16 support")
    if device.type != "cpu":
        return Precision("float32", f"auto: float32 on {device.type}")
    if not native_bfloat16(device):
        return Precision("float32", "auto: this CPU has no native bfloat16 (AVX-512 BF16 or AMX)")
    speedup = cpu_bfloat16_speedup()
    if speedup >= MIN_SPEEDUP:
        return Precision("bfloat16", f"auto: measured {speedup:.1f}x faster than float32 on this CPU")
    return Precision("float32", f"auto: bfloat16 measured only {speedup:.2f}x as fast on this CPU")


def native_bfloat16(device: torch.device) -> bool:
    """Does the hardware compute in bfloat16 natively (not by emulation)?"""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(cpu, c, lambda: False)()) for c in checks)
    return False


def cpu_bfloat16_speedup(size: int = 64, repeats: int = 3) -> float:
    """float32 time / bfloat16 time of a VGG-like conv stack, forward + backward; cached per thread count."""
    key = ("cpu", torch.get_num_threads())
    if key not in _measured:
        g = torch.Generator().manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
                            nn.AvgPool2d(2), nn.Conv2d(64, 128, 3, padding=1), nn.ReLU())
        net.requires_grad_(False)
        x = torch.rand(1, 3, size, size, generator=g, requires_grad=True)

        def once(dtype: torch.dtype | None) -> float:
            start = time.perf_counter()
            with autocast(torch.device("cpu"), dtype):  # each format in its layout, as `extract` runs it
                y = net(x if dtype is None else x.contiguous(memory_format=torch.channels_last))
            y.float().sum().backward()
            return time.perf_counter() - start

        once(None), once(torch.bfloat16)  # warm-up: first calls pick and load kernels
        # Interleaved, best of each: other load on the machine hits both alike.
        best32 = best16 = float("inf")
        for _ in range(repeats):
            best32 = min(best32, once(None))
            best16 = min(best16, once(torch.bfloat16))
        _measured[key] = best32 / best16
    return _measured[key]


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """torch.autocast for `dtype` on `device`, or nothing for None (float32)."""
    if dtype is None:
        yield
        return
    with torch.autocast(device.type, dtype=dtype):
        yield


def extract(net, x: torch.Tensor, layers: Sequence[str], precision: Precision) -> dict[str, torch.Tensor]:
    """`net.extract(x, layers)` in `precision`; the features come back as float32. x (B, 3, H, W).

    In bfloat16 the image enters the network channels_last, the layout oneDNN and cuDNN compute
    in: stored the other way, each layer's output and gradient were converted back and forth
    (a 256 px step on the 2-core CPU: 0.24 -> 0.17 s, `python -m nstlib.bench`). The features
    come out channels_last; `losses.gram_matrix` reads them without a copy.
    """
    device = x.device
    if precision.autocast_dtype is None:
        return net.extract(x, layers)
    if device.type in ("cpu", "cuda"):
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, precision.autocast_dtype):
        feats = net.extract(x, layers)
    return {name: f.float() for name, f in feats.items()}
