"""Where the VGG weights come from, and what input they expect.

Sources, in order of precedence:
1. an explicit argument to `nstlib.vgg.load_vgg(weights=...)`;
2. the environment setting ``NSTLIB_WEIGHTS``;
3. torchvision's ``VGG19_Weights.IMAGENET1K_V1``, downloaded once and cached by torch
   (``$TORCH_HOME/hub/checkpoints``; a JupyterHub can point TORCH_HOME at one shared folder).

A weights setting (argument or ``NSTLIB_WEIGHTS``) is one of:

- ``torchvision`` or ``torchvision:vgg16``: torchvision's ImageNet weights (download + cache);
- ``random``, ``random:SEED``, ``random:vgg16`` or ``random:vgg16:SEED``: seeded random weights,
  for offline smoke runs only, and always reported as such;
- a file path, optionally prefixed by the input convention and/or the architecture, e.g.
  ``caffe:/data/vgg16-caffe.pth`` or ``vgg19:torchvision:~/vgg19.pth``. The architecture is read
  off the file's keys; the convention, when not given, is ``caffe`` if the file name contains
  "caffe" and ``torchvision`` otherwise (the one-line report says which and why).

Offline with no weights is an error that says how to get them, never a silent switch to random
weights.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping, Union

import torch

ENV_VAR = "NSTLIB_WEIGHTS"
ARCHS = ("vgg16", "vgg19")
#: Convolutions per block.
BLOCKS = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
CHANNELS = (64, 128, 256, 512, 512)

Convention = Literal["torchvision", "caffe"]
CONVENTIONS: dict[str, str] = {
    "torchvision": "RGB in [0, 1], minus ImageNet mean (0.485, 0.456, 0.406), over std (0.229, 0.224, 0.225)",
    "caffe": "BGR, 0-255, minus mean (B 103.939, G 116.779, R 123.68), no std",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


class WeightsUnavailableError(RuntimeError):
    """The requested weights cannot be had (offline, missing file). The message says how to fix it."""


@dataclass(frozen=True)
class WeightsSpec:
    """A parsed weights setting. kind: 'torchvision' | 'file' | 'random'."""

    kind: Literal["torchvision", "file", "random"]
    path: Path | None = None
    arch: str | None = None
    convention: str | None = None
    seed: int = 0
    origin: str = "argument"


@dataclass
class LoadedWeights:
    """Convolution weights in torchvision's `features` layout, plus what they expect."""

    state_dict: dict[str, torch.Tensor]  # keys "0.weight", "0.bias", ... as in vgg19().features
    arch: str
    convention: str
    source: str  # one phrase for the report line
    pretrained: bool


def parse_spec(text: str, origin: str = "argument") -> WeightsSpec:
    """Parse a weights setting string (see the module docstring for the grammar)."""
    text = text.strip()
    if not text:
        raise ValueError(f"empty weights setting from {origin}; use 'torchvision', 'random' or a file path.")
    head, _, rest = text.partition(":")
    if head == "torchvision" and (rest == "" or rest in ARCHS):
        return WeightsSpec("torchvision", arch=rest or "vgg19", convention="torchvision", origin=origin)
    if head == "random":
        arch, seed = "vgg19", 0
        for part in filter(None, rest.split(":")):
            if part in ARCHS:
                arch = part
            elif re.fullmatch(r"\d+", part):
                seed = int(part)
            else:
                raise ValueError(
                    f"bad random-weights setting {text!r} from {origin}: expected 'random', "
                    f"'random:SEED', 'random:vgg16' or 'random:vgg16:SEED'."
                )
        return WeightsSpec("random", arch=arch, convention="torchvision", seed=seed, origin=origin)
    arch = convention = None
    path = text
    while True:
        head, sep, rest = path.partition(":")
        if sep and head in ARCHS and arch is None:
            arch, path = head, rest
        elif sep and head in CONVENTIONS and convention is None:
            convention, path = head, rest
        else:
            break
    return WeightsSpec("file", path=Path(path).expanduser(), arch=arch, convention=convention, origin=origin)


