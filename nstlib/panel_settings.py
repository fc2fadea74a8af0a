"""The tuning panel's settings as a plain dataclass: JSON and back, and `stylize`'s arguments.

    s = PanelSettings(variant="normalized", lambda_os=1e-3)
    s.to_dict()           # what TuningPanel.settings() returns (and Save writes under "panel")
    s.stylize_kwargs()    # the keyword arguments for nstlib.stylize.stylize, images aside

No widgets here: the panel reads its controls into a PanelSettings and sets them from one.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from nstlib.vgg import GATYS_STYLE_LAYERS


def _default_style_weights() -> dict[str, float]:
    return {name: 0.2 for name in GATYS_STYLE_LAYERS}


@dataclass
class PanelSettings:
    """Every control of a TuningPanel, JSON-ready; the defaults are the panel's on a CPU.

    content, style: 'course:NAME' | 'path:PATH' | 'upload:NAME'. style2: a course image or ""
    (none); blend: its share of the Gram targets. colors: "painting", "luminance",
    "histogram-cholesky" or "histogram-pca". style_weights: the style layers of
    `style_layer_set` in order, 0.0 for a layer switched off. On a GPU the panel starts at
    size 512 and 500 steps instead of 128 and 150.
    """

    content: str = "course:tubingen"
    style: str = "course:starry_night"
    style2: str = ""
    blend: float = 0.5
    colors: str = "painting"
    size: int = 128
    steps: int = 150
    optimizer: str = "lbfgs"
    variant: str = "gatys"
    alpha_over_beta: float = 1e-3
    lambda_os: float = 1e-2
    style_layer_set: str = "gatys"
    style_weights: dict[str, float] = field(default_factory=_default_style_weights)
    content_layer: str = "relu4_2"
    init: str = "noise"
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

    # -- stylize ---------------------------------------------------------------------------
    def style_layers(self) -> dict[str, float]:
        """The style layers switched on (weight > 0) and their weights."""
        return {name: w for name, w in self.style_weights.items() if w > 0}

    def stylize_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for `stylize(content, style_or_styles, **kwargs)`.

        The images, the network, the callback and the stop Event stay the caller's. With a 2nd
        style, `style_weights` is [1 - blend, blend] (stylize's per-painting shares) and the
        caller passes the two paintings as a list.
        """
        layers = self.style_layers()
        if not layers and self.variant == "normalized":
            # The gatys loss runs with no style term (a reconstruction); the normalized one divides by it.
            raise ValueError("every style layer is switched off: tick at least one, or use the gatys loss.")
        kw: dict[str, Any] = {
            "variant": self.variant, "content_layers": [self.content_layer], "style_layers": layers,
            "tv_weight": self.tv_weight, "init": self.init, "seed": self.seed, "optimizer": self.optimizer,
            "steps": self.steps, "device": self.device,
        }
        if self.variant == "gatys":
            kw.update(alpha=1.0, beta=1.0 / self.alpha_over_beta)
        else:
            kw.update(lambda_os=self.lambda_os)
        if self.style2:
            kw["style_weights"] = [1.0 - self.blend, self.blend]
        if self.colors != "painting":
            kind, _, method = self.colors.partition("-")
            kw.update(preserve_colors=kind, color_method=method or "cholesky")
        return kw
