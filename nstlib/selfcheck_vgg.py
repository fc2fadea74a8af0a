"""Self-check of notebook 2's feature extractor: run VGG's `features` up to the deepest layer asked for.

The student writes `extract(features, names, x, layers)`: x (B, 3, H, W), already normalized, goes
through the modules of `features` (an nn.Sequential) in order, the output of each module whose
name (names[i], "conv1_1", "relu1_1", ..., "pool1", ...) is in `layers` is kept, and the run stops
after the deepest of them. `check_extract` compares it with `nstlib.vgg.VGGFeatures.extract` on a
tiny VGG-16 with random weights and prints one line, as every check of `nstlib.selfcheck` does.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable, Sequence

import torch
from torch import nn

from nstlib.selfcheck import NOT_WRITTEN, _close, _say

#: The layer sets the check asks for: one layer, two in reverse order, three with a pooling output.
CHECK_LAYERS = (["relu1_1"], ["conv2_2", "relu1_2"], ["relu3_1", "conv1_1", "pool2"])
CHECK_SIZE = 32


def library_extract(features: nn.Sequential, names: Sequence[str], x: torch.Tensor,
                    layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """The library's answer: x (B, 3, H, W), normalized, through `features` up to the deepest of `layers`
    (names[i] names module i) -> {layer: (B, C, h, w)}. Unknown names get a ValueError."""
    unknown = [n for n in layers if n not in names]
    if unknown:
        raise ValueError(f"unknown layer(s) {unknown}; this network has {names[0]} ... {names[-1]} "
                         f"(conv<block>_<k>, relu<block>_<k>, pool<block>).")
    last = max(names.index(n) for n in layers)
    out, h = {}, x
    for name, module in zip(names[:last + 1], features):
        h = module(h)
        if name in layers:
            out[name] = h
    return out


@lru_cache(maxsize=1)
def _problem() -> tuple[Any, torch.Tensor]:
    """A tiny VGG-16 with seeded random weights and a seeded 2-image batch (B=2, 32 px), normalized."""
    from nstlib.vgg import load_vgg

    net = load_vgg("random:vgg16:0")
    x = torch.rand(2, 3, CHECK_SIZE, CHECK_SIZE, generator=torch.Generator().manual_seed(3))
    return net, net.preprocess(x)


def _count_calls(features: nn.Sequential) -> tuple[list[int], list[Any]]:
    """A counter of module calls in features (a one-element list) and the hooks to remove."""
    calls = [0]

    def hook(*_: Any) -> None:
        calls[0] += 1

    return calls, [m.register_forward_hook(hook) for m in features]


def _problem_with(got: Any, layers: list[str], expected: dict[str, torch.Tensor], names: list[str]) -> str | None:
    """What is wrong with one answer, in words, or None."""
    if not isinstance(got, dict):
        return f"returned {type(got).__name__}, expected a dict {{layer name: its output}}"
    if set(got) != set(layers):
        missing, extra = [n for n in layers if n not in got], [n for n in got if n not in layers]
        text = f"for layers {layers} it returned {sorted(got, key=str)}"
        if missing and max(names.index(n) for n in layers) > max((names.index(n) for n in got if n in names), default=-1):
            return text + ": layers may come in any order; run up to the deepest one (the largest index), not the last in the list"
        return text + (f": {missing} missing" if missing else "") + (f": {extra} not asked for" if extra else "")
    for name in layers:
        value = got[name]
        if not isinstance(value, torch.Tensor) or value.shape != expected[name].shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            return f"{name} has shape {shape}, expected {tuple(expected[name].shape)}"
        if not _close(value.detach(), expected[name]):
            i = names.index(name)
            near = [j for j in (i - 1, i + 1) if 0 <= j < len(names) and names[j] in expected
                    and _close(value.detach(), expected[names[j]])]
            if near:
                return (f"{name} holds the output of {names[near[0]]}: keep module i's output right after "
                        f"running it (names[i] is its name)")
            return f"{name} differs from the library's (largest difference {float((value.detach() - expected[name]).abs().max()):.3g})"
        if not value.requires_grad:
            return (f"{name} carries no gradient: no torch.no_grad() and no .detach() inside, the optimization "
                    f"needs d loss / d pixels through it")
    return None


def check_extract(fn: Callable[..., Any]) -> bool:
    """fn(features, names, x, layers) -> {layer: (B, C, h, w)}: checked against the library on CHECK_LAYERS."""
    name = "extract"
    net, x = _problem()
    names = list(net.names)
    with torch.no_grad():
        expected = library_extract(net.features, names, x, names)  # every module's output
    for layers in CHECK_LAYERS:
        calls, hooks = _count_calls(net.features)
        try:
            got = fn(net.features, names, x.clone().requires_grad_(True), list(layers))
        except NotImplementedError:
            return _say(False, name, NOT_WRITTEN)
        except Exception as error:  # noqa: BLE001 - the student's mistake becomes a hint
            return _say(False, name, f"raised {type(error).__name__}: {error}")
        finally:
            for h in hooks:
                h.remove()
        problem = _problem_with(got, list(layers), expected, names)
        if problem:
            return _say(False, name, problem)
        need = max(names.index(n) for n in layers) + 1
        if calls[0] > need:
            return _say(False, name, f"for {layers} it ran {calls[0]} modules where {need} give them: stop after the "
                                     f"deepest layer asked for (every step of the optimization pays for each module run)")
    return _say(True, name, f"matches nstlib.vgg.VGGFeatures.extract on {len(CHECK_LAYERS)} layer sets "
                            f"(tiny random VGG-16) and stops at the deepest layer")
