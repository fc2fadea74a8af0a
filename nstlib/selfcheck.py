"""Self-checks for the "your turn" exercises of the notebooks, in the manner of cs231n's checks.

Each ``check_*`` function takes the student's function, calls it on a few fixed, seeded, small
inputs, compares the result with the library's and prints ONE line: a pass,

    ✓ gram_matrix matches nstlib.losses.gram_matrix on 3 test inputs

or a hint that says what differs (the shape, a constant factor and the normalization it
probably misses, a transpose, no gradient, ...). A check never raises for a wrong answer: it
prints and returns False, so that a student's notebook runs from top to bottom. A function
that still raises NotImplementedError (the student edition's stub) gets

    ✗ content_loss: not written yet (NotImplementedError) — write your code in the cell above

What each check compares with, in the notation of the notebook that teaches it:

=====================================  ========  ==========================================================
check                                  notebook  the function the student writes
=====================================  ========  ==========================================================
`selfcheck_vgg.check_extract`          02        VGG's features up to the deepest layer asked for
`check_content_loss`                   02        (B, N, H, W), (B, N, H, W) -> (B,): 1/2 sum (F - P)^2
`check_loss_and_grad`                  02        the loss and its gradient for L-BFGS (content)
`check_gram_matrix`                    03        (B, C, H, W) -> (B, C, C): G = F F^T, no loops
`check_style_loss`                     03        (1, N, H, W), (1, N, H, W) -> scalar E_l (Gatys)
`selfcheck_transfer.check_total_loss`  04        alpha * content + beta * sum_l E_l / L, Gram / M
`check_normalized_style_loss`          05        (1, N, H, W), target Gram (1, N, N) -> scalar (Choi & Kim)
`check_rgb_to_yiq`                     07        (B, 3, H, W) -> (B, 3, H, W), RGB -> YIQ
=====================================  ========  ==========================================================

Later cells run on the student's own piece: `yours_or_library(yours, passed, library)` gives the
student's function where its check passed, else the library's with a one-line notice, so that the
notebook runs from top to bottom either way.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Sequence

import torch

from nstlib import color, lbfgs, losses

PASS = "✓"
FAIL = "✗"
NOT_WRITTEN = "not written yet (NotImplementedError) — write your code in the cell above"

# Relative tolerance of a match: the student's float32 arithmetic may sum in another order.
RTOL = 1e-4


@dataclass
class Case:
    """One test input: the arguments, the library's answer and the sizes the factor hints use."""

    args: tuple[torch.Tensor, ...]
    expected: torch.Tensor
    sizes: dict[str, float] = field(default_factory=dict)


@dataclass
class Spec:
    """What one check compares and how it explains a difference.

    factors: (hint, sizes -> yours / library's) for the likely missing or extra normalizations.
    mistakes: (hint, args -> the output of that mistake) for mistakes that are not a factor.
    """

    name: str
    library: str
    cases: list[Case]
    scalar: bool = False
    factors: list[tuple[str, Callable[[dict[str, float]], float]]] = field(default_factory=list)
    mistakes: list[tuple[str, Callable[..., torch.Tensor]]] = field(default_factory=list)


# -- the engine: call, compare, explain ---------------------------------------------------------

def _say(ok: bool, name: str, text: str) -> bool:
    """Print the one line of a check and return its verdict."""
    print(f"{PASS if ok else FAIL} {name}{' ' if ok else ': '}{text}")
    return ok


#: The hint for `x.T` on a tensor of 3 or more dimensions (torch reverses all of them, and warns).
BATCH_TRANSPOSE = ("`.T` on a tensor with more than 2 dimensions reverses all of them: to swap the last two "
                   "(one matrix per image), use `.mT` or `.transpose(1, 2)`")


