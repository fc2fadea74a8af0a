"""Planning a run: the images at their sizes, the scales and their steps, the layers, the memory.

`prepare(content, style, style_masks, settings, net, device)` does every check that needs the
images or the network before anything large is allocated, and returns a `Plan`: what the loop
(`nstlib.loop`) optimizes, scale by scale, and the record of the run's settings that
`StyleResult.save` writes as JSON.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from nstlib import __version__, color, regions
from nstlib.images import ImageLike, load_image, resize, target_size
from nstlib.losses import LossWeights, Objective, Weight, as_batch_weight, build_objective, layer_weight_dict, resolve_weights
from nstlib.memory import estimate_bytes, free_bytes, human, largest_fitting_side
from nstlib.precision import Precision
from nstlib.settings import RunSettings, check_scales, check_steps, jsonable
from nstlib.vgg import VGGFeatures, style_layer_preset


@dataclass(frozen=True)
class ScaleStep:
    """One scale of a run: image size (h, w), style image size, steps."""

    hw: tuple[int, int]
    style_hw: tuple[int, int] | None
    steps: int


def scale_sizes(start: int, end: int, factor: float = 2 ** 0.5) -> list[int]:
    """Sizes (longest sides) from `start` to `end`, each `factor` times the previous, ending at `end`.

    scale_sizes(128, 512) -> [128, 181, 256, 362, 512] (x sqrt(2), as style-transfer-pytorch);
    scale_sizes(128, 512, 2) -> [128, 256, 512]. Counted down from `end`, so `end` is exact.
    """
    if not (isinstance(start, int) and isinstance(end, int)) or start < 1 or end < start:
        raise ValueError(f"scale_sizes needs whole numbers 1 <= start <= end, got start={start!r}, end={end!r}.")
    if not factor > 1:
        raise ValueError(f"factor must be > 1 (each scale larger than the one before), got {factor!r}.")
    sizes, i = [], 0
    while True:
        s = round(end / factor ** i)
        if s < start:
            break
        if not sizes or s < sizes[-1]:
            sizes.append(s)
        i += 1
    return sizes[::-1]


def plan_scales(out_hw: tuple[int, int], scales: Sequence[int] | None, steps: int | Sequence[int],
                style_hw: tuple[int, int] | None = None) -> list[ScaleStep]:
    """The sizes a run optimizes at, coarse to fine, with the steps of each.

    out_hw: the output (H, W); scales: longest sides, increasing, <= max(out_hw) (the output is
    appended if it is not the last), or None for one scale; steps: per scale, or one per scale;
    style_hw: the style image's size at the output scale (it shrinks with the output).
    """
    longest = max(out_hw)
    sizes = list(check_scales(scales) or [longest])
    if sizes[-1] > longest:
        raise ValueError(f"scales go up to the output size ({longest} px, the longest side), got {sizes}; "
                         f"raise size= or drop the larger scales.")
    if sizes[-1] < longest:
        sizes.append(longest)
    steps = check_steps(steps)
    per_scale = [steps] * len(sizes) if isinstance(steps, int) else list(steps)
    if len(per_scale) != len(sizes):
        raise ValueError(f"steps has {len(per_scale)} entries but the run has {len(sizes)} scale(s) {sizes} "
                         f"(the output size is always the last): give one number per scale, or one number for all.")
    plan = []
    for s, n in zip(sizes, per_scale):
        plan.append(ScaleStep(at_scale(out_hw, s, longest), None if style_hw is None else at_scale(style_hw, s, longest), n))
    return plan


def at_scale(hw: tuple[int, int], longest_now: int, longest_out: int) -> tuple[int, int]:
    """A size at the output scale -> its size at a scale whose longest side is longest_now."""
    if longest_now == longest_out:
        return tuple(hw)
    f = longest_now / longest_out
    return max(1, round(hw[0] * f)), max(1, round(hw[1] * f))


@dataclass
class Plan:
    """A prepared run: images at the output size, the scales, the layers and weights, the record."""

    settings: RunSettings
    out_hw: tuple[int, int]
    scales: list[ScaleStep]
    weights: LossWeights
    content: torch.Tensor | None  # (1, 3, H, W) at the output size (grey for a luminance-only run)
    styles: list[torch.Tensor]  # each (1, 3, h, w) at the output scale, recoloured if asked
    photo: torch.Tensor | None  # the photo's colours, for a luminance-only run
    content_layers: dict[str, Weight]
    style_layers: dict[str, Weight]
    blend: list[float] | None
    masks: torch.Tensor | None  # (K, H, W) region masks, or None
    batch: int
    precision: Precision
    record: dict[str, Any] = field(default_factory=dict)

    def objective(self, k: int, net: VGGFeatures) -> Objective:
        """The targets at scale k. The Gatys content loss sums over positions and the style loss
        is per position, so the content weight is scaled to keep the output size's balance.
        The style losses that draw random positions or directions draw them from seed + k."""
        hw, out = self.scales[k].hw, self.out_hw
        c_factor = (out[0] * out[1]) / (hw[0] * hw[1]) if self.weights.variant == "gatys" else 1.0
        use_style = bool(self.style_layers)
        return build_objective(
            net, resize(self.content, hw) if self.content_layers else None,
            [resize(s, at_scale(tuple(s.shape[-2:]), max(hw), max(out))) for s in self.styles] if use_style else None,
            content_layers=self.content_layers, style_layers=self.style_layers, variant=self.weights.variant,
            content_weight=_times(self.weights.content, c_factor), style_weight=self.weights.style,
            tv_weight=self.settings.tv_weight, pixels=hw[0] * hw[1], precision=self.precision, style_blend=self.blend,
            style_masks=self.masks if use_style else None, style_loss=self.settings.style_loss,
            seed=(self.settings.seed + k) % 2**63,
        )

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.scales)


def prepare(content: ImageLike | None, style: ImageLike | Sequence[ImageLike] | None, style_masks: Any,
            settings: RunSettings, net: VGGFeatures, device: torch.device, precision: Precision) -> Plan:
    """Load and size the images, resolve layers and weights, check sizes and memory -> a Plan.

    Images are loaded at their own size first: a typo like size=100000 is refused before
    anything is upsampled to it.
    """
    s = settings
    if content is None and style is None:
        raise ValueError("stylize needs a content image, a style image, or both; got neither.")
    if s.preserve_colors is not None and content is None:
        raise ValueError(f"preserve_colors={s.preserve_colors!r} keeps the colours of the content image, and there is none; "
                         f"pass a content image or preserve_colors=None.")
    weights = resolve_weights(s.variant, s.alpha, s.beta, s.lambda_os)
    content_raw = load_image(content) if content is not None else None
    if content_raw is None:
        if s.size is None:
            raise ValueError("without a content image, pass size= (an int or (H, W)) for the output.")
        out_hw = target_size(s.size if isinstance(s.size, tuple) else (s.size, s.size), s.size)
    else:
        out_hw = target_size(tuple(content_raw.shape[-2:]), s.size)
    style_list = _style_list(style)
    blend, masks = _blend_and_masks(s.style_weights, style_masks, len(style_list), out_hw)
    style_raws = [load_image(x) for x in style_list]
    style_hws = [target_size(tuple(r.shape[-2:]), max(out_hw) if s.style_size is None else s.style_size) for r in style_raws]
    c_layers, s_layers = _layers(s, net, weights, content_raw is not None, bool(style_raws))
    if not c_layers and not s_layers and not s.tv_weight:
        raise ValueError("nothing to optimize: no content or style term is left (check the images and weights).")
    scales = plan_scales(out_hw, s.scales, s.steps, style_hws[0] if style_hws else None)
    _check_sizes(net, scales, out_hw, c_layers, s_layers, style_hws)
    batch = _batch_size([as_batch_weight(w, "weight") for w in (weights.content, weights.style, *c_layers.values(), *s_layers.values())])
    needed = check_memory(net, device, out_hw, [*c_layers, *s_layers], batch, precision.name, s.optimizer)
    for hw in style_hws if s_layers else []:  # the style images are upsampled and run through the network too
        check_memory(net, device, hw, list(s_layers), 1, precision.name, "adam", what="style image", option="style_size")
    content_img = resize(content_raw, out_hw) if content_raw is not None else None
    styles = [resize(r, hw) for r, hw in zip(style_raws, style_hws)]
    photo = content_img
    if s.preserve_colors == "histogram":
        styles = [color.match_color(x, content_img, s.color_method) for x in styles]
    elif s.preserve_colors == "luminance":
        styles = [color.match_luminance(x, content_img) for x in styles]
        content_img = color.as_grey_rgb(content_img)
    plan = Plan(s, out_hw, scales, weights, content_img, styles, photo, c_layers, s_layers, blend, masks, batch, precision)
    plan.record = _record(plan, content, style_list if len(style_list) > 1 else style, style_masks, net, device, needed)
    return plan


def check_memory(net: VGGFeatures, device: torch.device, hw: tuple[int, int], layers: Sequence[str], batch: int,
                 precision: str, optimizer: str, what: str = "output", option: str = "size") -> int:
    """Bytes a run at (H, W) needs (`nstlib.memory`); MemoryError if that is more than 90 % of what is free."""
    needed = estimate_bytes(net, hw, layers, batch=batch, precision=precision, optimizer=optimizer)
    free = free_bytes(device)
    if free is not None and needed > 0.9 * free:
        side = largest_fitting_side(net, hw, layers, int(0.9 * free), batch=batch, precision=precision, optimizer=optimizer)
        where = "the GPU" if device.type == "cuda" else "this machine"
        flag = "--" + option.replace("_", "-")
        fix = (f"use {option}={side} or smaller ({flag} {side})" if side >= 16 else
               "close other programs, or use fewer or shallower layers")
        raise MemoryError(
            f"a {hw[0]}x{hw[1]} {what}{f' (batch of {batch})' if batch > 1 else ''} needs about {human(needed)} "
            f"(the network's activations up to its deepest layer and the optimizer's state), but {where} has "
            f"{human(free)} free. The largest size that fits is about {side} px: {fix}."
        )
    return needed


# -- the steps of prepare ---------------------------------------------------------------------

def _style_list(style: ImageLike | Sequence[ImageLike] | None) -> list[ImageLike]:
    """One style image, a list of them, or None -> a list (a tuple or list means several)."""
    if style is None:
        return []
    if isinstance(style, (list, tuple)):
        if not style:
            raise ValueError("style is an empty list; pass one or more images, or None for no style term.")
        if any(x is None for x in style):
            raise ValueError("style lists an image as None; pass only images (or style=None for no style term).")
        return list(style)
    return [style]


def _blend_and_masks(weights: tuple[float, ...] | None, style_masks: Any, n: int,
                     out_hw: tuple[int, int]) -> tuple[list[float] | None, torch.Tensor | None]:
    """The style images' shares (normalized to sum 1), or their region masks (K, H, W) at the output size."""
    if style_masks is not None and weights is not None:
        raise ValueError("style_masks and style_weights exclude each other: with masks each region takes one style "
                         "image whole; to blend two styles in a region, blend them in the mask's weights instead.")
    if style_masks is not None:
        if not n:
            raise ValueError("style_masks says which region takes which style image, and there is no style image.")
        return None, regions.resize_masks(regions.masks_from_labels(style_masks, n), out_hw)
    if weights is None:
        return ([1.0 / n] * n if n else []), None
    if len(weights) != n:
        raise ValueError(f"style_weights has {len(weights)} value(s) but there {'is' if n == 1 else 'are'} {n} style image(s); "
                         f"give one weight per style image, e.g. {[round(1 / max(n, 1), 2)] * max(n, 1)}.")
    return [x / sum(weights) for x in weights], None


