"""Losses of Gatys et al. (2016) and the normalized losses of Choi & Kim (2020).

Every loss works on a batch and returns one value per image, shape (B,), so that several
independent transfers can run as one batch; the optimizer sums them (exactly separable with Adam;
L-BFGS couples the batch through its shared curvature estimate).

Gram matrices: ``gram_matrix(F)`` is the paper's G = F F^T (sum over positions). The style
targets are stored *per position* (``normalize=True``: divided by M = H * W), and the Gatys
style loss is computed as

    E_l = 1 / (4 N^2) * sum_ij (G_ij / M - A_ij / M_a)^2,

which is exactly the paper's 1 / (4 N^2 M^2) * sum (G - A)^2 when the style image has the same
number of positions as the generated one (M_a = M), and stays meaningful when it does not (a
style image of another size).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence, Union

import torch

from nstlib._gram import gram as _gram_product
from nstlib.images import resize
from nstlib.precision import Precision, extract
from nstlib.regions import guided_gram, region_shares, resize_masks
from nstlib.style_losses import GATYS_GAIN, STYLE_LOSSES, StyleTarget, style_target
from nstlib.vgg import VGGFeatures

VARIANTS = ("gatys", "normalized")

Weight = Union[float, Sequence[float], torch.Tensor]
LayerWeights = Union[Sequence[str], Mapping[str, Weight]]


# -- the pieces, one formula each ----------------------------------------------------------

def gram_matrix(features: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C), G_ij = sum_k F_ik F_jk over the H*W positions k.

    normalize=True divides by the number of positions M = H * W (the mean over positions),
    which makes Grams of images of different sizes comparable.
    """
    if features.ndim != 4:
        raise ValueError(f"gram_matrix expects features (B, C, H, W), got shape {tuple(features.shape)}.")
    h, w = features.shape[-2:]
    g = _gram_product(features)
    return g / (h * w) if normalize else g


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Gatys content loss 1/2 sum (F - P)^2. features (B, C, H, W), target (1 or B, C, H, W) -> (B,)."""
    _same_map(features, target, "content_loss")
    return 0.5 * (features - target).pow(2).flatten(1).sum(1)


def style_loss(features: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """Gatys E_l. features (B, C, H, W), target_gram (1 or B, C, C) per position -> (B,).

    target_gram is ``gram_matrix(style_features, normalize=True)``.
    """
    n = features.shape[1]
    _same_gram(features, target_gram, "style_loss")
    diff = gram_matrix(features, normalize=True) - target_gram
    return diff.pow(2).flatten(1).sum(1) / (4 * n * n)


def gram_energy(style_features: torch.Tensor) -> torch.Tensor:
    """The Gatys E_l of an all-zero feature map against this style: ||A||^2 / (4 C^2). (1, C, H, W) -> (1,)

    The gatys variant multiplies every other style loss (`nstlib.style_losses`) layer by layer by
    gram_energy / its own energy, so that each equals E_l there (times its `GATYS_GAIN`, where it
    has one): the same alpha/beta then gives a transfer of comparable strength whichever loss
    compares the styles.
    """
    a = gram_matrix(style_features.float(), normalize=True)
    return a.pow(2).flatten(1).sum(1) / (4 * a.shape[1] ** 2)


def normalized_content_loss(
    features: torch.Tensor, target: torch.Tensor, energy: torch.Tensor | None = None
) -> torch.Tensor:
    """Choi & Kim: ||F - P||^2 / E, E = sum P^2 (the target's energy). -> (B,)"""
    _same_map(features, target, "normalized_content_loss")
    if energy is None:
        energy = target.pow(2).flatten(1).sum(1)
    return (features - target).pow(2).flatten(1).sum(1) / energy.clamp_min(1e-12)


def normalized_style_loss(
    features: torch.Tensor, target_gram: torch.Tensor, energy: torch.Tensor | None = None
) -> torch.Tensor:
    """Choi & Kim: ||G - A||_F^2 / ||A||_F^2 on per-position Grams. -> (B,)

    Dividing by the target's energy makes the loss invariant to the scale of the layer's
    features, so that no layer dominates just because its activations are larger.
    """
    _same_gram(features, target_gram, "normalized_style_loss")
    if energy is None:
        energy = target_gram.pow(2).flatten(1).sum(1)
    diff = gram_matrix(features, normalize=True) - target_gram
    return diff.pow(2).flatten(1).sum(1) / energy.clamp_min(1e-24)


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Total variation: sum of squared differences of neighbouring pixels. (B, C, H, W) -> (B,)"""
    dh = (image[:, :, 1:, :] - image[:, :, :-1, :]).pow(2).flatten(1).sum(1)
    dw = (image[:, :, :, 1:] - image[:, :, :, :-1]).pow(2).flatten(1).sum(1)
    return dh + dw


# -- the weights of the two variants, checked in one place -----------------------------------

@dataclass(frozen=True)
class LossWeights:
    """The resolved global weights: content and style weight of `variant`, as `build_objective` takes them."""

    variant: str
    content: Weight
    style: Weight


def resolve_weights(variant: str, alpha: Weight | None = None, beta: Weight | None = None,
                    lambda_os: Weight | None = None) -> LossWeights:
    """Check that the weights given belong to `variant` and fill in the defaults.

    gatys: content weight alpha (default 1), style weight beta (default 1e3);
    normalized: content weight lambda_os (default 1e-2), style weight 1 (Choi & Kim).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(map(repr, VARIANTS))}, got {variant!r}.")
    if variant == "gatys":
        if lambda_os is not None:
            raise ValueError("lambda_os (--lambda-os) weights the normalized variant; choose variant 'normalized' "
                             "(--variant normalized), or set alpha and beta (--alpha, --beta) for 'gatys'.")
        return LossWeights("gatys", 1.0 if alpha is None else alpha, 1e3 if beta is None else beta)
    if alpha is not None or beta is not None:
        raise ValueError("alpha and beta (--alpha, --beta) weight the gatys variant; the normalized variant is "
                         "weighted by lambda_os (--lambda-os), its content weight (its style weight is 1).")
    return LossWeights("normalized", 1e-2 if lambda_os is None else lambda_os, 1.0)


