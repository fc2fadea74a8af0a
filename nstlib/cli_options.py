"""The command line's options: their types (each error says what was expected) and the table
mapping every run option to its `RunSettings` field.

No torch here, so that `nstlib --help` is instant; the layer presets are looked up on use.
"""

from __future__ import annotations

import argparse
import math
import re
from typing import Any

#: nstlib.color's PRESERVE_COLORS and COLOR_METHODS, spelled out so that --help does not import torch
#: (tests/test_cli.py checks that they agree).
PRESERVE_COLORS = ("luminance", "histogram")
COLOR_METHODS = ("cholesky", "pca")
#: nstlib.style_losses.STYLE_LOSSES, spelled out for the same reason (tests/test_cli.py checks it).
STYLE_LOSSES = ("gram", "mean-std", "mmd-gaussian", "w2", "sliced")


class UsageError(Exception):
    """A bad command line: exit status 2."""


# -- option types: each raises ArgumentTypeError with what was expected --------------------

def _int_at_least(minimum: int):
    """An argparse type: a whole number >= minimum."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_count = _int_at_least(0)


def _weight(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 1e3, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _ratio(text: str) -> float:
    """--ratio: alpha/beta on the paper's scale (nstlib.paper_scale), a number > 0."""
    value = _weight(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected alpha/beta on the paper's scale, a number > 0 such as 1e-3, got {text!r}")
    return value


def _noise_level(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1] such as 0.02, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1] such as 0.02, got {text!r}")
    return value


def _style_weights(text: str) -> list[float]:
    """'0.7,0.3' -> [0.7, 0.3]: numbers >= 0, not all 0 (the count is checked against the STYLE images later)."""
    parts = [t.strip() for t in text.split(",")]
    try:
        values = [float(t) for t in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers >= 0 separated by commas, one per STYLE (e.g. 0.7,0.3), "
                                         f"got {text!r}") from None
    bad = [t for t, v in zip(parts, values) if not math.isfinite(v) or v < 0]
    if bad:
        raise argparse.ArgumentTypeError(f"expected finite numbers >= 0 (e.g. 0.7,0.3), got {bad[0]} in {text!r}")
    if sum(values) <= 0:
        raise argparse.ArgumentTypeError(f"the weights are all 0 ({text!r}); give at least one style a weight > 0, e.g. 0.7,0.3")
    return values


