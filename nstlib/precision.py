"""Which number format runs the network: float32, or bfloat16 under autocast.

Style transfer spends nearly all of its time in the VGG convolutions, forward and backward.
On hardware with native bfloat16 (CPUs with AVX-512 BF16 or AMX, NVIDIA GPUs from Ampere on)
autocast runs them about twice as fast. Only the network runs in bfloat16: the features come
out as float32, so Gram matrices, losses, the image and the optimizer state stay float32.

"auto" decides from what the hardware is, never from a timing: the same command on the same
machine gives the same picture whatever else the machine is doing. In order:

1. ``NSTLIB_PRECISION=float32|bfloat16`` in the environment: that one (a whole notebook run
   in one precision, e.g. to check a lecture's claims in both);
2. a GPU: bfloat16 where it computes bfloat16 natively (NVIDIA Ampere and later), else float32;
3. a CPU: bfloat16 where oneDNN may use native bfloat16 instructions (AVX-512 BF16 or AMX, and
   ``ONEDNN_MAX_CPU_ISA`` does not forbid them), else float32: a CPU without them emulates
   bfloat16, many times slower than float32;
4. anything else (Apple MPS, ...): float32.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

PRECISIONS = ("auto", "float32", "bfloat16")
#: Forces the precision that "auto" resolves to, for a whole process (a notebook's kernel, a test run).
ENV_VAR = "NSTLIB_PRECISION"
#: oneDNN's CPU instruction sets from which it computes bfloat16 natively (ONEDNN_MAX_CPU_ISA's names).
_ONEDNN_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
                     "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2",
                     "ALL", "DEFAULT")


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
        note = ("as asked" if native_bfloat16(device) else
                "as asked; no native bfloat16 here: emulated, many times slower than float32")
        return Precision("bfloat16", note)
    forced = os.environ.get(ENV_VAR, "").strip().lower()
    if forced:
        if forced not in ("float32", "bfloat16"):
            raise ValueError(f"{ENV_VAR} must be 'float32' or 'bfloat16' (or unset for the hardware's choice), "
                             f"got {forced!r}.")
        asked = resolve_precision(forced, device)
        return Precision(forced, f"auto: set by {ENV_VAR}" + asked.reason.removeprefix("as asked"))
    if device.type == "cuda":
        if native_bfloat16(device):
            return Precision("bfloat16", "auto: the GPU computes bfloat16 natively")
        return Precision("float32", "auto: this GPU has no native bfloat16")
    if device.type != "cpu":
        return Precision("float32", f"auto: float32 on {device.type}")
    if not native_bfloat16(device):
        return Precision("float32", "auto: this CPU has no native bfloat16 (AVX-512 BF16 or AMX)")
    return Precision("bfloat16", "auto: this CPU computes bfloat16 natively (AVX-512 BF16 or AMX)")


def native_bfloat16(device: torch.device) -> bool:
    """Does the hardware compute in bfloat16 natively (not by emulation)? Decided by what it is, not a timing."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        has = any(bool(getattr(cpu, c, lambda: False)()) for c in checks)
        # torch reports the processor; oneDNN, which runs the convolutions, obeys this cap too.
        cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
        return has and (not cap or cap in _ONEDNN_BF16_ISAS)
    return False


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