# -- the objective: targets computed once, the loss evaluated every step -------------------

@dataclass
class Objective:
    """A weighted sum of per-layer losses with precomputed targets.

    ``objective(features, image) -> (total (B,), parts)`` where ``parts`` maps
    "content:<layer>", "style:<layer>" and "tv" to the *unweighted* per-layer losses (B,),
    which is what the notebooks plot.

    style_loss "gram" keeps Gram targets in style_targets; the others (`nstlib.style_losses`)
    keep their statistics in style_stats; "sliced" draws its random directions from `generator`
    (seeded by build_objective, so that a run repeats).
    """

    variant: str
    content_targets: dict[str, torch.Tensor] = field(default_factory=dict)  # (1, C, H, W)
    style_targets: dict[str, torch.Tensor] = field(default_factory=dict)  # (1, C, C) per position
    content_energy: dict[str, torch.Tensor] = field(default_factory=dict)  # (1,)
    style_energy: dict[str, torch.Tensor] = field(default_factory=dict)  # (1,)
    content_weights: dict[str, torch.Tensor] = field(default_factory=dict)  # final weight per layer, (B,) or ()
    style_weights: dict[str, torch.Tensor] = field(default_factory=dict)
    tv_weight: float = 0.0
    # Spatial control: (K, H, W) region masks; then style_targets are (K, C, C), energies (K,).
    style_masks: torch.Tensor | None = None
    _masks_at: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, repr=False)
    style_loss: str = "gram"
    style_stats: dict[str, StyleTarget] = field(default_factory=dict)  # the other style losses' targets
    style_scale: dict[str, torch.Tensor] = field(default_factory=dict)  # (1,): what each of their layer losses is multiplied by
    generator: torch.Generator | None = field(default=None, repr=False)

    @property
    def layers(self) -> tuple[str, ...]:
        """Every layer the objective reads, content first."""
        return tuple(dict.fromkeys([*self.content_targets, *self.style_targets, *self.style_stats]))

    def __call__(self, features: Mapping[str, torch.Tensor], image: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total = image.new_zeros(image.shape[0])
        parts: dict[str, torch.Tensor] = {}
        normalized = self.variant == "normalized"
        for name, target in self.content_targets.items():
            f = features[name]
            loss = normalized_content_loss(f, target, self.content_energy[name]) if normalized else content_loss(f, target)
            parts[f"content:{name}"] = loss
            total = total + self.content_weights[name] * loss
        for name, target in self.style_targets.items():
            f = features[name]
            if self.style_masks is not None:
                loss = self._guided_style_loss(f, target, self.style_energy[name])
            else:
                loss = normalized_style_loss(f, target, self.style_energy[name]) if normalized else style_loss(f, target)
            parts[f"style:{name}"] = loss
            total = total + self.style_weights[name] * loss
        for name, target in self.style_stats.items():
            loss = target.loss(features[name], self.generator) * self.style_scale[name]
            parts[f"style:{name}"] = loss
            total = total + self.style_weights[name] * loss
        if self.tv_weight:
            tv = tv_loss(image)
            parts["tv"] = tv
            total = total + self.tv_weight * tv
        return total, parts

    def _guided_style_loss(self, f: torch.Tensor, targets: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        """Sum over regions k of share_k * E_l(G_k, A_k), G_k the guided Gram (see nstlib.regions). -> (B,)"""
        hw = tuple(f.shape[-2:])
        if hw not in self._masks_at:
            self._masks_at[hw] = resize_masks(self.style_masks, hw).to(f.device)
        m = self._masks_at[hw]                                                    # (K, h, w)
        diff = (guided_gram(f.float(), m) - targets[None]).pow(2).flatten(2).sum(2)   # (B, K)
        per_region = diff / energy.clamp_min(1e-24) if self.variant == "normalized" else diff / (4 * f.shape[1] ** 2)
        return (per_region * region_shares(m)).sum(1)


def layer_weight_dict(layers: LayerWeights, what: str) -> dict[str, Weight]:
    """A sequence of names gets equal weights 1/len (the paper's w_l = 1/5); a mapping is kept."""
    if isinstance(layers, str):
        raise TypeError(f"{what} must be a list of layer names or a dict name -> weight, got the string {layers!r}; write [{layers!r}].")
    if isinstance(layers, Mapping):
        return dict(layers)
    names = list(layers)
    if len(set(names)) != len(names):
        raise ValueError(f"{what} names a layer twice: {names}.")
    return {n: 1.0 / len(names) for n in names} if names else {}


def as_batch_weight(value: Weight, name: str) -> torch.Tensor:
    """A float -> 0-d tensor; a sequence -> (B,) tensor (one setting per image of a batch)."""
    t = torch.as_tensor(value, dtype=torch.float32)
    if t.ndim > 1:
        raise ValueError(f"{name} must be a number or a 1-D sequence (one per image), got shape {tuple(t.shape)}.")
    if not torch.isfinite(t).all() or (t < 0).any():
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}.")
    return t


@torch.no_grad()
def build_objective(
    extractor: VGGFeatures,
    content: torch.Tensor | None,
    style: torch.Tensor | Sequence[torch.Tensor] | None,
    *,
    content_layers: LayerWeights,
    style_layers: LayerWeights,
    variant: str = "gatys",
    content_weight: Weight = 1.0,
    style_weight: Weight = 1.0,
    tv_weight: float = 0.0,
    pixels: int | None = None,
    precision: Precision | None = None,
    style_blend: Sequence[float] | None = None,
    style_masks: torch.Tensor | None = None,
    style_loss: str = "gram",
    seed: int = 0,
) -> Objective:
    """Compute targets once and fold every weight into one number per layer.

    content (1, 3, H, W), style (1, 3, H', W'), both RGB [0, 1], or None to drop that term.
    style may also be a list of style images (each its own size): the target Gram of each
    layer is then the blend sum_k w_k A_k with w = style_blend (default equal, normalized to
    sum 1), and the normalized loss divides by the blend's energy. With style_masks
    (K, H, W), one per style image (`nstlib.regions`), style k is matched in region k instead:
    guided Grams, each region's loss weighted by its share of the image.
    gatys:      L = content_weight * sum_l c_l L_content,l + style_weight * sum_l w_l E_l
    normalized: L = w * (content_weight * sum_j c^R_j L_o,j + style_weight * sum_j w^R_j L_s,j),
                layer weights normalized to sum 1, w = `pixels` (the content image's H * W).
    precision: the network's precision (see `nstlib.precision`; None: float32). Targets are
        computed in the precision the optimized image's features will be, so that the photo's
        own content loss is zero; Grams and energies are float32 either way.
    style_loss: "gram" (the above) or one of `nstlib.style_losses.STYLE_LOSSES`: the style
        image's statistics instead of its Gram matrix, one style image, no masks. Each layer's loss
        is divided by its value for an all-zero feature map, and in the gatys variant multiplied
        by the Gram loss's value there (`gram_energy`) and the loss's `GATYS_GAIN`: one alpha/beta
        for every loss. seed: the objective's generator (the random directions "sliced" draws).
    """
    precision = precision or Precision("float32", "default")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be 'gatys' or 'normalized', got {variant!r}.")
    if style_loss not in STYLE_LOSSES:
        raise ValueError(f"style_loss must be one of {', '.join(map(repr, STYLE_LOSSES))}, got {style_loss!r}.")
    obj = Objective(variant=variant, tv_weight=float(as_batch_weight(tv_weight, "tv_weight")), style_loss=style_loss,
                    generator=torch.Generator().manual_seed(seed))
    cw = layer_weight_dict(content_layers, "content_layers") if content is not None else {}
    sw = layer_weight_dict(style_layers, "style_layers") if style is not None else {}
    extractor.check_layers([*cw, *sw])
    alpha = as_batch_weight(content_weight, "content weight")
    beta = as_batch_weight(style_weight, "style weight")
    scale = float(pixels) if variant == "normalized" and pixels else 1.0
    for weights, global_w, store in ((cw, alpha, obj.content_weights), (sw, beta, obj.style_weights)):
        if not weights:
            continue
        tensors = {n: as_batch_weight(v, f"weight of layer {n}") for n, v in weights.items()}
        if variant == "normalized":
            total = sum(tensors.values())
            if (torch.as_tensor(total) <= 0).any():
                raise ValueError("the layer weights of the normalized loss must not all be zero.")
            tensors = {n: t / total for n, t in tensors.items()}
        for n, t in tensors.items():
            store[n] = (global_w * t * scale).to(_device(extractor))
    if cw:
        feats = extract(extractor, content.to(_device(extractor)), list(cw), precision)
        for n in cw:
            obj.content_targets[n] = feats[n].detach()
            obj.content_energy[n] = feats[n].pow(2).flatten(1).sum(1)
    if sw and style_loss != "gram":
        _other_style_targets(obj, extractor, style, style_masks, sw, precision)
    elif sw and style_masks is not None:
        styles = list(style) if isinstance(style, (list, tuple)) else [style]
        if style_masks.ndim != 3 or style_masks.shape[0] != len(styles):
            raise ValueError(f"style_masks must be (K, H, W) with K = the number of style images ({len(styles)}), "
                             f"got {tuple(style_masks.shape)}.")
        if style_blend is not None:
            raise ValueError("style_masks and style_blend exclude each other: with masks, each region takes one style.")
        obj.style_masks = style_masks.float()
        per_style = [extract(extractor, img.to(_device(extractor)), list(sw), precision) for img in styles]
        for n in sw:
            a = torch.cat([gram_matrix(feats[n], normalize=True) for feats in per_style])   # (K, C, C)
            obj.style_targets[n] = a
            obj.style_energy[n] = a.pow(2).flatten(1).sum(1)                                 # (K,)
    elif sw:
        styles = list(style) if isinstance(style, (list, tuple)) else [style]
        blend = [1.0 / len(styles)] * len(styles) if style_blend is None else [float(w) for w in style_blend]
        if len(blend) != len(styles) or any(w < 0 for w in blend) or sum(blend) <= 0:
            raise ValueError(f"style_blend must have one weight >= 0 per style image ({len(styles)}), not all 0; got {style_blend!r}.")
        blend = [w / sum(blend) for w in blend]
        for k, (img, w) in enumerate(zip(styles, blend)):
            feats = extract(extractor, img.to(_device(extractor)), list(sw), precision)
            for n in sw:
                a = w * gram_matrix(feats[n], normalize=True)
                obj.style_targets[n] = a if k == 0 else obj.style_targets[n] + a
        for n in sw:
            obj.style_energy[n] = obj.style_targets[n].pow(2).flatten(1).sum(1)
    return obj


def balance_ratio(extractor: VGGFeatures, photo: torch.Tensor, painting: torch.Tensor, *,
                  content_layers: LayerWeights = ("relu4_2",), style_layers: LayerWeights) -> float:
    """r*: the alpha/beta at which the photo and the painting have the same Gatys total loss.

    photo (1, 3, H, W), painting (1, 3, H', W'), RGB [0, 1]; the painting is resized to H x W to
    stand in for the generated image. The photo scores beta * L_style(painting, photo) (its
    content loss is 0), the painting alpha * L_content(photo, painting) (its style loss about 0),
    so r* = L_style / L_content. Below r* the painting wins, above it the photo (notebook 4).
    It puts the paper's alpha/beta on another network's scale: alpha/beta_here = 1e3 * r* * alpha/beta_paper.
    """
    obj = build_objective(extractor, photo, painting, content_layers=content_layers, style_layers=style_layers)
    stand_in = resize(painting, tuple(photo.shape[-2:]))
    device = _device(extractor)
    with torch.no_grad():
        p, a = photo.to(device), stand_in.to(device)
        _, photo_parts = obj(extractor.extract(p, obj.layers), p)
        _, painting_parts = obj(extractor.extract(a, obj.layers), a)
    style = sum(w * photo_parts[f"style:{n}"] for n, w in obj.style_weights.items())
    content = sum(w * painting_parts[f"content:{n}"] for n, w in obj.content_weights.items())
    return float(style[0] / content[0])


def _other_style_targets(obj: Objective, extractor: VGGFeatures, style: torch.Tensor | Sequence[torch.Tensor],
                         style_masks: torch.Tensor | None, layers: Mapping[str, Weight], precision: Precision) -> None:
    """The targets (statistics) and energies of a non-Gram style loss: one style image, no masks."""
    styles = list(style) if isinstance(style, (list, tuple)) else [style]
    if len(styles) != 1 or style_masks is not None:
        raise ValueError(
            f"style_loss={obj.style_loss!r} takes one style image, without style_masks: blends of several "
            f"paintings and masked regions are defined for the Gram loss (style_loss='gram'), whose blend is the "
            f"mixture's second moment; got {len(styles)} style image(s){' and masks' if style_masks is not None else ''}.")
    feats = extract(extractor, styles[0].to(_device(extractor)), list(layers), precision)
    for n in layers:
        obj.style_stats[n] = style_target(obj.style_loss, feats[n])
        energy = obj.style_stats[n].energy().to(_device(extractor)).clamp_min(1e-30)
        obj.style_energy[n] = energy
        if obj.variant == "normalized":
            obj.style_scale[n] = 1.0 / energy
        else:  # on the Gram loss's scale, so that one alpha/beta means the same for every style loss
            gain = GATYS_GAIN.get(obj.style_loss, 1.0)
            obj.style_scale[n] = gain * gram_energy(feats[n]).to(energy.device) / energy


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def _same_map(features: torch.Tensor, target: torch.Tensor, fn: str) -> None:
    if features.ndim != 4 or target.ndim != 4 or features.shape[1:] != target.shape[1:]:
        raise ValueError(
            f"{fn}: features {tuple(features.shape)} and target {tuple(target.shape)} must be (B, C, H, W) "
            f"with the same C, H, W: the content image and the generated image must have the same size."
        )


def _same_gram(features: torch.Tensor, gram: torch.Tensor, fn: str) -> None:
    c = features.shape[1]
    if features.ndim != 4 or gram.ndim != 3 or gram.shape[1:] != (c, c):
        raise ValueError(
            f"{fn}: expected features (B, C, H, W) and a target Gram (1 or B, C, C); got "
            f"{tuple(features.shape)} and {tuple(gram.shape)}."
        )