def _call(fn: Callable[..., Any], args: Sequence[torch.Tensor]) -> tuple[Any, BaseException | None, bool]:
    """fn(*args) on copies that require grad (floating point ones), so that the gradient can be checked;
    returns (result, error, whether fn used `.T` on a tensor of more than 2 dimensions)."""
    copies = [a.detach().clone().requires_grad_(a.is_floating_point()) for a in args]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            got, error = fn(*copies), None
        except Exception as e:  # noqa: BLE001 - any mistake of the student's code becomes a hint
            got, error = None, e
    return got, error, any("`x.T`" in str(w.message) for w in caught)


def _matches(got: Any, expected: torch.Tensor) -> bool:
    """Whether got is a tensor with expected's values (any shape with as many entries)."""
    return (isinstance(got, torch.Tensor) and got.numel() == expected.numel()
            and _close(got.detach().reshape(expected.shape), expected))


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def _close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    """Same shape and values within RTOL of the largest expected magnitude."""
    if got.shape != expected.shape:
        return False
    scale = expected.abs().max().item() or 1.0
    return bool(torch.allclose(got.double(), expected.double(), rtol=RTOL, atol=RTOL * scale))


def _factor(got: torch.Tensor, expected: torch.Tensor) -> float | None:
    """r with got ≈ r * expected (least squares, then checked), or None when it is no constant factor."""
    e, g = expected.double().flatten(), got.double().flatten()
    denom = (e * e).sum().item()
    if denom == 0:
        return None
    r = (g * e).sum().item() / denom
    if r == 0 or not math.isfinite(r) or not _close(got, r * expected):
        return None
    return r


def _explain_factors(ratios: list[float], spec: Spec) -> str | None:
    """The hint for outputs that are the library's times a factor r_i on every test input, or None.

    Two numbers always differ by a factor, so for a scalar only a known factor or one constant
    factor is a hint; a tensor proportional to the library's on each input is one either way.
    """
    for hint, factor in spec.factors:
        if all(math.isclose(r, factor(c.sizes), rel_tol=1e-3) for r, c in zip(ratios, spec.cases)):
            return hint
    if all(math.isclose(r, ratios[0], rel_tol=1e-3) for r in ratios):
        return f"off by a constant factor {ratios[0]:.4g} (yours / library's) on every test input: a missing or extra normalization?"
    if spec.scalar:
        return None
    shown = ", ".join(f"{r:.4g}" for r in ratios)
    return (f"off by a factor that changes with the input ({shown}, yours / library's): a normalization "
            f"that depends on the sizes (N, H, W) is missing or wrong")


