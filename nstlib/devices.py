"""Which device runs the network: CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import torch


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """None or "auto" -> the best available device; anything else is checked and returned."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {device!r} ({e}); use 'auto', 'cpu', 'cuda', 'cuda:0' or 'mps'.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but torch sees no CUDA GPU here; use device='cpu' or 'auto'.")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r} was asked for, but Apple MPS is not available here; use 'cpu' or 'auto'.")
    return dev


def describe_device(device: str | torch.device | None = None) -> str:
    """One line: the device and, for a GPU, its name and memory."""
    dev = pick_device(device)
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        return f"cuda ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    if dev.type == "mps":
        return "mps (Apple GPU)"
    n = torch.get_num_threads()
    why = "no GPU found, so keep images small" if device in (None, "auto") else "keep images small"
    return f"cpu ({n} thread{'s' if n != 1 else ''}; {why})"


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that timings measure the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