def resolve(weights: Union[str, os.PathLike, WeightsSpec, None] = None) -> WeightsSpec:
    """Turn an argument, the environment, or the default into a WeightsSpec."""
    if isinstance(weights, WeightsSpec):
        return weights
    if isinstance(weights, os.PathLike):
        return WeightsSpec("file", path=Path(weights).expanduser())
    if isinstance(weights, str):
        return parse_spec(weights, "argument")
    if weights is not None:
        raise TypeError(
            f"weights must be None, a setting string ('torchvision', 'random', 'caffe:PATH', ...) "
            f"or a path, got {type(weights).__name__}."
        )
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return parse_spec(env, f"${ENV_VAR}")
    return WeightsSpec("torchvision", arch="vgg19", convention="torchvision", origin="default")


def load(spec: WeightsSpec) -> LoadedWeights:
    """Load the convolution weights a spec names. Files are read with weights_only=True."""
    if spec.kind == "random":
        return LoadedWeights(
            random_state_dict(spec.arch or "vgg19", spec.seed), spec.arch or "vgg19", "torchvision",
            f"RANDOM weights (seed {spec.seed}), NOT pretrained: for smoke runs only", False,
        )
    if spec.kind == "torchvision":
        return _load_torchvision(spec.arch or "vgg19")
    return _load_file(spec)