def _check(fn: Callable[..., Any], spec: Spec) -> bool:
    """Run spec's cases through fn and print the verdict: the engine of every tensor check."""
    outputs = []
    for i, case in enumerate(spec.cases, 1):
        got, error, batch_transpose = _call(fn, case.args)
        if isinstance(error, NotImplementedError):
            return _say(False, spec.name, NOT_WRITTEN)
        if batch_transpose and not _matches(got, case.expected):
            return _say(False, spec.name, BATCH_TRANSPOSE)
        if error is not None:
            shapes = ", ".join(_shape(a) for a in case.args)
            return _say(False, spec.name, f"raised {type(error).__name__}: {error} (on test input {i}, shapes {shapes})")
        if not isinstance(got, torch.Tensor):
            return _say(False, spec.name, f"returned {type(got).__name__}, expected a torch.Tensor "
                                          f"(keep the computation in torch, so that it has a gradient)")
        outputs.append(got)
    for hint, mistake in spec.mistakes:
        wrong = [mistake(*c.args) for c in spec.cases]
        if all(_close(g.detach(), w) and not _close(w, c.expected) for g, w, c in zip(outputs, wrong, spec.cases)):
            return _say(False, spec.name, hint)
    for i, (got, case) in enumerate(zip(outputs, spec.cases), 1):
        if spec.scalar and got.numel() != 1:
            return _say(False, spec.name, f"returns a non-scalar of shape {_shape(got)}, expected one number "
                                          f"(shape ()): did you forget to sum?")
        if not spec.scalar and got.shape != case.expected.shape:
            return _say(False, spec.name, f"wrong shape: expected {_shape(case.expected)}, got {_shape(got)} "
                                          f"(test input {i}, shapes {', '.join(_shape(a) for a in case.args)})")
    got_values = [g.detach().reshape(c.expected.shape) for g, c in zip(outputs, spec.cases)]
    if not all(_close(g, c.expected) for g, c in zip(got_values, spec.cases)):
        ratios = [_factor(g, c.expected) for g, c in zip(got_values, spec.cases)]
        hint = _explain_factors(ratios, spec) if all(r is not None for r in ratios) else None
        if hint:
            return _say(False, spec.name, hint)
        if all(g.ndim >= 2 and _close(g.transpose(-1, -2), c.expected) for g, c in zip(got_values, spec.cases)):
            return _say(False, spec.name, "transposed: your result is the library's with its last two dimensions swapped")
        i = next(k for k, (g, c) in enumerate(zip(got_values, spec.cases)) if not _close(g, c.expected))
        g, e = got_values[i], spec.cases[i].expected
        if spec.scalar:
            return _say(False, spec.name, f"differs from {spec.library} on test input {i + 1}: yours "
                                          f"{g.item():.6g}, the library's {e.item():.6g}")
        return _say(False, spec.name, f"differs from {spec.library} on test input {i + 1}: largest difference "
                                      f"{(g.double() - e.double()).abs().max().item():.3g} (library's values up to "
                                      f"{e.abs().max().item():.3g})")
    if not all(g.requires_grad for g in outputs):
        return _say(False, spec.name, "not differentiable: the result has no gradient (no .item(), .numpy(), "
                                      "float(...), .detach() or torch.no_grad() inside the function)")
    return _say(True, spec.name, f"matches {spec.library} on {len(spec.cases)} test inputs")


