"""Loss versus seconds: the plain loop against every preset. ``python -m nstlib.bench_curves``.

For each photo x painting pair and each size it runs, in one process,

- plain: the loop as any 100-line Gatys implementation writes it: float32, one scale, 300
  L-BFGS steps from the photo (the paper's layers and weights);
- every preset of `RunSettings.preset` (draft, fast, paper; above 512 px only draft and fast),

and records the loss of the picture each run would return if stopped there (its image every
few steps, clamped to [0, 1] and upsampled to the output size) under one objective: the plain
run's, float32 at the output size. The time spent on that measuring is not counted.

From the curves: the plain loop's best loss in 300 steps (L*), the seconds it needs to get
within 5 % of L*, and for each preset its final loss over L* and how many times its wall time
the plain loop needs to get as low ("plain needs"). Writes a markdown table, the curves as a
figure (PNG) and the raw curves (JSON). The paintings come from ``$NSTLIB_IMAGE_DIR`` (or the
course's cache), the photos from the course's bundled images and the paper's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence, TextIO

import torch
import torch.nn.functional as F

from nstlib import data
from nstlib._io import atomic_write
from nstlib.devices import describe_device, pick_device
from nstlib.images import load_image
from nstlib.losses import Objective, build_objective
from nstlib.settings import PRESETS, RunSettings
from nstlib.stylize import StepInfo, stylize
from nstlib.vgg import GATYS_CONTENT_LAYERS, GATYS_STYLE_LAYERS, VGGFeatures, load_vgg

#: The pairs the curves run on: the paper's photo and three bundled photos, the paper's paintings.
#: A name the course does not know is a file in $NSTLIB_IMAGE_DIR.
PAIRS = (("tubingen", "starry_night"), ("astronaut", "the_scream"), ("chelsea", "shipwreck"),
         ("coffee", "woman-with-hat-matisse.jpg"))
#: The plain loop every preset is compared with.
PLAIN = RunSettings(init="content", steps=300, scales=None, precision="float32", optimizer="lbfgs", variant="gatys",
                    style_layers=GATYS_STYLE_LAYERS, content_layers=GATYS_CONTENT_LAYERS)
NEAR = 1.05  # "within 5 % of the plain loop's best"


@dataclass
class Curve:
    """One run: (seconds, loss of its picture) every few steps, its final loss and wall time."""

    name: str
    pair: str
    size: int
    points: list[tuple[float, float]] = field(default_factory=list)
    wall_s: float = 0.0
    final: float = float("nan")
    steps: int = 0

    def time_to(self, loss: float) -> float | None:
        """Seconds until this run's picture first had `loss` or lower (None: never)."""
        return next((t for t, value in self.points if value <= loss), None)


def reference(net: VGGFeatures, photo: torch.Tensor, painting: torch.Tensor) -> Objective:
    """The plain run's objective at the output size (float32): the one every curve is measured by."""
    return build_objective(net, photo, painting, content_layers=PLAIN.content_layers, style_layers=PLAIN.style_layers,
                           content_weight=1.0, style_weight=1e3)


def measure(net: VGGFeatures, photo: torch.Tensor, painting: torch.Tensor, settings: RunSettings, name: str,
            pair: str, every: int, device: torch.device) -> Curve:
    """Run `settings`, recording the loss of its picture every `every` steps (measuring time not counted)."""
    objective = reference(net, photo.to(device), painting.to(device))
    hw = tuple(photo.shape[-2:])
    curve = Curve(name, pair, max(hw))
    spent = 0.0

    def loss_of(image: torch.Tensor) -> float:
        image = image.to(device)
        if tuple(image.shape[-2:]) != hw:
            image = F.interpolate(image, size=hw, mode="bicubic", align_corners=False).clamp(0, 1)
        with torch.no_grad():
            return float(objective(net.extract(image, objective.layers), image)[0][0])

    def note(info: StepInfo) -> None:
        nonlocal spent
        t0 = time.perf_counter()
        loss = loss_of(info.image)
        curve.points.append((info.elapsed - spent, loss))
        spent += time.perf_counter() - t0

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "large image on the CPU will be slow": we know
        r = stylize(photo, painting, settings, extractor=net, device=device, progress=False, callback=note,
                    callback_every=every)
    curve.wall_s, curve.steps, curve.final = r.wall_time - spent, r.steps_done, loss_of(r.image)
    curve.points.append((curve.wall_s, min(curve.final, min((v for _, v in curve.points), default=curve.final))))
    return curve


