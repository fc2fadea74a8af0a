"""The VGG feature extractor: named layers, only as deep as needed.

Layers are named as in the paper: ``conv{block}_{n}``, ``relu{block}_{n}``, ``pool{block}``.
A ``conv`` layer's output is the value *before* the ReLU; ``relu`` is after it. (In Caffe, which
Gatys et al. used, the ReLU runs in place on the conv blob, so the paper's "conv4_2" is what is
called ``relu4_2`` here; the course's defaults therefore use ``relu`` layers.)

The caller always passes RGB in [0, 1], shape (B, 3, H, W); the extractor applies the
preprocessing its weights expect (torchvision or Caffe convention, see `nstlib.weights`).
"""

from __future__ import annotations

import copy
import difflib
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import nn

from nstlib import weights as W
from nstlib.threads import apply_threads

#: Gatys et al. 2016: style from the first layer of each block, content from block 4.
GATYS_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
GATYS_CONTENT_LAYERS = ("relu4_2",)


def choi_kim_style_layers(arch: str = "vgg19") -> tuple[str, ...]:
    """Choi & Kim 2020: the last ReLU of each block (relu1_2, relu2_2, relu3_4, relu4_4, relu5_4 on VGG-19)."""
    W._check_arch(arch)
    return tuple(f"relu{b + 1}_{n}" for b, n in enumerate(W.BLOCKS[arch]))


#: Named style-layer sets: the names `style_layers` accepts besides a list or a dict.
STYLE_LAYER_PRESETS = ("gatys", "choi-kim")


def preset_name(text: str) -> str | None:
    """The style-layer preset `text` names ("gatys", "choi-kim"; any case, _ or -), else None."""
    key = text.strip().lower().replace("_", "-")
    key = "choi-kim" if key == "choikim" else key
    return key if key in STYLE_LAYER_PRESETS else None


def style_layer_preset(name: str, arch: str = "vgg19") -> tuple[str, ...]:
    """The style layers a preset names on `arch`: "gatys" (relu1_1 ... relu5_1) or "choi-kim"."""
    key = preset_name(name)
    if key == "choi-kim":
        return choi_kim_style_layers(arch)
    if key == "gatys":
        return GATYS_STYLE_LAYERS
    raise ValueError(f"unknown style-layer preset {name!r}; the presets are {', '.join(STYLE_LAYER_PRESETS)} "
                     f"(or give layer names, e.g. ['relu1_1', 'relu2_1']).")


def layer_names(arch: str = "vgg19") -> list[str]:
    """Names of the modules of torchvision's `vgg*.features`, in order."""
    W._check_arch(arch)
    names = []
    for b, n_conv in enumerate(W.BLOCKS[arch], start=1):
        for n in range(1, n_conv + 1):
            names += [f"conv{b}_{n}", f"relu{b}_{n}"]
        names.append(f"pool{b}")
    return names


@dataclass(frozen=True)
class LayerInfo:
    """One row of the layer table. stride and receptive field are in input pixels."""

    name: str
    channels: int
    stride: int
    receptive_field: int
    min_input: int  # smallest input side (px) that still gives this layer >= 1 position
    shape: tuple[int, int, int] | None = None  # (C, H, W) for the size asked, else None


def layer_table(arch: str = "vgg19", size: tuple[int, int] | None = None) -> list[LayerInfo]:
    """Name, channels, stride, receptive field (and output shape for an input (H, W)) per layer."""
    rows = []
    ch, stride, rf = 3, 1, 1
    h, w = size if size is not None else (None, None)
    for name in layer_names(arch):
        if name.startswith("conv"):
            ch = W.CHANNELS[int(name[4]) - 1]
            rf += 2 * stride
        elif name.startswith("pool"):
            rf += stride
            stride *= 2
            if h is not None:
                h, w = h // 2, w // 2
        shape = (ch, h, w) if h is not None else None
        rows.append(LayerInfo(name, ch, stride, rf, stride, shape))
    return rows