def _features(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Seeded non-negative test features (like ReLU outputs), float32."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def _nhw(t: torch.Tensor) -> dict[str, float]:
    """The sizes of features (B, N, H, W) the factor hints use: N, M = H W."""
    return {"N": t.shape[1], "M": t.shape[2] * t.shape[3], "B": t.shape[0]}


# -- the checks ---------------------------------------------------------------------------------

def check_content_loss(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> bool:
    """fn(F, P): features (B, N, H, W) of the generated image and of the photo -> (B,), 1/2 sum (F - P)^2 per image.

    Compared with `nstlib.losses.content_loss` (notebook 2).
    """
    cases = []
    for k, shape in enumerate([(1, 4, 5, 6), (2, 8, 3, 3), (3, 2, 7, 5)]):
        f, p = _features(shape, 10 + k), _features(shape, 20 + k)
        cases.append(Case((f, p), losses.content_loss(f, p), _nhw(f)))
    spec = Spec("content_loss", "nstlib.losses.content_loss", cases, factors=[
        ("off by a factor 2: the 1/2 is missing (L = 1/2 sum (F - P)^2)", lambda s: 2.0),
        ("off by a factor 1/2: you halved twice (L = 1/2 sum (F - P)^2, one 1/2)", lambda s: 0.5),
        ("divided by N·H·W: you took the mean; the content loss sums over every entry (and halves)",
         lambda s: 1.0 / (s["N"] * s["M"])),
        ("off by 2/(N·H·W): you took the mean and dropped the 1/2; the content loss is 1/2 sum (F - P)^2",
         lambda s: 2.0 / (s["N"] * s["M"])),
    ], mistakes=[
        ("returns one number for the whole batch: sum over each image's own entries and keep the batch, shape (B,)",
         lambda f, p: 0.5 * (f - p).pow(2).sum()),
        ("you took the square root (a distance, not its square): L = 1/2 sum (F - P)^2",
         lambda f, p: 0.5 * (f - p).pow(2).flatten(1).sum(1).sqrt()),
    ])
    return _check(fn, spec)


def _channels_last_gram(f: torch.Tensor) -> torch.Tensor:
    """The Gram of features reshaped to (B, H*W, C) without a permute (channels and positions mixed)."""
    g = f.reshape(f.shape[0], -1, f.shape[1])
    return g.transpose(1, 2) @ g


def check_gram_matrix(fn: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    """fn(F): features (B, C, H, W) -> (B, C, C), G_ij = sum_k F_ik F_jk per image (no normalization).

    Compared with `nstlib.losses.gram_matrix(F)` (normalize=False, notebook 3).
    """
    cases = []
    for k, shape in enumerate([(2, 3, 4, 5), (1, 8, 6, 6), (3, 5, 3, 7)]):
        f = _features(shape, 30 + k)
        cases.append(Case((f,), losses.gram_matrix(f), _nhw(f)))

    def mixed(f: torch.Tensor) -> torch.Tensor:
        g = f.permute(1, 0, 2, 3).reshape(f.shape[1], -1)
        return g @ g.T

    spec = Spec("gram_matrix", "nstlib.losses.gram_matrix", cases, factors=[
        ("divided by M = H·W: this exercise asks for the plain sum G = F F^T (nstlib's normalize=False)",
         lambda s: 1.0 / s["M"]),
        ("divided by C·H·W: this exercise asks for the plain sum G = F F^T, without normalization",
         lambda s: 1.0 / (s["N"] * s["M"])),
    ], mistakes=[
        ("mixes the images of the batch: reshape to (B, C, H*W), not (C, B*H*W); one Gram per image, (B, C, C)",
         mixed),
        ("you computed F^T F (positions x positions): multiply the other way round, F @ F.transpose(1, 2)",
         lambda f: f.flatten(2).transpose(1, 2) @ f.flatten(2)),
        ("reshape does not move the channels: F.reshape(B, H*W, C) mixes channels and positions. Keep the "
         "channels first, F.reshape(B, C, H*W) (or F.flatten(2)), or permute before reshaping", _channels_last_gram),
    ])
    return _check(fn, spec)


def check_style_loss(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> bool:
    """fn(F, S): features (1, N, H, W) of the generated image and of the style image (same size) -> scalar E_l.

    E_l = 1 / (4 N^2 M^2) sum_ij (G_ij - A_ij)^2, compared with
    `nstlib.losses.style_loss(F, gram_matrix(S, normalize=True))` (notebook 3).
    """
    cases = []
    for k, shape in enumerate([(1, 3, 4, 5), (1, 8, 6, 6), (1, 5, 3, 7)]):
        f, s = _features(shape, 40 + k), _features(shape, 50 + k)
        cases.append(Case((f, s), losses.style_loss(f, losses.gram_matrix(s, normalize=True)).sum(), _nhw(f)))
    n2, m2 = (lambda s: s["N"] ** 2), (lambda s: s["M"] ** 2)
    spec = Spec("style_loss", "nstlib.losses.style_loss", cases, scalar=True, factors=[
        ("off by 4 N² M²: no normalization; E_l = 1/(4 N² M²) sum (G - A)^2", lambda s: 4 * n2(s) * m2(s)),
        ("off by M² (M = H·W): the 1/M² of E_l = 1/(4 N² M²) sum (G - A)^2 is missing", m2),
        ("off by M (M = H·W): divide by M², not M (or use Grams per position, G / M, then square)",
         lambda s: s["M"]),
        ("off by 1/M² (M = H·W): you divided by M² twice (Grams per position AND 1/M²)", lambda s: 1 / m2(s)),
        ("off by N²: the 1/N² of E_l = 1/(4 N² M²) sum (G - A)^2 is missing", n2),
        ("off by N: divide by N² (the number of channels, squared), not N", lambda s: s["N"]),
        ("off by 4 N²: the 1/(4 N²) of E_l = 1/(4 N² M²) sum (G - A)^2 is missing", lambda s: 4 * n2(s)),
        ("off by 4 M²: the 1/4 and the 1/M² of E_l = 1/(4 N² M²) sum (G - A)^2 are missing", lambda s: 4 * m2(s)),
        ("off by N² M²: the 1/(N² M²) of E_l = 1/(4 N² M²) sum (G - A)^2 is missing", lambda s: n2(s) * m2(s)),
        ("off by a factor 4: the 1/4 of E_l = 1/(4 N² M²) sum (G - A)^2 is missing", lambda s: 4.0),
        ("off by a factor 1/2: you halved (that is the content loss's 1/2); E_l has 1/4", lambda s: 0.5),
    ])
    return _check(fn, spec)


def check_normalized_style_loss(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> bool:
    """fn(F, A): features (1, N, H, W), target Gram per position A (1, N, N) -> scalar ||G - A||_F^2 / ||A||_F^2.

    G = gram_matrix(F, normalize=True), per position like A. Compared with
    `nstlib.losses.normalized_style_loss` (Choi & Kim, notebook 5).
    """
    cases = []
    for k, (shape, style_shape) in enumerate([((1, 3, 4, 5), (1, 3, 6, 6)), ((1, 8, 6, 6), (1, 8, 4, 4)),
                                              ((1, 5, 3, 7), (1, 5, 5, 5))]):
        f = _features(shape, 60 + k)
        a = losses.gram_matrix(_features(style_shape, 70 + k) * 1.5, normalize=True)
        cases.append(Case((f, a), losses.normalized_style_loss(f, a).sum(), _nhw(f)))

    def by_own_energy(f: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        g = losses.gram_matrix(f, normalize=True)
        return (g - a).pow(2).sum() / g.pow(2).sum()

    spec = Spec("normalized_style_loss", "nstlib.losses.normalized_style_loss", cases, scalar=True, mistakes=[
        ("that is Gatys' normalization, 1/(4 N²); Choi & Kim divide by the target's energy ||A||_F^2 instead",
         lambda f, a: losses.style_loss(f, a).sum()),
        ("not divided by the target's energy: L_s = ||G - A||_F^2 / ||A||_F^2", lambda f, a: (losses.gram_matrix(
            f, normalize=True) - a).pow(2).sum()),
        ("divided by the energy of G (the generated image's Gram); divide by the target's, ||A||_F^2", by_own_energy),
        ("the norms are not squared: L_s = ||G - A||_F^2 / ||A||_F^2", lambda f, a: (losses.gram_matrix(
            f, normalize=True) - a).norm() / a.norm()),
        ("your Gram is not per position: divide G = F F^T by M = H·W (gram_matrix(F, normalize=True)), like the "
         "target A", lambda f, a: (losses.gram_matrix(f) - a).pow(2).sum() / a.pow(2).sum()),
        ("your Gram is divided by N·M (C·H·W): divide F F^T by M = H·W only, like the target A",
         lambda f, a: (losses.gram_matrix(f, normalize=True) / f.shape[1] - a).pow(2).sum() / a.pow(2).sum()),
    ])
    return _check(fn, spec)


def library_loss_and_grad(net: Any, layer: str, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The library's answer to notebook 2's exercise: the content loss of x (1, 3, H, W) at `layer`
    against target (1, N, h, w), back-propagated into x.grad. -> the loss, shape ()."""
    loss = losses.content_loss(net.extract(x, [layer])[layer], target).sum()
    loss.backward()
    return loss


def yours_or_library(yours: Callable[..., Any], passed: bool, library: Callable[..., Any]) -> Callable[..., Any]:
    """The student's function where its self-check passed, else the library's, saying which in one line.

    yours, library: functions with the same arguments and result; passed: the check's verdict
    (``passed = selfcheck.check_...(yours)`` in the check cell).
    """
    if not isinstance(passed, bool):
        raise TypeError(f"passed must be the verdict of a self-check (True or False), got {passed!r}; "
                        f"write passed = selfcheck.check_...(your_function) in the check cell.")
    name = getattr(yours, "__name__", "your function")
    if passed:
        print(f"the cells below use {name}, yours")
        return yours
    print(f"the cells below use the library's version until {name} passes its check above")
    return library


def check_rgb_to_yiq(fn: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    """fn(img): RGB images (B, 3, H, W) in [0, 1] -> YIQ (B, 3, H, W). Compared with `nstlib.color.rgb_to_yiq` (notebook 7)."""
    cases = []
    for k, shape in enumerate([(1, 3, 4, 5), (2, 3, 6, 6), (1, 3, 3, 7)]):
        img = _features(shape, 80 + k)
        cases.append(Case((img,), color.rgb_to_yiq(img), {}))
    yiq = color._RGB_TO_YIQ.float()
    spec = Spec("rgb_to_yiq", "nstlib.color.rgb_to_yiq", cases, factors=[
        ("off by a factor 255: keep the images in [0, 1]", lambda s: 255.0),
    ], mistakes=[
        ("transposed: you applied the matrix's transpose; output channel k is sum_c M[k, c] * RGB[c] "
         "(einsum 'kc,bchw->bkhw')", lambda img: torch.einsum("ck,bchw->bkhw", yiq, img)),
        ("channels last: the result must be (B, 3, H, W); permute it back (x.permute(0, 3, 1, 2))",
         lambda img: torch.einsum("kc,bchw->bhwk", yiq, img)),
        ("reshape does not move the channels: img.reshape(B, H*W, 3) mixes channels and positions. Permute to "
         "(B, H, W, 3) first (img.permute(0, 2, 3, 1)) and back after, or use einsum 'kc,bchw->bkhw'",
         lambda img: (img.reshape(img.shape[0], -1, 3) @ yiq.T).reshape(img.shape)),
    ])
    return _check(fn, spec)


# -- the optimization loop -----------------------------------------------------------------------

CLOSURE_LAYER = "relu2_2"
CLOSURE_SIZE = 32
CLOSURE_STEPS = 5


@lru_cache(maxsize=1)
def _closure_problem() -> tuple[Any, torch.Tensor, torch.Tensor]:
    """A tiny reconstruction: VGG-16 with seeded random weights, a 32 px seeded 'photo' and its relu2_2 target."""
    from nstlib.vgg import load_vgg

    net = load_vgg("random:vgg16:0")
    photo = torch.rand(1, 3, CLOSURE_SIZE, CLOSURE_SIZE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        target = net.extract(photo, [CLOSURE_LAYER])[CLOSURE_LAYER]
    return net, photo, target


def _noise() -> torch.Tensor:
    """The start of the reconstruction: the white noise stylize(init="noise", seed=0) starts from."""
    return torch.rand(1, 3, CLOSURE_SIZE, CLOSURE_SIZE, generator=torch.Generator().manual_seed(0))


def check_loss_and_grad(fn: Callable[..., Any]) -> bool:
    """fn(net, layer, x, target): one evaluation for L-BFGS -> the content loss (a 0-d tensor).

    It computes 1/2 sum (F - P)^2 of x's features at `layer` against `target`, back-propagates
    it into x.grad and returns it. Checked on a tiny random VGG-16: the loss and gradient at the
    start, then notebook 2's loop (`lbfgs.minimize`) around fn against `stylize` (the library's
    loop) for CLOSURE_STEPS evaluations.
    """
    name = "loss_and_grad"
    net, _, target = _closure_problem()
    x = _noise().requires_grad_(True)
    try:
        loss = fn(net, CLOSURE_LAYER, x, target)
    except NotImplementedError:
        return _say(False, name, NOT_WRITTEN)
    except Exception as error:  # noqa: BLE001 - the student's mistake becomes a hint
        return _say(False, name, f"raised {type(error).__name__}: {error}")
    if loss is None:
        return _say(False, name, "returns None: return the loss, L-BFGS needs its value")
    if not isinstance(loss, torch.Tensor):
        return _say(False, name, f"returned {type(loss).__name__}, expected the loss as a torch.Tensor (not .item())")
    if loss.numel() != 1:
        return _say(False, name, f"returns a non-scalar of shape {_shape(loss)}: sum the loss to one number")
    ref_x = _noise().requires_grad_(True)
    ref = losses.content_loss(net.extract(ref_x, [CLOSURE_LAYER])[CLOSURE_LAYER], target).sum()
    ref.backward()
    if not _close(loss.detach().reshape(()), ref.detach()):
        r = loss.item() / ref.item() if ref.item() else float("nan")
        n = target.numel()
        hints = {2.0: "the 1/2 is missing", 0.5: "you halved twice",
                 1.0 / n: "you took the mean: the content loss sums over every entry (1/2 sum (F - P)^2)",
                 2.0 / n: "you took the mean and dropped the 1/2: the content loss is 1/2 sum (F - P)^2"}
        hint = next((h for v, h in hints.items() if math.isclose(r, v, rel_tol=1e-3)), None)
        return _say(False, name, f"the loss is {loss.item():.6g}, expected {ref.item():.6g} (1/2 sum (F - P)^2), "
                                 f"a factor {r:.4g}" + (f": {hint}" if hint else ""))
    if x.grad is None or not x.grad.abs().sum() > 0:
        return _say(False, name, "no gradient reached the pixels: call loss.backward(), and compute the features "
                                 "from x itself (not x.detach(), not under torch.no_grad())")
    if not _close(x.grad, ref_x.grad):
        return _say(False, name, "x.grad is not the gradient of the loss you return: back-propagate that loss")
    mine = _notebook_loop(lambda x: fn(net, CLOSURE_LAYER, x, target))
    library = _library_curve()
    if mine is None or not _close(torch.tensor(mine), library):
        k = next((i for i, (a, b) in enumerate(zip(mine or [], library.tolist())) if not math.isclose(a, b, rel_tol=1e-3)), 0)
        return _say(False, name, f"the loss curve leaves stylize's at step {k + 1}: does your function use only "
                                 f"its arguments (net, layer, x, target), not notebook variables?")
    return _say(True, name, f"gives the same {CLOSURE_STEPS}-step L-BFGS loss curve as nstlib.stylize.stylize "
                            f"(tiny random VGG-16, {CLOSURE_LAYER}, {CLOSURE_SIZE} px)")


def _notebook_loop(loss_of: Callable[[torch.Tensor], torch.Tensor]) -> list[float] | None:
    """Notebook 2's loop around loss_of(x): `lbfgs.minimize` on the pixels, bounds [0, 1].

    Returns the losses of the first CLOSURE_STEPS evaluations, or None if loss_of failed.
    """
    seen: list[float] = []

    def loss_and_grad(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        x = x.detach().requires_grad_(True)
        loss = loss_of(x)
        seen.append(loss.item())
        return loss.item(), x.grad

    try:
        lbfgs.minimize(loss_and_grad, _noise(), steps=CLOSURE_STEPS)
    except Exception:  # noqa: BLE001 - reported by the caller as a different curve
        return None
    return seen if len(seen) == CLOSURE_STEPS else None


@lru_cache(maxsize=1)
def _library_curve() -> torch.Tensor:
    """The library's loss curve of the same reconstruction: (CLOSURE_STEPS,) float32."""
    from nstlib.stylize import stylize

    net, photo, _ = _closure_problem()
    result = stylize(photo, None, content_layers=[CLOSURE_LAYER], init="noise", seed=0, steps=CLOSURE_STEPS,
                     precision="float32", extractor=net, progress=False)
    return torch.as_tensor(result.history["total"][:CLOSURE_STEPS, 0], dtype=torch.float32)