def _layers(s: RunSettings, net: VGGFeatures, weights: LossWeights, has_content: bool,
            has_style: bool) -> tuple[dict[str, Weight], dict[str, Weight]]:
    """The content and style layers with their weights; a term without an image or weight has none."""
    use_content = has_content and not _all_zero(weights.content)
    use_style = has_style and not _all_zero(weights.style)
    c_layers = layer_weight_dict(s.content_layers, "content_layers") if use_content else {}
    style_layers = style_layer_preset(s.style_layers, net.arch) if isinstance(s.style_layers, str) else s.style_layers
    s_layers = layer_weight_dict(style_layers, "style_layers") if use_style else {}
    return c_layers, s_layers


def _check_sizes(net: VGGFeatures, scales: list[ScaleStep], out_hw: tuple[int, int], c_layers: dict, s_layers: dict,
                 style_hws: list[tuple[int, int]]) -> None:
    """Is every image (at the first, smallest scale) large enough for the deepest layer it feeds?"""
    first = scales[0]
    where = f" at the first scale ({first.hw[0]}x{first.hw[1]})" if len(scales) > 1 else ""
    net.check_input_size(*first.hw, [*c_layers, *s_layers], what=f"the output image{where}")
    for i, hw in enumerate(style_hws if s_layers else []):
        which = f"the style image{f' {i + 1}' if len(style_hws) > 1 else ''}"
        net.check_input_size(*at_scale(hw, max(first.hw), max(out_hw)), list(s_layers), what=f"{which}{where}")


