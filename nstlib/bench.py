"""The cost of a step. ``python -m nstlib.bench``.

For each size it measures seconds per step of `stylize` next to seconds per bare forward +
backward pass of the same network slice (up to the deepest layer the losses read),
alternating step by step in stylize's callback so that other load hits both alike, and the
peak memory. The default warmup for L-BFGS is its history size (100): each L-BFGS step costs
more as its history fills. (How good a picture is after N seconds, the plain loop against the
presets, is `nstlib.bench_curves`.)

The images: the paper's (``$NSTLIB_TEST_IMAGES`` or ``$NSTLIB_IMAGE_DIR``), else seeded random
ones (fine for timing).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, TextIO

import torch

from nstlib.devices import describe_device, pick_device, synchronize
from nstlib.images import load_image
from nstlib.precision import Precision, extract, resolve_precision
from nstlib.stylize import StepInfo, stylize
from nstlib.vgg import GATYS_CONTENT_LAYERS, VGGFeatures, load_vgg, style_layer_preset

#: Default warmup steps: L-BFGS's history size (see stylize.py), so that its history is full.
DEFAULT_WARMUP = {"lbfgs": 100, "adam": 5}


@dataclass
class Row:
    """One size: times in seconds per step (one entry per repetition), memory in MiB."""

    size: int
    hw: tuple[int, int] = (0, 0)
    stylize_s: list[float] = field(default_factory=list)
    bare_s: list[float] = field(default_factory=list)
    mem_stylize_mib: float = 0.0
    mem_bare_mib: float = 0.0

    @property
    def overhead_pct(self) -> float:
        """How much longer a stylize step takes than a bare pass, in percent (of the medians)."""
        return 100.0 * (statistics.median(self.stylize_s) / statistics.median(self.bare_s) - 1.0)


def bench_images(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(content, style, what they are): the paper's photo and painting if $NSTLIB_TEST_IMAGES (or
    $NSTLIB_IMAGE_DIR) has them, else noise."""
    folder = os.environ.get("NSTLIB_TEST_IMAGES", "") or os.environ.get("NSTLIB_IMAGE_DIR", "")
    content, style = Path(folder, "tubingen.jpg"), Path(folder, "starry_night.jpg")
    if folder and content.is_file() and style.is_file():
        return load_image(content), load_image(style), "tubingen.jpg / starry_night.jpg"
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, 768, 768, generator=g), torch.rand(1, 3, 768, 768, generator=g), "random images"


def bare_passes(net: VGGFeatures, x: torch.Tensor, layer: str, steps: int, device: torch.device,
                precision: Precision | None = None) -> float:
    """Seconds per forward + backward of `net` up to `layer` in `precision`; x (1, 3, H, W) requires grad."""
    precision = precision or Precision("float32", "default")
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        x.grad = None
        extract(net, x, [layer], precision)[layer].sum().backward()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def reset_peak_memory(device: torch.device) -> bool:
    """Start a new peak: torch's counter on CUDA; on Linux the process's peak RSS (VmHWM). False if it cannot."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:  # Linux >= 4.0: writing 5 to clear_refs resets VmHWM, the peak resident set size
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory_mib(device: torch.device) -> float:
    """Peak memory in MiB since the last reset: allocated by torch on CUDA, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def measure(net: VGGFeatures, content: torch.Tensor, style: torch.Tensor, size: int, *, steps: int, warmup: int,
            repeats: int, device: torch.device, **kwargs) -> Row:
    """One stylize run at `size`; after `warmup` steps, every step is followed by one timed bare pass.

    A stylize step's time is from the end of one callback to the start of the next; the bare
    pass runs inside the callback, so the two alternate step by step and other load on the
    machine hits both alike. `repeats` measurements of `steps` steps each.
    """
    row = Row(size)
    precision = resolve_precision(kwargs.get("precision", "auto"), device)
    x_bare: torch.Tensor | None = None
    deepest = max([*kwargs["content_layers"], *kwargs["style_layers"]], key=net.names.index)
    on_cuda = device.type == "cuda"
    base = torch.cuda.memory_allocated(device) if on_cuda else 0  # the weights
    last_end = 0.0
    stylize_sum = bare_sum = 0.0

    def clock(info: StepInfo) -> None:
        nonlocal x_bare, last_end, stylize_sum, bare_sum
        synchronize(device)
        now = time.perf_counter()
        done = info.step - warmup
        if done > 0:  # a measured stylize step just ended
            stylize_sum += now - last_end
            row.mem_stylize_mib = max(row.mem_stylize_mib, peak_memory_mib(device))
            if done % steps == 0:
                row.stylize_s.append(stylize_sum / steps)
                row.bare_s.append(bare_sum / steps)
                stylize_sum = bare_sum = 0.0
        if done < 0 or done >= steps * repeats:
            return
        if x_bare is None:
            x_bare = torch.rand(1, 3, *info.image.shape[-2:], device=device, requires_grad=True)
            bare_passes(net, x_bare, deepest, 1, device, precision)  # its own warmup
        before = torch.cuda.memory_allocated(device) if on_cuda else 0
        reset_peak_memory(device)
        bare_sum += bare_passes(net, x_bare, deepest, 1, device, precision)
        # on CUDA, count what the bare pass needs on top of the weights, not stylize's live state
        peak = peak_memory_mib(device) - (before - base) / 2**20 if on_cuda else peak_memory_mib(device)
        row.mem_bare_mib = max(row.mem_bare_mib, peak)
        reset_peak_memory(device)
        synchronize(device)
        last_end = time.perf_counter()

    result = stylize(content, style, size=size, steps=warmup + steps * repeats, extractor=net, device=device,
                     callback=clock, callback_every=1, progress=False, **kwargs)
    if result.stopped:
        raise RuntimeError(f"the benchmark run at size {size} ended early: {result.stopped}")
    row.hw = tuple(result.image.shape[-2:])
    return row


