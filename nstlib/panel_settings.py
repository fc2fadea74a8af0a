"""The tuning panel's settings as a plain dataclass: JSON and back, and the run they make.

    s = PanelSettings(variant="normalized", lambda_os=1e-3)
    s.to_dict()           # what TuningPanel.settings() returns (and Save writes under "panel")
    s.run_settings()      # the RunSettings of the run: stylize(content, style, settings=...)

A PanelSettings is a view of `nstlib.settings.RunSettings` plus the panel's image choices
(content, style, a second style and its share): `run_settings()` starts from the chosen preset,
`RunSettings.preset("draft" or "paper", size)` (the panel's "fast" is the library's draft), and puts the panel's controls over it.
No widgets here: the panel reads its controls into a PanelSettings and sets them from one.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from nstlib.settings import FAST_STEPS, RunSettings, coarse_to_fine
from nstlib.vgg import GATYS_STYLE_LAYERS

#: The fast preset's coarsest scale in the panel: 96 px, not the command line's 128, so that the
#: panel's CPU default of 192 px runs 96 -> 192 instead of one scale. Measured on a 2-core CPU with
#: the Caffe VGG-16 (tubingen + starry_night, bfloat16): 96 -> 192 px (80 + 30 steps) shows its
#: first preview after 0.2 s and ends after 18 s; one scale at 192 px (80 steps) after 0.5 s and
#: 25 s, for a picture as clean. Sizes from 512 px up get the command line's scales (128, 256, 512).
PANEL_FAST_START = 96
#: The panel's default size on a CPU (a clean picture in seconds) and on a GPU.
CPU_SIZE, GPU_SIZE = 192, 512
#: The "paper" preset's steps (one scale) on a CPU and on a GPU.
PAPER_STEPS = {"cpu": 150, "gpu": 500}


def _default_style_weights() -> dict[str, float]:
    return {name: 0.2 for name in GATYS_STYLE_LAYERS}


#: The panel's presets. Its "fast" is the library's "draft" (a fixed, quick schedule for a live
#: preview); "paper" is the paper's.
PANEL_PRESETS = ("fast", "paper")


@dataclass
class PanelSettings:
    """Every control of a TuningPanel, JSON-ready; the defaults are the panel's on a CPU.

    content, style: 'course:NAME' | 'path:PATH' | 'upload:NAME'. style2: a course image or ""
    (none); blend: its share of the Gram targets. colors: "painting", "luminance",
    "histogram-cholesky" or "histogram-pca". style_weights: the style layers of
    `style_layer_set` in order, 0.0 for a layer switched off. preset: "fast" (from the photo,
    coarse to fine, bfloat16 where faster) or "paper" (noise start, one scale); style_loss: how
    the style is compared (`nstlib.style_losses`; "gram" unless chosen); `steps` are those
    of the first (coarsest) scale, and each finer scale of "fast" runs 30 more (`schedule()`).
    On a GPU the panel starts at size 512 (and 500 steps with "paper").
    """

    content: str = "course:tubingen"
    style: str = "course:starry_night"
    style2: str = ""
    blend: float = 0.5
    colors: str = "painting"
    preset: str = "fast"
    size: int = CPU_SIZE
    steps: int = FAST_STEPS[0]
    optimizer: str = "lbfgs"
    variant: str = "gatys"
    style_loss: str = "gram"
    alpha_over_beta: float = 1e-3
    lambda_os: float = 1e-2
    style_layer_set: str = "gatys"
    style_weights: dict[str, float] = field(default_factory=_default_style_weights)
    content_layer: str = "relu4_2"
    init: str = "content"
    pooling: str = "avg"
    tv_weight: float = 0.0
    seed: int = 0
    device: str = "cpu"
    weights: str = "torchvision"

    # -- dict and JSON ---------------------------------------------------------------------
    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The setting names, in the order of `to_dict` (the order of saved JSON files)."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_dict(self) -> dict[str, Any]:
        """A new dict: TuningPanel.settings(), key for key and in the same order."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], base: "PanelSettings | None" = None) -> "PanelSettings":
        """`base` (default: the defaults) with the keys of `d` replaced; ValueError for unknown keys."""
        if not isinstance(d, Mapping):
            raise ValueError(f"settings must be a dict (TuningPanel.settings()), got {type(d).__name__}.")
        unknown = set(d) - set(cls.keys())
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}; expected the keys of TuningPanel.settings().")
        values = dict(d)
        if "style_weights" in values:  # a copy: the caller's dict must not change with ours
            values["style_weights"] = dict(values["style_weights"])
        return dataclasses.replace(base if base is not None else cls(), **values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str, base: "PanelSettings | None" = None) -> "PanelSettings":
        """From `to_json`'s text, or from the JSON that TuningPanel.save writes (its "panel" key)."""
        d = json.loads(text)
        if isinstance(d, Mapping) and isinstance(d.get("panel"), Mapping):
            d = d["panel"]
        return cls.from_dict(d, base)

    # -- the run ---------------------------------------------------------------------------
    def style_layers(self) -> dict[str, float]:
        """The style layers switched on (weight > 0) and their weights."""
        return {name: w for name, w in self.style_weights.items() if w > 0}

    def schedule(self) -> tuple[tuple[int, ...] | None, int | tuple[int, ...]]:
        """(scales, steps) of the run: the longest side of each scale, coarse to fine (None: one
        scale, the output's), and the steps (per scale with several scales)."""
        if self.preset not in PANEL_PRESETS:
            raise ValueError(f"preset must be one of {', '.join(map(repr, PANEL_PRESETS))}, got {self.preset!r}.")
        sizes = coarse_to_fine(self.size, start=PANEL_FAST_START) if self.preset == "fast" else [self.size]
        if len(sizes) == 1:
            return None, self.steps
        return tuple(sizes), (self.steps,) + (FAST_STEPS[1],) * (len(sizes) - 1)

    def describe_schedule(self) -> str:
        """One line for the panel, e.g. "scales 96 → 192 px, steps 80 + 30, from the photo"."""
        scales, steps = self.schedule()
        if scales is None:
            where = f"one scale, {self.size} px, {steps} steps"
        else:
            where = f"scales {' → '.join(map(str, scales))} px, steps {' + '.join(map(str, steps))}"
        start = {"content": "from the photo", "noise": "from noise", "style": "from the painting"}[self.init]
        return f"{where}, {start}"

    def run_settings(self, paper_scale: float = 1.0) -> RunSettings:
        """The run: `RunSettings.preset(self.preset, self.size)` with the panel's controls over it.

        paper_scale: K of the loaded network (`nstlib.paper_scale.scale`, r* / 1e-3): the gatys
        run's alpha/beta is `alpha_over_beta * K`, so that the control reads on the paper's scale
        (1e-3: photo and painting in balance). 1.0 takes the control as the raw loss's alpha/beta.

        Only the images stay the caller's (and the network, the callback, the stop Event). With a
        2nd style, `style_weights` is (1 - blend, blend) (the paintings' shares) and the caller
        passes the two paintings as a list. ValueError if every style layer is off with the
        normalized loss (the gatys loss runs with none: a reconstruction).
        """
        layers = self.style_layers()
        if not layers and self.variant == "normalized":
            # The gatys loss runs with no style term (a reconstruction); the normalized one divides by it.
            raise ValueError("every style layer is switched off: tick at least one, or use the gatys loss.")
        scales, steps = self.schedule()
        changes: dict[str, Any] = {
            "variant": self.variant, "style_loss": self.style_loss, "content_layers": (self.content_layer,), "style_layers": layers,
            "tv_weight": self.tv_weight, "init": self.init, "seed": self.seed, "optimizer": self.optimizer,
            "steps": steps, "scales": scales, "device": self.device, "weights": self.weights, "pooling": self.pooling,
        }
        if self.variant == "gatys":
            if not (math.isfinite(paper_scale) and paper_scale > 0):
                raise ValueError(f"paper_scale must be a positive number (r* / 1e-3 of the network), got {paper_scale!r}.")
            changes.update(alpha=1.0, beta=1.0 / (self.alpha_over_beta * paper_scale))
        else:
            changes.update(lambda_os=self.lambda_os)
        if self.style2:
            changes["style_weights"] = (1.0 - self.blend, self.blend)
        if self.colors != "painting":
            kind, _, method = self.colors.partition("-")
            changes.update(preserve_colors=kind, color_method=method or "cholesky")
        return RunSettings.preset("draft" if self.preset == "fast" else self.preset, self.size, **changes)