def _record(p: Plan, content: Any, style: Any, style_masks: Any, net: VGGFeatures, device: torch.device,
            needed: int) -> dict[str, Any]:
    """The run's settings as it ran (sizes, layers, precision resolved): what `StyleResult.save` writes."""
    s, w = p.settings, p.weights
    styles = p.styles
    use_style = bool(p.style_layers)
    init = s.init
    fields = dict(
        content=_describe(content), style=[_describe(x) for x in style] if isinstance(style, list) else _describe(style),
        size=p.out_hw, style_size=(None if not use_style else list(styles[0].shape[-2:]) if len(styles) == 1
                                   else [list(x.shape[-2:]) for x in styles]),
        style_weights=p.blend if len(styles) > 1 and style_masks is None else None,
        style_masks=None if style_masks is None else (
            _describe(style_masks) if not isinstance(style_masks, torch.Tensor) else "<Tensor>"),
        preserve_colors=s.preserve_colors, color_method=s.color_method if s.preserve_colors == "histogram" else None,
        variant=w.variant, style_loss=s.style_loss, content_layers=p.content_layers, style_layers=p.style_layers,
        alpha=w.content if w.variant == "gatys" else None, beta=w.style if w.variant == "gatys" else None,
        lambda_os=w.content if w.variant == "normalized" else None,
        tv_weight=s.tv_weight, init=init if isinstance(init, str) else _describe(init),
        noise_level=s.noise_level if isinstance(init, str) and init == "noise" else None, seed=s.seed,
        optimizer=s.optimizer, steps=s.steps if isinstance(s.steps, int) else list(s.steps),
        scales=[max(x.hw) for x in p.scales] if len(p.scales) > 1 else None, tolerance=s.tolerance,
        precision=p.precision.name,
        precision_reason=p.precision.reason, lr=s.learning_rate, device=str(device), pooling=net.pooling, arch=net.arch,
        memory_estimate_mb=round(needed / 2**20),
    )
    return jsonable({**fields, "nstlib": __version__, "torch": torch.__version__})


def _describe(src: object) -> str | None:
    if src is None:
        return None
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    return f"<{type(src).__name__}>"


def _all_zero(w: Weight) -> bool:
    return bool((torch.as_tensor(w, dtype=torch.float32) == 0).all())


def _batch_size(weights: list[torch.Tensor]) -> int:
    sizes = {int(w.shape[0]) for w in weights if w.ndim == 1}
    if len(sizes) > 1:
        raise ValueError(f"weights given as sequences must all have the same length (one per image); got lengths {sorted(sizes)}.")
    return sizes.pop() if sizes else 1


def _times(weight: Weight, factor: float) -> Weight:
    """A weight (number, sequence or tensor) times a factor."""
    if factor == 1.0:
        return weight
    if isinstance(weight, (int, float)):
        return weight * factor
    return torch.as_tensor(weight, dtype=torch.float32) * factor