class VGGFeatures(nn.Module):
    """VGG-16/19 convolutional part with named outputs. Parameters are frozen.

    extract(x, layers): x (B, 3, H, W) RGB in [0, 1] -> {name: (B, C_l, H_l, W_l)}
    """

    def __init__(self, loaded: W.LoadedWeights, pooling: str = "avg") -> None:
        super().__init__()
        if pooling not in ("avg", "max"):
            raise ValueError(f"pooling must be 'avg' (the paper's choice) or 'max', got {pooling!r}.")
        self.arch = loaded.arch
        self.convention = loaded.convention
        self.source = loaded.source
        self.pretrained = loaded.pretrained
        self.pooling = pooling
        self.normalized_on: int | None = None  # number of images, once `normalize_network` ran
        self.names = layer_names(self.arch)
        self._index = {n: i for i, n in enumerate(self.names)}
        modules: list[nn.Module] = []
        c_in = 3
        for name in self.names:
            if name.startswith("conv"):
                c_out = W.CHANNELS[int(name[4]) - 1]
                # built empty (meta): the loaded tensors become the parameters, no random init
                modules.append(nn.Conv2d(c_in, c_out, 3, padding=1, device="meta"))
                c_in = c_out
            elif name.startswith("relu"):
                modules.append(nn.ReLU(inplace=False))  # a requested conv output must stay pre-ReLU
            else:
                modules.append(nn.AvgPool2d(2, 2) if pooling == "avg" else nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*modules)
        # assign: the parameters are the loaded tensors themselves, not copies. Weights read from a
        # file are memory-mapped (nstlib.weights), so the kernels of a class share their pages.
        self.features.load_state_dict(loaded.state_dict, assign=True)
        self.requires_grad_(False)
        self.eval()
        # (x - mean) / std per channel, as torchvision's transforms.Normalize and notebook 2's
        # Normalization module write it (so that the two give the same features to the last bit)
        if loaded.convention == "caffe":  # BGR, 0..255, minus the mean: (x_bgr - mean / 255) / (1 / 255)
            mean, std, flip = tuple(m / 255.0 for m in W.CAFFE_MEAN_BGR), (1.0 / 255.0,) * 3, True
        elif loaded.convention == "torchvision":
            mean, std, flip = W.IMAGENET_MEAN, W.IMAGENET_STD, False
        else:
            raise ValueError(f"unknown input convention {loaded.convention!r}; expected one of {', '.join(W.CONVENTIONS)}.")
        self._flip = flip
        self.register_buffer("_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    # -- the report line ----------------------------------------------------------------
    def describe(self) -> str:
        """One line for a notebook: architecture, source, convention, pooling."""
        arch = {"vgg19": "VGG-19", "vgg16": "VGG-16"}[self.arch]
        norm = f", normalized on {self.normalized_on} images" if self.normalized_on else ""
        return (
            f"{arch} | {self.source} | input: {self.convention} convention "
            f"({W.CONVENTIONS[self.convention]}) | {self.pooling} pooling{norm}"
        )

    def __repr__(self) -> str:
        return f"VGGFeatures({self.describe()})"

    # -- layers ---------------------------------------------------------------------------
    def layer_table(self, size: tuple[int, int] | None = None) -> list[LayerInfo]:
        """See `layer_table`; for this network's architecture."""
        return layer_table(self.arch, size)

    def check_layers(self, layers: Iterable[str]) -> tuple[str, ...]:
        """Validate layer names; unknown ones get a ValueError with the nearest valid names."""
        layers = tuple(layers)
        for name in layers:
            if name not in self._index:
                raise ValueError(_unknown_layer_message(name, self.arch, self.names))
        return layers

    def min_input_size(self, layers: Iterable[str]) -> tuple[int, str]:
        """The smallest input side (px) for which every layer has >= 1 position, and which layer needs it."""
        stride = {r.name: r.min_input for r in layer_table(self.arch)}
        layers = self.check_layers(layers)
        if not layers:
            return 1, ""
        return max((stride[n], n) for n in layers)

    def check_input_size(self, height: int, width: int, layers: Iterable[str], what: str = "the image") -> None:
        """ValueError if an input of (height, width) is too small for the deepest of `layers`."""
        need, layer = self.min_input_size(layers)  # (1, "") for no layers: any size will do
        if min(height, width) < need:
            raise ValueError(
                f"{what} is {height}x{width} px, too small for layer {layer}: its feature map is 1/{need} "
                f"of the input size, so it needs at least {need}x{need} px. Use a larger size or shallower layers."
            )

    # -- the forward pass -------------------------------------------------------------------
    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB [0, 1] -> what the weights expect."""
        if self._flip:
            x = x.flip(1)
        return (x - self._mean) / self._std

    def extract(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Run only up to the deepest requested layer. x: (B, 3, H, W) -> {name: (B, C, H_l, W_l)}."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"extract expects an image batch (B, 3, H, W) with RGB in [0, 1], got {shape}.")
        layers = self.check_layers(layers)
        if not layers:
            return {}
        self.check_input_size(x.shape[2], x.shape[3], layers)
        wanted = {self._index[n]: n for n in layers}
        last = max(wanted)
        out: dict[str, torch.Tensor] = {}
        h = self.preprocess(x)
        for i, module in enumerate(self.features):
            h = module(h)
            if i in wanted:
                out[wanted[i]] = h
            if i == last:
                break
        return out

    def forward(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.extract(x, layers)


def load_vgg(
    weights: str | W.WeightsSpec | None = None,
    *,
    pooling: str = "avg",
    device: str | torch.device | None = None,
) -> VGGFeatures:
    """Build the feature extractor. weights: see `nstlib.weights` (argument > $NSTLIB_WEIGHTS > torchvision)."""
    apply_threads()  # NSTLIB_THREADS (or the shared-machine default), once per process
    spec = W.resolve(weights)
    net = VGGFeatures(W.load(spec), pooling=pooling)
    if spec.origin != "argument" and spec.origin != "default":
        net.source += f" [from {spec.origin}]"
    if device is not None:
        net.to(device)
    return net


@torch.no_grad()
def normalize_network(net: VGGFeatures, images: Sequence[torch.Tensor]) -> VGGFeatures:
    """The paper's "normalized" VGG: a copy whose every ReLU output has mean 1 per channel.

    Each conv filter k is divided by m_k, the mean of its ReLU output over `images` (each
    (1, 3, H, W) in [0, 1]) and positions; the next conv's input weights for channel k are
    multiplied by m_k, so later layers compute the same function and are then rescaled in
    turn. ReLU and pooling commute with positive per-channel scaling, so every layer's output
    equals the original divided by its per-channel mean. Dead filters (m_k = 0) are kept.
    """
    if not images:
        raise ValueError("normalize_network needs at least one image to measure mean activations on.")
    out = copy.deepcopy(net)
    hs = [out.preprocess(img.to(next(out.parameters()).device)) for img in images]
    pending: torch.Tensor | None = None
    conv: nn.Conv2d | None = None
    for module in out.features:
        if isinstance(module, nn.Conv2d):
            if pending is not None:
                module.weight.mul_(pending.view(1, -1, 1, 1))
            conv = module
        hs = [module(h) for h in hs]
        if isinstance(module, nn.ReLU):
            assert conv is not None
            mean = torch.stack([h.mean(dim=(0, 2, 3)) for h in hs]).mean(0)
            m = torch.where(mean > 0, mean, torch.ones_like(mean))
            conv.weight.div_(m.view(-1, 1, 1, 1))
            conv.bias.div_(m)
            hs = [h / m.view(1, -1, 1, 1) for h in hs]
            pending = m
    out.normalized_on = len(images)
    return out


def _unknown_layer_message(name: str, arch: str, names: list[str]) -> str:
    msg = f"{name!r} is not a layer of {arch}."
    m = re.fullmatch(r"(conv|relu)(\d)_(\d)", name)
    if m and 1 <= int(m.group(2)) <= 5:
        b = int(m.group(2))
        k = W.BLOCKS[arch][b - 1]
        msg += f" Block {b} of {arch} has {k} convolutions ({m.group(1)}{b}_1 .. {m.group(1)}{b}_{k})."
    close = difflib.get_close_matches(name, names, n=3)
    if close:
        msg += f" Did you mean {', '.join(close)}?"
    return msg + " Layer names: conv{block}_{n}, relu{block}_{n}, pool{block}."