def _size(text: str) -> int | tuple[int, int]:
    """'256' (longest side) or '192x256' (height x width)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a number of pixels (256) or HEIGHTxWIDTH (192x256), got {text!r}")
    h = int(m.group(1))
    w = int(m.group(2)) if m.group(2) else None
    if h < 1 or (w is not None and w < 1):
        raise argparse.ArgumentTypeError(f"sizes must be >= 1 px, got {text!r}")
    return h if w is None else (h, w)


def _steps(text: str) -> int | tuple[int, ...]:
    """'300' (every scale) or '80,30' (one per scale)."""
    parts = [t.strip() for t in text.split(",")]
    try:
        values = [int(t) for t in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number (300) or one per scale (80,30), got {text!r}") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"steps must be >= 0, got {text!r}")
    return values[0] if len(values) == 1 else tuple(values)


def _scales(text: str) -> tuple[int, ...] | None:
    """'none' -> None (one scale); '128' or '128,181' -> those sizes, increasing."""
    if text.strip().lower() in ("none", "off", "0", ""):
        return None
    try:
        values = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes in px like 128 or 128,181, or 'none', got {text!r}") from None
    if any(v < 1 for v in values) or any(b <= a for a, b in zip(values, values[1:])):
        raise argparse.ArgumentTypeError(f"expected increasing sizes >= 1 px like 128,181, got {text!r}")
    return values


def _tolerance(text: str) -> float | None:
    """'none' -> None (every step runs); '1e-3' -> 0.001, a number in (0, 1)."""
    if text.strip().lower() in ("none", "off", "0", ""):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1) such as 1e-3, or 'none', got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1) such as 1e-3, or 'none', got {text!r}")
    return value


def parse_layers(text: str, option: str) -> tuple[str, ...] | dict[str, float] | str:
    """'relu4_2' / 'relu1_1,relu2_1' -> names (equal weights); 'relu4_2=1,relu5_1=0.5' -> {name: weight}.

    'gatys' and 'choi-kim' are returned as they are (presets, resolved once the architecture
    is known); '' means no layer (drops that loss term).
    """
    from nstlib.vgg import preset_name

    text = text.strip()
    if preset_name(text):
        return preset_name(text)
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        return ()
    weighted = ["=" in t for t in items]
    if not any(weighted):
        if len(set(items)) != len(items):
            raise UsageError(f"{option} names a layer twice: {text!r}")
        return tuple(items)
    if not all(weighted):
        raise UsageError(f"{option}: give a weight to every layer or to none, got {text!r} (e.g. relu4_2=1,relu5_2=0.5)")
    out: dict[str, float] = {}
    for item in items:
        name, _, value = item.partition("=")
        name = name.strip()
        try:
            w = _weight(value)
        except argparse.ArgumentTypeError as e:
            raise UsageError(f"{option}: weight of {name!r}: {e}") from None
        if name in out:
            raise UsageError(f"{option} names the layer {name!r} twice")
        out[name] = w
    return out


def _content_layers(text: str) -> tuple[str, ...] | dict[str, float]:
    layers = parse_layers(text, "--content-layers")
    return ("relu4_2",) if isinstance(layers, str) else layers  # both papers take content from conv4_2 (relu4_2 here)


def _style_layers(text: str) -> tuple[str, ...] | dict[str, float] | str:
    return parse_layers(text, "--style-layers")


WEIGHTS_HELP = ("weights setting: torchvision, random[:vgg16][:SEED], or [vgg16:][caffe:]PATH "
                "(default: $NSTLIB_WEIGHTS, else torchvision's VGG-19)")
PRESETS = ("fast", "draft", "paper")  # nstlib.settings.PRESETS, spelled out so that --help does not import torch

# -- the run's settings: one row per option, (group, flag, RunSettings field, argparse keywords) ---------
# An option given overrides --settings FILE, which replaces --preset; the defaults are the preset's.
SETTING_OPTIONS: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("images", "--size", "size", dict(type=_size, help="output size: longest side in px, or HxW (default 256)")),
    ("images", "--style-size", "style_size", dict(
        type=_size, help="style image size at the output size (default: the output's longest side)")),
    ("several styles, colours (Gatys et al. 2017)", "--style-weights", "style_weights", dict(
        type=_style_weights, metavar="W1,W2,...", help="with several STYLE images: how much of each, one number >= 0 "
        "per STYLE, e.g. 0.7,0.3 (normalized to sum 1; default equal)")),
    ("several styles, colours (Gatys et al. 2017)", "--preserve-colors", "preserve_colors", dict(
        choices=PRESERVE_COLORS, help="keep the photo's colours: luminance (transfer on luminance only) or histogram "
        "(recolour the style images to the photo's colours first) (default: off)")),
    ("several styles, colours (Gatys et al. 2017)", "--color-method", "color_method", dict(
        choices=COLOR_METHODS, help="with --preserve-colors histogram: the recolouring matrix (default cholesky)")),
    ("loss", "--variant", "variant", dict(
        choices=("gatys", "normalized"), help="gatys: alpha*L_content + beta*L_style; normalized: Choi & Kim, "
        "lambda_os*L_o + L_s (default gatys)")),
    ("loss", "--style-loss", "style_loss", dict(
        choices=STYLE_LOSSES, help="how the style is compared (notebook 8): gram (Gatys), mean-std (per-channel "
        "mean and std), mmd-gaussian, w2 (Wasserstein-2 of Gaussian fits), sliced (sliced Wasserstein); the others "
        "than gram take one STYLE and no --mask; each on the Gram loss's scale, so --alpha/--beta mean the same "
        "(default gram)")),
    ("loss", "--alpha", "alpha", dict(type=_weight, help="gatys content weight (default 1)")),
    ("loss", "--beta", "beta", dict(type=_weight, help="gatys style weight (default 1e3)")),
    ("loss", "--lambda-os", "lambda_os", dict(type=_weight, help="normalized variant's content weight (default 1e-2)")),
    ("loss", "--content-layers", "content_layers", dict(
        type=_content_layers, metavar="LAYERS", help="comma list, optionally name=weight (default relu4_2)")),
    ("loss", "--style-layers", "style_layers", dict(
        type=_style_layers, metavar="LAYERS", help="comma list, optionally name=weight, or a preset: gatys "
        "(relu1_1..relu5_1), choi-kim (last ReLU of each block) (default gatys)")),
    ("loss", "--tv-weight", "tv_weight", dict(type=_weight, help="total-variation weight (default 0)")),
    ("optimization", "--steps", "steps", dict(
        type=_steps, help="steps per scale, or one per scale (80,30); default: fast 80 at the first scale and 30 "
        "at each finer one, paper 300")),
    ("optimization", "--scales", "scales", dict(
        type=_scales, help="coarse to fine: sizes (longest sides) to run at before the output size, e.g. 128 or "
        "128,181; 'none' for one scale (default: fast 128, 256, ... doubling up to --size; paper none)")),
    ("optimization", "--tolerance", "tolerance", dict(
        type=_tolerance, help="end the last scale once the loss falls by less than this fraction per step over "
        "20 steps (its --steps are then the most it runs); 'none' runs every step (default: fast 1e-3, draft and "
        "paper none)")),
    ("optimization", "--optimizer", "optimizer", dict(choices=("lbfgs", "adam"), help="default lbfgs")),
    ("optimization", "--lr", "lr", dict(type=float, help="Adam's learning rate (default 0.02); L-BFGS finds its step length by a line search")),
    ("optimization", "--init", "init", dict(
        help="noise, content, style, or an image PATH (default: fast content, paper noise)")),
    ("optimization", "--noise-level", "noise_level", dict(
        type=_noise_level, help="amplitude of the noise start around grey, in (0, 1]: 1 = uniform in [0, 1] "
        "(default); 0.02 leaves less speckle where a layer does not see it")),
    ("optimization", "--seed", "seed", dict(type=int, help="seed of the noise start (default 0)")),
    ("network and machine", "--weights", "weights", dict(help=WEIGHTS_HELP)),
    ("network and machine", "--pooling", "pooling", dict(choices=("avg", "max"), help="default avg (the paper's choice)")),
    ("network and machine", "--device", "device", dict(help="auto, cpu, cuda, cuda:N or mps (default auto)")),
    ("network and machine", "--precision", "precision", dict(
        choices=("auto", "float32", "bfloat16"), help="the network's number format; auto: bfloat16 where the "
        "hardware computes it natively, or what NSTLIB_PRECISION says (default auto)")),
)