def random_state_dict(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded He-normal convolution weights (torchvision's VGG init), zero biases."""
    _check_arch(arch)
    out: dict[str, torch.Tensor] = {}
    gen = torch.Generator().manual_seed(seed)
    c_in = 3
    for idx, c_out in _conv_indices(arch):
        std = (2.0 / (c_out * 9)) ** 0.5  # kaiming_normal_, mode="fan_out", relu
        out[f"{idx}.weight"] = torch.randn(c_out, c_in, 3, 3, generator=gen) * std
        out[f"{idx}.bias"] = torch.zeros(c_out)
        c_in = c_out
    return out


def expected_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of a `features` state dict for this architecture."""
    _check_arch(arch)
    shapes: dict[str, tuple[int, ...]] = {}
    c_in = 3
    for idx, c_out in _conv_indices(arch):
        shapes[f"{idx}.weight"] = (c_out, c_in, 3, 3)
        shapes[f"{idx}.bias"] = (c_out,)
        c_in = c_out
    return shapes


def _conv_indices(arch: str) -> list[tuple[int, int]]:
    """(index in `features`, out channels) of each convolution."""
    out, i = [], 0
    for n_conv, ch in zip(BLOCKS[arch], CHANNELS):
        for _ in range(n_conv):
            out.append((i, ch))
            i += 2  # conv, relu
        i += 1  # pool
    return out


def _conv_names(arch: str) -> list[str]:
    return [f"conv{b + 1}_{n + 1}" for b, k in enumerate(BLOCKS[arch]) for n in range(k)]


def _check_arch(arch: str) -> None:
    if arch not in BLOCKS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHS)}.")


def _download_help(arch: str) -> str:
    name = {"vgg19": "VGG19_Weights", "vgg16": "VGG16_Weights"}[arch]
    home = os.environ.get("TORCH_HOME", "~/.cache/torch")
    return (
        f"How to get them:\n"
        f"  - once, on a machine with internet: python -c \"import torchvision; "
        f"torchvision.models.{arch}(weights='IMAGENET1K_V1')\" (cached under {home}/hub/checkpoints; "
        f"copy that file to the same place here, or share one TORCH_HOME on a JupyterHub);\n"
        f"  - or point {ENV_VAR} (or weights=) at a local file, e.g. {ENV_VAR}=/path/vgg19.pth "
        f"(torchvision layout) or {ENV_VAR}=caffe:/path/vgg19-caffe.pth (Caffe convention);\n"
        f"  - or, for an offline smoke run only, {ENV_VAR}=random (random weights: results mean nothing).\n"
        f"(torchvision.models.{name}.IMAGENET1K_V1)"
    )


#: torchvision's VGG19_Weights / VGG16_Weights.IMAGENET1K_V1 URLs (tests check them against torchvision;
#: written here so that loading the weights does not import torchvision: 190 MB per kernel).
TORCHVISION_URLS = {
    "vgg19": "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
}


def torchvision_checkpoint(arch: str = "vgg19") -> tuple[str, Path]:
    """(URL, cached file) of torchvision's ImageNet weights: $TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth."""
    _check_arch(arch)
    url = TORCHVISION_URLS[arch]
    return url, Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urllib.parse.urlsplit(url).path)


def _load_torchvision(arch: str) -> LoadedWeights:
    """torchvision's checkpoint, memory-mapped from torch's cache: only the `features` pages are read.

    Read with torch.load(mmap=True): the tensors are views of the cached file, so every kernel on
    the machine shares one copy of them in the page cache, and the classifier (over 80 % of the
    548 MB) is never read. The first use downloads the file once, atomically (torch.hub writes a
    temporary file and renames it), checked against the hash in its name. A damaged cache file
    (a download cut off, a disk error) is downloaded again, or refused with what to do.
    """
    _check_arch(arch)
    enum_name = {"vgg19": "VGG19_Weights", "vgg16": "VGG16_Weights"}[arch]
    url, cached = torchvision_checkpoint(arch)
    if not cached.is_file():
        _fetch_checkpoint(url, cached, arch)
    try:
        state = _torch_load(cached)
    except Exception as first:
        problem = _damage(cached, first)
        try:
            _fetch_checkpoint(url, cached, arch)
            state = _torch_load(cached)
        except Exception as e:
            raise WeightsUnavailableError(
                f"the cached weights file {cached} is damaged ({problem}), and downloading it again failed "
                f"({type(e).__name__}: {e}). Delete that file (or copy a good one over it: on a JupyterHub, "
                f"ask who runs it), then load again.\n" + _download_help(arch)
            ) from None
    return LoadedWeights(
        _features_state(state, arch, f"torchvision {enum_name}.IMAGENET1K_V1 ({cached})"),
        arch, "torchvision", f"torchvision {enum_name}.IMAGENET1K_V1 (cached by torch)", True,
    )


def _fetch_checkpoint(url: str, cached: Path, arch: str) -> None:
    """Download torchvision's checkpoint to `cached` (atomically, hash-checked) or raise WeightsUnavailableError."""
    match = re.search(r"-([a-f0-9]{8,})\.", cached.name)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        # torch.hub writes CACHED.<uuid>.partial and renames it when the whole file came and its
        # SHA-256 starts with the hash in the name: two kernels downloading at once both end
        # with a good file, and a broken download leaves no file under the final name.
        torch.hub.download_url_to_file(url, str(cached), match.group(1) if match else None, progress=True)
    except Exception as e:  # URLError, socket errors, HTTP errors, a full or read-only disk
        raise WeightsUnavailableError(
            f"could not load torchvision's {arch} ImageNet weights ({type(e).__name__}: {e}).\n"
            + _download_help(arch)
        ) from None


def _torch_load(path: Path):
    """torch.load, weights only, memory-mapped when the file allows it (files of torch >= 1.6)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        # the legacy (pre-zip) format cannot be memory-mapped: read it the plain way; a file that
        # is not a torch file fails again here, and that error is the one reported
        return torch.load(path, map_location="cpu", weights_only=True)


def _damage(path: Path, error: BaseException) -> str:
    """Why a cached checkpoint did not load, in words."""
    try:
        size = path.stat().st_size
    except OSError as e:
        return f"it cannot be read: {e}"
    text = " ".join(str(error).split())[:160]
    return f"{size:,} bytes, and it does not load: {type(error).__name__}: {text}; probably a download that was cut off"


def _load_file(spec: WeightsSpec) -> LoadedWeights:
    path = spec.path
    assert path is not None
    if not path.exists():
        raise WeightsUnavailableError(
            f"no weights file at {path} (from {spec.origin}).\n" + _download_help(spec.arch or "vgg19")
        )
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.pth"))[:3]
        raise ValueError(
            f"the weights setting from {spec.origin} names the folder {path}; name the weights file in it"
            + (f" (e.g. {path / found[0]})" if found else "") + "."
        )
    try:
        raw = _torch_load(path)
    except Exception as e:
        # torch's own message advises weights_only=False: unsafe, and wrong for a non-torch file.
        raise ValueError(
            f"{path} (from {spec.origin}) is not a PyTorch weights file that can be loaded safely ({type(e).__name__}). "
            f"Expected a state dict saved with torch.save, loadable with weights_only=True."
        ) from None
    if isinstance(raw, Mapping) and "state_dict" in raw and isinstance(raw["state_dict"], Mapping):
        raw = raw["state_dict"]
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path} holds a {type(raw).__name__}, expected a state dict (a mapping of names to tensors).")
    arch = spec.arch or _guess_arch(raw, path)
    if spec.convention:
        convention, how = spec.convention, "as set"
    elif "caffe" in path.name.lower():
        convention, how = "caffe", "inferred from the file name"
    else:
        convention, how = "torchvision", "default; prefix the path with 'caffe:' for Caffe weights"
    return LoadedWeights(
        _features_state(raw, arch, str(path)), arch, convention,
        f"file {path} (convention {how})", True,
    )


def _normalize_key(key: str, arch: str) -> str | None:
    """Map 'features.N.weight', 'N.weight' or 'convB_N.weight' to 'N.weight'; None to ignore."""
    if key.startswith("module."):
        key = key[len("module."):]
    if key.startswith("classifier."):
        return None
    if key.startswith("features."):
        key = key[len("features."):]
    m = re.fullmatch(r"(conv\d_\d)\.(weight|bias)", key)
    if m:
        names = _conv_names(arch)
        if m.group(1) in names:
            idx = _conv_indices(arch)[names.index(m.group(1))][0]
            return f"{idx}.{m.group(2)}"
    return key


def _guess_arch(raw: Mapping[str, torch.Tensor], path: Path) -> str:
    n_conv = sum(1 for k in raw if str(k).endswith("weight") and getattr(raw[k], "ndim", 0) == 4)
    nearest = min(BLOCKS, key=lambda a: abs(sum(BLOCKS[a]) - n_conv))
    if abs(sum(BLOCKS[nearest]) - n_conv) > 3:
        raise ValueError(
            f"{path} has {n_conv} convolution weights; VGG-16 has 13 and VGG-19 has 16. "
            f"Is this a VGG state dict?"
        )
    # A few missing or extra: `_features_state` names exactly which keys.
    return nearest


def _features_state(raw: Mapping[str, torch.Tensor], arch: str, where: str) -> dict[str, torch.Tensor]:
    expected = expected_shapes(arch)
    state: dict[str, torch.Tensor] = {}
    unexpected = []
    for k, v in raw.items():
        nk = _normalize_key(str(k), arch)
        if nk is None:
            continue
        if nk in expected:
            state[nk] = v
        else:
            unexpected.append(str(k))
    missing = [k for k in expected if k not in state]
    wrong = [f"{k}: {tuple(state[k].shape)} (expected {expected[k]})" for k in state if tuple(state[k].shape) != expected[k]]
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected[:12])}{' ...' if len(unexpected) > 12 else ''}")
    if wrong:
        problems.append(f"mismatched shapes: {'; '.join(wrong)}")
    if problems:
        raise ValueError(
            f"{where} does not match {arch}'s convolutional layers ({'; '.join(problems)}). "
            f"Expected torchvision's layout (features.0.weight, ...) or named layers (conv1_1.weight, ...)."
        )
    bad = [k for k, v in state.items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(
            f"{where} holds NaN or infinite values in {', '.join(bad[:6])}{' ...' if len(bad) > 6 else ''}: "
            f"the file is damaged or was saved from a diverged training run; download or convert it again."
        )
    return {k: v.detach().float() for k, v in state.items()}
