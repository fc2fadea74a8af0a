"""The course's one content/style convention: alpha/beta on the paper's scale.

Gatys et al. quote alpha/beta = 1e-3 and 1e-4 for their figures and 1e-5 ... 1e-2 in Fig. 4. The
raw numbers do not carry over to another network (the losses scale with its activations: content
with their square, style with their 4th power) or implementation. So every notebook, the panel
and the command line quote alpha/beta on the paper's scale, and a run uses

    beta = 1,   alpha = K * (alpha/beta on the paper's scale),   K = r* / 1e-3,

where r* (`losses.balance_ratio`) is the alpha/beta at which the loaded network gives Tübingen and
The Starry Night, at CALIBRATION_SIZE px, the same total loss (content relu4_2, the given style
layers weighted equally). The paper's 1e-3 thus sits where photo and painting balance on this
network (notebook 4).

K is measured once per network and layer set, not per image or size: the original loss's balance
still moves between paintings and sizes, as it did in the paper (notebook 5 measures both).
"""

from __future__ import annotations

import math
import threading
import weakref
from typing import Sequence

from nstlib import data, losses
from nstlib.vgg import VGGFeatures

#: The paper's alpha/beta for its figures: on the paper's scale it is r* of the reference pair.
PAPER_RATIO = 1e-3
#: The size (longest side, px) of the reference pair that calibrates K, once per network.
CALIBRATION_SIZE = 256

_scales: "weakref.WeakKeyDictionary[VGGFeatures, dict[tuple[str, ...], float]]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()  # the panel calibrates from a background thread


def scale(net: VGGFeatures, style_layers: Sequence[str]) -> float:
    """K = r* / 1e-3 of `net` for `style_layers` (names, weighted equally): the run's alpha is K
    times alpha/beta on the paper's scale, with beta = 1. Measured on first use, then cached."""
    layers = () if isinstance(style_layers, str) else tuple(style_layers)
    if not layers or not all(isinstance(n, str) for n in layers):
        raise ValueError(f"style_layers must be a non-empty sequence of layer names such as 'relu1_1', got {style_layers!r}.")
    with _lock:
        known = _scales.setdefault(net, {})
        if layers not in known:
            photo, _ = data.load_or_fallback("tubingen", size=CALIBRATION_SIZE)
            painting, _ = data.load_or_fallback("starry_night", size=CALIBRATION_SIZE)
            known[layers] = losses.balance_ratio(net, photo, painting, style_layers=list(layers)) / PAPER_RATIO
        return known[layers]


def weights(net: VGGFeatures, ratio: float, style_layers: Sequence[str]) -> dict[str, float]:
    """alpha/beta = `ratio` on the paper's scale -> {"alpha": K * ratio, "beta": 1.0}, for `stylize(**...)`."""
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not (math.isfinite(ratio) and ratio > 0):
        raise ValueError(f"ratio (alpha/beta on the paper's scale, e.g. 1e-3) must be a positive number, got {ratio!r}.")
    return {"alpha": scale(net, style_layers) * float(ratio), "beta": 1.0}
