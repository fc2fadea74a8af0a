"""A run's settings: one frozen dataclass, its checks, its JSON, and the named presets.

    s = RunSettings(size=256, steps=200)                 # checked here, once
    s = RunSettings.preset("fast", size=512)             # the command line's default
    s = dataclasses.replace(s, beta=1e4)                 # a changed copy (checked again)
    stylize(photo, painting, settings=s)                 # or stylize(photo, painting, size=256, steps=200)
    RunSettings.from_json("out.json")                    # the JSON written beside an image -> the same run

Everything a run needs except the images' pixels, the network object, callbacks and stop
events. Checks that need the images or the network (how many style images, which layers the
network has, whether the image is large enough) run when `stylize` plans the run.
Numbers are accepted as Python, NumPy or 0-d torch scalars (`steps=np.int64(200)`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from nstlib import color
from nstlib.images import Size
from nstlib.losses import VARIANTS, LayerWeights, Weight, as_batch_weight, resolve_weights
from nstlib.precision import PRECISIONS, Precision
from nstlib.style_losses import STYLE_LOSSES
from nstlib.vgg import GATYS_CONTENT_LAYERS, GATYS_STYLE_LAYERS, preset_name

OPTIMIZERS = ("lbfgs", "adam")
DEFAULT_LR = {"adam": 0.02}  # L-BFGS has no step length to set: its line search finds one
INITS = ("noise", "content", "style")
POOLINGS = ("avg", "max")
PRESETS = ("fast", "draft", "paper")
#: fast and draft: the coarsest scale's longest side, and the steps at it and at each finer scale.
FAST_START = 128
FAST_STEPS = (80, 30)
#: fast: the last scale runs until the picture is done (its loss falls by less than
#: FAST_TOLERANCE per step over 20 steps), at most FAST_LAST_STEPS steps.
FAST_LAST_STEPS = 300
FAST_TOLERANCE = 5e-4
#: fast above FAST_CONVERGED_UP_TO px: the last scale runs FAST_LARGE_LAST_STEPS steps. A step at
#: 1024 px costs about 2.6 s on 2 CPU cores, so a converged picture would take 10 minutes; these 25
#: steps take it from the upsampled 512 px picture's loss (30x the final one), 1024 px in 80-110 s.
FAST_CONVERGED_UP_TO = 512
FAST_LARGE_LAST_STEPS = 25
#: Keys of a saved run's "settings" that record what happened, not what was asked for.
RECORD_ONLY = ("content", "style", "style_masks", "precision_reason", "arch", "memory_estimate_mb", "nstlib", "torch")


@dataclass(frozen=True)
class RunSettings:
    """Every setting of one run (`nstlib.stylize.stylize` runs it).

    size: longest side (int) or (H, W) of the output; None keeps the content image's size.
    style_size: the style image's longest side or (H, W) at the output size; None: the output's
        longest side. At a coarser scale the style image shrinks by the same factor.
    style_weights: with several style images, how much of each (>= 0, normalized to sum 1;
        default equal). The style target of each layer is the blend of the images' Gram
        matrices, sum_k w_k A_k: for the Gatys loss this has the same minimum as the weighted
        sum of the single-style losses; the normalized loss divides by the blend's energy.
    preserve_colors: None, "luminance" (Gatys et al. 2017: the transfer runs on luminance, and
        the result takes the photo's colours, I and Q of YIQ) or "histogram" (the style images
        are recoloured to the photo's colour mean and covariance first; `color_method`
        "cholesky" or "pca" chooses the matrix, see `nstlib.color`). Needs a content image.
    variant: "gatys" (L = alpha L_content + beta L_style; defaults 1 and 1e3) or "normalized"
        (Choi & Kim: L = w (lambda_os L_o + L_s), every partial loss divided by its target's
        energy; lambda_os defaults to 1e-2).
    style_loss: how the style is compared (`nstlib.style_losses`, notebook 8): "gram" (Gatys),
        "mean-std", "mmd-gaussian", "w2" or "sliced". The others take one style image, without
        blends or masks; "sliced" draws fresh random directions every step, from `seed`.
    content_layers, style_layers: layer names (equal weights summing to 1) or {name: weight};
        style_layers may also name a preset, "gatys" or "choi-kim". A sequence instead of a
        number as alpha, beta, lambda_os or a layer's weight runs one image per value as a batch.
    tv_weight: total-variation weight (0: none).
    init: "noise" (seeded white noise), "content", "style", or an image.
    noise_level: amplitude of the "noise" start around mid-grey: pixels uniform in
        0.5 +- noise_level / 2 (1: uniform in [0, 1]). The optimizer removes only what the loss
        sees, so the part of the noise a layer is blind to stays in the result: 0.02 gives a
        nearly flat start and cleaner content reconstructions (notebook 2).
    optimizer: "lbfgs" (L-BFGS, bounds [0, 1], a line search: `nstlib.lbfgs`) or "adam"; lr: Adam's
        learning rate (None: `DEFAULT_LR`); L-BFGS takes none.
    steps: steps per scale, or one number per scale; a step is one evaluation of the loss and
        its gradient, for both optimizers.
    tolerance: None (every step runs), or when the picture is done: the last scale ends once its
        lowest loss falls by less than this fraction per step over the last 20 steps (1e-3: 0.1 %
        per step); its `steps` are then the most it runs.
    scales: None for one scale (the output size), or the longest sides to run at, increasing,
        e.g. (128, 256) or `scale_sizes(128, 512)`; the output size is added as the last scale.
        The image is upsampled from one scale to the next; L-BFGS starts afresh at each scale,
        Adam carries its moments over.
    precision: "auto" (bfloat16 for the network where the hardware computes it natively, or
        what NSTLIB_PRECISION says; see `nstlib.precision`), "float32" or "bfloat16"; device: None or "auto", "cpu", "cuda", ...
    weights, pooling: which network `stylize` loads when it is not given one (None: $NSTLIB_WEIGHTS
        or torchvision's VGG-19; average pooling). A pooling set here must match a network given.
    """

    # images
    size: Size = None
    style_size: Size = None
    style_weights: tuple[float, ...] | None = None
    preserve_colors: str | None = None
    color_method: str = "cholesky"
    # the loss
    variant: str = "gatys"
    style_loss: str = "gram"
    content_layers: LayerWeights = GATYS_CONTENT_LAYERS
    style_layers: LayerWeights | str = GATYS_STYLE_LAYERS
    alpha: Weight | None = None
    beta: Weight | None = None
    lambda_os: Weight | None = None
    tv_weight: float = 0.0
    # the optimization
    init: Any = "noise"
    noise_level: float = 1.0
    seed: int = 0
    optimizer: str = "lbfgs"
    steps: int | tuple[int, ...] = 300
    scales: tuple[int, ...] | None = None
    tolerance: float | None = None
    lr: float | None = None
    # the network and the machine
    precision: str | Precision = "auto"
    device: str | torch.device | None = None
    weights: str | None = None
    pooling: str | None = None

    def __post_init__(self) -> None:
        fix = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen: set once, here)
        fix("size", check_size(self.size, "size"))
        fix("style_size", check_size(self.style_size, "style_size"))
        fix("style_weights", check_style_weights(self.style_weights))
        if self.preserve_colors is not None:
            check_choice(self.preserve_colors, color.PRESERVE_COLORS, "preserve_colors")
        check_choice(self.color_method, color.COLOR_METHODS, "color_method")
        resolve_weights(self.variant, self.alpha, self.beta, self.lambda_os)  # the variant and its weights
        check_choice(self.style_loss, STYLE_LOSSES, "style_loss")
        if self.style_loss != "gram" and self.style_weights is not None and len(self.style_weights) > 1:
            raise ValueError(f"style_weights blend several style images, which only style_loss='gram' does; "
                             f"style_loss={self.style_loss!r} takes one style image.")
        for name in ("alpha", "beta", "lambda_os"):
            fix(name, _weight(getattr(self, name), name))
        fix("content_layers", _layers(self.content_layers, "content_layers", presets=False))
        fix("style_layers", _layers(self.style_layers, "style_layers", presets=True))
        fix("tv_weight", float(as_batch_weight(_scalar(self.tv_weight), "tv_weight")))
        check_init(self.init)
        fix("noise_level", check_noise_level(self.noise_level))
        fix("seed", check_seed(self.seed))
        check_choice(self.optimizer, OPTIMIZERS, "optimizer")
        fix("steps", check_steps(self.steps))
        fix("scales", check_scales(self.scales))
        fix("tolerance", check_tolerance(self.tolerance))
        fix("lr", check_lr(self.lr))
        if self.lr is not None and self.optimizer == "lbfgs":
            raise ValueError(f"lr={self.lr:g} sets Adam's step length; L-BFGS finds its own by a line search. "
                             f"Drop lr, or use optimizer='adam' with it.")
        if not isinstance(self.precision, Precision):
            check_choice(self.precision, PRECISIONS, "precision")
        if self.weights is not None and not isinstance(self.weights, str):
            raise TypeError(f"weights must be a setting such as 'torchvision' or 'caffe:PATH', got {self.weights!r}.")
        if self.pooling is not None:
            check_choice(self.pooling, POOLINGS, "pooling")

    # -- derived values ------------------------------------------------------------------------
    @property
    def learning_rate(self) -> float | None:
        """Adam's lr, or its default; None for L-BFGS (its line search finds the step length)."""
        return DEFAULT_LR.get(self.optimizer) if self.lr is None else self.lr

    # -- presets ---------------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, size: int | tuple[int, int] = 256, **changes: Any) -> "RunSettings":
        """A named run for an output of `size` (longest side or (H, W)), with `changes` over it.

        fast (the command line's default): the converged picture. Start from the photo, coarse
            to fine from 128 px by factors of 2 (80 L-BFGS steps at the first scale, 30 at each
            finer one but the last), the network in bfloat16 where the hardware computes it natively; the
            last scale runs until the loss falls by less than FAST_TOLERANCE per step (at most
            FAST_LAST_STEPS steps). Above FAST_CONVERGED_UP_TO (512 px) the last scale runs
            FAST_LARGE_LAST_STEPS (25): 1024 px in 80-110 s on 2 CPU cores, not converged.
        draft: the quick picture: as fast, but the last scale runs 30 steps too (80 at one scale).
        paper: Gatys et al. 2016 as published: white-noise start, one scale, 300 L-BFGS steps.
        Both use the paper's layers and weights (content relu4_2, style relu1_1 ... relu5_1,
        alpha 1, beta 1e3).
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; the presets are {', '.join(PRESETS)}.")
        common = dict(size=size, variant="gatys", style_layers="gatys", optimizer="lbfgs", precision="auto")
        if name == "paper":
            return cls(**{**common, "init": "noise", "scales": None, "steps": 300, **changes})
        longest = size if isinstance(size, int) else max(size)
        scales = coarse_to_fine(longest)
        steps = [FAST_STEPS[0]] + [FAST_STEPS[1]] * (len(scales) - 1)
        converged: dict[str, Any] = {}
        if name == "fast":
            steps[-1] = FAST_LARGE_LAST_STEPS if longest > FAST_CONVERGED_UP_TO else FAST_LAST_STEPS
            converged = {"tolerance": FAST_TOLERANCE}
        return cls(**{**common, "init": "content", "scales": scales if len(scales) > 1 else None,
                      "steps": steps if len(scales) > 1 else steps[0], **converged, **changes})

    # -- dict and JSON ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values, in field order (an image given as init is described)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "init" and not isinstance(v, (str, os.PathLike)):
                v = f"<{type(v).__name__}>"
            elif isinstance(v, (Precision, torch.device, os.PathLike)):
                v = v.name if isinstance(v, Precision) else str(v)
            out[f.name] = jsonable(v)
        return out

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The JSON text; with `path`, also written there (atomically)."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            from nstlib._io import atomic_write

            with atomic_write(path, "w") as f:
                f.write(text)
        return text

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunSettings":
        """From `to_dict`, or from the "settings" a saved run records (what it measured is skipped)."""
        if not isinstance(d, Mapping):
            raise ValueError(f"run settings must be a dict, got {type(d).__name__}.")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names) - set(RECORD_ONLY))
        if unknown:
            hints = [f"{k!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, names, 1)) else repr(k)
                     for k in unknown]
            raise ValueError(f"unknown run settings {', '.join(hints)}; the settings are {', '.join(names)}.")
        values = {k: v for k, v in d.items() if k in names and v is not None}
        if values.get("optimizer", "lbfgs") == "lbfgs":  # records from before the line search gave L-BFGS an lr
            values.pop("lr", None)
        init = values.get("init")
        if isinstance(init, str) and init.startswith("<"):
            raise ValueError(f"this run started from an image given in memory ({values['init']}), which a settings "
                             f"file cannot hold; pass init= an image path or 'noise', 'content' or 'style'.")
        ss = values.get("style_size")
        if isinstance(ss, list) and ss and isinstance(ss[0], list):  # several styles recorded each size
            values["style_size"] = max(ss[0])
        for key in ("size", "style_size", "steps", "scales", "style_weights"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        return cls(**values)

    @classmethod
    def from_json(cls, source: str | os.PathLike) -> "RunSettings":
        """From a JSON file (or its text): `to_json`'s, or the one written beside a result image.

        A path to the image itself (out.png) reads the JSON beside it (out.json).
        """
        text = str(source)
        if isinstance(source, os.PathLike) or not text.lstrip().startswith("{"):
            path = Path(source)
            if path.suffix.lower() != ".json":
                path = path.with_suffix(".json")
            text = path.read_text(encoding="utf-8")
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source} is not a settings file (not valid JSON: {e}).") from None
        if isinstance(d, Mapping) and isinstance(d.get("settings"), Mapping):
            d = d["settings"]
        return cls.from_dict(d)

    def replace(self, **changes: Any) -> "RunSettings":
        """A copy with `changes` (checked); an unknown name gets a hint."""
        names = [f.name for f in dataclasses.fields(self)]
        unknown = [k for k in changes if k not in names]
        if unknown:
            k = unknown[0]
            close = difflib.get_close_matches(k, names, 1)
            raise TypeError(f"unknown setting {k!r}{f' (did you mean {close[0]!r}?)' if close else ''}; "
                            f"the settings are {', '.join(names)} (nstlib.settings.RunSettings).")
        return dataclasses.replace(self, **changes) if changes else self


def coarse_to_fine(size: int, start: int = FAST_START, factor: int = 2) -> list[int]:
    """Longest sides from `start` up to `size`, each `factor` times the one before, `size` last.

    coarse_to_fine(256) -> [128, 256]; coarse_to_fine(512) -> [128, 256, 512];
    coarse_to_fine(160) -> [160] (no coarser scale worth running).
    """
    sizes = [size]
    while sizes[0] / factor >= start:
        sizes.insert(0, round(sizes[0] / factor))
    return sizes


# -- the checks: each raises with what was expected and what came -----------------------------------

def check_choice(value: Any, choices: Sequence[str], name: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}.")
    return value


def check_size(size: Any, name: str) -> Size:
    """None, a longest side, or (H, W): whole numbers (any integer type) -> int or (int, int)."""
    if size is None:
        return None
    size = _scalar(size)
    if isinstance(size, (list, tuple, np.ndarray)):
        pair = tuple(_scalar(s) for s in size)
        if len(pair) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in pair):
            raise ValueError(f"{name} as a pair must be two positive ints (height, width), got {size!r}.")
        return pair
    return _whole(size, name)


def check_style_weights(weights: Any) -> tuple[float, ...] | None:
    """The style images' shares: numbers >= 0, not all 0 (their count is checked against the images)."""
    if weights is None:
        return None
    if isinstance(weights, (str, bytes)) or not isinstance(weights, (Sequence, np.ndarray, torch.Tensor)):
        raise TypeError(f"style_weights must be a list of numbers, one per style image, got {weights!r}.")
    w = tuple(float(_scalar(x)) for x in weights)
    if not all(math.isfinite(x) and x >= 0 for x in w) or sum(w) <= 0:
        raise ValueError(f"style_weights must be finite, >= 0 and not all 0, got {list(w)!r}.")
    return w


def check_init(init: Any) -> None:
    if isinstance(init, str) and init in INITS:
        return
    if isinstance(init, (str, os.PathLike)) and not os.path.exists(init):
        raise ValueError(f"init must be 'noise', 'content', 'style' or an image, got {init!r}.")


def check_noise_level(level: Any) -> float:
    level = _scalar(level)
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level <= 1:
        raise ValueError(f"noise_level must be a number in (0, 1] (the amplitude of the noise start around mid-grey), "
                         f"got {level!r}.")
    return float(level)


def check_seed(seed: Any) -> int:
    seed = _scalar(seed)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be a whole number from 0 to 2**63 - 1, got {seed!r}.")
    return seed


def check_lr(lr: Any) -> float | None:
    if lr is None:
        return None
    lr = _scalar(lr)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0 or not math.isfinite(lr):
        raise ValueError(f"lr must be > 0, got {lr}.")
    return float(lr)


def check_tolerance(tolerance: Any) -> float | None:
    if tolerance is None:
        return None
    tolerance = _scalar(tolerance)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 < tolerance < 1:
        raise ValueError(f"tolerance must be None or a number in (0, 1), the relative fall of the loss per step "
                         f"below which the last scale ends (e.g. 1e-3), got {tolerance!r}.")
    return float(tolerance)


def check_steps(steps: Any) -> int | tuple[int, ...]:
    """Steps: one whole number >= 0 for every scale, or one per scale."""
    steps = _scalar(steps)
    if isinstance(steps, int) and not isinstance(steps, bool):
        per = [steps]
    elif isinstance(steps, (Sequence, np.ndarray)) and not isinstance(steps, (str, bytes)):
        per = [_scalar(n) for n in steps]
    else:
        raise ValueError(f"steps must be a whole number >= 0, or one per scale, got {steps!r}.")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in per):
        raise ValueError(f"steps must be whole numbers >= 0, got {steps!r}.")
    return per[0] if isinstance(steps, int) else tuple(per)