def run(sizes: Sequence[int], *, steps: int = 5, warmup: int | None = None, repeats: int = 3,
        device: str | None = None, weights: str | None = None, variant: str = "gatys", optimizer: str = "lbfgs",
        layers: str = "gatys", precision: str = "auto", out: TextIO = sys.stdout) -> list[Row]:
    """Measure every size and print the markdown table to `out`; returns the rows."""
    warmup = DEFAULT_WARMUP[optimizer] if warmup is None else warmup
    if warmup < 1:
        raise ValueError(f"warmup must be >= 1 step (the first step sets up the optimizer), got {warmup}.")
    dev = pick_device(device)
    net = load_vgg(weights, device=dev)
    style_layers = style_layer_preset(layers, net.arch)
    content_layers = GATYS_CONTENT_LAYERS
    deepest = max([*content_layers, *style_layers], key=net.names.index)
    content, style, what = bench_images()
    chosen = resolve_precision(precision, dev)
    kwargs = dict(variant=variant, optimizer=optimizer, content_layers=content_layers, style_layers=style_layers,
                  precision=chosen)

    print(f"weights: {net.describe()}", file=out)
    print(f"device:  {describe_device(dev)}; torch {torch.__version__}; precision {chosen}", file=out)
    print(f"run:     {variant}/{optimizer}, content {','.join(content_layers)}, style {','.join(style_layers)}; "
          f"bare pass up to {deepest}; {what}; median of {repeats} x {steps} steps after {warmup} warmup steps",
          file=out, flush=True)
    resettable = reset_peak_memory(dev)
    if dev.type == "cuda":
        mem_note = ("peak CUDA memory allocated by torch (tensors only, not the CUDA context); for bare, "
                    "the weights plus what the pass needs")
    else:
        mem_note = "peak resident memory (RSS) of the whole process, torch itself included" + (
            "" if resettable else ", since the start (it cannot be reset here)")
    rows = []
    for size in sizes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "large image on the CPU will be slow": we know
            row = measure(net, content, style, size, steps=steps, warmup=warmup, repeats=repeats, device=dev, **kwargs)
        rows.append(row)
        print(f"  {row.hw[0]}x{row.hw[1]}: stylize {_fmt_all(row.stylize_s)} s/step, bare {_fmt_all(row.bare_s)} s/step",
              file=out, flush=True)
    print(file=out)
    print(format_table(rows, dev, mem_note), file=out, flush=True)
    return rows


def format_table(rows: Sequence[Row], device: torch.device, mem_note: str) -> str:
    """The markdown table for the README."""
    cuda = device.type == "cuda"
    lines = [
        "| size (H x W) | stylize (s/step) | bare forward+backward (s/step) | overhead | "
        + ("peak memory, stylize / bare (MiB) |" if cuda else "peak memory (MiB) |"),
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        mem = f"{r.mem_stylize_mib:.0f} / {r.mem_bare_mib:.0f}" if cuda else f"{max(r.mem_stylize_mib, r.mem_bare_mib):.0f}"
        lines.append(f"| {r.hw[0]} x {r.hw[1]} | {statistics.median(r.stylize_s):.4g} | {statistics.median(r.bare_s):.4g} | "
                     f"{r.overhead_pct:+.1f} % | {mem} |")
    lines.append(f"\nDevice: {describe_device(device)}. Memory: {mem_note}.")
    return "\n".join(lines)


def _fmt_all(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 128,256,512, got {text!r}") from None
    if not sizes or min(sizes) < 32:
        raise argparse.ArgumentTypeError(f"expected sizes >= 32 px like 128,256,512, got {text!r}")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nstlib.bench [--sizes 128,256,512] [--steps N] ...``; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m nstlib.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--per-step", action="store_true", help="(the default; kept for old command lines)")
    p.add_argument("--sizes", type=_sizes, default=None, help="longest sides, comma list (default 128,256,512)")
    p.add_argument("--steps", type=int, default=5, help="steps per measurement (default 5)")
    p.add_argument("--warmup", type=int, default=None,
                   help="steps before the first measurement, >= 1 (default: 100 for lbfgs, its full history; 5 for adam)")
    p.add_argument("--repeats", type=int, default=3, help="measurements per size; the median is reported (default 3)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default auto)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--weights", default=None, help="weights setting (default: $NSTLIB_WEIGHTS, else torchvision)")
    p.add_argument("--variant", choices=("gatys", "normalized"), default="gatys")
    p.add_argument("--optimizer", choices=("lbfgs", "adam"), default="lbfgs")
    p.add_argument("--layers", choices=("gatys", "choi-kim"), default="gatys", help="style layer preset (default gatys)")
    p.add_argument("--precision", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="the network's precision, for stylize and the bare pass alike (default auto)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.repeats < 1:
        p.error("--steps and --repeats must be >= 1")
    if args.threads is not None:
        if args.threads < 1:
            p.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    try:
        run(args.sizes or [128, 256, 512], steps=args.steps, warmup=args.warmup, repeats=args.repeats, device=args.device,
            weights=args.weights, variant=args.variant, optimizer=args.optimizer, layers=args.layers,
            precision=args.precision)
    except (ValueError, RuntimeError, OSError) as e:  # WeightsUnavailableError is a RuntimeError
        print(f"nstlib.bench: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