def run_curves(pairs: Sequence[tuple[str, str]], sizes: Sequence[int], presets: Sequence[str] = PRESETS, *,
               plain_up_to: int = 512, device: str | None = None, weights: str | None = None,
               out: TextIO = sys.stdout, folder: Path | None = None,
               precisions: Sequence[str] = ("auto",)) -> list[Curve]:
    """Every curve: the plain loop and paper (sizes up to `plain_up_to`) and each preset, per pair and size.

    precisions: each preset runs once per precision listed ("auto", "float32", "bfloat16"); a
    precision other than auto is named in the curve's name ("fast float32").

    folder: after each curve, the table and the curves so far are written there (curves.md,
    curves.json): a bench stopped after an hour keeps what it measured.
    """
    dev = pick_device(device)
    net = load_vgg(weights, device=dev)
    print(f"weights: {net.describe()}\ndevice:  {describe_device(dev)}; torch {torch.__version__}", file=out, flush=True)
    stylize(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64), extractor=net, device=dev, steps=2, progress=False,
            precision="bfloat16")  # kernels set up once, not in the first curve
    curves: list[Curve] = []
    for photo_key, painting_key in pairs:
        for size in sizes:
            photo, painting = _image(photo_key, size), _image(painting_key, size)
            pair = f"{photo_key} x {painting_key}"
            # Above plain_up_to the plain loop and paper (300 float32 steps at the output size,
            # half an hour at 1024 px on 2 cores) are skipped: the row gives time and loss only.
            small = size <= plain_up_to
            runs = [("plain", PLAIN)] if small else []
            runs += [(name if p == "auto" else f"{name} {p}", RunSettings.preset(name, size, precision=p))
                     for name in presets if small or name != "paper" for p in precisions]
            for name, settings in runs:
                every = max(2, size // 64) if name == "plain" else 5
                curve = measure(net, photo, painting, settings, name, pair, every, dev)
                curves.append(curve)
                print(f"  {pair} {size} px {name}: {curve.wall_s:.1f} s, {curve.steps} steps, loss {curve.final:.4g}",
                      file=out, flush=True)
                if folder is not None:
                    write_tables(curves, folder)
    return curves


def write_tables(curves: Sequence[Curve], folder: Path) -> None:
    """curves.md (the table) and curves.json (the raw curves) in `folder`, each replaced whole."""
    with atomic_write(folder / "curves.md", "w") as f:
        f.write(summary(curves) + "\n")
    with atomic_write(folder / "curves.json", "w") as f:
        f.write(json.dumps([asdict(c) for c in curves]))


def _image(name: str, size: int) -> torch.Tensor:
    """A course image by name, else a file of $NSTLIB_IMAGE_DIR; (1, 3, H, W) with longest side `size`."""
    if name in {i.key for i in data.list_images()}:
        return data.load_or_fallback(name, size=size, progress=False)[0]
    return load_image(Path(os.environ.get(data.IMAGE_DIR_ENV, "."), name), size)


def summary(curves: Sequence[Curve]) -> str:
    """The markdown table: per pair and size, each run against the plain loop's best."""
    lines = ["| pair | size | run | wall time (s) | steps | final loss / plain's best | plain needs |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    for key in dict.fromkeys((c.pair, c.size) for c in curves):
        group = [c for c in curves if (c.pair, c.size) == key]
        plain = next((c for c in group if c.name == "plain"), None)
        best = min(v for _, v in plain.points) if plain else None
        for c in group:
            if plain is None:
                ratio, needs = "", ""
            elif c is plain:
                ratio = "1.000"
                near = plain.time_to(NEAR * best)
                needs = f"{near:.1f} s to {NEAR:.2f} x its best"
            else:
                ratio = f"{c.final / best:.3f}"
                reach = plain.time_to(c.final)
                needs = "never (in 300 steps)" if reach is None else f"{reach / c.wall_s:.1f}x ({reach:.1f} s)"
            lines.append(f"| {c.pair} | {c.size} | {c.name} | {c.wall_s:.1f} | {c.steps} | {ratio} | {needs} |")
    return "\n".join(lines)


def figure(curves: Sequence[Curve], path: str | Path) -> Path:
    """Loss versus seconds, one panel per pair and size (log loss), saved as PNG."""
    from matplotlib.figure import Figure

    from nstlib.viz import save_figure

    keys = list(dict.fromkeys((c.pair, c.size) for c in curves))
    sizes = sorted({s for _, s in keys})
    pairs = list(dict.fromkeys(p for p, _ in keys))
    fig = Figure(figsize=(4.2 * len(sizes), 3.0 * len(pairs)), layout="constrained")
    axes = fig.subplots(len(pairs), len(sizes), squeeze=False)
    for (pair, size) in keys:
        ax = axes[pairs.index(pair)][sizes.index(size)]
        for c in (c for c in curves if (c.pair, c.size) == (pair, size)):
            t, v = zip(*c.points)
            ax.plot(t, v, lw=1.5 if c.name != "plain" else 2.5, alpha=0.9 if c.name != "plain" else 0.5, label=c.name)
        ax.set(yscale="log", xlabel="seconds", ylabel="loss of the picture", title=f"{pair}, {size} px")
        ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=110)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nstlib.bench_curves [--sizes 256,512,1024] [--pairs 4] [--out build/bench]``."""
    p = argparse.ArgumentParser(prog="python -m nstlib.bench_curves", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="256,512,1024", help="longest sides, comma list (default 256,512,1024)")
    p.add_argument("--pairs", type=int, default=len(PAIRS), help=f"how many of the {len(PAIRS)} pairs (default all)")
    p.add_argument("--presets", default=",".join(PRESETS), help=f"comma list of {', '.join(PRESETS)} (default all)")
    p.add_argument("--plain-up-to", type=int, default=512,
                   help="run the plain loop and paper up to this size (default 512)")
    p.add_argument("--out", default="build/bench", help="folder for curves.md, curves.png, curves.json")
    p.add_argument("--precisions", default="auto",
                   help="comma list of auto, float32, bfloat16: each preset runs in each (default auto)")
    p.add_argument("--device", default="auto")
    p.add_argument("--weights", default=None, help="weights setting (default: $NSTLIB_WEIGHTS, else torchvision)")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    presets = [s.strip() for s in args.presets.split(",") if s.strip()]
    folder = Path(args.out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        precisions = [s.strip() for s in args.precisions.split(",") if s.strip()]
        curves = run_curves(PAIRS[:args.pairs], sizes, presets, plain_up_to=args.plain_up_to, device=args.device,
                            weights=args.weights, folder=folder, precisions=precisions)
    except (ValueError, RuntimeError, OSError) as e:
        print(f"nstlib.bench_curves: error: {e}", file=sys.stderr)
        return 1
    print("\n" + summary(curves))
    print(f"wrote {folder / 'curves.md'}, {folder / 'curves.json'}, {figure(curves, folder / 'curves.png')}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