def check_scales(scales: Any) -> tuple[int, ...] | None:
    """Longest sides in px, increasing; None for one scale. (Their fit to the output is the plan's check.)"""
    if scales is None:
        return None
    if isinstance(scales, (str, bytes)) or not isinstance(scales, (Sequence, np.ndarray)):
        raise TypeError(f"scales must be a list of sizes such as [128, 256] (longest sides, increasing), got {scales!r}.")
    sizes = [_scalar(s) for s in scales]
    if not sizes or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes):
        raise ValueError(f"scales must be whole numbers >= 1 (longest sides in px), got {list(scales)!r}.")
    if any(b <= a for a, b in zip(sizes, sizes[1:])):
        raise ValueError(f"scales must increase from coarse to fine, got {sizes}; e.g. [128, 181, 256].")
    return tuple(sizes)


# -- helpers ----------------------------------------------------------------------------------------

def _scalar(value: Any) -> Any:
    """NumPy and 0-d torch scalars -> the Python number; anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def _whole(value: Any, name: str) -> int:
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int (longest side), a pair (height, width) or None, got {value!r}.")
    if value < 1:
        raise ValueError(f"{name} must be a positive number of pixels, got {value}.")
    return value


def _weight(value: Any, name: str) -> Weight | None:
    """None, a number >= 0, or one number per batch image (a tuple); checked."""
    if value is None:
        return None
    value = _scalar(value)
    as_batch_weight(value, name)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, torch.Tensor):
        return value
    return tuple(float(_scalar(v)) for v in value)


def _layers(layers: Any, name: str, presets: bool) -> LayerWeights | str:
    """Names -> a tuple; {name: weight} -> a dict; a preset's name (style layers) -> the name."""
    if isinstance(layers, str):
        if presets and preset_name(layers):
            return preset_name(layers)
        raise TypeError(f"{name} must be a list of layer names or a dict name -> weight, got the string {layers!r}; "
                        f"write [{layers!r}].")
    if isinstance(layers, Mapping):
        return {str(k): _scalar(v) for k, v in layers.items()}
    names = tuple(layers)
    if len(set(names)) != len(names):
        raise ValueError(f"{name} names a layer twice: {list(names)}.")
    return names


def jsonable(v: Any) -> Any:
    """Tensors, arrays and NumPy scalars -> lists and numbers; tuples -> lists (JSON has no tuple)."""
    if isinstance(v, (torch.Tensor, np.ndarray, np.generic)):
        return v.tolist()
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return v


__all__ = ["RunSettings", "PRESETS", "OPTIMIZERS", "DEFAULT_LR", "VARIANTS", "coarse_to_fine"]
